"""``auth``: users, passwords and bearer tokens. The behaviour is the contract in
``EXAMPLE-APPS.md`` §1; the routes are in this directory's README. It answers byte for byte
as the Rust ``auth`` (``objects/rust/auth``), whose comments say more.

State:

- ``user:<username>`` = ``{"created_at_ms","email","is_admin":false,"password":{"algo":
  "pbkdf2-sha256","hash","iterations","salt"}}`` (salt and hash in base64).
- ``token:<sha256 hex of the token>`` = ``{"created_at_ms","expires_at_ms","username"}``:
  the token itself is never stored.
- ``session:<username>:<sha256 hex>`` = ``""``: each user's tokens, for revocation.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from object_primitive import (
    HTTPError,
    Object,
    Request,
    Response,
    crypto,
    dumps,
    export,
    log,
    runtime,
    state,
)
from object_primitive.route import JsonBody, missing, wrong_type

#: PBKDF2-HMAC-SHA256 rounds for new password records (the contract's minimum).
ITERATIONS = 100_000
SALT_BYTES = 16
TOKEN_BYTES = 32
MAX_TTL_S = 86_400

USERNAME = re.compile(r"[A-Za-z0-9_.\-]{3,64}")


def invalid_credentials() -> HTTPError:
    return HTTPError(401, "invalid_credentials", "Invalid username or password")


def invalid_token() -> HTTPError:
    return HTTPError(401, "invalid_token", "Invalid or expired token")


def wrong_password(what: str) -> HTTPError:
    return HTTPError(403, "wrong_password", f"{what} is incorrect")


def message(text: str) -> Response:
    return Response.json({"message": text})


def token_of(req: Request, body: JsonBody) -> Optional[str]:
    """The ``Authorization: Bearer`` header, else the body's ``token``, else ``?token=``."""
    token = req.bearer_token()
    if token:
        return token
    token = body.str("token")
    if token:
        return token
    return req.query("token") or None


def valid_username(name: str) -> bool:
    return USERNAME.fullmatch(name) is not None


def username_field(body: JsonBody) -> str:
    name = body.required_str("username")
    if not valid_username(name):
        raise HTTPError(
            400,
            "bad_request",
            "field 'username' must be 3 to 64 characters of A-Z, a-z, 0-9, '_', '.' and '-'",
        )
    return name


def check_password(name: str, password: str) -> None:
    if not 8 <= len(password) <= 1024:
        raise HTTPError(400, "bad_request", f"field '{name}' must be 8 to 1024 characters")


def check_email(email: str) -> None:
    local, at, domain = email.partition("@")
    if not (at and local and domain and "@" not in domain and len(email) <= 254):
        raise HTTPError(
            400,
            "bad_request",
            "field 'email' must be an address with exactly one '@' and text on both sides",
        )


def ttl_field(body: JsonBody) -> int:
    v = body.get("ttl_s")
    if v is None:
        return MAX_TTL_S
    if type(v) is int and 1 <= v <= MAX_TTL_S:
        return v
    raise HTTPError(
        400, "bad_request", f"field 'ttl_s' must be an integer from 1 to {MAX_TTL_S}"
    )


def password_record(password: str) -> dict[str, Any]:
    salt = crypto.random_bytes(SALT_BYTES)
    digest = crypto.pbkdf2_sha256(password.encode("utf-8"), salt, ITERATIONS)
    return {
        "algo": "pbkdf2-sha256",
        "hash": crypto.base64_encode(digest),
        "iterations": ITERATIONS,
        "salt": crypto.base64_encode(salt),
    }


def password_matches(record: Any, password: str) -> bool:
    p = record.get("password") if isinstance(record, dict) else None
    if not isinstance(p, dict) or p.get("algo") != "pbkdf2-sha256":
        return False
    iterations = p.get("iterations")
    salt_text, hash_text = p.get("salt"), p.get("hash")
    if type(iterations) is not int or not 1 <= iterations < 2**32:
        return False
    if not isinstance(salt_text, str) or not isinstance(hash_text, str):
        return False
    salt, stored = crypto.base64_decode(salt_text), crypto.base64_decode(hash_text)
    if salt is None or stored is None:
        return False
    computed = crypto.pbkdf2_sha256(password.encode("utf-8"), salt, iterations)
    return crypto.constant_time_eq(computed, stored)


def waste_a_password_check(password: str) -> None:
    """The time of one password check, for an unknown user (no timing difference)."""
    crypto.pbkdf2_sha256(password.encode("utf-8"), bytes(SALT_BYTES), ITERATIONS)


def user_key(username: str) -> str:
    return f"user:{username}"


def session_prefix(username: str) -> str:
    return f"session:{username}:"


def issue_token(username: str, ttl_s: int) -> tuple[str, int]:
    token = crypto.base64url_encode(crypto.random_bytes(TOKEN_BYTES))
    digest = crypto.sha256_hex(token.encode("ascii"))
    now = runtime.now_ms()
    expires = now + ttl_s * 1000
    state.set_json(
        f"token:{digest}",
        {"created_at_ms": now, "expires_at_ms": expires, "username": username},
    )
    state.set(session_prefix(username) + digest, "")
    return token, expires


def forget_token(username: str, digest: str) -> None:
    state.delete(f"token:{digest}")
    state.delete(session_prefix(username) + digest)


def revoke_tokens(username: str, keep: Optional[str]) -> None:
    prefix = session_prefix(username)
    for key in state.keys(prefix):
        digest = key[len(prefix):]
        if digest != keep:
            forget_token(username, digest)


class Caller:
    __slots__ = ("username", "digest", "expires_at_ms", "record")

    def __init__(self, username: str, digest: str, expires_at_ms: int, record: Any) -> None:
        self.username = username
        self.digest = digest
        self.expires_at_ms = expires_at_ms
        self.record = record


def _uint(v: Any) -> int:
    return v if type(v) is int and v >= 0 else 0


def caller(req: Request, body: JsonBody) -> Caller:
    token = token_of(req, body)
    if token is None:
        raise HTTPError(401, "token_required", "Authentication token required")
    digest = crypto.sha256_hex(token.encode("utf-8"))
    entry = state.get_json(f"token:{digest}")
    if not isinstance(entry, dict):
        raise invalid_token()
    username = entry.get("username")
    if not isinstance(username, str):
        username = ""
    expires_at_ms = _uint(entry.get("expires_at_ms"))
    record = state.get_json(user_key(username))
    if isinstance(record, dict) and runtime.now_ms() < expires_at_ms:
        return Caller(username, digest, expires_at_ms, record)
    forget_token(username, digest)
    raise invalid_token()


def register(body: JsonBody) -> Response:
    username = username_field(body)
    password = body.required_str("password")
    check_password("password", password)
    email = body.required_str("email")
    check_email(email)
    ttl_s = ttl_field(body)
    if state.get(user_key(username)) is not None:
        raise HTTPError(409, "username_taken", f"User '{username}' already exists")
    state.set_json(
        user_key(username),
        {
            "created_at_ms": runtime.now_ms(),
            "email": email,
            "is_admin": False,
            "password": password_record(password),
        },
    )
    token, expires = issue_token(username, ttl_s)
    log.info(f"user registered: {username}")
    return Response.json(
        {"expires_at_ms": expires, "token": token, "username": username}, status=201
    )


def login(body: JsonBody) -> Response:
    username = body.required_str("username")
    password = body.required_str("password")
    ttl_s = ttl_field(body)
    record = state.get_json(user_key(username)) if valid_username(username) else None
    if not isinstance(record, dict):
        waste_a_password_check(password)
        log.info("login failed")
        raise invalid_credentials()
    if not password_matches(record, password):
        log.info("login failed")
        raise invalid_credentials()
    token, expires = issue_token(username, ttl_s)
    log.info(f"login: {username}")
    is_admin = record.get("is_admin")
    return Response.json(
        {
            "expires_at_ms": expires,
            "is_admin": is_admin if isinstance(is_admin, bool) else False,
            "token": token,
            "username": username,
        }
    )


def public_user(username: str, record: dict[str, Any]) -> dict[str, Any]:
    """The record without its password data, plus the name, keys sorted (as Rust's)."""
    user = {k: v for k, v in record.items() if k != "password"}
    user["username"] = username
    return dict(sorted(user.items()))


def only_root(req: Request) -> None:
    if req.segments():
        raise HTTPError(404, "not_found", f"no route for {req.method} {req.path}")


class Auth(Object):
    def post(self, req: Request) -> Response:
        only_root(req)
        body = JsonBody.parse(req)
        action = body.get("action")
        if action is None:
            raise missing("action")
        if not isinstance(action, str):
            raise wrong_type("action", "a string")
        if action == "register":
            return register(body)
        if action == "login":
            return login(body)
        raise HTTPError(
            400, "bad_request", f"unknown action {dumps(action)} (expected register or login)"
        )

    def get(self, req: Request) -> Response:
        only_root(req)
        me = caller(req, JsonBody.parse(req))
        return Response.json(
            {"expires_at_ms": me.expires_at_ms, "user": public_user(me.username, me.record)}
        )

    def put(self, req: Request) -> Response:
        only_root(req)
        body = JsonBody.parse(req)
        me = caller(req, body)
        email = body.str("email")
        if email is not None:
            check_email(email)
        password = body.str("password")
        old_password = body.str("old_password")
        if password is not None:
            check_password("password", password)
            if old_password is None:
                raise missing("old_password")
        elif old_password is not None:
            raise missing("password")
        if email is None and password is None:
            return message("No changes")
        if old_password is not None and not password_matches(me.record, old_password):
            raise wrong_password("old_password")
        record = dict(me.record)
        if email is not None:
            record["email"] = email
        if password is not None:
            record["password"] = password_record(password)
            revoke_tokens(me.username, me.digest)
            log.info(f"password changed: {me.username}")
        state.set_json(user_key(me.username), dict(sorted(record.items())))
        return message("User updated")

    def delete(self, req: Request) -> Response:
        only_root(req)
        body = JsonBody.parse(req)
        me = caller(req, body)
        flag = body.bool("delete_account")
        delete_account = flag if flag is not None else req.query("delete_account") == "true"
        if not delete_account:
            forget_token(me.username, me.digest)
            return message("Logged out")
        password = body.str("password")
        if password is None:
            password = req.query("password")
            if password is None:
                raise missing("password")
        if not password_matches(me.record, password):
            raise wrong_password("password")
        revoke_tokens(me.username, None)
        state.delete(user_key(me.username))
        log.info(f"account deleted: {me.username}")
        return message(f"Account {me.username} deleted")


Handler = export(Auth)
