"""Events pushed to the clients subscribed at ``GET /objects/{id}/events`` (Server-Sent
Events, optionally filtered with ``?topic=``).

Publishing is a write of the call: subscribers receive the event once the call's batch is
durable, in commit order; a call that raises (answered ``500 exception``), traps or answers a
status of 500 or more publishes nothing.

    >>> from object_primitive import events
    >>> events.publish("greeting", "hello")         # a str is sent as it is
    >>> events.publish("count", {"count": 3})      # anything else as compact JSON: {"count":3}

Outside a component the events are collected by the in-memory fake
(:func:`object_primitive.testing.published_events`).
"""

from __future__ import annotations

from typing import Any

from . import _sys
from ._http import dumps

__all__ = ["publish"]


def publish(topic: str, data: Any) -> None:
    """Publishes ``data`` under ``topic``. A ``str`` is sent as it is; any other value is
    encoded as compact JSON, byte for byte as the Rust SDK's ``events::publish_json`` writes
    it (:func:`object_primitive.dumps`; ``TypeError``/``ValueError`` if it is not JSON).

    The station traps the call (nothing commits) if ``topic`` is empty, longer than 128 bytes
    (UTF-8), holds a control character or starts with ``op.`` (reserved for the host's own
    events), if the data is larger than 64 KiB, or if the call publishes more than 1,000
    events.
    """
    if not isinstance(topic, str):
        raise TypeError(f"event topic must be a str, not {type(topic).__name__}")
    _sys.events_publish(topic, data if isinstance(data, str) else dumps(data))
