//! The chat against the SDK's in-memory fake, with a stand-in for `auth`.

use super::*;
use object_primitive::{dispatch, testing};

/// A stand-in `auth`: `tok-<name>` is a valid token of user `<name>`; others get 401.
fn fake_auth(req: Request) -> Response {
    match req.bearer_token().and_then(|t| t.strip_prefix("tok-")) {
        Some(name) => Response::json(&json!({ "user": { "username": name } })),
        None => Response::error(401, "invalid_token", "Invalid or expired token"),
    }
}

fn call(method: &str, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = Request::new(method, path).with_json(&body);
    if let Some(t) = token {
        req = req.with_header("authorization", &format!("Bearer {t}"));
    }
    let r = dispatch::<Chat>(req);
    (r.status, r.json_body().expect("JSON answer"))
}

fn setup() {
    testing::reset();
    testing::register_fn("auth", fake_auth);
}

fn stored(v: &Value) -> Vec<Value> {
    v.as_array()
        .unwrap()
        .iter()
        .filter(|m| m["user_name"] != "SYSTEM")
        .cloned()
        .collect()
}

#[test]
fn rooms_need_a_token() {
    setup();
    let (status, v) = call("GET", "/rooms", Some("tok-a"), json!({}));
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"chat_rooms": ["General", "Technology", "Crypto", "Sports", "Movies"]})
    );
    assert_eq!(
        call("GET", "/rooms", None, json!({})).1["error"],
        "token_required"
    );
    assert_eq!(
        call("GET", "/rooms", Some("bad"), json!({})).1["error"],
        "invalid_token"
    );
    testing::unregister_object("auth");
    assert_eq!(
        call("GET", "/rooms", Some("tok-a"), json!({})).1["error"],
        "auth_unavailable"
    );
    assert_eq!(call("GET", "/nope", Some("tok-a"), json!({})).0, 404);
    assert_eq!(call("PUT", "/rooms", Some("tok-a"), json!({})).0, 405);
}

#[test]
fn join_send_and_poll() {
    setup();
    assert_eq!(
        call("POST", "/rooms/general/join", Some("tok-a"), json!({})).0,
        404
    );
    let (status, v) = call(
        "POST",
        "/rooms/General/messages",
        Some("tok-a"),
        json!({"message": "hi"}),
    );
    assert_eq!((status, v["error"].as_str()), (403, Some("not_joined")));
    assert_eq!(
        call("GET", "/rooms/General/messages", Some("tok-a"), json!({})).0,
        403
    );

    let (status, v) = call("POST", "/rooms/General/join", Some("tok-a"), json!({}));
    assert_eq!(status, 200);
    assert_eq!(v["room_name"], "General");
    assert!(stored(&v["recent_messages"]).is_empty());
    call("POST", "/rooms/General/join", Some("tok-b"), json!({}));

    let mut last = 0;
    for i in 0..5 {
        let who = if i % 2 == 0 { "tok-a" } else { "tok-b" };
        let (status, m) = call(
            "POST",
            "/rooms/General/messages",
            Some(who),
            json!({"message": format!("m{i}"), "user_name": "mallory"}),
        );
        assert_eq!(status, 201, "{m}");
        assert_eq!(m["user_name"], &who[4..]);
        let ts = m["timestamp"].as_u64().unwrap();
        assert!(ts > last, "timestamps strictly increase");
        last = ts;
    }
    let (_, v) = call(
        "GET",
        "/rooms/General/messages?after_timestamp=0&limit=2",
        Some("tok-b"),
        json!({}),
    );
    let first: Vec<Value> = v["messages"].as_array().unwrap().clone();
    assert_eq!(
        first
            .iter()
            .map(|m| m["message"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["m0", "m1"]
    );
    let after = first[1]["timestamp"].as_u64().unwrap();
    let (_, v) = call(
        "GET",
        &format!("/rooms/General/messages?after_timestamp={after}"),
        Some("tok-b"),
        json!({}),
    );
    let rest: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(rest, ["m2", "m3", "m4"]);
    let (_, v) = call(
        "GET",
        &format!("/rooms/General/messages?after_timestamp={last}"),
        Some("tok-b"),
        json!({}),
    );
    assert_eq!(v["messages"], json!([]));

    let (_, v) = call("POST", "/rooms/General/join", Some("tok-c"), json!({}));
    assert_eq!(stored(&v["recent_messages"]).len(), 5);
    for q in ["after_timestamp=-1", "after_timestamp=x", "limit=1.5"] {
        assert_eq!(
            call(
                "GET",
                &format!("/rooms/General/messages?{q}"),
                Some("tok-a"),
                json!({})
            )
            .0,
            400,
            "{q}"
        );
    }
    for body in [
        json!({}),
        json!({"message": "  "}),
        json!({"message": "x".repeat(2001)}),
        json!({"message": 5}),
    ] {
        assert_eq!(
            call(
                "POST",
                "/rooms/General/messages",
                Some("tok-a"),
                body.clone()
            )
            .0,
            400,
            "{body}"
        );
    }
}

#[test]
fn a_room_keeps_its_last_thousand_messages() {
    setup();
    call("POST", "/rooms/Sports/join", Some("tok-a"), json!({}));
    for i in 0..1005 {
        call(
            "POST",
            "/rooms/Sports/messages",
            Some("tok-a"),
            json!({"message": format!("m{i}")}),
        );
    }
    assert_eq!(state::keys("msg:Sports:").len(), 1000);
    let (_, v) = call("POST", "/rooms/Sports/join", Some("tok-a"), json!({}));
    let recent = stored(&v["recent_messages"]);
    assert_eq!(recent.len(), 50);
    assert_eq!(recent[0]["message"], "m955");
    assert_eq!(recent[49]["message"], "m1004");
    let (_, v) = call(
        "GET",
        "/rooms/Sports/messages?limit=500",
        Some("tok-a"),
        json!({}),
    );
    assert_eq!(v["messages"].as_array().unwrap().len(), 100);
    assert_eq!(v["messages"][0]["message"], "m5");
}

#[test]
fn messages_are_published_to_the_room_and_only_members_may_subscribe() {
    setup();
    assert_eq!(
        call("GET", "/events?topic=General", None, json!({})).1["error"],
        "token_required"
    );
    assert_eq!(
        call("GET", "/events?topic=General", Some("tok-a"), json!({})).1["error"],
        "not_joined"
    );
    assert_eq!(call("GET", "/events", Some("tok-a"), json!({})).0, 400);
    assert_eq!(
        call("GET", "/events?topic=general", Some("tok-a"), json!({})).0,
        404
    );
    call("POST", "/rooms/Crypto/join", Some("tok-a"), json!({}));
    assert_eq!(
        call("GET", "/events?topic=Crypto", Some("tok-a"), json!({})),
        (200, json!({"room_name": "Crypto"}))
    );
    testing::take_published_events();
    let (_, m) = call(
        "POST",
        "/rooms/Crypto/messages",
        Some("tok-a"),
        json!({"message": "to the moon"}),
    );
    assert_eq!(
        testing::take_published_events(),
        [("Crypto".to_string(), m.to_string())]
    );
    call(
        "POST",
        "/rooms/Crypto/messages",
        Some("tok-a"),
        json!({"message": "  "}),
    );
    assert!(
        testing::take_published_events().is_empty(),
        "a refused message publishes nothing"
    );
}
