"""Object Primitive guest SDK for Python.

An *object* is a WebAssembly component that a station serves under ``/objects/{id}``. It
answers HTTP-shaped requests, one call at a time, and keeps whatever must survive in
durable, versioned key/value :mod:`state`. Everything else in the instance may be thrown
away between calls.

Subclass :class:`Object`, define the methods it answers (the others answer ``405``) and
export it as ``Handler``, the class componentize-py looks for (:func:`export` defines the
``AlarmHandler`` it also needs beside it)::

    from object_primitive import Object, Request, Response, export, state

    class Counter(Object):
        def get(self, req: Request) -> Response:
            return Response.json({"count": state.get_json("count", 0)})

        def post(self, req: Request) -> Response:
            return Response.json({"count": state.increment("count")})

    Handler = export(Counter)

Build it into a component with ``scripts/build-python.sh app.py -o counter.wasm`` (which
runs ``componentize-py -d wit -w object componentize app -p DIR -p guest-sdk/python/src``)
and deploy the ``.wasm`` file with ``host deploy``.

What an object can use:

- :class:`Request` / :class:`Response`: the call and its answer, with helpers for paths,
  query parameters, headers, JSON and errors; :class:`HTTPError`, :class:`BadRequest` and
  :class:`NotFound` answer with an error when raised.
- :mod:`state`: the object's durable key/value store. Writes made during a call commit
  atomically when the handler answers with a status below 500; an uncaught exception, a
  trap, a timeout or a status of 500 or more discards them all.
- :mod:`log`: lines in the object's log (``log.info("...")``), stored by the station.
- :mod:`runtime`: the object's id, the station's id, the clock, and :func:`runtime.call`
  to call other objects (raising :class:`CallError`).
- :mod:`alarms`: named alarms that wake the object at a time through
  :meth:`Object.on_alarm`; set and cancelled with the call's writes.
- :mod:`events`: events pushed to clients subscribed at ``GET /objects/{id}/events``,
  delivered once the call's writes are durable.
- :mod:`route`: a router from method and path pattern to handler, and typed access to
  JSON object bodies (:class:`route.JsonBody`), answering ``400``/``404``/``405`` alike
  with the Rust SDK.
- :mod:`crypto`: SHA-256, HMAC, PBKDF2 for passwords, a constant-time comparison, secure
  random bytes (the host's ``wasi:random``), base64 and hex.

The component is built against the WIT world ``object-primitive:object/object@0.2.0``
(``wit/object.wit``): it imports ``state``, ``log``, ``runtime``, ``alarms`` and ``events``
and exports ``handler`` and ``alarm-handler``.

Outside a component (plain CPython), ``state``, ``log``, ``runtime``, ``alarms`` and
``events`` are backed by an in-memory fake, so handlers can be unit-tested directly: see
:mod:`object_primitive.testing` and :func:`dispatch`.
"""

from __future__ import annotations

from . import alarms, crypto, events, log, route, runtime, state
from ._http import BadRequest, HTTPError, NotFound, Request, Response, dumps
from ._object import Object, dispatch, export
from .alarms import Alarm
from .log import Level
from .runtime import CallError
from .state import Version

__version__ = "0.1.0"

__all__ = [
    "Object",
    "Request",
    "Response",
    "HTTPError",
    "BadRequest",
    "NotFound",
    "CallError",
    "Version",
    "Alarm",
    "Level",
    "export",
    "dispatch",
    "dumps",
    "state",
    "log",
    "runtime",
    "alarms",
    "events",
    "route",
    "crypto",
]
