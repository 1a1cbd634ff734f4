"""Named alarms: ask the station to wake the object at a time, with a payload.

When an alarm is due the station calls the object's :meth:`Object.on_alarm
<object_primitive.Object.on_alarm>` in the object's turn, like a call. Setting and cancelling
are writes of the call: they commit with its batch, so a call that raises (answered
``500 exception``), traps or answers a status of 500 or more sets and cancels nothing. Alarms
are durable: they survive restarts, migration and failover, and an alarm due while its
station was down fires soon after it starts.

An object may have many alarms, one per name; setting a pending name moves it.

    >>> from object_primitive import alarms, runtime
    >>> due = runtime.now_ms() + 60_000
    >>> alarms.set("reminder-1", due, "call Ada")
    >>> alarms.set("reminder-2", due + 1)
    >>> [a.name for a in alarms.list()]
    ['reminder-1', 'reminder-2']
    >>> alarms.list()[0].payload
    b'call Ada'
    >>> alarms.cancel("reminder-2"), alarms.cancel("reminder-2")
    (True, False)

Outside a component the alarms live in the in-memory fake;
:func:`object_primitive.testing.fire_due_alarms` and ``testing.fire_alarm`` fire them through
an object's ``on_alarm``.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Union

from . import _sys

__all__ = ["Alarm", "set", "cancel", "list"]

_U64 = range(2**64)


@dataclass(frozen=True)
class Alarm:
    """One pending alarm, as returned by :func:`list`.

    ``Response.json`` writes it as ``{"name":..,"at_ms":..,"payload":..}``; the payload is
    ``bytes``, which JSON cannot hold, so convert it first.
    """

    #: The name it was set under (unique per object).
    name: str
    #: When it is due, milliseconds since the Unix epoch.
    at_ms: int
    #: The bytes given to :func:`set`, handed back to ``on_alarm``.
    payload: bytes


def set(name: str, at_ms: int, payload: Union[bytes, bytearray, memoryview, str] = b"") -> None:
    """Sets the alarm ``name`` to fire at ``at_ms`` (milliseconds since the Unix epoch; a time
    in the past fires as soon as possible) with ``payload`` (``bytes``, or a ``str`` stored as
    UTF-8). Setting a name that is pending moves it: there is one alarm per name.

    Raises ``TypeError``/``ValueError`` for arguments of the wrong type or an ``at_ms``
    outside 0 to 2**64 - 1. The station traps the call (nothing commits) if ``name`` is empty
    or longer than 256 bytes (UTF-8), or ``payload`` is larger than 64 KiB.
    """
    if not isinstance(name, str):
        raise TypeError(f"alarm name must be a str, not {type(name).__name__}")
    if isinstance(at_ms, bool) or not isinstance(at_ms, int):
        raise TypeError(f"at_ms must be an int, not {type(at_ms).__name__}")
    if at_ms not in _U64:
        raise ValueError(f"at_ms must be from 0 to 2**64 - 1, not {at_ms}")
    if isinstance(payload, str):
        data = payload.encode("utf-8")
    elif isinstance(payload, (bytes, bytearray, memoryview)):
        data = bytes(payload)
    else:
        raise TypeError(f"payload must be bytes or str, not {type(payload).__name__}")
    _sys.alarms_set(name, int(at_ms), data)


def cancel(name: str) -> bool:
    """Cancels the alarm ``name``; ``True`` if it was pending."""
    if not isinstance(name, str):
        raise TypeError(f"alarm name must be a str, not {type(name).__name__}")
    return _sys.alarms_cancel(name)


def list() -> builtins.list[Alarm]:
    """The pending alarms, soonest first (alarms due at the same time by name). They include
    the alarms set and cancelled earlier in this call."""
    return [Alarm(name, at_ms, bytes(payload)) for name, at_ms, payload in _sys.alarms_list()]
