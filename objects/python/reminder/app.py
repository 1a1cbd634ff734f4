"""``reminder``: notes that fire by themselves, through the SDK's alarms. The routes are in
this directory's README; it answers byte for byte as the Rust ``reminder``
(``objects/rust/reminder``).

A pending reminder is an alarm and nothing else: its name is the reminder's id, its time the
due time and its payload the note (UTF-8), so ``GET /`` lists them with ``alarms.list()`` and
``DELETE /{id}`` is ``alarms.cancel``. When one fires, ``on_alarm`` stores it as fired; the
last ``KEEP_FIRED`` are kept.

State: ``next_id``, the count of reminders ever set (ids are ``r1``, ``r2``, ...);
``fired_seq``, the count of reminders ever fired; ``fired:<seq, 20 digits>`` = the fired
reminder ``{"id","note","due_ms","fired_at_ms"}``.
"""

from __future__ import annotations

from object_primitive import BadRequest, NotFound, Object, Request, Response, alarms, export
from object_primitive import runtime, state
from object_primitive.route import JsonBody, Params, Router, missing, wrong_type

#: The longest wait a reminder may be set for: 31 days, in milliseconds.
MAX_IN_MS = 31 * 24 * 60 * 60 * 1000
#: The longest note, in characters (Unicode scalar values).
MAX_NOTE_CHARS = 1000
#: Fired reminders kept; older ones are deleted.
KEEP_FIRED = 100

router = Router()


def fired_key(seq: int) -> str:
    return f"fired:{seq:020}"


def in_ms(body: JsonBody) -> int:
    """``in_ms`` of the body: an integer from 0 to ``MAX_IN_MS``."""
    value = body.int("in_ms")
    if value is None:
        raise missing("in_ms")
    if not 0 <= value <= MAX_IN_MS:
        raise wrong_type("in_ms", f"an integer from 0 to {MAX_IN_MS} (31 days)")
    return value


def note(body: JsonBody) -> str:
    """``note`` of the body: a string of at most ``MAX_NOTE_CHARS`` characters, ``""`` if
    absent."""
    text = body.str("note") or ""
    if len(text) > MAX_NOTE_CHARS:
        raise BadRequest(f"field 'note' must be at most {MAX_NOTE_CHARS} characters")
    return text


@router.get("/")
def listing(req: Request, params: Params) -> Response:
    pending = [
        {"id": a.name, "note": a.payload.decode("utf-8", "replace"), "due_ms": a.at_ms}
        for a in alarms.list()
    ]
    stored = (state.get_json(key) for key in state.keys("fired:"))
    fired = [f for f in stored if f is not None]
    return Response.json({"pending": pending, "fired": fired})


@router.post("/")
def create(req: Request, params: Params) -> Response:
    body = JsonBody.parse(req)
    wait = in_ms(body)
    text = note(body)
    id = f"r{state.increment('next_id')}"
    alarms.set(id, runtime.now_ms() + wait, text)
    return Response.json({"id": id}, status=201)


@router.delete("/{id}")
def cancel(req: Request, params: Params) -> Response:
    id = params["id"]
    if not alarms.cancel(id):
        raise NotFound(f"no pending reminder with id {id}")
    return Response.json({"id": id, "cancelled": True})


class Reminder(Object):
    def get(self, req: Request) -> Response:
        return router.handle(req)

    def post(self, req: Request) -> Response:
        return router.handle(req)

    def put(self, req: Request) -> Response:
        return router.handle(req)

    def delete(self, req: Request) -> Response:
        return router.handle(req)

    def patch(self, req: Request) -> Response:
        return router.handle(req)

    def on_alarm(self, name: str, payload: bytes, scheduled_ms: int) -> None:
        """Moves the reminder ``name`` to the fired ones, with the time it fired."""
        seq = state.increment("fired_seq")
        fired = {
            "id": name,
            "note": payload.decode("utf-8", "replace"),
            "due_ms": scheduled_ms,
            "fired_at_ms": runtime.now_ms(),
        }
        state.set_json(fired_key(seq), fired)
        if seq > KEEP_FIRED:
            state.delete(fired_key(seq - KEEP_FIRED))


Handler = export(Reminder)
