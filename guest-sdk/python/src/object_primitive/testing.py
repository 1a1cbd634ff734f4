"""Controls for the in-memory fake that backs :mod:`~object_primitive.state`,
:mod:`~object_primitive.log`, :mod:`~object_primitive.runtime`,
:mod:`~object_primitive.alarms` and :mod:`~object_primitive.events` outside a component, so
objects can be tested with plain Python::

    import unittest
    from object_primitive import Request, dispatch, testing
    from app import Counter

    class CounterTest(unittest.TestCase):
        def setUp(self):
            testing.reset()

        def test_post_counts(self):
            dispatch(Counter, Request("POST", "/"))
            self.assertEqual(testing.state(), {"count": "1"})

Writes apply immediately: there is no call to commit or discard, so state writes, alarms set
or cancelled and events published by a handler that answers 500 (or raises) are kept, unlike
on a station. Alarms do not fire by themselves: :func:`fire_due_alarms` and :func:`fire_alarm`
fire them through the object's :meth:`~object_primitive.Object.on_alarm`, and
:func:`set_now_ms` freezes the clock that :func:`runtime.now_ms
<object_primitive.runtime.now_ms>` reads. The fake is global to the process: call
:func:`reset` between tests.
"""

from __future__ import annotations

from typing import Optional, Union

from . import _fake, _sys
from ._http import Pairs, Request
from ._object import Object, _Instance, dispatch
from .log import Level

__all__ = [
    "reset",
    "state",
    "logs",
    "take_logs",
    "set_object_id",
    "set_station_id",
    "register_object",
    "unregister_object",
    "set_now_ms",
    "fire_alarm",
    "fire_due_alarms",
    "published_events",
    "take_published_events",
]


def _require_fake() -> None:
    if _sys.IN_COMPONENT:
        raise RuntimeError("object_primitive.testing is for tests outside a component")


def reset() -> None:
    """Clears the fake: state, history, log lines, registered objects, pending alarms,
    published events, the frozen clock (back to the wall clock), and the object and station
    ids (back to ``test-object`` and ``test-station``)."""
    _require_fake()
    _fake.reset()


def state() -> dict[str, str]:
    """A copy of the current state."""
    return dict(_fake.FAKE.state)


def logs() -> list[tuple[Level, str]]:
    """The log lines written so far, oldest first."""
    return [(Level(level), message) for level, message in _fake.FAKE.logs]


def take_logs() -> list[tuple[Level, str]]:
    """The log lines written so far, oldest first, and forgets them."""
    out = logs()
    _fake.FAKE.logs.clear()
    return out


def set_object_id(id: str) -> None:
    """Sets what :func:`runtime.object_id` returns."""
    _fake.FAKE.object_id = id


def set_station_id(id: str) -> None:
    """Sets what :func:`runtime.station_id` returns."""
    _fake.FAKE.station_id = id


def register_object(id: str, obj: Union[Object, type[Object]]) -> None:
    """Makes ``runtime.call(id, ...)`` reach ``obj`` (through :func:`dispatch`). It shares
    this fake's state, unlike a real object. Unregistered ids fail with ``unavailable``."""
    _require_fake()

    def target(
        method: str, path: str, query: Pairs, headers: Pairs, body: bytes
    ) -> tuple[int, Pairs, bytes]:
        r = dispatch(obj, Request._raw(method, path, query, headers, body))
        return r.status, r.headers, r.body

    _fake.FAKE.objects[id] = target


def unregister_object(id: str) -> None:
    """Makes ``id`` unreachable again (as if it were undeployed): ``runtime.call`` fails
    with ``unavailable``."""
    _require_fake()
    _fake.FAKE.objects.pop(id, None)


def set_now_ms(ms: int) -> None:
    """Freezes the clock: :func:`runtime.now_ms <object_primitive.runtime.now_ms>` (and the
    time of state versions) returns ``ms`` until the next ``set_now_ms``,
    :func:`fire_due_alarms` or :func:`reset`."""
    _require_fake()
    if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
        raise ValueError(f"set_now_ms takes milliseconds since the Unix epoch, not {ms!r}")
    _fake.FAKE.now_ms = ms


def _instance(obj: Union[Object, type[Object]]) -> _Instance:
    if isinstance(obj, type):
        return _Instance(obj)
    instance = _Instance(type(obj))
    instance.obj = obj
    return instance


def fire_alarm(obj: Union[Object, type[Object]], name: str) -> Optional[str]:
    """Fires the pending alarm ``name`` now, whatever its time, as the station would: it calls
    ``obj.on_alarm(name, payload, at_ms)`` (on a fresh instance if ``obj`` is a class). If
    that returns, the alarm is removed, unless ``on_alarm`` set it again (then the new one
    stays pending), and the result is ``None``. If it raises, the alarm stays pending (a
    station would retry it with backoff), the traceback is logged and the result is the
    message ``fire`` would answer ``err`` with (``"ExceptionType: message"``).

    Raises ``KeyError`` if no alarm ``name`` is pending::

        >>> alarms.set("a", 0, b"up")
        >>> testing.fire_alarm(Wake, "a")        # None: it fired and was removed
        >>> alarms.list()
        []
    """
    _require_fake()
    pending = _fake.FAKE.alarms.get(name)
    if pending is None:
        raise KeyError(name)
    at_ms, payload, generation = pending
    error = _instance(obj).fire(name, payload, at_ms)
    if error is None:
        current = _fake.FAKE.alarms.get(name)
        if current is not None and current[2] == generation:
            del _fake.FAKE.alarms[name]
    return error


def fire_due_alarms(
    obj: Union[Object, type[Object]], now_ms: int
) -> list[tuple[str, Optional[str]]]:
    """Sets the clock to ``now_ms`` (as :func:`set_now_ms`) and fires, soonest first, every
    alarm due at or before it, each as :func:`fire_alarm` does. Returns each alarm's name and
    the result of :func:`fire_alarm` (``None``, or the error), in firing order.

    Only the alarms pending and due when it starts fire (an alarm that an earlier firing
    cancelled or moved is skipped); one that ``on_alarm`` sets due again fires on the next
    call, as an alarm that failed does.
    """
    set_now_ms(now_ms)
    due = [
        (name, _fake.FAKE.alarms[name][2])
        for name, at_ms, _ in _fake.alarms_list()
        if at_ms <= now_ms
    ]
    fired: list[tuple[str, Optional[str]]] = []
    for name, generation in due:
        pending = _fake.FAKE.alarms.get(name)
        if pending is not None and pending[2] == generation:
            fired.append((name, fire_alarm(obj, name)))
    return fired


def published_events() -> list[tuple[str, str]]:
    """The events published so far, oldest first: ``(topic, data)``."""
    return list(_fake.FAKE.events)


def take_published_events() -> list[tuple[str, str]]:
    """The events published so far, oldest first, and forgets them."""
    out = published_events()
    _fake.FAKE.events.clear()
    return out
