"""The ``Object`` base class, request dispatch, alarm firing and the component exports."""

from __future__ import annotations

import linecache
import os
import sys
import traceback
from typing import Any, Callable, Optional, Union

from . import _sys
from ._http import JSON_CONTENT_TYPE, HTTPError, Request, Response, _pairs, _to_bytes, dumps

#: The handler functions of the WIT ``handler`` interface, one per HTTP method.
METHODS = ("get", "post", "put", "delete", "patch")

_WARN_LEVEL = 3
_ERROR_LEVEL = 4


class Object:
    """Base class of an object: one method per HTTP method, and :meth:`on_alarm` for its
    alarms.

    Every method answers ``405`` with the JSON error
    ``{"error":"method_not_allowed","message":"..."}`` unless overridden, so an object
    defines only the methods it supports, then exports its class with :func:`export`::

        from object_primitive import Object, Request, Response, export, state

        class Counter(Object):
            def get(self, req: Request) -> Response:
                return Response.json({"count": state.get_json("count", 0)})

            def post(self, req: Request) -> Response:
                return Response.json({"count": state.increment("count")})

        Handler = export(Counter)

    A handler returns a :class:`Response`. Raising :class:`HTTPError` (or ``BadRequest``,
    ``NotFound``) answers with that error; any other uncaught exception answers
    ``500 {"error":"exception","message":...}``, writes the traceback to the object's log at
    ``error`` level and commits none of the call's state writes (nor does any status of 500
    or more).

    The station creates one instance per live component instance, on its first call, and
    reuses it while the instance is warm; it may be replaced at any time. Attributes set on
    ``self`` are a cache at best: keep what matters in :mod:`~object_primitive.state`.
    """

    def get(self, req: Request) -> Response:
        """Answers ``GET``. Defaults to ``405 Method Not Allowed``."""
        return not_supported(req)

    def post(self, req: Request) -> Response:
        """Answers ``POST``. Defaults to ``405 Method Not Allowed``."""
        return not_supported(req)

    def put(self, req: Request) -> Response:
        """Answers ``PUT``. Defaults to ``405 Method Not Allowed``."""
        return not_supported(req)

    def delete(self, req: Request) -> Response:
        """Answers ``DELETE``. Defaults to ``405 Method Not Allowed``."""
        return not_supported(req)

    def patch(self, req: Request) -> Response:
        """Answers ``PATCH``. Defaults to ``405 Method Not Allowed``."""
        return not_supported(req)

    def on_alarm(self, name: str, payload: bytes, scheduled_ms: int) -> None:
        """Handles the alarm ``name``, set with :func:`alarms.set(name, scheduled_ms, payload)
        <object_primitive.alarms.set>`, now due. It runs in the object's turn, like a call.

        Returning commits the writes it made (state, alarms, events) and removes the alarm in
        the same batch, unless it set ``name`` again. Raising an exception commits nothing:
        the traceback is written to the object's log at ``error`` level, ``fire`` answers
        ``err("ExceptionType: message")``, and the station retries the alarm with backoff, up
        to 6 times, then drops it and logs why.

        The default logs a warning that the object has no alarm handler and returns, so the
        alarm is removed.
        """
        _sys.log(
            _WARN_LEVEL,
            f"alarm {dumps(name)} fired, but this object has no alarm handler "
            "(Object.on_alarm); it is dropped",
        )


def not_supported(req: Request) -> Response:
    """The ``405 method_not_allowed`` answer for a method the object does not support."""
    return Response.method_not_allowed(f"{req.method} is not supported by this object")


def exception_response(exc: BaseException) -> Response:
    """The ``500`` answer for an uncaught exception:
    ``{"error":"exception","message":str(exc),"type":"ValueError"}``."""
    message = str(exc) or type(exc).__name__
    # A str may hold lone surrogates, which UTF-8 (and so the station) cannot carry.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    body = dumps({"error": "exception", "message": message, "type": type(exc).__name__})
    return Response(500, [("content-type", JSON_CONTENT_TYPE)], body)


def _log_exception(where: str) -> None:
    try:
        text = traceback.format_exc().rstrip("\n")
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        _sys.log(_ERROR_LEVEL, f"uncaught exception in {where}:\n{text}")
    except Exception:  # the answer matters more than the log line
        pass


def _checked(result: Any, where: str) -> Response:
    if not isinstance(result, Response):
        raise TypeError(
            f"{where} returned {type(result).__name__}, expected a Response "
            "(for example Response.json({...}))"
        )
    if type(result.body) is not bytes:
        result.body = _to_bytes(result.body)
    if not isinstance(result.status, int) or not 100 <= result.status <= 999:
        raise ValueError(f"{where} answered with an invalid status {result.status!r}")
    result.headers = _pairs(result.headers)
    return result


class _Instance:
    """The object instance behind an export, created on first use."""

    __slots__ = ("cls", "obj")

    def __init__(self, cls: type[Object]) -> None:
        self.cls = cls
        self.obj: Optional[Object] = None

    def handle(self, name: str, req: Request) -> Response:
        try:
            obj = self.obj
            if obj is None:
                obj = self.obj = self.cls()
            result = getattr(obj, name)(req)
            if (
                type(result) is Response
                and type(result.body) is bytes
                and type(result.status) is int
                and 100 <= result.status <= 999
                and type(result.headers) is list
            ):
                return result  # the usual case, checked cheaply
            return _checked(result, f"{self.cls.__qualname__}.{name}")
        except HTTPError as e:
            return e.response
        except BaseException as e:  # noqa: BLE001 - every failure becomes a 500 answer
            _log_exception(f"{self.cls.__qualname__}.{name} ({req.method} {req.path})")
            return exception_response(e)

    def fire(self, name: str, payload: bytes, scheduled_ms: int) -> Optional[str]:
        """Calls ``on_alarm``; ``None`` if it returned, else the error for ``err``
        (``"ExceptionType: message"``), its traceback logged."""
        try:
            obj = self.obj
            if obj is None:
                obj = self.obj = self.cls()
            obj.on_alarm(name, payload, scheduled_ms)
            return None
        except BaseException as e:  # noqa: BLE001 - every failure becomes err(message)
            _log_exception(f"{self.cls.__qualname__}.on_alarm ({name})")
            message = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            return message.encode("utf-8", "backslashreplace").decode("utf-8")


def dispatch(obj: Union[Object, type[Object]], req: Request) -> Response:
    """Routes ``req`` to the method of ``obj`` named by ``req.method`` (case-insensitive),
    as the station does, with the same error handling as an exported object: unknown
    methods answer ``405``, :class:`HTTPError` answers its response, other exceptions answer
    ``500 exception`` (traceback logged). Handy for tests::

        >>> dispatch(Counter, Request("POST", "/")).json_body()
        {'count': 1}

    Passing a class creates a fresh instance for this one call.
    """
    instance = _Instance(obj if isinstance(obj, type) else type(obj))
    if not isinstance(obj, type):
        instance.obj = obj
    name = req.method.lower()
    if name not in METHODS:
        return not_supported(req)
    return instance.handle(name, req)


def _keep_sources(module_name: str) -> None:
    """Caches the source lines of the app's and the SDK's modules in ``linecache``.

    componentize-py imports the app while it builds the component, with the app's
    directories readable; the running component has no files at all. Cached here (with no
    mtime, so ``linecache.checkcache`` keeps them), the lines are part of the component's
    snapshot, and tracebacks written to the log show the failing source lines.
    """
    roots = []
    for name in (module_name, __package__):
        path = getattr(sys.modules.get(name or ""), "__file__", None)
        if path:
            roots.append(os.path.dirname(os.path.abspath(path)) + os.sep)
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not (isinstance(path, str) and path.endswith(".py")):
            continue
        if not any(path.startswith(root) for root in roots) or path in linecache.cache:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines(keepends=True)
        except (OSError, UnicodeDecodeError):
            continue
        linecache.cache[path] = (sum(map(len, lines)), None, lines, path)


def export(cls: type[Object]) -> type:
    """The component exports for ``cls``: assign the result to ``Handler`` in the app
    module; ``AlarmHandler`` is defined beside it.

    componentize-py looks, in the module it builds, for one class per exported WIT
    interface: ``Handler`` (``handler``, deriving from the generated
    ``wit_world.exports.Handler``) and ``AlarmHandler`` (``alarm-handler``)::

        Handler = export(Counter)

    Each ``Handler`` function (``get``, ``post``, ...) calls the method of the same name on
    one lazily created ``cls()`` instance, converting the request and response and turning
    exceptions into answers (see :class:`Object`). ``export`` also defines ``AlarmHandler``
    in the calling module's globals, unless that module already has one: its ``fire`` calls
    :meth:`Object.on_alarm` on the same instance and answers ``err(message)`` if it raises.
    The class is also the returned class's ``alarm_handler`` attribute, for a module that
    would rather write ``AlarmHandler = Handler.alarm_handler`` itself. Outside a component
    the classes derive from ``object`` and work the same with any request-like value.
    """
    if not (isinstance(cls, type) and issubclass(cls, Object)):
        raise TypeError(
            f"export() takes a subclass of object_primitive.Object, not {cls!r}; "
            "write `Handler = export(MyObject)`"
        )
    if _sys.IN_COMPONENT:
        _keep_sources(cls.__module__)
    instance = _Instance(cls)
    handle = instance.handle
    to_wit = _sys.response_to_wit
    raw = Request._raw

    def method(name: str) -> Callable[[Any, Any], Any]:
        def handler(self: Any, req: Any) -> Any:
            r = handle(name, raw(req.method, req.path, req.query, req.headers, req.body))
            return to_wit(r.status, r.headers, r.body)

        handler.__name__ = handler.__qualname__ = name
        handler.__doc__ = f"Calls {cls.__qualname__}.{name}."
        return handler

    fire_alarm = instance.fire
    fire_error = _sys.fire_error

    def fire(self: Any, name: str, payload: bytes, scheduled_ms: int) -> None:
        error = fire_alarm(name, bytes(payload), scheduled_ms)
        if error is not None:
            raise fire_error(error)

    fire.__doc__ = f"Calls {cls.__qualname__}.on_alarm; raises Err(message) if it raises."
    alarm_handler = type(
        "AlarmHandler",
        (_sys.alarm_handler_base(),),
        {
            "fire": fire,
            "__doc__": f"The component export of {cls.__qualname__} (the WIT alarm-handler).",
            "__module__": cls.__module__,
            "object_class": cls,
        },
    )

    namespace: dict[str, Any] = {name: method(name) for name in METHODS}
    namespace["__doc__"] = f"The component export of {cls.__qualname__} (the WIT handler)."
    namespace["__module__"] = cls.__module__
    namespace["object_class"] = cls
    namespace["alarm_handler"] = alarm_handler
    handler = type("Handler", (_sys.handler_base(),), namespace)

    # componentize-py needs `AlarmHandler` in the app module too; `Handler = export(X)` is all
    # an object writes, so define it there (the module calling export).
    caller = sys._getframe(1).f_globals
    caller.setdefault("AlarmHandler", alarm_handler)
    return handler
