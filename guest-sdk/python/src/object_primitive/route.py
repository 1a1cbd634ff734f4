"""JSON APIs: a router from method and path pattern to handler, and typed access to a JSON
object body with ready ``400`` answers. The same behaviour and messages as the Rust SDK's
``object_primitive::route``, so objects in either language answer alike::

    from object_primitive import Object, Request, Response, export
    from object_primitive.route import JsonBody, Params, Router

    router = Router()

    @router.get("/rooms")
    def rooms(req: Request, params: Params) -> Response:
        return Response.json({"rooms": ["General"]})

    @router.post("/rooms/{room}/messages")
    def send(req: Request, params: Params) -> Response:
        text = JsonBody.parse(req).required_str("message")   # 400 if missing
        return Response.json({"message": text, "room": params["room"]})

    class Chat(Object):
        def get(self, req: Request) -> Response:
            return router.handle(req)

        def post(self, req: Request) -> Response:
            return router.handle(req)

    Handler = export(Chat)

The errors (:class:`~object_primitive.BadRequest` and friends) are exceptions: raised in a
handler, they answer the call.
"""

from __future__ import annotations

import json as _json
from typing import Any, Callable, Optional

from ._http import BadRequest, HTTPError, Request, Response

__all__ = ["Router", "Params", "Handler", "JsonBody", "missing", "wrong_type"]

#: A parsed path's ``{name}`` values.
Params = dict[str, str]
#: A route handler: the request and the values of the pattern's ``{name}`` segments.
Handler = Callable[[Request, Params], Response]


class Router:
    """Routes requests by method and path pattern.

    A pattern is a path whose segments are literals or ``{name}`` (matching any one
    non-empty segment, percent-decoded as by :meth:`Request.segments`). Empty segments are
    ignored on both sides, so ``/rooms/`` matches ``/rooms``. Routes are tried in the order
    they were added; the first whose method and pattern match answers.

    When no pattern matches, :meth:`handle` answers ``404 not_found`` ("no route for METHOD
    PATH"); when patterns match but not for this method, ``405 method_not_allowed`` with an
    ``allow`` header listing the methods that would.
    """

    def __init__(self) -> None:
        self._routes: list[tuple[str, list[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """Adds a route for ``method`` (compared case-insensitively) and ``pattern``."""
        segments = [s for s in pattern.split("/") if s]
        self._routes.append((method.upper(), segments, handler))

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        """A decorator form of :meth:`add`."""

        def decorate(handler: Handler) -> Handler:
            self.add(method, pattern, handler)
            return handler

        return decorate

    def get(self, pattern: str) -> Callable[[Handler], Handler]:
        """Decorator: a ``GET`` route."""
        return self.route("GET", pattern)

    def post(self, pattern: str) -> Callable[[Handler], Handler]:
        """Decorator: a ``POST`` route."""
        return self.route("POST", pattern)

    def put(self, pattern: str) -> Callable[[Handler], Handler]:
        """Decorator: a ``PUT`` route."""
        return self.route("PUT", pattern)

    def delete(self, pattern: str) -> Callable[[Handler], Handler]:
        """Decorator: a ``DELETE`` route."""
        return self.route("DELETE", pattern)

    def patch(self, pattern: str) -> Callable[[Handler], Handler]:
        """Decorator: a ``PATCH`` route."""
        return self.route("PATCH", pattern)

    def handle(self, req: Request) -> Response:
        """Answers ``req`` with the first matching route's handler, or with ``404``/``405``.
        An :class:`~object_primitive.HTTPError` raised by the handler becomes its answer."""
        segments = req.segments()
        allowed: list[str] = []
        for method, pattern, handler in self._routes:
            params = _match(pattern, segments)
            if params is None:
                continue
            if method == req.method.upper():
                try:
                    return handler(req, params)
                except HTTPError as e:
                    return e.response
            if method not in allowed:
                allowed.append(method)
        if not allowed:
            return Response.not_found(f"no route for {req.method} {req.path}")
        return Response.error(
            405, "method_not_allowed", f"{req.method} is not supported on {req.path}"
        ).with_header("allow", ", ".join(allowed))


def _match(pattern: list[str], segments: list[str]) -> Optional[Params]:
    if len(pattern) != len(segments):
        return None
    params: Params = {}
    for p, s in zip(pattern, segments):
        if p.startswith("{") and p.endswith("}"):
            params[p[1:-1]] = s
        elif p != s:
            return None
    return params


def missing(name: str) -> BadRequest:
    """``400`` "missing field 'NAME'" (raise it)."""
    return BadRequest(f"missing field '{name}'")


def wrong_type(name: str, what: str) -> BadRequest:
    """``400`` "field 'NAME' must be WHAT" (raise it)."""
    return BadRequest(f"field '{name}' must be {what}")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _has_lone_surrogate(value: Any) -> bool:
    """True if a string in ``value`` (a key too) holds a surrogate code point."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if any("\ud800" <= c <= "\udfff" for c in v):
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def _parse_int(text: str) -> Any:
    # serde_json reads `-0` as the float -0.0, so the Rust SDK's `int` refuses it: alike here.
    return -0.0 if text == "-0" else int(text)


_I64 = range(-(2**63), 2**63)
# The field accessors are named as in the Rust SDK (`str`, `int`, `bool`), which hides the
# builtins inside the class body: annotations there use these names.
_str = str
_int = int
_bool = bool


class JsonBody:
    """A request body that is a JSON object, with typed field access whose errors are
    ready ``400 bad_request`` answers (:class:`~object_primitive.BadRequest`, raised)
    naming the field.

    A field whose value is ``null`` counts as absent. An empty body (or one of only
    whitespace) is the empty object.
    """

    __slots__ = ("fields",)

    def __init__(self, fields: Optional[dict[_str, Any]] = None) -> None:
        #: The object itself.
        self.fields: dict[_str, Any] = fields if fields is not None else {}

    @classmethod
    def parse(cls, req: Request) -> "JsonBody":
        """Parses ``req``'s body; anything but a JSON object (or an empty body) raises
        ``400`` "request body must be a JSON object". ``NaN`` and ``Infinity``, which are
        not JSON, and strings with a lone surrogate escape (``"\\ud800"``), which are not
        Unicode, are refused as the Rust SDK (serde_json) refuses them; ``-0`` is the float
        ``-0.0``, as in serde_json."""
        body = req.body
        if not body.strip(b" \t\r\n"):
            return cls()
        try:
            text = body.decode("utf-8")
            value = _json.loads(text, parse_constant=_no_constants, parse_int=_parse_int)
            if "\\u" in text and _has_lone_surrogate(value):
                value = None
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            raise BadRequest("request body must be a JSON object")
        return cls(value)

    @classmethod
    def try_parse(cls, req: Request) -> Optional["JsonBody"]:
        """Like :meth:`parse`, but ``None`` instead of raising for a body that is not a JSON
        object."""
        try:
            return cls.parse(req)
        except BadRequest:
            return None

    def get(self, name: _str) -> Any:
        """The value of field ``name``, or ``None`` if it is absent or ``null``."""
        return self.fields.get(name)

    def str(self, name: _str) -> Optional[_str]:
        """Field ``name`` as a string, if present; another type raises ``400`` "field
        'NAME' must be a string"."""
        v = self.fields.get(name)
        if v is None or isinstance(v, str):
            return v
        raise wrong_type(name, "a string")

    def required_str(self, name: _str) -> _str:
        """Field ``name`` as a string; absent raises ``400`` "missing field 'NAME'"."""
        v = self.str(name)
        if v is None:
            raise missing(name)
        return v

    def int(self, name: _str) -> Optional[_int]:
        """Field ``name`` as an integer, if present; anything else (a fraction, a string, a
        boolean, a number beyond 64 bits) raises ``400`` "field 'NAME' must be an
        integer"."""
        v = self.fields.get(name)
        if v is None:
            return None
        if type(v) is int and v in _I64:
            return v
        raise wrong_type(name, "an integer")

    def bool(self, name: _str) -> Optional[_bool]:
        """Field ``name`` as a boolean, if present; another type raises ``400`` "field
        'NAME' must be true or false"."""
        v = self.fields.get(name)
        if v is None or isinstance(v, bool):
            return v
        raise wrong_type(name, "true or false")

    def str_list(self, name: _str) -> Optional[list[_str]]:
        """Field ``name`` as a list of strings, if present; anything else raises ``400``
        "field 'NAME' must be a list of strings"."""
        v = self.fields.get(name)
        if v is None:
            return None
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return v
        raise wrong_type(name, "a list of strings")
