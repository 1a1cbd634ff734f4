"""Controls for the in-memory fake that backs :mod:`~object_primitive.state`,
:mod:`~object_primitive.log` and :mod:`~object_primitive.runtime` outside a component, so
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

Writes apply immediately (there is no call to commit or discard). The fake is global to the
process: call :func:`reset` between tests.
"""

from __future__ import annotations

from typing import Union

from . import _fake, _sys
from ._http import Pairs, Request
from ._object import Object, dispatch
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
]


def _require_fake() -> None:
    if _sys.IN_COMPONENT:
        raise RuntimeError("object_primitive.testing is for tests outside a component")


def reset() -> None:
    """Clears the fake: state, history, log lines, registered objects, and the object and
    station ids (back to ``test-object`` and ``test-station``)."""
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
