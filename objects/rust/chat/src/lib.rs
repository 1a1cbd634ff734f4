//! `chat`: rooms with messages, polled by timestamp. The behaviour is the contract in
//! `EXAMPLE-APPS.md` §3; the routes are in this crate's README.
//!
//! Every route resolves the caller's token through `runtime::call("auth", GET /)`
//! exactly as the blog does (401 `token_required`/`invalid_token`, 503
//! `auth_unavailable` when `auth` cannot answer), and the sender is always that user.
//!
//! State, per room: `member:<room>:<username>` = join time (ms); `seq:<room>`, the count
//! of messages ever stored; `msg:<room>:<seq, 20 digits>` = the ChatMessage
//! `{"message","timestamp","user_name"}`; `last_ts:<room>`, the last timestamp given.
//! The last [`KEEP`] messages of a room are kept. Each stored message is also published as an
//! event whose topic is the room, so clients can subscribe instead of polling.

use object_primitive::route::{JsonBody, Params, Router};
use object_primitive::serde_json::Value;
use object_primitive::{
    Object, Request, Response, events, export_object, json, runtime, state, warn,
};

/// The rooms, in ChatRoomMgr's order.
const ROOMS: [&str; 5] = ["General", "Technology", "Crypto", "Sports", "Movies"];
/// Messages a room keeps; older ones are deleted.
const KEEP: u64 = 1000;
/// Messages `join` returns.
const RECENT: usize = 50;
const MAX_MESSAGE: usize = 2000;
const MAX_LIMIT: u64 = 100;

struct Chat;

type Answer = Result<Response, Response>;

/// The token of a request: the `Authorization: Bearer` header, else the body's `token`
/// field (when the body is a JSON object), else the `?token=` query.
fn token_of<'a>(req: &'a Request, body: Option<&'a JsonBody>) -> Option<&'a str> {
    req.bearer_token()
        .or_else(|| {
            body.and_then(|b| b.get("token"))
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
        })
        .or_else(|| req.query("token").filter(|t| !t.is_empty()))
}

/// The username `auth` gives for the request's token. Fails closed: only a 200 from
/// `auth` with a username identifies anyone.
fn user(req: &Request, body: Option<&JsonBody>) -> Result<String, Response> {
    let Some(token) = token_of(req, body) else {
        return Err(Response::error(
            401,
            "token_required",
            "Authentication token required",
        ));
    };
    let ask = Request::new("GET", "/").with_header("authorization", &format!("Bearer {token}"));
    let unavailable = |why: &str| {
        warn!("auth unavailable: {why}");
        Response::error(
            503,
            "auth_unavailable",
            "The auth object could not check the token; try again later",
        )
    };
    match runtime::call("auth", ask) {
        Ok(r) if r.status == 200 => r
            .json_body::<Value>()
            .ok()
            .and_then(|v| v["user"]["username"].as_str().map(str::to_string))
            .ok_or_else(|| unavailable("a 200 answer without user.username")),
        Ok(r) if r.status == 401 => Err(Response::error(
            401,
            "invalid_token",
            "Invalid or expired token",
        )),
        Ok(r) => Err(unavailable(&format!("status {}", r.status))),
        Err(e) => Err(unavailable(e.kind())),
    }
}

/// The room named by the path, if it is one of [`ROOMS`] (names are case-sensitive).
fn room(params: &Params) -> Result<&str, Response> {
    let name = params.get("room");
    if ROOMS.contains(&name) {
        Ok(name)
    } else {
        Err(Response::not_found(&format!("Room not found: {name}")))
    }
}

fn member_key(room: &str, user: &str) -> String {
    format!("member:{room}:{user}")
}

fn require_member(room: &str, user: &str) -> Result<(), Response> {
    if state::get(&member_key(room, user)).is_some() {
        Ok(())
    } else {
        Err(Response::error(
            403,
            "not_joined",
            &format!("Join the room {room} before using its messages"),
        ))
    }
}

fn msg_prefix(room: &str) -> String {
    format!("msg:{room}:")
}

fn msg_key(room: &str, seq: u64) -> String {
    format!("msg:{room}:{seq:020}")
}

fn last_ts(room: &str) -> u64 {
    state::get(&format!("last_ts:{room}"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The room's stored messages whose timestamp is above `after`, oldest first, read
/// newest first until one is not.
fn messages_after(room: &str, after: u64) -> Vec<Value> {
    let mut out = Vec::new();
    for key in state::keys(&msg_prefix(room)).iter().rev() {
        let Some(m) = state::get_json::<Value>(key) else {
            continue;
        };
        if m["timestamp"].as_u64().unwrap_or(0) <= after {
            break;
        }
        out.push(m);
    }
    out.reverse();
    out
}

/// An unsigned integer query parameter: ASCII digits only, below 10^18.
fn uint(text: &str) -> Option<u64> {
    let significant = text.trim_start_matches('0');
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || significant.len() > 18 {
        return None;
    }
    Some(significant.parse().unwrap_or(0))
}

fn rooms(req: &Request, _: &Params) -> Answer {
    user(req, None)?;
    Ok(Response::json(&json!({ "chat_rooms": ROOMS })))
}

fn join(req: &Request, params: &Params) -> Answer {
    let body = JsonBody::parse(req);
    let user = user(req, body.as_ref().ok())?;
    let room = room(params)?;
    let key = member_key(room, &user);
    if state::get(&key).is_none() {
        state::set(&key, &runtime::now_ms().to_string());
    }
    let keys = state::keys(&msg_prefix(room));
    let recent = keys[keys.len().saturating_sub(RECENT)..]
        .iter()
        .filter_map(|k| state::get_json::<Value>(k));
    // Welcome lines are never stored; they carry the room's last timestamp, so a client
    // that polls after the largest timestamp it has seen misses nothing.
    let ts = last_ts(room);
    let mut lines = vec![
        json!({ "user_name": "SYSTEM", "message": format!("Welcome to {room}, {user}!"), "timestamp": ts }),
        json!({
            "user_name": "SYSTEM",
            "message": format!("Poll GET /rooms/{room}/messages?after_timestamp={ts} for new messages"),
            "timestamp": ts,
        }),
    ];
    lines.extend(recent);
    Ok(Response::json(
        &json!({ "room_name": room, "recent_messages": lines }),
    ))
}

fn send(req: &Request, params: &Params) -> Answer {
    let body = JsonBody::parse(req);
    let user = user(req, body.as_ref().ok())?;
    let room = room(params)?;
    let body = body?;
    let text = body.required_str("message")?;
    if text.trim().is_empty() {
        return Err(Response::bad_request("field 'message' must not be empty"));
    }
    if text.chars().count() > MAX_MESSAGE {
        return Err(Response::bad_request(&format!(
            "field 'message' must be at most {MAX_MESSAGE} characters"
        )));
    }
    require_member(room, &user)?;
    let ts = (runtime::now_ms() * 1000).max(last_ts(room) + 1);
    let seq = state::increment(&format!("seq:{room}"), 1) as u64;
    let message = json!({ "user_name": user, "message": text, "timestamp": ts });
    state::set_json(&msg_key(room, seq), &message);
    state::set(&format!("last_ts:{room}"), &ts.to_string());
    if seq > KEEP {
        state::delete(&msg_key(room, seq - KEEP));
    }
    // Subscribers of `GET /objects/chat/events?topic=<room>` get it once it is stored.
    events::publish_json(room, &message);
    Ok(Response::json(&message).with_status(201))
}

fn poll(req: &Request, params: &Params) -> Answer {
    let user = user(req, None)?;
    let room = room(params)?;
    let after = match req.query("after_timestamp") {
        None => 0,
        Some(t) => uint(t).ok_or_else(|| {
            Response::bad_request("query parameter 'after_timestamp' must be an integer from 0")
        })?,
    };
    let limit = match req.query("limit") {
        None => MAX_LIMIT,
        Some(n) => uint(n).ok_or_else(|| {
            Response::bad_request("query parameter 'limit' must be an integer from 0")
        })?,
    };
    require_member(room, &user)?;
    let mut messages = messages_after(room, after);
    messages.truncate(limit.min(MAX_LIMIT) as usize);
    Ok(Response::json(&json!({ "messages": messages })))
}

/// `GET /events?topic=<room>`: the station asks before it opens a subscriber's event stream
/// (`GET /objects/chat/events?topic=<room>`). Members of the room only: a valid token (header or
/// `?token=`, since browsers' `EventSource` cannot send headers), a room, and a join.
fn subscribe(req: &Request, _: &Params) -> Answer {
    let user = user(req, None)?;
    let Some(room) = req.query("topic") else {
        return Err(Response::bad_request(
            "query parameter 'topic' must name the room to subscribe to",
        ));
    };
    if !ROOMS.contains(&room) {
        return Err(Response::not_found(&format!("Room not found: {room}")));
    }
    require_member(room, &user)?;
    Ok(Response::json(&json!({ "room_name": room })))
}

fn router() -> Router {
    Router::new()
        .get("/rooms", |r, p| rooms(r, p).unwrap_or_else(|e| e))
        .get("/events", |r, p| subscribe(r, p).unwrap_or_else(|e| e))
        .post("/rooms/{room}/join", |r, p| {
            join(r, p).unwrap_or_else(|e| e)
        })
        .post("/rooms/{room}/messages", |r, p| {
            send(r, p).unwrap_or_else(|e| e)
        })
        .get("/rooms/{room}/messages", |r, p| {
            poll(r, p).unwrap_or_else(|e| e)
        })
}

impl Object for Chat {
    fn get(req: Request) -> Response {
        router().handle(&req)
    }
    fn post(req: Request) -> Response {
        router().handle(&req)
    }
    fn put(req: Request) -> Response {
        router().handle(&req)
    }
    fn delete(req: Request) -> Response {
        router().handle(&req)
    }
    fn patch(req: Request) -> Response {
        router().handle(&req)
    }
}

export_object!(Chat);

#[cfg(test)]
mod tests;
