//! The blog against the SDK's in-memory fake, with a stand-in for `auth`.

use super::*;
use object_primitive::{dispatch, testing};

/// A stand-in `auth`: `tok-<name>` is a valid token of user `<name>`; others get 401.
fn fake_auth(req: Request) -> Response {
    match req.bearer_token().and_then(|t| t.strip_prefix("tok-")) {
        Some(name) => Response::json(&json!({ "user": { "username": name } })),
        None => Response::error(401, "invalid_token", "Invalid or expired token"),
    }
}

fn setup() {
    testing::reset();
    testing::register_fn("auth", fake_auth);
}

fn call(method: &str, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = Request::new(method, path).with_json(&body);
    if let Some(t) = token {
        req = req.with_header("authorization", &format!("Bearer {t}"));
    }
    let r = dispatch::<Blog>(req);
    (r.status, r.json_body().expect("JSON answer"))
}

fn create(token: &str, title: &str, content: &str) -> String {
    let (status, v) = call(
        "POST",
        "/",
        Some(token),
        json!({"title": title, "content": content}),
    );
    assert_eq!(status, 201, "{v}");
    v["post_id"].as_str().unwrap().to_string()
}

fn posts() -> Vec<String> {
    testing::state()
        .keys()
        .filter(|k| k.starts_with("post:"))
        .cloned()
        .collect()
}

#[test]
fn writes_need_a_token_that_auth_accepts() {
    setup();
    let body = json!({"title": "t", "content": "c", "author": "mallory"});
    let (status, v) = call("POST", "/", None, body.clone());
    assert_eq!((status, v["error"].as_str()), (401, Some("token_required")));
    assert!(v["message"].as_str().unwrap().contains("token"));
    let (status, v) = call(
        "POST",
        "/",
        Some("demo_token_12345678901234567890"),
        body.clone(),
    );
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_token")));
    // Identity comes before validation: a bad body with a bad token is a 401.
    let (status, _) = call("POST", "/", Some("junk"), json!({}));
    assert_eq!(status, 401);
    testing::unregister_object("auth");
    let (status, v) = call("POST", "/", Some("tok-alice"), body.clone());
    assert_eq!(
        (status, v["error"].as_str()),
        (503, Some("auth_unavailable"))
    );
    testing::register_fn("auth", |_| Response::error(500, "boom", "down"));
    assert_eq!(call("POST", "/", Some("tok-alice"), body.clone()).0, 503);
    testing::register_fn("auth", |_| Response::json(&json!({"user": {}})));
    assert_eq!(call("POST", "/", Some("tok-alice"), body.clone()).0, 503);
    assert!(posts().is_empty());

    setup();
    let id = create("tok-alice", "t", "c");
    let (_, v) = call("GET", &format!("/?id={id}"), None, json!({}));
    assert_eq!(
        v["post"]["author"], "alice",
        "a client-supplied author is ignored"
    );
}

#[test]
fn create_validates_and_lists() {
    setup();
    for (body, says) in [
        (json!({"content": "c"}), "title"),
        (json!({"title": "  ", "content": "c"}), "title"),
        (json!({"title": "x".repeat(201), "content": "c"}), "title"),
        (json!({"title": "t"}), "content"),
        (json!({"title": "t", "content": " \n"}), "content"),
        (json!({"title": "t", "content": "c", "tags": "x"}), "tags"),
        (json!({"title": "t", "content": "c", "tags": [""]}), "tags"),
        (
            json!({"title": "t", "content": "c", "tags": vec!["a"; 21]}),
            "tags",
        ),
    ] {
        let (status, v) = call("POST", "/", Some("tok-a"), body.clone());
        assert_eq!(status, 400, "{body}");
        assert!(v["message"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    assert!(posts().is_empty());

    let long = "é".repeat(250);
    let p1 = create("tok-a", "Beta", &long);
    let p2 = create("tok-b", "alpha", "Needle in here");
    let p3 = create("tok-a", "Gamma", "c");
    assert_eq!((p1.as_str(), p2.as_str(), p3.as_str()), ("p1", "p2", "p3"));

    let (_, v) = call("GET", "/", None, json!({}));
    let ids: Vec<&str> = v["posts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["p3", "p2", "p1"]);
    assert_eq!(
        v["pagination"],
        json!({"total": 3, "limit": 10, "offset": 0, "has_more": false})
    );
    let excerpt = v["posts"][2]["excerpt"].as_str().unwrap();
    assert_eq!(excerpt, format!("{}...", "é".repeat(200)));

    let (_, v) = call("GET", "/?sort=title&limit=2&offset=1", None, json!({}));
    let ids: Vec<&str> = v["posts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["p1", "p3"]);
    assert_eq!(v["pagination"]["has_more"], false);
    let (_, v) = call("GET", "/?sort=oldest&limit=1", None, json!({}));
    assert_eq!(v["posts"][0]["id"], "p1");
    assert_eq!(v["pagination"]["has_more"], true);
    let (_, v) = call("GET", "/?author=b", None, json!({}));
    assert_eq!(v["pagination"]["total"], 1);
    let (_, v) = call("GET", "/?search=NEEDLE", None, json!({}));
    assert_eq!(v["posts"][0]["id"], "p2");
    for q in [
        "limit=0",
        "limit=101",
        "limit=x",
        "limit=-1",
        "offset=-1",
        "offset=1.5",
        "sort=up",
    ] {
        assert_eq!(
            call("GET", &format!("/?{q}"), None, json!({})).0,
            400,
            "{q}"
        );
    }
    let (status, v) = call("GET", "/?id=p9", None, json!({}));
    assert_eq!(
        (status, v["message"].as_str()),
        (404, Some("Post not found: p9"))
    );
}

#[test]
fn only_the_author_updates_or_deletes() {
    setup();
    let id = create("tok-a", "Title", "Content");
    let (status, v) = call(
        "PUT",
        "/",
        Some("tok-b"),
        json!({"id": id, "title": "Mine"}),
    );
    assert_eq!((status, v["error"].as_str()), (403, Some("not_author")));
    let (status, v) = call("DELETE", &format!("/?id={id}"), Some("tok-b"), json!({}));
    assert_eq!((status, v["error"].as_str()), (403, Some("not_author")));
    let (_, v) = call("GET", &format!("/?id={id}"), None, json!({}));
    assert_eq!(v["post"]["title"], "Title");
    let before = v["post"]["updated_at_ms"].as_u64().unwrap();

    assert_eq!(
        call("PUT", "/", Some("tok-a"), json!({"title": "x"})).0,
        400
    );
    assert_eq!(
        call(
            "PUT",
            "/",
            Some("tok-a"),
            json!({"id": "p404", "title": "x"})
        )
        .0,
        404
    );
    let (_, v) = call("PUT", "/", Some("tok-a"), json!({"id": id}));
    assert_eq!(v, json!({"message": "No changes"}));
    let (status, v) = call(
        "PUT",
        "/",
        Some("tok-a"),
        json!({"id": id, "title": "New", "tags": ["x"]}),
    );
    assert_eq!(
        (status, v),
        (200, json!({"post_id": id, "message": "Post updated"}))
    );
    let (_, v) = call("GET", &format!("/?id={id}"), None, json!({}));
    assert_eq!(v["post"]["title"], "New");
    assert!(v["post"]["updated_at_ms"].as_u64().unwrap() > before);

    assert_eq!(call("DELETE", "/", Some("tok-a"), json!({})).0, 400);
    let (status, v) = call("DELETE", "/", Some("tok-a"), json!({"id": id}));
    assert_eq!((status, v), (200, json!({"message": "Post deleted: New"})));
    assert_eq!(call("GET", &format!("/?id={id}"), None, json!({})).0, 404);
    // Ids are never reused.
    assert_eq!(create("tok-a", "again", "c"), "p2");
    let logs: Vec<String> = testing::logs().into_iter().map(|(_, l)| l).collect();
    assert!(
        logs.contains(&format!("post deleted {id} by a")),
        "{logs:?}"
    );
    assert!(logs.iter().all(|l| !l.contains("tok-")), "{logs:?}");
}
