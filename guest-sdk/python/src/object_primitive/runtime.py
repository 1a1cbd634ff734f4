"""Facts about the running call, and calls to other objects.

    >>> from object_primitive import CallError, Request, runtime
    >>> try:
    ...     answer = runtime.call("counter", Request("POST", "/"))
    ...     print("counter answered", answer.status, answer.json_body())
    ... except CallError as e:
    ...     print("call failed:", e.kind, e.message)
"""

from __future__ import annotations

from typing import Optional

from . import _sys
from ._http import Request, Response

__all__ = ["CallError", "object_id", "station_id", "now_ms", "call"]


class CallError(Exception):
    """Why :func:`call` did not produce a response.

    :attr:`kind` is the WIT ``call-error`` case: ``not-found`` (no such object),
    ``unavailable`` (no station can run it now), ``timeout`` (no answer before the caller's
    deadline), ``trapped`` (the callee trapped; nothing of its call committed),
    ``loop-detected`` (the call would re-enter an object already on this call chain) or
    ``invalid`` (refused before it ran: bad object id, bad method). ``str(e)`` is
    ``"kind: message"``.
    """

    NOT_FOUND = "not-found"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    TRAPPED = "trapped"
    LOOP_DETECTED = "loop-detected"
    INVALID = "invalid"

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(kind, message)
        #: The WIT case name, e.g. ``"not-found"``.
        self.kind = kind
        #: What the station said (empty for ``timeout``).
        self.message = message

    def __str__(self) -> str:
        if self.kind == CallError.TIMEOUT:
            return "timeout: the callee did not answer in time"
        return f"{self.kind}: {self.message}"


def object_id() -> str:
    """The id this object is deployed under."""
    return _sys.object_id()


def station_id() -> str:
    """The id of the station running this call."""
    return _sys.station_id()


def now_ms() -> int:
    """Wall-clock time, milliseconds since the Unix epoch."""
    return _sys.now_ms()


def call(id: str, request: Optional[Request] = None) -> Response:
    """Calls object ``id`` with ``request`` (default ``GET /``) and returns its response,
    whatever its status; raises :class:`CallError` if there is none.

    The callee runs in its own turn and commits its own writes; the caller's remaining
    deadline applies. Calling an object already on the current call chain raises
    ``CallError`` with kind ``loop-detected`` instead of deadlocking.
    """
    if request is None:
        request = Request("GET", "/")
    try:
        status, headers, body = _sys.call(
            id,
            request.method,
            request.path,
            list(request.query_pairs),
            list(request.headers),
            request.body,
        )
    except _sys.CallFailed as e:
        raise CallError(e.kind, e.message) from None
    return Response(status, headers, body)
