"""The example applications (objects/python/{auth,blog,chat}/app.py) against the SDK's
in-memory fake, with the same cases as the Rust objects' unit tests. The black-box suite
(tests/blackbox/apps.rs) runs both languages as components in real stations.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import unittest
from types import ModuleType
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "guest-sdk", "python", "src"))

from object_primitive import (  # noqa: E402
    Object,
    Request,
    Response,
    crypto,
    dispatch,
    runtime,
    state,
    testing,
)


def load(path: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


auth = load("objects/python/auth/app.py", "py_auth_app")
blog = load("objects/python/blog/app.py", "py_blog_app")
chat = load("objects/python/chat/app.py", "py_chat_app")


def call(
    obj: type, method: str, path: str, token: Optional[str] = None, body: Any = None
) -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {token}"} if token else None
    r = dispatch(obj, Request(method, path, headers=headers, json={} if body is None else body))
    return r.status, r.json_body()


class FakeAuth(Object):
    """``tok-<name>`` is a valid token of user ``<name>``; others get 401."""

    def get(self, req: Request) -> Response:
        token = req.bearer_token() or ""
        if token.startswith("tok-"):
            return Response.json({"user": {"username": token[4:]}})
        return Response.error(401, "invalid_token", "Invalid or expired token")


class Failing(Object):
    def get(self, req: Request) -> Response:
        return Response.error(500, "boom", "down")


class AuthTest(unittest.TestCase):
    def setUp(self) -> None:
        testing.reset()

    def register(self, name: str, password: str) -> str:
        status, v = call(
            auth.Auth,
            "POST",
            "/",
            body={"action": "register", "username": name, "password": password, "email": "a@b.c"},
        )
        self.assertEqual(status, 201, v)
        return str(v["token"])

    def test_register_login_and_the_stored_record(self) -> None:
        token = self.register("alice", "password-1")
        self.assertEqual(len(token), 43)
        status, v = call(
            auth.Auth, "POST", "/", body={"action": "login", "username": "alice", "password": "password-1"}
        )
        self.assertEqual(status, 200)
        self.assertIs(v["is_admin"], False)
        self.assertNotEqual(v["token"], token)
        s = testing.state()
        p = json.loads(s["user:alice"])["password"]
        self.assertEqual(p["algo"], "pbkdf2-sha256")
        self.assertGreaterEqual(p["iterations"], 100_000)
        salt = crypto.base64_decode(p["salt"])
        assert salt is not None
        self.assertGreaterEqual(len(salt), 16)
        import hashlib

        expected = hashlib.pbkdf2_hmac("sha256", b"password-1", salt, p["iterations"])
        self.assertEqual(p["hash"], crypto.base64_encode(expected))
        self.assertIn("token:" + crypto.sha256_hex(token.encode()), s)
        for k, value in s.items():
            self.assertNotIn(token, k + value)
            self.assertNotIn("password-1", value)

    def test_unknown_user_and_wrong_password_answer_alike(self) -> None:
        self.register("bob_1", "password-1")
        wrong = call(auth.Auth, "POST", "/", body={"action": "login", "username": "bob_1", "password": "nope-nope"})
        unknown = call(auth.Auth, "POST", "/", body={"action": "login", "username": "nobody", "password": "nope-nope"})
        self.assertEqual(wrong, unknown)
        self.assertEqual(wrong[0], 401)
        self.assertEqual(wrong[1]["error"], "invalid_credentials")

    def test_validation_names_the_field(self) -> None:
        base = {"action": "register", "username": "abc", "password": "password-1", "email": "a@b"}
        changes: list[tuple[dict[str, Any], str]] = [
            ({"username": None}, "'username'"),
            ({"username": "ab"}, "'username'"),
            ({"username": "a b c"}, "'username'"),
            ({"password": "short"}, "'password'"),
            ({"email": "a@@b"}, "'email'"),
            ({"email": "@b"}, "'email'"),
            ({"ttl_s": 0}, "'ttl_s'"),
            ({"ttl_s": 86401}, "'ttl_s'"),
            ({"ttl_s": 1.5}, "'ttl_s'"),
            ({"ttl_s": True}, "'ttl_s'"),
            ({"action": "fly"}, '"fly"'),
            ({"action": None}, "'action'"),
        ]
        for change, says in changes:
            status, v = call(auth.Auth, "POST", "/", body={**base, **change})
            self.assertEqual(status, 400, change)
            self.assertEqual(v["error"], "bad_request")
            self.assertIn(says, v["message"], change)
        self.assertEqual(testing.state(), {})
        self.register("abc", "password-1")
        status, v = call(auth.Auth, "POST", "/", body={**base, "password": "password-2"})
        self.assertEqual((status, v["error"]), (409, "username_taken"))
        self.assertIn("already exists", v["message"])

    def test_tokens_resolve_log_out_and_are_revoked_by_a_password_change(self) -> None:
        t1 = self.register("carol", "password-1")
        _, v = call(auth.Auth, "POST", "/", body={"action": "login", "username": "carol", "password": "password-1"})
        t2 = v["token"]
        status, v = call(auth.Auth, "GET", "/", t1)
        self.assertEqual(status, 200)
        self.assertEqual(sorted(v["user"]), ["created_at_ms", "email", "is_admin", "username"])
        self.assertEqual(call(auth.Auth, "GET", "/", body={"token": t1})[0], 200)
        self.assertEqual(call(auth.Auth, "GET", f"/?token={t1}")[0], 200)
        self.assertEqual(call(auth.Auth, "GET", "/")[1]["error"], "token_required")
        self.assertEqual(call(auth.Auth, "GET", "/", "made-up")[1]["error"], "invalid_token")
        status, v = call(auth.Auth, "PUT", "/", t1, {"old_password": "wrong-one", "password": "password-2"})
        self.assertEqual((status, v["error"]), (403, "wrong_password"))
        self.assertEqual(call(auth.Auth, "GET", "/", t2)[0], 200)
        status, v = call(auth.Auth, "PUT", "/", t1, {"old_password": "password-1", "password": "password-2"})
        self.assertEqual((status, v), (200, {"message": "User updated"}))
        self.assertEqual(call(auth.Auth, "GET", "/", t1)[0], 200)
        self.assertEqual(call(auth.Auth, "GET", "/", t2)[0], 401)
        self.assertEqual(call(auth.Auth, "PUT", "/", t1)[1], {"message": "No changes"})
        self.assertEqual(call(auth.Auth, "DELETE", "/", t1)[1], {"message": "Logged out"})
        self.assertEqual(call(auth.Auth, "GET", "/", t1)[0], 401)

    def test_expired_tokens_are_refused_and_deleted(self) -> None:
        t = self.register("dave", "password-1")
        key = "token:" + crypto.sha256_hex(t.encode())
        entry = state.get_json(key)
        entry["expires_at_ms"] = runtime.now_ms() - 1
        state.set_json(key, entry)
        self.assertEqual(call(auth.Auth, "GET", "/", t)[1]["error"], "invalid_token")
        self.assertIsNone(state.get(key))

    def test_deleting_the_account(self) -> None:
        t = self.register("erin", "password-1")
        self.assertEqual(call(auth.Auth, "DELETE", "/", t, {"delete_account": True})[0], 400)
        status, v = call(auth.Auth, "DELETE", "/", t, {"delete_account": True, "password": "password-x"})
        self.assertEqual((status, v["error"]), (403, "wrong_password"))
        status, v = call(auth.Auth, "DELETE", "/?delete_account=true&password=password-1", t)
        self.assertEqual((status, v), (200, {"message": "Account erin deleted"}))
        self.assertEqual(testing.state(), {})
        self.register("erin", "password-3")

    def test_logs_hold_no_secret(self) -> None:
        t = self.register("frank", "password-1")
        call(auth.Auth, "POST", "/", body={"action": "login", "username": "frank", "password": "bad-password"})
        call(auth.Auth, "GET", "/", "some-made-up-token")
        for _, line in testing.logs():
            for secret in ("password-1", "bad-password", t[:8], "made-up"):
                self.assertNotIn(secret, line)


class BlogTest(unittest.TestCase):
    def setUp(self) -> None:
        testing.reset()
        testing.register_object("auth", FakeAuth)

    def create(self, token: str, title: str, content: str) -> str:
        status, v = call(blog.Blog, "POST", "/", token, {"title": title, "content": content})
        self.assertEqual(status, 201, v)
        return str(v["post_id"])

    def posts(self) -> list[str]:
        return [k for k in testing.state() if k.startswith("post:")]

    def test_writes_need_a_token_that_auth_accepts(self) -> None:
        body = {"title": "t", "content": "c", "author": "mallory"}
        status, v = call(blog.Blog, "POST", "/", None, body)
        self.assertEqual((status, v["error"]), (401, "token_required"))
        self.assertIn("token", v["message"])
        status, v = call(blog.Blog, "POST", "/", "demo_token_12345678901234567890", body)
        self.assertEqual((status, v["error"]), (401, "invalid_token"))
        self.assertEqual(call(blog.Blog, "POST", "/", "junk", {})[0], 401)
        testing.unregister_object("auth")
        status, v = call(blog.Blog, "POST", "/", "tok-alice", body)
        self.assertEqual((status, v["error"]), (503, "auth_unavailable"))
        testing.register_object("auth", Failing)
        self.assertEqual(call(blog.Blog, "POST", "/", "tok-alice", body)[0], 503)
        self.assertEqual(self.posts(), [])
        testing.register_object("auth", FakeAuth)
        id = self.create("tok-alice", "t", "c")
        self.assertEqual(call(blog.Blog, "GET", f"/?id={id}")[1]["post"]["author"], "alice")

    def test_create_validates_and_lists(self) -> None:
        for body, says in [
            ({"content": "c"}, "title"),
            ({"title": "  ", "content": "c"}, "title"),
            ({"title": "x" * 201, "content": "c"}, "title"),
            ({"title": "t"}, "content"),
            ({"title": "t", "content": " \n"}, "content"),
            ({"title": "t", "content": "c", "tags": "x"}, "tags"),
            ({"title": "t", "content": "c", "tags": [""]}, "tags"),
            ({"title": "t", "content": "c", "tags": ["a"] * 21}, "tags"),
        ]:
            status, v = call(blog.Blog, "POST", "/", "tok-a", body)
            self.assertEqual(status, 400, body)
            self.assertIn(says, v["message"])
        self.assertEqual(self.posts(), [])
        self.assertEqual(self.create("tok-a", "Beta", "é" * 250), "p1")
        self.assertEqual(self.create("tok-b", "alpha", "Needle in here"), "p2")
        self.assertEqual(self.create("tok-a", "Gamma", "c"), "p3")
        _, v = call(blog.Blog, "GET", "/")
        self.assertEqual([p["id"] for p in v["posts"]], ["p3", "p2", "p1"])
        self.assertEqual(v["pagination"], {"has_more": False, "limit": 10, "offset": 0, "total": 3})
        self.assertEqual(v["posts"][2]["excerpt"], "é" * 200 + "...")
        _, v = call(blog.Blog, "GET", "/?sort=title&limit=2&offset=1")
        self.assertEqual([p["id"] for p in v["posts"]], ["p1", "p3"])
        _, v = call(blog.Blog, "GET", "/?sort=oldest&limit=1")
        self.assertEqual((v["posts"][0]["id"], v["pagination"]["has_more"]), ("p1", True))
        self.assertEqual(call(blog.Blog, "GET", "/?author=b")[1]["pagination"]["total"], 1)
        self.assertEqual(call(blog.Blog, "GET", "/?search=NEEDLE")[1]["posts"][0]["id"], "p2")
        for q in ["limit=0", "limit=101", "limit=x", "limit=-1", "offset=-1", "offset=1.5", "sort=up"]:
            self.assertEqual(call(blog.Blog, "GET", f"/?{q}")[0], 400, q)
        self.assertEqual(call(blog.Blog, "GET", "/?id=p9"), (404, {"error": "not_found", "message": "Post not found: p9"}))

    def test_only_the_author_updates_or_deletes(self) -> None:
        id = self.create("tok-a", "Title", "Content")
        status, v = call(blog.Blog, "PUT", "/", "tok-b", {"id": id, "title": "Mine"})
        self.assertEqual((status, v["error"]), (403, "not_author"))
        status, v = call(blog.Blog, "DELETE", f"/?id={id}", "tok-b")
        self.assertEqual((status, v["error"]), (403, "not_author"))
        post = call(blog.Blog, "GET", f"/?id={id}")[1]["post"]
        self.assertEqual(post["title"], "Title")
        self.assertEqual(call(blog.Blog, "PUT", "/", "tok-a", {"title": "x"})[0], 400)
        self.assertEqual(call(blog.Blog, "PUT", "/", "tok-a", {"id": "p404", "title": "x"})[0], 404)
        self.assertEqual(call(blog.Blog, "PUT", "/", "tok-a", {"id": id})[1], {"message": "No changes"})
        status, v = call(blog.Blog, "PUT", "/", "tok-a", {"id": id, "title": "New", "tags": ["x"]})
        self.assertEqual((status, v), (200, {"message": "Post updated", "post_id": id}))
        after = call(blog.Blog, "GET", f"/?id={id}")[1]["post"]
        self.assertEqual(after["title"], "New")
        self.assertGreater(after["updated_at_ms"], post["updated_at_ms"])
        self.assertEqual(call(blog.Blog, "DELETE", "/", "tok-a")[0], 400)
        self.assertEqual(call(blog.Blog, "DELETE", "/", "tok-a", {"id": id}), (200, {"message": "Post deleted: New"}))
        self.assertEqual(call(blog.Blog, "GET", f"/?id={id}")[0], 404)
        self.assertEqual(self.create("tok-a", "again", "c"), "p2")
        lines = [line for _, line in testing.logs()]
        self.assertIn(f"post deleted {id} by a", lines)
        self.assertFalse(any("tok-" in line for line in lines))


class ChatTest(unittest.TestCase):
    def setUp(self) -> None:
        testing.reset()
        testing.register_object("auth", FakeAuth)

    @staticmethod
    def stored(messages: list[Any]) -> list[Any]:
        return [m for m in messages if m["user_name"] != "SYSTEM"]

    def test_rooms_need_a_token(self) -> None:
        status, v = call(chat.Chat, "GET", "/rooms", "tok-a")
        self.assertEqual((status, v), (200, {"chat_rooms": ["General", "Technology", "Crypto", "Sports", "Movies"]}))
        self.assertEqual(call(chat.Chat, "GET", "/rooms")[1]["error"], "token_required")
        self.assertEqual(call(chat.Chat, "GET", "/rooms", "bad")[1]["error"], "invalid_token")
        testing.unregister_object("auth")
        self.assertEqual(call(chat.Chat, "GET", "/rooms", "tok-a")[1]["error"], "auth_unavailable")
        self.assertEqual(call(chat.Chat, "GET", "/nope", "tok-a")[0], 404)
        self.assertEqual(call(chat.Chat, "PUT", "/rooms", "tok-a")[0], 405)

    def test_join_send_and_poll(self) -> None:
        self.assertEqual(call(chat.Chat, "POST", "/rooms/general/join", "tok-a")[0], 404)
        status, v = call(chat.Chat, "POST", "/rooms/General/messages", "tok-a", {"message": "hi"})
        self.assertEqual((status, v["error"]), (403, "not_joined"))
        self.assertEqual(call(chat.Chat, "GET", "/rooms/General/messages", "tok-a")[0], 403)
        status, v = call(chat.Chat, "POST", "/rooms/General/join", "tok-a")
        self.assertEqual((status, v["room_name"], self.stored(v["recent_messages"])), (200, "General", []))
        call(chat.Chat, "POST", "/rooms/General/join", "tok-b")
        last = 0
        for i in range(5):
            who = "tok-a" if i % 2 == 0 else "tok-b"
            status, m = call(chat.Chat, "POST", "/rooms/General/messages", who, {"message": f"m{i}", "user_name": "mallory"})
            self.assertEqual(status, 201)
            self.assertEqual(m["user_name"], who[4:])
            self.assertGreater(m["timestamp"], last)
            last = m["timestamp"]
        _, v = call(chat.Chat, "GET", "/rooms/General/messages?after_timestamp=0&limit=2", "tok-b")
        self.assertEqual([m["message"] for m in v["messages"]], ["m0", "m1"])
        after = v["messages"][1]["timestamp"]
        _, v = call(chat.Chat, "GET", f"/rooms/General/messages?after_timestamp={after}", "tok-b")
        self.assertEqual([m["message"] for m in v["messages"]], ["m2", "m3", "m4"])
        _, v = call(chat.Chat, "GET", f"/rooms/General/messages?after_timestamp={last}", "tok-b")
        self.assertEqual(v["messages"], [])
        _, v = call(chat.Chat, "POST", "/rooms/General/join", "tok-c")
        self.assertEqual(len(self.stored(v["recent_messages"])), 5)
        for q in ["after_timestamp=-1", "after_timestamp=x", "limit=1.5"]:
            self.assertEqual(call(chat.Chat, "GET", f"/rooms/General/messages?{q}", "tok-a")[0], 400, q)
        for body in [{}, {"message": "  "}, {"message": "x" * 2001}, {"message": 5}]:
            self.assertEqual(call(chat.Chat, "POST", "/rooms/General/messages", "tok-a", body)[0], 400, body)

    def test_messages_are_published_to_the_room_and_only_members_may_subscribe(self) -> None:
        self.assertEqual(call(chat.Chat, "GET", "/events?topic=General")[1]["error"], "token_required")
        self.assertEqual(call(chat.Chat, "GET", "/events?topic=General", "tok-a")[1]["error"], "not_joined")
        self.assertEqual(call(chat.Chat, "GET", "/events", "tok-a")[0], 400)
        self.assertEqual(call(chat.Chat, "GET", "/events?topic=general", "tok-a")[0], 404)
        call(chat.Chat, "POST", "/rooms/Crypto/join", "tok-a")
        self.assertEqual(call(chat.Chat, "GET", "/events?topic=Crypto", "tok-a"), (200, {"room_name": "Crypto"}))
        testing.take_published_events()
        _, m = call(chat.Chat, "POST", "/rooms/Crypto/messages", "tok-a", {"message": "to the moon"})
        self.assertEqual(testing.take_published_events(), [("Crypto", json.dumps(m, separators=(",", ":"), sort_keys=True))])
        call(chat.Chat, "POST", "/rooms/Crypto/messages", "tok-a", {"message": "  "})
        self.assertEqual(testing.take_published_events(), [], "a refused message publishes nothing")

    def test_a_room_keeps_its_last_thousand_messages(self) -> None:
        call(chat.Chat, "POST", "/rooms/Sports/join", "tok-a")
        for i in range(1005):
            call(chat.Chat, "POST", "/rooms/Sports/messages", "tok-a", {"message": f"m{i}"})
        self.assertEqual(len(state.keys("msg:Sports:")), 1000)
        _, v = call(chat.Chat, "POST", "/rooms/Sports/join", "tok-a")
        recent = self.stored(v["recent_messages"])
        self.assertEqual((len(recent), recent[0]["message"], recent[49]["message"]), (50, "m955", "m1004"))
        _, v = call(chat.Chat, "GET", "/rooms/Sports/messages?limit=500", "tok-a")
        self.assertEqual((len(v["messages"]), v["messages"][0]["message"]), (100, "m5"))


if __name__ == "__main__":
    unittest.main()
