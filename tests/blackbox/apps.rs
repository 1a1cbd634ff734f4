//! The example applications `auth`, `blog` and `chat` (issue 14) against the contract in
//! `EXAMPLE-APPS.md`: every route of its tables, its error codes and messages, and its
//! security rules, once per language (`per_lang!`), with the same expected bytes for both.
//! `blog` and `chat` reach `auth` through `runtime.call-object`; the last test homes `auth`
//! on one station and `blog`/`chat` on another.
//!
//! Every exchange goes through an [`App`], which keeps what each answer said, so that the
//! secrecy rules (no password, hash or salt in any answer, a token only in the answer that
//! issues it, none of them in the log) are checked over everything a test saw.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::*;

/// The PBKDF2 iteration count the objects use (the contract's minimum).
const ITERATIONS: u32 = 100_000;

/// A client of one station that records every answer.
#[derive(Clone)]
struct App<'a> {
    st: &'a Station,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl<'a> App<'a> {
    fn new(st: &'a Station) -> App<'a> {
        App {
            st,
            seen: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Another station, the same record.
    fn on(&self, st: &'a Station) -> App<'a> {
        App {
            st,
            seen: self.seen.clone(),
        }
    }

    /// `METHOD /objects/{id}{path}` with an optional bearer token and a JSON body.
    fn call(&self, method: &str, id: &str, path: &str, token: Option<&str>, body: &Value) -> Resp {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        self.raw(method, id, path, token, bytes)
    }

    fn raw(&self, method: &str, id: &str, path: &str, token: Option<&str>, body: Vec<u8>) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let r =
            self.st
                .request_with_headers(method, &format!("/objects/{id}{path}"), &headers, body);
        self.seen.lock().unwrap().push((r.what.clone(), r.text()));
        r
    }

    /// Registers `name`; returns the token.
    #[track_caller]
    fn register(&self, name: &str, password: &str) -> String {
        let v = self
            .call(
                "POST",
                "auth",
                "",
                None,
                &json!({"action": "register", "username": name, "password": password, "email": format!("{name}@example.org")}),
            )
            .expect_json(201);
        v["token"].as_str().expect("token").to_string()
    }

    #[track_caller]
    fn login(&self, name: &str, password: &str) -> String {
        let v = self
            .call(
                "POST",
                "auth",
                "",
                None,
                &json!({"action": "login", "username": name, "password": password}),
            )
            .expect_json(200);
        v["token"].as_str().expect("token").to_string()
    }

    /// Every answer seen so far: (what was asked, the body).
    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

/// Asserts an error answer byte for byte: status and `{"error":code,"message":message}`.
#[track_caller]
fn error(r: Resp, status: u16, code: &str, message: &str) {
    let expected = json!({"error": code, "message": message}).to_string();
    assert_eq!(
        (r.status, r.text()),
        (status, expected),
        "{}: the error answer",
        r.what
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{}",
        r.what
    );
}

/// Asserts a 400 `bad_request` whose message contains `word`.
#[track_caller]
fn bad_request(r: Resp, word: &str) {
    let what = r.what.clone();
    let v = r.expect_error(400, "bad_request");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains(word),
        "{what}: {msg:?} should contain {word:?}"
    );
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// PBKDF2-HMAC-SHA256, one 32-byte block: what `hashlib.pbkdf2_hmac("sha256", ..)` gives.
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac_sha256(password, &[salt, &[0, 0, 0, 1]].concat());
    let mut out = u;
    for _ in 1..iterations {
        u = hmac_sha256(password, &u);
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = A
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("{text:?} is not base64")) as u32;
        bits = bits << 6 | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

/// The committed state of object `id` (the admin view).
fn state_of(st: &Station, id: &str) -> serde_json::Map<String, Value> {
    let v = st.get_json(&format!("/objects/{id}?state=true"));
    v["state"]
        .as_object()
        .unwrap_or_else(|| panic!("no state object: {v}"))
        .clone()
}

/// The log of object `id` once a line containing `marker` is in it (lines are written
/// asynchronously), as one text.
fn log_of(st: &Station, id: &str, marker: &str) -> String {
    poll(
        &format!("a line with {marker:?} in the log of {id}"),
        Duration::from_secs(10),
        || {
            let v = st.get_json(&format!("/objects/{id}?logs=true&limit=10000"));
            let text = v["logs"].to_string();
            text.contains(marker).then_some(text)
        },
    )
}

/// The secrecy rules over everything a test saw: no password (nor dbbasic's salted hash
/// of it) in any answer, in the state or in the log; a token only in the answer that
/// issued it; no password hash or salt in any answer or in the log.
#[track_caller]
fn assert_nothing_secret(
    app: &App,
    passwords: &[&str],
    tokens: &[&str],
    hashes: &[String],
    states: &[String],
    logs: &[String],
) {
    let seen = app.seen();
    for (what, body) in &seen {
        for p in passwords {
            assert!(!body.contains(p), "{what} answered a password: {body}");
        }
        for t in tokens {
            let issuing = body.contains("\"token\":") && what.starts_with("POST /objects/auth");
            assert!(
                issuing || !body.contains(&t[..8]),
                "{what} answered (a prefix of) a token: {body}"
            );
        }
        for field in ["\"hash\"", "\"salt\"", "pbkdf2"] {
            assert!(
                !body.contains(field),
                "{what} answered password data: {body}"
            );
        }
    }
    for text in states.iter().chain(logs) {
        for p in passwords {
            let dbbasic = hex(&Sha256::digest(format!("object_primitive_salt{p}")));
            assert!(!text.contains(p), "a password in the state or log: {text}");
            assert!(
                !text.contains(&dbbasic),
                "dbbasic's hash of a password: {text}"
            );
        }
        for t in tokens {
            assert!(
                !text.contains(&t[..8]),
                "a token prefix in the state or log: {text}"
            );
        }
    }
    for text in logs.iter().chain(seen.iter().map(|(_, body)| body)) {
        assert!(
            !text.contains("pbkdf2-sha256"),
            "password data in an answer or the log: {text}"
        );
        for h in hashes {
            assert!(
                !text.contains(h.as_str()),
                "a password hash or salt in an answer or the log: {text}"
            );
        }
    }
}

per_lang! {
    /// §1: every route of `auth`, its errors, token expiry and revocation, the password
    /// record in the state view, and the secrecy rules.
    fn auth_routes_and_records(lang: Lang) {
        let st = Station::new();
        lang.deploy(&st, "auth", "auth");
        let app = App::new(&st);
        let post = |body: Value| app.call("POST", "auth", "", None, &body);

        // register: 201 with a fresh 43-character base64url token and a 24 h lifetime.
        let before = now_ms();
        let r = post(json!({"action": "register", "username": "alice", "password": "correct horse", "email": "alice@example.org"}));
        let v = r.expect_json(201);
        let t1 = v["token"].as_str().unwrap().to_string();
        assert_eq!(v["username"], "alice", "{v}");
        assert_eq!(t1.len(), 43, "{t1}");
        assert!(t1.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{t1}");
        let expires = v["expires_at_ms"].as_u64().unwrap();
        assert!(expires >= before + 86_400_000 && expires <= now_ms() + 86_400_000, "{v}");
        assert_eq!(v.as_object().unwrap().len(), 3, "{v}");

        error(
            post(json!({"action": "register", "username": "alice", "password": "another one", "email": "a@b"})),
            409, "username_taken", "User 'alice' already exists",
        );
        let valid = json!({"action": "register", "username": "bob", "password": "password-1", "email": "b@c"});
        let with = |field: &str, value: Value| {
            let mut v = valid.clone();
            if value.is_null() { v.as_object_mut().unwrap().remove(field); } else { v[field] = value; }
            post(v)
        };
        let username_rule = "field 'username' must be 3 to 64 characters of A-Z, a-z, 0-9, '_', '.' and '-'";
        error(with("username", Value::Null), 400, "bad_request", "missing field 'username'");
        error(with("password", Value::Null), 400, "bad_request", "missing field 'password'");
        error(with("email", Value::Null), 400, "bad_request", "missing field 'email'");
        error(with("username", json!(5)), 400, "bad_request", "field 'username' must be a string");
        for name in ["ab", "a".repeat(65).as_str(), "a b", "ali/ce", "émile"] {
            error(with("username", json!(name)), 400, "bad_request", username_rule);
        }
        for pw in ["short", "1234567", "x".repeat(1025).as_str()] {
            error(with("password", json!(pw)), 400, "bad_request", "field 'password' must be 8 to 1024 characters");
        }
        for email in ["nobody", "@b", "a@", "a@b@c"] {
            error(with("email", json!(email)), 400, "bad_request",
                "field 'email' must be an address with exactly one '@' and text on both sides");
        }
        for ttl in [json!(0), json!(86_401), json!(1.5), json!("60"), json!(true)] {
            error(with("ttl_s", ttl), 400, "bad_request", "field 'ttl_s' must be an integer from 1 to 86400");
        }
        error(post(json!({"action": "fly"})), 400, "bad_request", "unknown action \"fly\" (expected register or login)");
        error(post(json!({})), 400, "bad_request", "missing field 'action'");
        error(app.raw("POST", "auth", "", None, b"{not json".to_vec()), 400, "bad_request", "request body must be a JSON object");
        error(app.raw("POST", "auth", "", None, b"[1]".to_vec()), 400, "bad_request", "request body must be a JSON object");
        error(app.call("POST", "auth", "/other", None, &json!({})), 404, "not_found", "no route for POST /other");
        app.call("PATCH", "auth", "", None, &json!({})).expect_error(405, "method_not_allowed");
        // None of those created anything.
        let keys: Vec<String> = state_of(&st, "auth").keys().cloned().collect();
        assert_eq!(keys.len(), 3, "alice's user, token and session only: {keys:?}");
        assert!(keys.iter().all(|k| !k.contains("bob")), "{keys:?}");

        // login: 200, a new token each time; one identical 401 for an unknown user and a
        // wrong password.
        let r = post(json!({"action": "login", "username": "alice", "password": "correct horse"}));
        let v = r.expect_json(200);
        assert_eq!((&v["username"], &v["is_admin"]), (&json!("alice"), &json!(false)), "{v}");
        let t2 = v["token"].as_str().unwrap().to_string();
        let t3 = app.login("alice", "correct horse");
        assert!(t1 != t2 && t2 != t3 && t1 != t3);
        let wrong = post(json!({"action": "login", "username": "alice", "password": "wrong horse"}));
        let unknown = post(json!({"action": "login", "username": "nobody", "password": "wrong horse"}));
        assert_eq!((wrong.status, wrong.text()), (unknown.status, unknown.text()));
        error(wrong, 401, "invalid_credentials", "Invalid username or password");
        error(post(json!({"action": "login", "username": "x", "password": "y"})), 401, "invalid_credentials", "Invalid username or password");
        error(post(json!({"action": "login", "password": "y"})), 400, "bad_request", "missing field 'username'");

        // GET: the user (no password data) by header, body or query token.
        let me = app.call("GET", "auth", "", Some(&t1), &Value::Null).expect_json(200);
        let user = &me["user"];
        assert_eq!(
            (&user["username"], &user["email"], &user["is_admin"]),
            (&json!("alice"), &json!("alice@example.org"), &json!(false)),
            "{me}"
        );
        let mut fields: Vec<&str> = user.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort();
        assert_eq!(fields, ["created_at_ms", "email", "is_admin", "username"], "{me}");
        assert_eq!(me["expires_at_ms"], json!(expires), "{me}");
        app.call("GET", "auth", "", None, &json!({"token": t2})).expect(200);
        app.call("GET", "auth", &format!("?token={t3}"), None, &Value::Null).expect(200);
        error(app.call("GET", "auth", "", None, &Value::Null), 401, "token_required", "Authentication token required");
        for junk in ["invalid_token_xyz", "demo_token_12345678901234567890", &t1[..42]] {
            error(app.call("GET", "auth", "", Some(junk), &Value::Null), 401, "invalid_token", "Invalid or expired token");
        }

        // PUT: email; no change; password change revokes the user's other tokens.
        error(app.call("PUT", "auth", "", None, &json!({"email": "x@y"})), 401, "token_required", "Authentication token required");
        error(app.call("PUT", "auth", "", Some(&t1), &json!({"email": "bad"})), 400, "bad_request",
            "field 'email' must be an address with exactly one '@' and text on both sides");
        assert_eq!(app.call("PUT", "auth", "", Some(&t1), &json!({"email": "alice@new.example"})).expect(200).text(),
            r#"{"message":"User updated"}"#);
        let me = app.call("GET", "auth", "", Some(&t2), &Value::Null).expect_json(200);
        assert_eq!(me["user"]["email"], "alice@new.example", "{me}");
        assert_eq!(app.call("PUT", "auth", "", Some(&t1), &json!({})).expect(200).text(), r#"{"message":"No changes"}"#);
        error(app.call("PUT", "auth", "", Some(&t1), &json!({"password": "new password"})), 400, "bad_request", "missing field 'old_password'");
        error(app.call("PUT", "auth", "", Some(&t1), &json!({"old_password": "correct horse", "password": "short"})), 400, "bad_request",
            "field 'password' must be 8 to 1024 characters");
        error(app.call("PUT", "auth", "", Some(&t1), &json!({"old_password": "not it at all", "password": "new password"})), 403,
            "wrong_password", "old_password is incorrect");
        app.login("alice", "correct horse"); // nothing changed
        app.call("GET", "auth", "", Some(&t3), &Value::Null).expect(200);
        assert_eq!(
            app.call("PUT", "auth", "", Some(&t1), &json!({"old_password": "correct horse", "password": "new password"})).expect(200).text(),
            r#"{"message":"User updated"}"#
        );
        app.call("GET", "auth", "", Some(&t1), &Value::Null).expect(200);
        for revoked in [&t2, &t3] {
            error(app.call("GET", "auth", "", Some(revoked), &Value::Null), 401, "invalid_token", "Invalid or expired token");
        }
        error(post(json!({"action": "login", "username": "alice", "password": "correct horse"})), 401, "invalid_credentials", "Invalid username or password");
        let t4 = app.login("alice", "new password");

        // DELETE: log out.
        error(app.call("DELETE", "auth", "", None, &Value::Null), 401, "token_required", "Authentication token required");
        assert_eq!(app.call("DELETE", "auth", "", Some(&t4), &Value::Null).expect(200).text(), r#"{"message":"Logged out"}"#);
        error(app.call("GET", "auth", "", Some(&t4), &Value::Null), 401, "invalid_token", "Invalid or expired token");

        // Expiry: ttl_s can shorten a token's life; an expired token is refused, and deleted.
        let v = post(json!({"action": "login", "username": "alice", "password": "new password", "ttl_s": 1})).expect_json(200);
        let short = v["token"].as_str().unwrap().to_string();
        let short_expires = v["expires_at_ms"].as_u64().unwrap();
        assert!(short_expires <= now_ms() + 1000, "{v}");
        let digest = hex(&Sha256::digest(short.as_bytes()));
        assert!(state_of(&st, "auth").contains_key(&format!("token:{digest}")));
        let refused_at = poll("the 1 s token to expire", Duration::from_secs(10), || {
            let r = app.call("GET", "auth", "", Some(&short), &Value::Null);
            (r.status == 401).then(|| (now_ms(), r))
        });
        assert!(refused_at.0 >= short_expires, "refused at {} before its expiry {short_expires}", refused_at.0);
        error(refused_at.1, 401, "invalid_token", "Invalid or expired token");
        assert!(!state_of(&st, "auth").contains_key(&format!("token:{digest}")), "the expired token was not deleted");

        // The state: PBKDF2 records with per-user salts, tokens only as sha256.
        let tb = app.register("bob", "correct horse"); // the same password as alice had
        let tc = app.register("carol", "carol's password");
        let td = app.register("dave", "correct horse"); // the same password as bob
        let state = state_of(&st, "auth");
        assert!(state.keys().any(|k| k.starts_with("user:")) && state.keys().any(|k| k.starts_with("token:")), "{state:?}");
        let record = |name: &str| -> Value {
            serde_json::from_str(state[&format!("user:{name}")].as_str().unwrap()).unwrap()
        };
        let bob = record("bob");
        assert_eq!(bob["email"], "bob@example.org");
        assert_eq!(bob["is_admin"], false);
        assert!(bob["created_at_ms"].is_u64(), "{bob}");
        let p = &bob["password"];
        assert_eq!(p["algo"], "pbkdf2-sha256", "{bob}");
        let n = p["iterations"].as_u64().unwrap() as u32;
        assert!(n >= ITERATIONS, "{bob}");
        let salt = base64_decode(p["salt"].as_str().unwrap());
        assert!(salt.len() >= 16, "{bob}");
        let hash = base64_decode(p["hash"].as_str().unwrap());
        assert_eq!(hash.len(), 32);
        assert_eq!(pbkdf2_sha256(b"correct horse", &salt, n).to_vec(), hash, "PBKDF2 reproduces the stored hash");
        let carol = record("carol");
        assert_ne!(carol["password"]["salt"], p["salt"]);
        let dave = record("dave");
        assert_ne!(dave["password"]["salt"], p["salt"], "two users share a salt");
        assert_ne!(dave["password"]["hash"], p["hash"], "the same password gave the same hash");
        // Bob has alice's old password: a different salt, a different hash.
        let alice = record("alice");
        assert_ne!(alice["password"]["salt"], p["salt"]);
        let tb_digest = hex(&Sha256::digest(tb.as_bytes()));
        let entry: Value = serde_json::from_str(state[&format!("token:{tb_digest}")].as_str().unwrap()).unwrap();
        assert_eq!(entry["username"], "bob", "{entry}");
        assert!(entry["expires_at_ms"].is_u64() && entry["created_at_ms"].is_u64(), "{entry}");

        // Deleting the account: password required and checked; then every token is gone,
        // login fails and the name is free again.
        let tb2 = app.login("bob", "correct horse");
        error(app.call("DELETE", "auth", "", Some(&tb), &json!({"delete_account": true})), 400, "bad_request", "missing field 'password'");
        error(app.call("DELETE", "auth", "", Some(&tb), &json!({"delete_account": true, "password": "wrong horse"})), 403,
            "wrong_password", "password is incorrect");
        app.call("GET", "auth", "", Some(&tb), &Value::Null).expect(200);
        assert_eq!(
            app.call("DELETE", "auth", "", Some(&tb), &json!({"delete_account": true, "password": "correct horse"})).expect(200).text(),
            r#"{"message":"Account bob deleted"}"#
        );
        for t in [&tb, &tb2] {
            error(app.call("GET", "auth", "", Some(t), &Value::Null), 401, "invalid_token", "Invalid or expired token");
        }
        error(post(json!({"action": "login", "username": "bob", "password": "correct horse"})), 401, "invalid_credentials", "Invalid username or password");
        let state = state_of(&st, "auth");
        assert!(state.keys().all(|k| !k.contains("bob")), "bob's keys are left: {:?}", state.keys().collect::<Vec<_>>());
        let tb3 = app.register("bob", "a new start");
        // The query form.
        assert_eq!(
            app.call("DELETE", "auth", "?delete_account=true&password=carol%27s%20password", Some(&tc), &Value::Null).expect(200).text(),
            r#"{"message":"Account carol deleted"}"#
        );

        let final_state = state_of(&st, "auth");
        let mut hashes = Vec::new();
        for (key, value) in &final_state {
            if key.starts_with("user:") {
                let record: Value = serde_json::from_str(value.as_str().unwrap()).unwrap();
                hashes.push(record["password"]["salt"].as_str().unwrap().to_string());
                hashes.push(record["password"]["hash"].as_str().unwrap().to_string());
            }
        }
        hashes.push(p["salt"].as_str().unwrap().to_string());
        hashes.push(p["hash"].as_str().unwrap().to_string());
        let states = vec![serde_json::to_string(&final_state).unwrap()];
        let logs = vec![log_of(&st, "auth", "account deleted: carol")];
        assert!(logs[0].contains("user registered: alice"), "{}", logs[0]);
        assert_nothing_secret(
            &app,
            &["correct horse", "wrong horse", "new password", "carol's password", "a new start"],
            &[&t1, &t2, &t3, &t4, &short, &tb, &tb2, &tb3, &tc, &td],
            &hashes,
            &states,
            &logs,
        );
    }
}

per_lang! {
    /// §2 and §4: every route of `blog`, identity through `auth` (made-up tokens, no
    /// fallback identity, an undeployed `auth`), authorship, listing, and the log.
    fn blog_routes_and_identity(lang: Lang) {
        let st = Station::new();
        lang.deploy(&st, "auth", "auth");
        lang.deploy(&st, "blog", "blog");
        let app = App::new(&st);
        let alice = app.register("alice", "alice password");
        let bob = app.register("bob_b", "bob password");
        let blog = |method: &str, path: &str, token: Option<&str>, body: Value| app.call(method, "blog", path, token, &body);
        let total = || blog("GET", "", None, Value::Null).expect_json(200)["pagination"]["total"].as_u64().unwrap();
        let post_keys = || state_of(&st, "blog").keys().filter(|k| k.starts_with("post:")).count();

        // No identity, a made-up one, or one auth cannot confirm: 401/503, nothing created.
        let body = json!({"title": "Hello", "content": "World", "author": "mallory"});
        error(blog("POST", "", None, body.clone()), 401, "token_required", "Authentication token required");
        for junk in ["invalid_token_xyz", "demo_token_12345678901234567890", "x"] {
            error(blog("POST", "", Some(junk), body.clone()), 401, "invalid_token", "Invalid or expired token");
            error(blog("POST", "", None, json!({"title": "t", "content": "c", "token": junk})), 401, "invalid_token", "Invalid or expired token");
            error(blog("POST", &format!("?token={junk}"), None, body.clone()), 401, "invalid_token", "Invalid or expired token");
        }
        // Identity comes before validation.
        error(blog("POST", "", Some("invalid_token_xyz"), json!({})), 401, "invalid_token", "Invalid or expired token");
        error(app.raw("POST", "blog", "", None, b"{not json".to_vec()), 401, "token_required", "Authentication token required");
        assert_eq!((total(), post_keys()), (0, 0), "a refused write created a post");

        // create: 201, the author from the token.
        let r = blog("POST", "", Some(&alice), body.clone());
        let v = r.expect_json(201);
        let p1 = v["post_id"].as_str().unwrap().to_string();
        assert_eq!(v, json!({"post_id": p1, "title": "Hello"}));
        let id_ok = |id: &str| !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        assert!(id_ok(&p1), "{p1}");
        let got = blog("GET", &format!("?id={p1}"), None, Value::Null).expect_json(200);
        let post = &got["post"];
        assert_eq!((&post["author"], &post["title"], &post["content"], &post["tags"]),
            (&json!("alice"), &json!("Hello"), &json!("World"), &json!([])), "{got}");
        let mut fields: Vec<&str> = post.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort();
        assert_eq!(fields, ["author", "content", "created_at_ms", "id", "tags", "title", "updated_at_ms"], "{got}");
        error(blog("GET", "?id=nope", None, Value::Null), 404, "not_found", "Post not found: nope");

        // Validation, after identity; nothing created.
        for (body, word) in [
            (json!({"content": "c"}), "missing field 'title'"),
            (json!({"title": " \t ", "content": "c"}), "field 'title' must not be empty"),
            (json!({"title": "x".repeat(201), "content": "c"}), "field 'title' must be at most 200 characters"),
            (json!({"title": "t"}), "missing field 'content'"),
            (json!({"title": "t", "content": "  "}), "field 'content' must not be empty"),
            (json!({"title": "t", "content": "x".repeat(100_001)}), "field 'content' must be at most 100000 characters"),
            (json!({"title": "t", "content": "c", "tags": "rust"}), "tags"),
            (json!({"title": "t", "content": "c", "tags": [""]}), "tags"),
            (json!({"title": "t", "content": "c", "tags": ["x".repeat(51)]}), "tags"),
            (json!({"title": "t", "content": "c", "tags": vec!["a"; 21]}), "tags"),
            (json!({"title": 5, "content": "c"}), "field 'title' must be a string"),
        ] {
            bad_request(blog("POST", "", Some(&alice), body), word);
        }
        error(app.raw("POST", "blog", "", Some(&alice), b"{not json".to_vec()), 400, "bad_request", "request body must be a JSON object");
        assert_eq!(total(), 1);

        // More posts for the list: creation order, titles for sorting, a needle past the excerpt.
        let long = format!("{}needle at the end", "é".repeat(300));
        let mut ids = vec![p1.clone()];
        for (token, title, content, tags) in [
            (&bob, "banana", long.as_str(), json!(["fruit"])),
            (&alice, "Apple", "plain", json!(["fruit", "red"])),
            (&alice, "apple", "second apple", json!([])),
            (&bob, "cherry", "c", json!([])),
        ] {
            let v = blog("POST", "", Some(token), json!({"title": title, "content": content, "tags": tags})).expect_json(201);
            ids.push(v["post_id"].as_str().unwrap().to_string());
        }
        let listed = |query: &str| -> (Vec<String>, Value, Value) {
            let v = blog("GET", query, None, Value::Null).expect_json(200);
            let ids = v["posts"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect();
            (ids, v["pagination"].clone(), v)
        };
        let (got, page, v) = listed("");
        let newest: Vec<String> = ids.iter().rev().cloned().collect();
        assert_eq!(got, newest);
        assert_eq!(page, json!({"total": 5, "limit": 10, "offset": 0, "has_more": false}));
        let banana = v["posts"].as_array().unwrap().iter().find(|p| p["title"] == "banana").unwrap();
        assert_eq!(banana["excerpt"], json!(format!("{}...", "é".repeat(200))));
        assert!(banana.get("content").is_none(), "{banana}");
        assert_eq!(banana["tags"], json!(["fruit"]));
        assert_eq!(listed("?sort=oldest").0, ids);
        // Title order is case-insensitive, ties broken by creation order.
        assert_eq!(listed("?sort=title").0, [&ids[2], &ids[3], &ids[1], &ids[4], &ids[0]].map(|s| s.clone()));
        let (got, page, _) = listed("?sort=oldest&limit=2&offset=1");
        assert_eq!(got, [ids[1].clone(), ids[2].clone()]);
        assert_eq!(page, json!({"total": 5, "limit": 2, "offset": 1, "has_more": true}));
        let (got, page, _) = listed("?sort=oldest&limit=2&offset=3");
        assert_eq!((got.len(), &page["has_more"]), (2, &json!(false)));
        assert_eq!(listed("?offset=10").0.len(), 0);
        let (got, page, _) = listed("?author=bob_b");
        assert_eq!((got, page["total"].clone()), (vec![ids[4].clone(), ids[1].clone()], json!(2)));
        assert_eq!(listed("?author=bob").0.len(), 0, "author is an exact match");
        assert_eq!(listed("?search=NEEDLE").0, [ids[1].clone()], "search covers the full content");
        assert_eq!(listed("?search=aPpLe&sort=oldest").0, [ids[2].clone(), ids[3].clone()]);
        assert_eq!(listed("?search=zzz").1["total"], 0);
        for q in ["limit=0", "limit=101", "limit=x", "limit=-1", "limit=1.5"] {
            error(blog("GET", &format!("?{q}"), None, Value::Null), 400, "bad_request", "query parameter 'limit' must be an integer from 1 to 100");
        }
        for q in ["offset=-1", "offset=x"] {
            error(blog("GET", &format!("?{q}"), None, Value::Null), 400, "bad_request", "query parameter 'offset' must be an integer from 0");
        }
        error(blog("GET", "?sort=random", None, Value::Null), 400, "bad_request", "query parameter 'sort' must be newest, oldest or title");

        // update: only the author; updated_at_ms advances.
        let before = blog("GET", &format!("?id={p1}"), None, Value::Null).expect_json(200)["post"].clone();
        error(blog("PUT", "", Some(&bob), json!({"id": p1, "title": "Stolen"})), 403, "not_author", "Only the author can update this post");
        error(blog("PUT", "", Some("invalid_token_xyz"), json!({"id": p1, "title": "Stolen"})), 401, "invalid_token", "Invalid or expired token");
        error(blog("PUT", "", Some(&alice), json!({"title": "x"})), 400, "bad_request", "missing field 'id'");
        error(blog("PUT", "", Some(&alice), json!({"id": "p999", "title": "x"})), 404, "not_found", "Post not found: p999");
        bad_request(blog("PUT", "", Some(&alice), json!({"id": p1, "title": ""})), "title");
        assert_eq!(blog("GET", &format!("?id={p1}"), None, Value::Null).expect_json(200)["post"], before, "a refused update changed the post");
        assert_eq!(blog("PUT", "", Some(&alice), json!({"id": p1})).expect(200).text(), r#"{"message":"No changes"}"#);
        let v = blog("PUT", "", Some(&alice), json!({"id": p1, "title": "Hello again", "tags": ["x"]})).expect_json(200);
        assert_eq!(v, json!({"post_id": p1, "message": "Post updated"}));
        let after = blog("GET", &format!("?id={p1}"), None, Value::Null).expect_json(200)["post"].clone();
        assert_eq!((&after["title"], &after["content"], &after["tags"]), (&json!("Hello again"), &json!("World"), &json!(["x"])));
        assert!(after["updated_at_ms"].as_u64() > before["updated_at_ms"].as_u64(), "{before} -> {after}");
        assert_eq!(after["created_at_ms"], before["created_at_ms"]);

        // delete: only the author; the id in the query or the body.
        error(blog("DELETE", &format!("?id={p1}"), Some(&bob), Value::Null), 403, "not_author", "Only the author can delete this post");
        error(blog("DELETE", "", Some(&alice), Value::Null), 400, "bad_request", "missing field 'id'");
        error(blog("DELETE", "?id=p999", Some(&alice), Value::Null), 404, "not_found", "Post not found: p999");
        blog("GET", &format!("?id={p1}"), None, Value::Null).expect(200);
        assert_eq!(blog("DELETE", &format!("?id={p1}"), Some(&alice), Value::Null).expect(200).text(), r#"{"message":"Post deleted: Hello again"}"#);
        error(blog("GET", &format!("?id={p1}"), None, Value::Null), 404, "not_found", &format!("Post not found: {p1}"));
        assert_eq!(blog("DELETE", "", Some(&bob), json!({"id": ids[4]})).expect(200).text(), r#"{"message":"Post deleted: cherry"}"#);
        let v = blog("POST", "", Some(&alice), json!({"title": "new", "content": "c"})).expect_json(201);
        let fresh = v["post_id"].as_str().unwrap().to_string();
        assert!(id_ok(&fresh) && !ids.contains(&fresh), "{fresh} reuses an id of {ids:?}");
        error(blog("POST", "/elsewhere", Some(&alice), json!({})), 404, "not_found", "no route for POST /elsewhere");

        // State and log.
        let bstate = state_of(&st, "blog");
        assert!(bstate.contains_key(&format!("post:{fresh}")), "{bstate:?}");
        let astate = state_of(&st, "auth");
        assert!(bstate.keys().all(|k| !astate.contains_key(k)), "blog and auth share a key name");
        let blog_log = log_of(&st, "blog", &format!("post created {fresh} by alice"));
        assert!(blog_log.contains(&format!("post deleted {p1} by alice")), "{blog_log}");
        assert!(blog_log.contains(&format!("post updated {p1} by alice")), "{blog_log}");

        // auth undeployed: fail closed with 503, nothing created; back again, the token works.
        let count = total();
        st.request("DELETE", "/admin/objects/auth", Vec::new()).expect(200);
        let r = blog("POST", "", Some(&alice), json!({"title": "t", "content": "c"}));
        error(r, 503, "auth_unavailable", "The auth object could not check the token; try again later");
        error(blog("PUT", "", Some(&alice), json!({"id": fresh, "title": "x"})), 503, "auth_unavailable", "The auth object could not check the token; try again later");
        error(blog("DELETE", &format!("?id={fresh}"), Some(&alice), Value::Null), 503, "auth_unavailable", "The auth object could not check the token; try again later");
        assert_eq!(total(), count, "a write went through without auth");
        assert_eq!(blog("GET", &format!("?id={fresh}"), None, Value::Null).expect_json(200)["post"]["title"], "new");
        let blog_log = log_of(&st, "blog", "auth unavailable");
        lang.deploy(&st, "auth", "auth");
        blog("POST", "", Some(&alice), json!({"title": "t", "content": "c"})).expect(201);

        assert_nothing_secret(
            &app,
            &["alice password", "bob password"],
            &[&alice, &bob],
            &[],
            &[serde_json::to_string(&bstate).unwrap()],
            &[blog_log],
        );
    }
}

per_lang! {
    /// §3: every route of `chat`, identity through `auth`, polling by timestamp,
    /// concurrent senders, durability across a restart.
    fn chat_routes_and_polling(lang: Lang) {
        let mut st = Station::new();
        lang.deploy(&st, "auth", "auth");
        lang.deploy(&st, "chat", "chat");
        let app = App::new(&st);
        let alice = app.register("alice", "alice password");
        let bob = app.register("bob", "bob password");
        let chat = |method: &str, path: &str, token: Option<&str>, body: Value| app.call(method, "chat", path, token, &body);

        let rooms = r#"{"chat_rooms":["General","Technology","Crypto","Sports","Movies"]}"#;
        assert_eq!(chat("GET", "/rooms", Some(&alice), Value::Null).expect(200).text(), rooms);
        error(chat("GET", "/rooms", None, Value::Null), 401, "token_required", "Authentication token required");
        error(chat("GET", "/rooms", Some("invalid_token_xyz"), Value::Null), 401, "invalid_token", "Invalid or expired token");
        error(chat("POST", "/rooms/General/join", Some("invalid_token_xyz"), Value::Null), 401, "invalid_token", "Invalid or expired token");
        error(chat("POST", "/rooms/General/messages", None, json!({"message": "hi"})), 401, "token_required", "Authentication token required");
        error(chat("GET", "/rooms/General/messages", Some("x"), Value::Null), 401, "invalid_token", "Invalid or expired token");
        error(chat("POST", "/rooms/general/join", Some(&alice), Value::Null), 404, "not_found", "Room not found: general");
        error(chat("GET", "/elsewhere", Some(&alice), Value::Null), 404, "not_found", "no route for GET /elsewhere");
        let r = chat("GET", "/rooms/General/join", Some(&alice), Value::Null);
        assert_eq!(r.header("allow"), Some("POST"), "{r:?}");
        error(r, 405, "method_not_allowed", "GET is not supported on /rooms/General/join");

        // Not joined yet.
        error(chat("POST", "/rooms/General/messages", Some(&alice), json!({"message": "hi"})), 403, "not_joined", "Join the room General before using its messages");
        error(chat("GET", "/rooms/General/messages", Some(&alice), Value::Null), 403, "not_joined", "Join the room General before using its messages");

        let system = |v: &Value| -> Vec<Value> {
            v["recent_messages"].as_array().unwrap().iter().filter(|m| m["user_name"] != "SYSTEM").cloned().collect()
        };
        let v = chat("POST", "/rooms/General/join", Some(&alice), Value::Null).expect_json(200);
        assert_eq!(v["room_name"], "General");
        assert!(system(&v).is_empty(), "{v}");
        let v2 = chat("POST", "/rooms/General/join", Some(&alice), Value::Null).expect_json(200);
        assert_eq!(v2, v, "joining twice is harmless");
        chat("POST", "/rooms/General/join", Some(&bob), json!({})).expect(200);

        // Send: 201 with the stored message; the sender is the token's user.
        let before_us = now_ms() * 1000;
        let m1 = chat("POST", "/rooms/General/messages", Some(&alice), json!({"message": "hello", "user_name": "mallory"})).expect_json(201);
        assert_eq!((&m1["user_name"], &m1["message"]), (&json!("alice"), &json!("hello")), "{m1}");
        let ts1 = m1["timestamp"].as_u64().unwrap();
        assert!(ts1 >= before_us && ts1 <= now_ms() * 1000 + 1000, "{m1} is not microseconds now");
        assert_eq!(m1.as_object().unwrap().len(), 3, "{m1}");
        for (body, message) in [
            (json!({}), "missing field 'message'"),
            (json!({"message": " \n\t"}), "field 'message' must not be empty"),
            (json!({"message": "x".repeat(2001)}), "field 'message' must be at most 2000 characters"),
            (json!({"message": 7}), "field 'message' must be a string"),
        ] {
            error(chat("POST", "/rooms/General/messages", Some(&alice), body), 400, "bad_request", message);
        }
        error(chat("POST", "/rooms/Nowhere/messages", Some(&alice), json!({"message": "x"})), 404, "not_found", "Room not found: Nowhere");
        chat("POST", "/rooms/General/messages", Some(&alice), json!({"message": "x".repeat(2000)})).expect(201);
        let m3 = chat("POST", "/rooms/General/messages", Some(&bob), json!({"message": "hi alice"})).expect_json(201);

        // Poll: exclusive after_timestamp, oldest first, limit.
        let poll_msgs = |token: &str, query: &str| -> Vec<Value> {
            chat("GET", &format!("/rooms/General/messages{query}"), Some(token), Value::Null).expect_json(200)["messages"].as_array().unwrap().clone()
        };
        let all = poll_msgs(&alice, "");
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], m1);
        assert_eq!(all[2], m3);
        assert_eq!(poll_msgs(&bob, &format!("?after_timestamp={ts1}")).len(), 2, "after_timestamp is exclusive");
        assert_eq!(poll_msgs(&bob, &format!("?after_timestamp={}", ts1 - 1))[0], m1);
        assert_eq!(poll_msgs(&bob, "?after_timestamp=0&limit=1"), vec![m1.clone()]);
        assert_eq!(poll_msgs(&bob, "?limit=0").len(), 0);
        assert_eq!(poll_msgs(&bob, &format!("?after_timestamp={}", m3["timestamp"])).len(), 0);
        for q in ["after_timestamp=-1", "after_timestamp=abc", "after_timestamp=1.5"] {
            error(chat("GET", &format!("/rooms/General/messages?{q}"), Some(&bob), Value::Null), 400, "bad_request",
                "query parameter 'after_timestamp' must be an integer from 0");
        }
        error(chat("GET", "/rooms/General/messages?limit=-5", Some(&bob), Value::Null), 400, "bad_request",
            "query parameter 'limit' must be an integer from 0");
        error(chat("GET", "/rooms/Nowhere/messages", Some(&bob), Value::Null), 404, "not_found", "Room not found: Nowhere");
        error(chat("GET", "/rooms/Movies/messages", Some(&bob), Value::Null), 403, "not_joined", "Join the room Movies before using its messages");
        // A later join shows the stored messages, oldest first, after the SYSTEM lines.
        let v = chat("POST", "/rooms/General/join", Some(&bob), Value::Null).expect_json(200);
        assert_eq!(system(&v), all);
        let first = &v["recent_messages"][0];
        assert_eq!(first["user_name"], "SYSTEM", "{v}");

        // 2 users × 50 parallel sends: 100 stored, 100 distinct, increasing timestamps.
        let since = m3["timestamp"].as_u64().unwrap();
        std::thread::scope(|s| {
            for (who, token) in [("alice", &alice), ("bob", &bob)] {
                for i in 0..50 {
                    let app = app.clone();
                    s.spawn(move || {
                        app.call("POST", "chat", "/rooms/General/messages", Some(token), &json!({"message": format!("{who} {i}")})).expect(201);
                    });
                }
            }
        });
        let mut after = since;
        let mut got = Vec::new();
        loop {
            let page = poll_msgs(&alice, &format!("?after_timestamp={after}"));
            let Some(last) = page.last() else { break };
            after = last["timestamp"].as_u64().unwrap();
            got.extend(page);
        }
        assert_eq!(got.len(), 100, "parallel sends lost or repeated messages");
        let stamps: Vec<u64> = got.iter().map(|m| m["timestamp"].as_u64().unwrap()).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]), "timestamps are not strictly increasing: {stamps:?}");
        for who in ["alice", "bob"] {
            let mut mine: Vec<String> = got.iter().filter(|m| m["user_name"] == who).map(|m| m["message"].as_str().unwrap().to_string()).collect();
            mine.sort();
            let mut expected: Vec<String> = (0..50).map(|i| format!("{who} {i}")).collect();
            expected.sort();
            assert_eq!(mine, expected, "{who}'s messages");
        }

        // Messages and memberships survive a restart.
        let before_restart = poll_msgs(&bob, "");
        drop(app);
        st.restart();
        let app = App::new(&st);
        let v = app.call("GET", "chat", "/rooms/General/messages", Some(&bob), &Value::Null).expect_json(200);
        assert_eq!(v["messages"].as_array().unwrap(), &before_restart);

        // auth undeployed: 503, nothing stored.
        st.request("DELETE", "/admin/objects/auth", Vec::new()).expect(200);
        error(app.call("POST", "chat", "/rooms/General/messages", Some(&alice), &json!({"message": "lost?"})), 503, "auth_unavailable",
            "The auth object could not check the token; try again later");
        error(app.call("GET", "chat", "/rooms", Some(&alice), &Value::Null), 503, "auth_unavailable",
            "The auth object could not check the token; try again later");
        let chat_state = state_of(&st, "chat");
        let stored = chat_state.keys().filter(|k| k.starts_with("msg:General:")).count();
        assert_eq!(stored, 103, "{:?}", chat_state.keys().collect::<Vec<_>>());
        assert_nothing_secret(
            &app,
            &["alice password", "bob password"],
            &[&alice, &bob],
            &[],
            &[serde_json::to_string(&chat_state).unwrap()],
            &[log_of(&st, "chat", "auth unavailable")],
        );
    }
}

per_lang! {
    /// Issue 14 item 2: `auth` homed on one station, `blog` and `chat` on another; the
    /// calls to `auth` cross stations, and so does the bearer token.
    fn blog_and_chat_reach_auth_on_another_station(lang: Lang) {
        let mut cluster = Cluster::reserve(2);
        let st = cluster.start_joined(2, Opts::new());
        let (a, b) = (&st[0], &st[1]);
        let (ida, idb) = (a.station_id(), b.station_id());
        lang.deploy(a, "auth", "auth");
        lang.deploy(b, "blog", "blog");
        lang.deploy(b, "chat", "chat");
        for s in [a, b] {
            s.wait_home("auth", &ida);
            s.wait_home("blog", &idb);
            s.wait_home("chat", &idb);
        }
        let on_a = App::new(a);
        let on_b = on_a.on(b);
        let alice = on_a.register("alice", "alice password");
        let bob = on_b.register("bob", "bob password"); // forwarded to auth's home

        let r = on_b.call("POST", "blog", "", Some(&alice), &json!({"title": "Far", "content": "away"}));
        assert_eq!(r.header("x-op-station"), Some(idb.as_str()), "{r:?}");
        let id = r.expect_json(201)["post_id"].as_str().unwrap().to_string();
        let post = on_a.call("GET", "blog", &format!("?id={id}"), None, &Value::Null).expect_json(200);
        assert_eq!(post["post"]["author"], "alice", "{post}");
        error(on_b.call("POST", "blog", "", Some("invalid_token_xyz"), &json!({"title": "t", "content": "c"})), 401, "invalid_token", "Invalid or expired token");
        error(on_b.call("PUT", "blog", "", Some(&bob), &json!({"id": id, "title": "mine"})), 403, "not_author", "Only the author can update this post");

        on_b.call("POST", "chat", "/rooms/Crypto/join", Some(&bob), &Value::Null).expect(200);
        // Issue 14 item 4, push: a member subscribes to the room's events through the station
        // that is not chat's home; a made-up token or a non-member gets chat's answer and no
        // stream.
        let events = |token: &str| format!("{}/objects/chat/events?topic=Crypto&token={}", a.url, pct(token));
        let sub = crate::events::Subscriber::open(&events(&bob), None);
        for (token, status, code) in [("demo_token_12345678901234567890", 401, "invalid_token"), (alice.as_str(), 403, "not_joined")] {
            let r = a.client().get(events(token)).send().unwrap();
            assert_eq!(r.status().as_u16(), status, "subscribing with {code}");
            assert!(!r.headers()["content-type"].to_str().unwrap().contains("event-stream"));
            assert_eq!(r.json::<Value>().unwrap()["error"], code);
        }
        let sent = on_a.call("POST", "chat", "/rooms/Crypto/messages", Some(&bob), &json!({"message": "across"})).expect(201);
        let m = sent.json();
        assert_eq!(m["user_name"], "bob", "{m}");
        let pushed = sub.next(Duration::from_secs(10));
        assert_eq!((pushed.event.as_str(), pushed.data), ("Crypto", sent.text()), "the event is the stored message");
        error(on_b.call("GET", "chat", "/rooms", Some("demo_token_12345678901234567890"), &Value::Null), 401, "invalid_token", "Invalid or expired token");

        // Logging out on A's auth is seen by B's blog at once.
        on_a.call("DELETE", "auth", "", Some(&alice), &Value::Null).expect(200);
        error(on_b.call("POST", "blog", "", Some(&alice), &json!({"title": "t", "content": "c"})), 401, "invalid_token", "Invalid or expired token");
        assert_nothing_secret(&on_a, &["alice password", "bob password"], &[&alice, &bob], &[], &[], &[]);
    }
}
