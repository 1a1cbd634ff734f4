"""The native backend: an in-memory fake of the station, so objects and this package can be
tested with plain Python (``python -m unittest``). Controlled through
:mod:`object_primitive.testing`.

Writes apply immediately (there is no call to commit or discard), like the Rust SDK's fake:
state writes, alarms set or cancelled and events published alike.
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
    #: Pending alarms: name -> (at_ms, payload, generation). A firing removes an alarm only
    #: if its generation (which ``alarms.set`` put it there) is unchanged, as the station does.
    alarms: dict[str, tuple[int, bytes, int]] = field(default_factory=dict)
    alarm_generation: int = 0
    #: Every event published, oldest first: (topic, data).
    events: list[tuple[str, str]] = field(default_factory=list)
    #: The frozen clock set by ``testing.set_now_ms``, or ``None`` for the wall clock.
    now_ms: Optional[int] = None

    def write(self, key: str, value: Optional[str]) -> None:
        self.seq += 1
        if value is None:
            self.state.pop(key, None)
        else:
            self.state[key] = value
        self.history.setdefault(key, []).append((self.seq, now_ms(), value))


# The station's limits (host/src/runtime/host_alarms.rs): the fake traps alike.
MAX_ALARM_NAME_BYTES = 256
MAX_ALARM_PAYLOAD_BYTES = 64 << 10
MAX_TOPIC_BYTES = 128
MAX_EVENT_DATA_BYTES = 64 << 10


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
    if FAKE.now_ms is not None:
        return FAKE.now_ms
    return int(time.time() * 1000)


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def alarms_set(name: str, at_ms: int, payload: bytes) -> None:
    n = _utf8_len(name)
    if not 1 <= n <= MAX_ALARM_NAME_BYTES:
        raise Trap(
            f"alarms.set: alarm name is {n} bytes; it must be 1 to {MAX_ALARM_NAME_BYTES}"
        )
    if len(payload) > MAX_ALARM_PAYLOAD_BYTES:
        raise Trap(
            f"alarms.set: the payload of alarm {name!r} is {len(payload)} bytes; the limit is "
            f"{MAX_ALARM_PAYLOAD_BYTES}"
        )
    FAKE.alarm_generation += 1
    FAKE.alarms[name] = (at_ms, payload, FAKE.alarm_generation)


def alarms_cancel(name: str) -> bool:
    return FAKE.alarms.pop(name, None) is not None


def alarms_list() -> list[tuple[str, int, bytes]]:
    """The pending alarms, soonest first, by name within a time."""
    return sorted(
        ((name, at_ms, payload) for name, (at_ms, payload, _) in FAKE.alarms.items()),
        key=lambda a: (a[1], a[0]),
    )


def events_publish(topic: str, data: str) -> None:
    if topic.startswith("op."):
        raise Trap(
            f'events.publish: event topic {topic!r} starts with "op.", which the host reserves'
        )
    n = _utf8_len(topic)
    if not 1 <= n <= MAX_TOPIC_BYTES:
        raise Trap(
            f"events.publish: event topic is {n} bytes; it must be 1 to {MAX_TOPIC_BYTES}"
        )
    # Rust's `char::is_control` (what the station checks): the C0 and C1 controls and DEL.
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in topic):
        raise Trap(f"events.publish: event topic {topic!r} holds a control character")
    size = _utf8_len(data)
    if size > MAX_EVENT_DATA_BYTES:
        raise Trap(
            f"events.publish: the data is {size} bytes; the limit is {MAX_EVENT_DATA_BYTES}"
        )
    FAKE.events.append((topic, data))


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
