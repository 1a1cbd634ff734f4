"""``chat``: rooms with messages, polled by timestamp. The behaviour is the contract in
``EXAMPLE-APPS.md`` §3; the routes are in this directory's README. It answers byte for byte
as the Rust ``chat`` (``objects/rust/chat``).

Every route resolves the caller's token through ``runtime.call("auth", GET /)`` exactly as
the blog does, and the sender is always that user.

State, per room: ``member:<room>:<username>`` = join time (ms); ``seq:<room>``, the count of
messages ever stored; ``msg:<room>:<seq, 20 digits>`` = the ChatMessage
``{"message","timestamp","user_name"}``; ``last_ts:<room>``, the last timestamp given. The
last ``KEEP`` messages of a room are kept. Each stored message is also published as an event
whose topic is the room, so clients can subscribe instead of polling.
"""

from __future__ import annotations

from typing import Any, Optional

from object_primitive import (
    CallError,
    HTTPError,
    Object,
    Request,
    Response,
    events,
    export,
    log,
    runtime,
    state,
)
from object_primitive.route import JsonBody, Params, Router

#: The rooms, in ChatRoomMgr's order.
ROOMS = ["General", "Technology", "Crypto", "Sports", "Movies"]
KEEP = 1000
RECENT = 50
MAX_MESSAGE = 2000
MAX_LIMIT = 100

#: What Rust's ``str::trim`` trims (Unicode White_Space), so both chats agree on "empty".
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def token_of(req: Request, body: Optional[JsonBody]) -> Optional[str]:
    """The ``Authorization: Bearer`` header, else the body's ``token`` (when the body is a
    JSON object), else ``?token=``."""
    token = req.bearer_token()
    if token:
        return token
    if body is not None:
        value = body.get("token")
        if isinstance(value, str) and value:
            return value
    return req.query("token") or None


def unavailable(why: str) -> HTTPError:
    log.warn(f"auth unavailable: {why}")
    return HTTPError(
        503, "auth_unavailable", "The auth object could not check the token; try again later"
    )


def user_of(req: Request, body: Optional[JsonBody]) -> str:
    """The username ``auth`` gives for the request's token; fails closed."""
    token = token_of(req, body)
    if token is None:
        raise HTTPError(401, "token_required", "Authentication token required")
    ask = Request("GET", "/", headers=[("authorization", f"Bearer {token}")])
    try:
        r = runtime.call("auth", ask)
    except CallError as e:
        raise unavailable(e.kind) from None
    if r.status == 200:
        try:
            user = r.json_body().get("user")
            name = user.get("username") if isinstance(user, dict) else None
        except (ValueError, AttributeError):
            name = None
        if isinstance(name, str):
            return name
        raise unavailable("a 200 answer without user.username")
    if r.status == 401:
        raise HTTPError(401, "invalid_token", "Invalid or expired token")
    raise unavailable(f"status {r.status}")


def room_of(params: Params) -> str:
    name = params.get("room", "")
    if name not in ROOMS:
        raise HTTPError(404, "not_found", f"Room not found: {name}")
    return name


def member_key(room: str, user: str) -> str:
    return f"member:{room}:{user}"


def require_member(room: str, user: str) -> None:
    if state.get(member_key(room, user)) is None:
        raise HTTPError(403, "not_joined", f"Join the room {room} before using its messages")


def msg_prefix(room: str) -> str:
    return f"msg:{room}:"


def msg_key(room: str, seq: int) -> str:
    return f"msg:{room}:{seq:020d}"


def last_ts(room: str) -> int:
    v = state.get(f"last_ts:{room}")
    return int(v) if v is not None and v.isdigit() else 0


def _ts(m: Any) -> int:
    v = m.get("timestamp") if isinstance(m, dict) else None
    return v if type(v) is int and v >= 0 else 0


def messages_after(room: str, after: int) -> list[Any]:
    """The room's stored messages with a timestamp above ``after``, oldest first."""
    out = []
    for key in reversed(state.keys(msg_prefix(room))):
        m = state.get_json(key)
        if m is None:
            continue
        if _ts(m) <= after:
            break
        out.append(m)
    out.reverse()
    return out


def uint(text: str) -> Optional[int]:
    """An unsigned integer query parameter: ASCII digits only, below 10^18."""
    if not text or not all("0" <= c <= "9" for c in text) or len(text.lstrip("0")) > 18:
        return None
    return int(text.lstrip("0") or "0")


router = Router()


@router.get("/rooms")
def rooms(req: Request, params: Params) -> Response:
    user_of(req, None)
    return Response.json({"chat_rooms": ROOMS})


@router.get("/events")
def subscribe(req: Request, params: Params) -> Response:
    """``GET /events?topic=<room>``: the station asks before it opens a subscriber's event
    stream. Members of the room only: a valid token (header or ``?token=``), a room, a join."""
    user = user_of(req, None)
    room = req.query("topic")
    if room is None:
        raise HTTPError(
            400, "bad_request", "query parameter 'topic' must name the room to subscribe to"
        )
    if room not in ROOMS:
        raise HTTPError(404, "not_found", f"Room not found: {room}")
    require_member(room, user)
    return Response.json({"room_name": room})


@router.post("/rooms/{room}/join")
def join(req: Request, params: Params) -> Response:
    user = user_of(req, JsonBody.try_parse(req))
    room = room_of(params)
    key = member_key(room, user)
    if state.get(key) is None:
        state.set(key, str(runtime.now_ms()))
    keys = state.keys(msg_prefix(room))
    recent = [m for m in (state.get_json(k) for k in keys[-RECENT:]) if m is not None]
    ts = last_ts(room)
    lines: list[Any] = [
        {"message": f"Welcome to {room}, {user}!", "timestamp": ts, "user_name": "SYSTEM"},
        {
            "message": f"Poll GET /rooms/{room}/messages?after_timestamp={ts} for new messages",
            "timestamp": ts,
            "user_name": "SYSTEM",
        },
    ]
    lines.extend(recent)
    return Response.json({"recent_messages": lines, "room_name": room})


@router.post("/rooms/{room}/messages")
def send(req: Request, params: Params) -> Response:
    parsed = JsonBody.try_parse(req)
    user = user_of(req, parsed)
    room = room_of(params)
    body = parsed if parsed is not None else JsonBody.parse(req)
    text = body.required_str("message")
    if not text.strip(WHITESPACE):
        raise HTTPError(400, "bad_request", "field 'message' must not be empty")
    if len(text) > MAX_MESSAGE:
        raise HTTPError(
            400, "bad_request", f"field 'message' must be at most {MAX_MESSAGE} characters"
        )
    require_member(room, user)
    ts = max(runtime.now_ms() * 1000, last_ts(room) + 1)
    seq = state.increment(f"seq:{room}")
    message = {"message": text, "timestamp": ts, "user_name": user}
    state.set_json(msg_key(room, seq), message)
    state.set(f"last_ts:{room}", str(ts))
    if seq > KEEP:
        state.delete(msg_key(room, seq - KEEP))
    # Subscribers of ``GET /objects/chat/events?topic=<room>`` get it once it is stored.
    events.publish(room, message)
    return Response.json(message, status=201)


@router.get("/rooms/{room}/messages")
def poll(req: Request, params: Params) -> Response:
    user = user_of(req, None)
    room = room_of(params)
    after = 0
    text = req.query("after_timestamp")
    if text is not None:
        n = uint(text)
        if n is None:
            raise HTTPError(
                400,
                "bad_request",
                "query parameter 'after_timestamp' must be an integer from 0",
            )
        after = n
    limit = MAX_LIMIT
    text = req.query("limit")
    if text is not None:
        n = uint(text)
        if n is None:
            raise HTTPError(
                400, "bad_request", "query parameter 'limit' must be an integer from 0"
            )
        limit = n
    require_member(room, user)
    messages = messages_after(room, after)[: min(limit, MAX_LIMIT)]
    return Response.json({"messages": messages})


class Chat(Object):
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


Handler = export(Chat)
