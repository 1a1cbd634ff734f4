//! The auth object against the SDK's in-memory fake.

use super::*;
use object_primitive::{dispatch, testing};

fn call(method: &str, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = Request::new(method, path).with_json(&body);
    if let Some(t) = token {
        req = req.with_header("authorization", &format!("Bearer {t}"));
    }
    let r = dispatch::<Auth>(req);
    (r.status, r.json_body().expect("JSON answer"))
}

fn register(name: &str, password: &str) -> String {
    let (status, v) = call(
        "POST",
        "/",
        None,
        json!({"action": "register", "username": name, "password": password, "email": "a@b.c"}),
    );
    assert_eq!(status, 201, "{v}");
    v["token"].as_str().unwrap().to_string()
}

#[test]
fn register_login_and_the_stored_record() {
    testing::reset();
    let token = register("alice", "password-1");
    assert_eq!(token.len(), 43);
    let (status, v) = call(
        "POST",
        "/",
        None,
        json!({"action": "login", "username": "alice", "password": "password-1"}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["is_admin"], false);
    assert_ne!(v["token"], json!(token));

    let s = testing::state();
    let record: Value = object_primitive::serde_json::from_str(&s["user:alice"]).unwrap();
    let p = &record["password"];
    assert_eq!(p["algo"], "pbkdf2-sha256");
    assert!(p["iterations"].as_u64().unwrap() >= 100_000);
    let salt = crypto::base64_decode(p["salt"].as_str().unwrap()).unwrap();
    assert!(salt.len() >= 16);
    let hash = crypto::pbkdf2_sha256(b"password-1", &salt, ITERATIONS);
    assert_eq!(p["hash"], crypto::base64_encode(&hash));
    let digest = crypto::sha256_hex(token.as_bytes());
    assert!(s.contains_key(&format!("token:{digest}")));
    for (k, v) in &s {
        assert!(!k.contains(&token) && !v.contains(&token), "{k} = {v}");
        assert!(!v.contains("password-1"), "{k} = {v}");
    }
}

#[test]
fn unknown_user_and_wrong_password_answer_alike() {
    testing::reset();
    register("bob_1", "password-1");
    let wrong = call(
        "POST",
        "/",
        None,
        json!({"action": "login", "username": "bob_1", "password": "nope-nope"}),
    );
    let unknown = call(
        "POST",
        "/",
        None,
        json!({"action": "login", "username": "nobody", "password": "nope-nope"}),
    );
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong.1["error"], "invalid_credentials");
}

#[test]
fn validation_names_the_field() {
    testing::reset();
    for (body, says) in [
        (
            json!({"action": "register", "password": "password-1", "email": "a@b"}),
            "'username'",
        ),
        (
            json!({"action": "register", "username": "ab", "password": "password-1", "email": "a@b"}),
            "'username'",
        ),
        (
            json!({"action": "register", "username": "a b c", "password": "password-1", "email": "a@b"}),
            "'username'",
        ),
        (
            json!({"action": "register", "username": "abc", "password": "short", "email": "a@b"}),
            "'password'",
        ),
        (
            json!({"action": "register", "username": "abc", "password": "password-1", "email": "a@@b"}),
            "'email'",
        ),
        (
            json!({"action": "register", "username": "abc", "password": "password-1", "email": "@b"}),
            "'email'",
        ),
        (
            json!({"action": "register", "username": "abc", "password": "password-1", "email": "a@b", "ttl_s": 0}),
            "'ttl_s'",
        ),
        (
            json!({"action": "register", "username": "abc", "password": "password-1", "email": "a@b", "ttl_s": 86401}),
            "'ttl_s'",
        ),
        (
            json!({"action": "register", "username": "abc", "password": "password-1", "email": "a@b", "ttl_s": 1.5}),
            "'ttl_s'",
        ),
        (json!({"action": "fly"}), "\"fly\""),
        (json!({}), "'action'"),
    ] {
        let (status, v) = call("POST", "/", None, body.clone());
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"], "bad_request");
        assert!(v["message"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    assert!(testing::state().is_empty());
    register("abc", "password-1");
    let (status, v) = call(
        "POST",
        "/",
        None,
        json!({"action": "register", "username": "abc", "password": "password-2", "email": "x@y"}),
    );
    assert_eq!((status, v["error"].as_str()), (409, Some("username_taken")));
    assert!(v["message"].as_str().unwrap().contains("already exists"));
}

#[test]
fn tokens_resolve_log_out_and_are_revoked_by_a_password_change() {
    testing::reset();
    let t1 = register("carol", "password-1");
    let (_, v) = call(
        "POST",
        "/",
        None,
        json!({"action": "login", "username": "carol", "password": "password-1"}),
    );
    let t2 = v["token"].as_str().unwrap().to_string();

    let (status, v) = call("GET", "/", Some(&t1), json!({}));
    assert_eq!(status, 200);
    assert_eq!(v["user"]["username"], "carol");
    assert_eq!(v["user"]["email"], "a@b.c");
    assert!(v["user"].get("password").is_none(), "{v}");
    // The token also travels in the body or the query.
    assert_eq!(call("GET", "/", None, json!({"token": t1})).0, 200);
    assert_eq!(
        call("GET", &format!("/?token={t1}"), None, json!({})).0,
        200
    );
    assert_eq!(
        call("GET", "/", None, json!({})).1["error"],
        "token_required"
    );
    assert_eq!(
        call("GET", "/", Some("made-up"), json!({})).1["error"],
        "invalid_token"
    );

    let (status, v) = call(
        "PUT",
        "/",
        Some(&t1),
        json!({"old_password": "wrong-one", "password": "password-2"}),
    );
    assert_eq!((status, v["error"].as_str()), (403, Some("wrong_password")));
    assert_eq!(call("GET", "/", Some(&t2), json!({})).0, 200);

    let (status, v) = call(
        "PUT",
        "/",
        Some(&t1),
        json!({"old_password": "password-1", "password": "password-2"}),
    );
    assert_eq!((status, v), (200, json!({"message": "User updated"})));
    assert_eq!(call("GET", "/", Some(&t1), json!({})).0, 200);
    assert_eq!(call("GET", "/", Some(&t2), json!({})).0, 401);
    assert!(
        !testing::state()
            .keys()
            .any(|k| k.contains(&crypto::sha256_hex(t2.as_bytes())))
    );

    assert_eq!(
        call("PUT", "/", Some(&t1), json!({})).1["message"],
        "No changes"
    );
    assert_eq!(
        call("DELETE", "/", Some(&t1), json!({})).1["message"],
        "Logged out"
    );
    assert_eq!(call("GET", "/", Some(&t1), json!({})).0, 401);
}

#[test]
fn expired_tokens_are_refused_and_deleted() {
    testing::reset();
    let t = register("dave", "password-1");
    let digest = crypto::sha256_hex(t.as_bytes());
    let key = format!("token:{digest}");
    let mut entry: Value = state::get_json(&key).unwrap();
    entry["expires_at_ms"] = json!(runtime::now_ms() - 1);
    state::set_json(&key, &entry);
    assert_eq!(
        call("GET", "/", Some(&t), json!({})).1["error"],
        "invalid_token"
    );
    assert!(state::get(&key).is_none());
}

#[test]
fn deleting_the_account() {
    testing::reset();
    let t = register("erin", "password-1");
    let (status, _) = call("DELETE", "/", Some(&t), json!({"delete_account": true}));
    assert_eq!(status, 400);
    let (status, v) = call(
        "DELETE",
        "/",
        Some(&t),
        json!({"delete_account": true, "password": "password-x"}),
    );
    assert_eq!((status, v["error"].as_str()), (403, Some("wrong_password")));
    let (status, v) = call(
        "DELETE",
        "/?delete_account=true&password=password-1",
        Some(&t),
        json!({}),
    );
    assert_eq!(
        (status, v),
        (200, json!({"message": "Account erin deleted"}))
    );
    assert!(testing::state().is_empty(), "{:?}", testing::state());
    register("erin", "password-3");
}

#[test]
fn logs_hold_no_secret() {
    testing::reset();
    let t = register("frank", "password-1");
    call(
        "POST",
        "/",
        None,
        json!({"action": "login", "username": "frank", "password": "bad-password"}),
    );
    call("GET", "/", Some("some-made-up-token"), json!({}));
    for (_, line) in testing::logs() {
        assert!(
            !line.contains("password-1") && !line.contains("bad-password"),
            "{line}"
        );
        assert!(
            !line.contains(&t[..8]) && !line.contains("made-up"),
            "{line}"
        );
    }
}
