//! `auth`: users, passwords and bearer tokens. The behaviour is the contract in
//! `EXAMPLE-APPS.md` §1; the routes are in this crate's README.
//!
//! State:
//! - `user:<username>` = `{"created_at_ms","email","is_admin":false,"password":{"algo":
//!   "pbkdf2-sha256","hash","iterations","salt"}}` (salt and hash in base64).
//! - `token:<sha256 hex of the token>` = `{"created_at_ms","expires_at_ms","username"}`:
//!   the token itself is never stored.
//! - `session:<username>:<sha256 hex>` = `""`: an index of each user's tokens, so that
//!   a password change or an account deletion revokes them without scanning every token.
//!
//! Nothing secret is ever logged or answered except the token, once, to whoever logged
//! in.

use object_primitive::crypto;
use object_primitive::route::{JsonBody, missing, wrong_type};
use object_primitive::serde_json::Value;
use object_primitive::{Object, Request, Response, export_object, info, json, runtime, state};

/// PBKDF2-HMAC-SHA256 rounds for new password records (the contract's minimum).
pub const ITERATIONS: u32 = 100_000;
/// Bytes of random salt per password record.
const SALT_BYTES: usize = 16;
/// Bytes of randomness per token: 256 bits, 43 characters of base64url.
const TOKEN_BYTES: usize = 32;
/// The longest (and default) token lifetime: 24 h.
const MAX_TTL_S: i64 = 86_400;

struct Auth;

type Answer = Result<Response, Response>;

fn invalid_credentials() -> Response {
    Response::error(401, "invalid_credentials", "Invalid username or password")
}

fn invalid_token() -> Response {
    Response::error(401, "invalid_token", "Invalid or expired token")
}

fn token_required() -> Response {
    Response::error(401, "token_required", "Authentication token required")
}

fn wrong_password(what: &str) -> Response {
    Response::error(403, "wrong_password", &format!("{what} is incorrect"))
}

fn message(text: &str) -> Response {
    Response::json(&json!({ "message": text }))
}

/// The token of a request: the `Authorization: Bearer` header, else the body's `token`
/// field, else the `?token=` query. Empty values count as absent.
fn token_of<'a>(req: &'a Request, body: &'a JsonBody) -> Result<Option<&'a str>, Response> {
    if let Some(token) = req.bearer_token() {
        return Ok(Some(token));
    }
    if let Some(token) = body.str("token")?.filter(|t| !t.is_empty()) {
        return Ok(Some(token));
    }
    Ok(req.query("token").filter(|t| !t.is_empty()))
}

fn valid_username(name: &str) -> bool {
    (3..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn username_field(body: &JsonBody) -> Result<&str, Response> {
    let name = body.required_str("username")?;
    if !valid_username(name) {
        return Err(Response::bad_request(
            "field 'username' must be 3 to 64 characters of A-Z, a-z, 0-9, '_', '.' and '-'",
        ));
    }
    Ok(name)
}

/// A new password, checked: 8 to 1024 characters (Unicode scalar values).
fn check_password(name: &str, password: &str) -> Result<(), Response> {
    if (8..=1024).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(Response::bad_request(&format!(
            "field '{name}' must be 8 to 1024 characters"
        )))
    }
}

/// An email address: exactly one `@` with text on both sides, at most 254 characters.
fn check_email(email: &str) -> Result<(), Response> {
    let ok = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && email.chars().count() <= 254
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Response::bad_request(
            "field 'email' must be an address with exactly one '@' and text on both sides",
        ))
    }
}

/// The optional `ttl_s`: an integer from 1 to 86,400 (default 86,400).
fn ttl_field(body: &JsonBody) -> Result<i64, Response> {
    let bad = || {
        Response::bad_request(&format!(
            "field 'ttl_s' must be an integer from 1 to {MAX_TTL_S}"
        ))
    };
    match body.get("ttl_s") {
        None => Ok(MAX_TTL_S),
        Some(v) => match v.as_i64() {
            Some(n) if (1..=MAX_TTL_S).contains(&n) => Ok(n),
            _ => Err(bad()),
        },
    }
}

/// A password record for `password`: a fresh salt, PBKDF2-SHA256 at [`ITERATIONS`].
fn password_record(password: &str) -> Value {
    let salt = crypto::random_bytes(SALT_BYTES);
    let hash = crypto::pbkdf2_sha256(password.as_bytes(), &salt, ITERATIONS);
    json!({
        "algo": "pbkdf2-sha256",
        "iterations": ITERATIONS,
        "salt": crypto::base64_encode(&salt),
        "hash": crypto::base64_encode(&hash),
    })
}

/// Whether `password` matches a stored record, compared in constant time. A record
/// that cannot be read matches nothing.
fn password_matches(record: &Value, password: &str) -> bool {
    let p = &record["password"];
    let (Some("pbkdf2-sha256"), Some(iterations), Some(salt), Some(hash)) = (
        p["algo"].as_str(),
        p["iterations"].as_u64().and_then(|n| u32::try_from(n).ok()),
        p["salt"].as_str().and_then(crypto::base64_decode),
        p["hash"].as_str().and_then(crypto::base64_decode),
    ) else {
        return false;
    };
    if iterations == 0 {
        return false;
    }
    let computed = crypto::pbkdf2_sha256(password.as_bytes(), &salt, iterations);
    crypto::constant_time_eq(&computed, &hash)
}

/// Spends the time of one password check, for an unknown user: the answer to a login
/// must not tell, by its timing, whether the user exists.
fn waste_a_password_check(password: &str) {
    let _ = crypto::pbkdf2_sha256(password.as_bytes(), &[0u8; SALT_BYTES], ITERATIONS);
}

fn user_key(username: &str) -> String {
    format!("user:{username}")
}

fn session_prefix(username: &str) -> String {
    format!("session:{username}:")
}

/// Mints a token for `username` valid for `ttl_s` seconds; returns it and its expiry.
fn issue_token(username: &str, ttl_s: i64) -> (String, u64) {
    let token = crypto::base64url_encode(&crypto::random_bytes(TOKEN_BYTES));
    let digest = crypto::sha256_hex(token.as_bytes());
    let now = runtime::now_ms();
    let expires = now + ttl_s as u64 * 1000;
    state::set_json(
        &format!("token:{digest}"),
        &json!({ "username": username, "created_at_ms": now, "expires_at_ms": expires }),
    );
    state::set(&format!("{}{digest}", session_prefix(username)), "");
    (token, expires)
}

fn forget_token(username: &str, digest: &str) {
    state::delete(&format!("token:{digest}"));
    state::delete(&format!("{}{digest}", session_prefix(username)));
}

/// Revokes every token of `username` except the one whose digest is `keep`.
fn revoke_tokens(username: &str, keep: Option<&str>) {
    let prefix = session_prefix(username);
    for key in state::keys(&prefix) {
        let digest = &key[prefix.len()..];
        if Some(digest) != keep {
            forget_token(username, digest);
        }
    }
}

/// The caller, found by token.
struct Caller {
    username: String,
    digest: String,
    expires_at_ms: u64,
    record: Value,
}

/// Resolves the request's token: 401 `token_required` without one, 401 `invalid_token`
/// when it is unknown, logged out, revoked or expired (an expired one is deleted).
fn caller(req: &Request, body: &JsonBody) -> Result<Caller, Response> {
    let token = token_of(req, body)?.ok_or_else(token_required)?;
    let digest = crypto::sha256_hex(token.as_bytes());
    let entry: Value = state::get_json(&format!("token:{digest}")).ok_or_else(invalid_token)?;
    let username = entry["username"].as_str().unwrap_or_default().to_string();
    let expires_at_ms = entry["expires_at_ms"].as_u64().unwrap_or(0);
    let record = state::get_json::<Value>(&user_key(&username));
    match record {
        Some(record) if runtime::now_ms() < expires_at_ms => Ok(Caller {
            username,
            digest,
            expires_at_ms,
            record,
        }),
        _ => {
            forget_token(&username, &digest);
            Err(invalid_token())
        }
    }
}

fn register(body: &JsonBody) -> Answer {
    let username = username_field(body)?;
    let password = body.required_str("password")?;
    check_password("password", password)?;
    let email = body.required_str("email")?;
    check_email(email)?;
    let ttl_s = ttl_field(body)?;
    if state::get(&user_key(username)).is_some() {
        return Err(Response::error(
            409,
            "username_taken",
            &format!("User '{username}' already exists"),
        ));
    }
    state::set_json(
        &user_key(username),
        &json!({
            "email": email,
            "is_admin": false,
            "created_at_ms": runtime::now_ms(),
            "password": password_record(password),
        }),
    );
    let (token, expires) = issue_token(username, ttl_s);
    info!("user registered: {username}");
    Ok(
        Response::json(&json!({ "username": username, "token": token, "expires_at_ms": expires }))
            .with_status(201),
    )
}

fn login(body: &JsonBody) -> Answer {
    let username = body.required_str("username")?;
    let password = body.required_str("password")?;
    let ttl_s = ttl_field(body)?;
    let record = valid_username(username)
        .then(|| state::get_json::<Value>(&user_key(username)))
        .flatten();
    let Some(record) = record else {
        waste_a_password_check(password);
        info!("login failed");
        return Err(invalid_credentials());
    };
    if !password_matches(&record, password) {
        info!("login failed");
        return Err(invalid_credentials());
    }
    let (token, expires) = issue_token(username, ttl_s);
    info!("login: {username}");
    Ok(Response::json(&json!({
        "username": username,
        "token": token,
        "expires_at_ms": expires,
        "is_admin": record["is_admin"].as_bool().unwrap_or(false),
    })))
}

/// The user as others may see it: the record without its password data, plus the name.
fn public_user(username: &str, record: &Value) -> Value {
    let mut user = record.clone();
    if let Some(map) = user.as_object_mut() {
        map.remove("password");
        map.insert("username".into(), json!(username));
    }
    user
}

fn post(req: &Request) -> Answer {
    let body = JsonBody::parse(req)?;
    match body.get("action") {
        None => Err(missing("action")),
        Some(Value::String(action)) => match action.as_str() {
            "register" => register(&body),
            "login" => login(&body),
            other => Err(Response::bad_request(&format!(
                "unknown action {} (expected register or login)",
                json!(other)
            ))),
        },
        Some(_) => Err(wrong_type("action", "a string")),
    }
}

fn get(req: &Request) -> Answer {
    let body = JsonBody::parse(req)?;
    let me = caller(req, &body)?;
    Ok(Response::json(&json!({
        "user": public_user(&me.username, &me.record),
        "expires_at_ms": me.expires_at_ms,
    })))
}

fn put(req: &Request) -> Answer {
    let body = JsonBody::parse(req)?;
    let me = caller(req, &body)?;
    let email = body.str("email")?;
    if let Some(email) = email {
        check_email(email)?;
    }
    let password = body.str("password")?;
    let old_password = body.str("old_password")?;
    match (password, old_password) {
        (Some(password), old) => {
            check_password("password", password)?;
            if old.is_none() {
                return Err(missing("old_password"));
            }
        }
        (None, Some(_)) => return Err(missing("password")),
        (None, None) => {}
    }
    if email.is_none() && password.is_none() {
        return Ok(message("No changes"));
    }
    if let Some(old) = old_password
        && !password_matches(&me.record, old)
    {
        return Err(wrong_password("old_password"));
    }
    let mut record = me.record;
    if let Some(email) = email {
        record["email"] = json!(email);
    }
    if let Some(password) = password {
        record["password"] = password_record(password);
        revoke_tokens(&me.username, Some(&me.digest));
        info!("password changed: {}", me.username);
    }
    state::set_json(&user_key(&me.username), &record);
    Ok(message("User updated"))
}

fn delete(req: &Request) -> Answer {
    let body = JsonBody::parse(req)?;
    let me = caller(req, &body)?;
    let delete_account = match body.bool("delete_account")? {
        Some(flag) => flag,
        None => req.query("delete_account") == Some("true"),
    };
    if !delete_account {
        forget_token(&me.username, &me.digest);
        return Ok(message("Logged out"));
    }
    let password = match body.str("password")? {
        Some(p) => p,
        None => req.query("password").ok_or_else(|| missing("password"))?,
    };
    if !password_matches(&me.record, password) {
        return Err(wrong_password("password"));
    }
    revoke_tokens(&me.username, None);
    state::delete(&user_key(&me.username));
    info!("account deleted: {}", me.username);
    Ok(message(&format!("Account {} deleted", me.username)))
}

impl Object for Auth {
    fn get(req: Request) -> Response {
        only_root(&req, get).unwrap_or_else(|e| e)
    }
    fn post(req: Request) -> Response {
        only_root(&req, post).unwrap_or_else(|e| e)
    }
    fn put(req: Request) -> Response {
        only_root(&req, put).unwrap_or_else(|e| e)
    }
    fn delete(req: Request) -> Response {
        only_root(&req, delete).unwrap_or_else(|e| e)
    }
}

/// Every route is at `/`; any other path is a 404.
fn only_root(req: &Request, handler: fn(&Request) -> Answer) -> Answer {
    if !req.segments().is_empty() {
        return Err(Response::not_found(&format!(
            "no route for {} {}",
            req.method, req.path
        )));
    }
    handler(req)
}

export_object!(Auth);

#[cfg(test)]
mod tests;
