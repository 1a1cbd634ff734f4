"""The object's durable, versioned key/value state.

Keys and values are strings. Writes made during one call are buffered by the station and
commit atomically when the handler answers with a status below 500; an uncaught exception
(answered ``500 exception``), a trap, a timeout or any status of 500 or more discards them
all. Reads see the call's own earlier writes.

    >>> from object_primitive import state
    >>> state.set("greeting", "hello")
    >>> state.get("greeting")
    'hello'
    >>> state.increment("visits", 2)
    2
    >>> state.compare_and_swap("greeting", "hello", "hi")
    True
    >>> state.keys()
    ['greeting', 'visits']
    >>> state.history("greeting")[0].value
    'hi'
    >>> state.set_json("profile", {"name": "Ada"}); state.get_json("profile")
    {'name': 'Ada'}
    >>> state.delete("greeting")
    True
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass
from typing import Any, Optional

from . import _sys
from ._http import dumps

__all__ = [
    "Version",
    "get",
    "set",
    "delete",
    "keys",
    "increment",
    "compare_and_swap",
    "history",
    "get_json",
    "set_json",
]


@dataclass(frozen=True)
class Version:
    """One past value of a state key, as returned by :func:`history`.

    ``Response.json`` writes it as ``{"seq":..,"at_ms":..,"value":..|null}``.
    """

    #: The commit sequence number that wrote this value (per object, increasing).
    seq: int
    #: Commit time, milliseconds since the Unix epoch.
    at_ms: int
    #: The value written, or ``None`` when the key was deleted.
    value: Optional[str]


def _check(what: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(
            f"state {what} must be a str, not {type(value).__name__}"
            + (" (use state.set_json for other values)" if what == "value" else "")
        )


def get(key: str) -> Optional[str]:
    """The current value of ``key``, or ``None`` if it is absent."""
    _check("key", key)
    return _sys.state_get(key)


def set(key: str, value: str) -> None:
    """Sets ``key`` to ``value`` (a ``str``; see :func:`set_json` for anything else)."""
    _check("key", key)
    _check("value", value)
    _sys.state_set(key, value)


def delete(key: str) -> bool:
    """Deletes ``key``; ``True`` if it existed."""
    _check("key", key)
    return _sys.state_delete(key)


def keys(prefix: str = "") -> list[str]:
    """Every existing key that starts with ``prefix``, sorted (all keys by default)."""
    _check("prefix", prefix)
    return _sys.state_keys(prefix)


def increment(key: str, delta: int = 1) -> int:
    """Adds ``delta`` to the integer stored at ``key`` (absent counts as 0) and returns the
    new value.

    The station traps the call (``500 trapped``, nothing commits) if the current value is
    not a decimal integer or the sum leaves the signed 64-bit range.
    """
    _check("key", key)
    if not isinstance(delta, int) or isinstance(delta, bool):
        raise TypeError(f"delta must be an int, not {type(delta).__name__}")
    if not -(2**63) <= delta < 2**63:
        raise OverflowError(f"delta {delta} is outside the signed 64-bit range")
    return _sys.state_increment(key, delta)


def compare_and_swap(key: str, expected: Optional[str], new: Optional[str]) -> bool:
    """Replaces the value of ``key`` with ``new`` (``None`` deletes it) only if it currently
    equals ``expected`` (``None`` = absent). ``True`` if the swap happened."""
    _check("key", key)
    if expected is not None:
        _check("value", expected)
    if new is not None:
        _check("value", new)
    return _sys.state_compare_and_swap(key, expected, new)


def history(key: str, limit: int = 16) -> list[Version]:
    """Up to ``limit`` committed versions of ``key``, newest first.

    Deletes appear as versions whose value is ``None``. Writes of the current call are not
    committed yet, so they do not appear.
    """
    _check("key", key)
    limit = max(0, min(int(limit), 2**32 - 1))
    return [Version(seq, at_ms, value) for seq, at_ms, value in _sys.state_history(key, limit)]


def get_json(key: str, default: Any = None) -> Any:
    """The value of ``key`` parsed as JSON; ``default`` if the key is absent or its value is
    not valid JSON."""
    raw = get(key)
    if raw is None:
        return default
    try:
        return _json.loads(raw)
    except ValueError:
        return default


def set_json(key: str, value: Any) -> None:
    """Sets ``key`` to ``value`` written as compact JSON.

    Raises ``TypeError``/``ValueError`` if ``value`` cannot be written as JSON (a ``set``,
    ``NaN``, ...); uncaught, that answers ``500 exception`` and nothing of the call commits.
    """
    set(key, dumps(value))
