"""The backend behind :mod:`state`, :mod:`log`, :mod:`runtime`, :mod:`alarms` and
:mod:`events`.

Inside a component (CPython built for WASI by componentize-py, ``sys.platform == "wasi"``)
the functions call the component's imports through the ``wit_world`` bindings that
componentize-py generates from ``wit/object.wit``. Anywhere else they use the in-memory
fake in :mod:`object_primitive._fake`, so objects can be unit-tested with plain Python.

Everything here is private: use :mod:`object_primitive.state`, ``.log``, ``.runtime``,
``.alarms`` and ``.events``.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

#: True inside a component, where the station's imports are available.
IN_COMPONENT: bool = sys.platform == "wasi"

if sys.platform == "wasi":  # written out, so type checkers pick the branch by platform
    from componentize_py_types import Err as _Err
    from wit_world.imports import alarms as _wit_alarms
    from wit_world.imports import events as _wit_events
    from wit_world.imports import log as _wit_log
    from wit_world.imports import runtime as _wit_runtime
    from wit_world.imports import state as _wit_state
    from wit_world.imports import types as _types

    state_get = _wit_state.get
    state_set = _wit_state.set
    state_delete = _wit_state.delete
    state_keys = _wit_state.keys
    state_increment = _wit_state.increment
    state_compare_and_swap = _wit_state.compare_and_swap

    def state_history(key: str, limit: int) -> list[tuple[int, int, Optional[str]]]:
        return [(v.seq, v.at_ms, v.value) for v in _wit_state.history(key, limit)]

    _LEVELS = (
        _types.Level.TRACE,
        _types.Level.DEBUG,
        _types.Level.INFO,
        _types.Level.WARN,
        _types.Level.ERROR,
    )

    def log(level: int, message: str) -> None:
        _wit_log.log(_LEVELS[level], message)

    object_id = _wit_runtime.object_id
    station_id = _wit_runtime.station_id
    now_ms = _wit_runtime.now_ms

    _CALL_ERROR_KINDS = {
        _types.CallError_NotFound: "not-found",
        _types.CallError_Unavailable: "unavailable",
        _types.CallError_Timeout: "timeout",
        _types.CallError_Trapped: "trapped",
        _types.CallError_LoopDetected: "loop-detected",
        _types.CallError_Invalid: "invalid",
    }

    def call(
        id: str,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Calls another object; raises ``(kind, message)`` wrapped in ``CallFailed``."""
        try:
            r = _wit_runtime.call_object(
                id, _types.Request(method, path, query, headers, body)
            )
        except _Err as e:
            err: Any = e.value
            kind = _CALL_ERROR_KINDS.get(type(err), "invalid")
            raise CallFailed(kind, getattr(err, "value", "") or "") from None
        return r.status, r.headers, r.body

    alarms_set = _wit_alarms.set
    alarms_cancel = _wit_alarms.cancel

    def alarms_list() -> list[tuple[str, int, bytes]]:
        return [(a.name, a.at_ms, a.payload) for a in _wit_alarms.list()]

    events_publish = _wit_events.publish

    def handler_base() -> type:
        """The class componentize-py expects the app's ``Handler`` to derive from."""
        from wit_world import exports

        return exports.Handler

    def alarm_handler_base() -> type:
        """The class componentize-py expects the app's ``AlarmHandler`` to derive from."""
        from wit_world import exports

        return exports.AlarmHandler

    def fire_error(message: str) -> BaseException:
        """What ``AlarmHandler.fire`` raises to return ``err(message)``."""
        return _Err(message)

    response_to_wit = _types.Response

else:
    from . import _fake

    state_get = _fake.state_get
    state_set = _fake.state_set
    state_delete = _fake.state_delete
    state_keys = _fake.state_keys
    state_increment = _fake.state_increment
    state_compare_and_swap = _fake.state_compare_and_swap
    state_history = _fake.state_history
    log = _fake.log
    object_id = _fake.object_id
    station_id = _fake.station_id
    now_ms = _fake.now_ms
    alarms_set = _fake.alarms_set
    alarms_cancel = _fake.alarms_cancel
    alarms_list = _fake.alarms_list
    events_publish = _fake.events_publish

    def call(
        id: str,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        return _fake.call(id, method, path, query, headers, body)

    def handler_base() -> type:
        return object

    def alarm_handler_base() -> type:
        return object

    def fire_error(message: str) -> BaseException:
        return FireFailed(message)

    response_to_wit = _fake.WitResponse


class CallFailed(Exception):
    """Raised by :func:`call` with the WIT ``call-error`` kind and message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(kind, message)
        self.kind = kind
        self.message = message


class FireFailed(Exception):
    """Outside a component, what ``AlarmHandler.fire`` raises to return ``err(message)``
    (inside one it raises componentize-py's ``Err``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.value = message
