"""The native backend: an in-memory fake of the station, so objects and this package can be
tested with plain Python (``python -m unittest``). Controlled through
:mod:`object_primitive.testing`.

Writes apply immediately (there is no call to commit or discard), like the Rust SDK's fake.
"""

from __future__ import annotations

import bisect
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass
class WitResponse:
    """Stands in for the generated ``wit_world.imports.types.Response`` natively."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Fake:
    state: dict[str, str] = field(default_factory=dict)
    #: Every write of each key, oldest first: (seq, at_ms, value or None).
    history: dict[str, list[tuple[int, int, Optional[str]]]] = field(default_factory=dict)
    seq: int = 0
    logs: list[tuple[int, str]] = field(default_factory=list)
    object_id: str = "test-object"
    station_id: str = "test-station"
    #: Objects reachable with ``runtime.call`` in tests:
    #: id -> function(method, path, query, headers, body) -> (status, headers, body).
    objects: dict[str, Callable[..., tuple[int, list[tuple[str, str]], bytes]]] = field(
        default_factory=dict
    )

    def write(self, key: str, value: Optional[str]) -> None:
        self.seq += 1
        if value is None:
            self.state.pop(key, None)
        else:
            self.state[key] = value
        self.history.setdefault(key, []).append((self.seq, now_ms(), value))


FAKE = Fake()


def reset() -> None:
    global FAKE
    FAKE = Fake()


def _check_str(what: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")


def state_get(key: str) -> Optional[str]:
    _check_str("key", key)
    return FAKE.state.get(key)


def state_set(key: str, value: str) -> None:
    _check_str("key", key)
    _check_str("value", value)
    FAKE.write(key, value)


def state_delete(key: str) -> bool:
    _check_str("key", key)
    existed = key in FAKE.state
    if existed:
        FAKE.write(key, None)
    return existed


def state_keys(prefix: str) -> list[str]:
    _check_str("prefix", prefix)
    keys = sorted(FAKE.state)
    start = bisect.bisect_left(keys, prefix)
    out = []
    for k in keys[start:]:
        if not k.startswith(prefix):
            break
        out.append(k)
    return out


_DECIMAL = re.compile(r"[+-]?[0-9]+")


class Trap(RuntimeError):
    """What the fake raises where the station would trap the call."""


def state_increment(key: str, delta: int) -> int:
    _check_str("key", key)
    current = FAKE.state.get(key)
    if current is None:
        n = 0
    else:
        # Like Rust's i64::from_str (what the station uses): an optional sign, ASCII digits.
        if not _DECIMAL.fullmatch(current):
            raise Trap(
                f"state.increment: value of {key!r} is not a decimal integer: {current!r}"
            )
        n = int(current)
    new = n + delta
    if not -(2**63) <= new < 2**63:
        raise Trap(f"state.increment: {n} + {delta} overflows")
    FAKE.write(key, str(new))
    return new


def state_compare_and_swap(key: str, expected: Optional[str], new: Optional[str]) -> bool:
    _check_str("key", key)
    if FAKE.state.get(key) != expected:
        return False
    if new is not None or key in FAKE.state:
        FAKE.write(key, new)
    return True


def state_history(key: str, limit: int) -> list[tuple[int, int, Optional[str]]]:
    _check_str("key", key)
    return list(reversed(FAKE.history.get(key, [])))[:limit]


def log(level: int, message: str) -> None:
    FAKE.logs.append((level, message))


def object_id() -> str:
    return FAKE.object_id


def station_id() -> str:
    return FAKE.station_id


def now_ms() -> int:
    return int(time.time() * 1000)


def call(
    id: str,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    headers: list[tuple[str, str]],
    body: bytes,
) -> tuple[int, list[tuple[str, str]], bytes]:
    from ._sys import CallFailed

    target = FAKE.objects.get(id)
    if target is None:
        raise CallFailed(
            "unavailable",
            f"cannot call object {id!r}: runtime.call needs a station "
            "(native test fake; see testing.register_object)",
        )
    return target(method, path, query, headers, body)
