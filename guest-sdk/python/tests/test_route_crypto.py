"""Unit tests of the SDK's ``route`` and ``crypto`` modules and ``Request.bearer_token``,
with the same cases (and the same expected bytes) as the Rust SDK's tests.

Run: python3 -m unittest discover -s guest-sdk/python/tests
"""

from __future__ import annotations

import hashlib
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from object_primitive import BadRequest, Request, Response, crypto  # noqa: E402
from object_primitive.route import JsonBody, Params, Router  # noqa: E402


def room(req: Request, p: Params) -> Response:
    return Response.text(f"room {p['room']}")


def root(req: Request, p: Params) -> Response:
    return Response.text("root")


def raises(req: Request, p: Params) -> Response:
    raise BadRequest("nope")


class RouterTest(unittest.TestCase):
    def setUp(self) -> None:
        self.r = Router()
        self.r.add("GET", "/", root)
        self.r.add("POST", "/rooms/{room}/join", room)
        self.r.add("put", "/rooms/{room}/join", room)
        self.r.add("GET", "/raise", raises)

    def test_routes_by_method_and_pattern(self) -> None:
        self.assertEqual(self.r.handle(Request("GET", "")).text_body(), "root")
        self.assertEqual(
            self.r.handle(Request("POST", "/rooms/a%20b/join/")).text_body(), "room a b"
        )
        a = self.r.handle(Request("GET", "/rooms/x/join"))
        self.assertEqual(a.status, 405)
        self.assertEqual(a.header("allow"), "POST, PUT")
        self.assertEqual(
            a.text_body(),
            '{"error":"method_not_allowed","message":"GET is not supported on /rooms/x/join"}',
        )
        a = self.r.handle(Request("POST", "/rooms/x"))
        self.assertEqual(
            a.text_body(), '{"error":"not_found","message":"no route for POST /rooms/x"}'
        )
        self.assertEqual(self.r.handle(Request("POST", "/rooms//join")).status, 404)
        a = self.r.handle(Request("GET", "/raise"))
        self.assertEqual((a.status, a.json_body()["message"]), (400, "nope"))

    def test_decorators(self) -> None:
        r = Router()

        @r.get("/a/{x}")
        def a(req: Request, p: Params) -> Response:
            return Response.text(p["x"])

        self.assertEqual(r.handle(Request("GET", "/a/1")).text_body(), "1")
        self.assertEqual(r.handle(Request("DELETE", "/a/1")).status, 405)


class JsonBodyTest(unittest.TestCase):
    def test_fields(self) -> None:
        def req(b: str) -> Request:
            return Request("POST", "/", body=b)

        self.assertEqual(JsonBody.parse(req(" \n")).fields, {})
        for bad in ["[]", "1", "{", '"x"', "{} x", "NaN", '{"a": NaN}', "\ufeff{}"]:
            with self.assertRaises(BadRequest) as e:
                JsonBody.parse(req(bad))
            self.assertEqual(
                e.exception.response.text_body(),
                '{"error":"bad_request","message":"request body must be a JSON object"}',
                bad,
            )
            self.assertIsNone(JsonBody.try_parse(req(bad)))
        self.assertIsNone(JsonBody.try_parse(Request("POST", "/", body=b"\xff")))
        b = JsonBody.parse(
            req('{"s":"x","n":3,"f":1.5,"t":true,"z":null,"l":["a"],"m":["a",1],"big":1e400}')
        )
        self.assertEqual(b.str("s"), "x")
        self.assertIsNone(b.str("z"))
        self.assertEqual(b.required_str("s"), "x")
        with self.assertRaises(BadRequest) as e:
            b.required_str("z")
        self.assertEqual(e.exception.message, "missing field 'z'")
        with self.assertRaises(BadRequest) as e:
            b.str("n")
        self.assertEqual(e.exception.message, "field 'n' must be a string")
        self.assertEqual(b.int("n"), 3)
        for name in ("f", "s", "t", "big"):
            with self.assertRaises(BadRequest):
                b.int(name)
        self.assertIs(b.bool("t"), True)
        with self.assertRaises(BadRequest):
            b.bool("n")
        self.assertEqual(b.str_list("l"), ["a"])
        for name in ("m", "s"):
            with self.assertRaises(BadRequest):
                b.str_list(name)
        self.assertEqual(JsonBody.parse(req('{"n": 9223372036854775808}')).fields["n"], 2**63)
        with self.assertRaises(BadRequest):
            JsonBody.parse(req('{"n": 9223372036854775808}')).int("n")

    def test_bearer_token(self) -> None:
        def token(value: str) -> object:
            return Request("GET", "/", headers={"Authorization": value}).bearer_token()

        self.assertEqual(token("Bearer abc"), "abc")
        self.assertEqual(token("bearer  abc "), "abc")
        self.assertIsNone(token("Basic abc"))
        self.assertIsNone(token("Bearer "))
        self.assertIsNone(token("Bearer"))
        self.assertIsNone(Request("GET", "/").bearer_token())


class CryptoTest(unittest.TestCase):
    def test_vectors(self) -> None:
        self.assertEqual(
            crypto.sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        )
        self.assertEqual(crypto.sha256(b"abc")[0], 0xBA)
        self.assertEqual(
            crypto.hmac_sha256(b"Jefe", b"what do ya want for nothing?").hex(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        )
        for fn in (crypto.pbkdf2_sha256, crypto._pbkdf2_fallback):
            self.assertEqual(
                fn(b"passwd", b"salt", 1).hex(),
                "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc",
            )
            self.assertEqual(
                fn(b"password", b"salt", 4096).hex(),
                "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a",
            )
        long_key = b"k" * 100
        self.assertEqual(
            crypto._pbkdf2_fallback(long_key, b"s", 5),
            hashlib.pbkdf2_hmac("sha256", long_key, b"s", 5),
        )
        with self.assertRaises(ValueError):
            crypto.pbkdf2_sha256(b"p", b"s", 0)

    def test_compare_and_random(self) -> None:
        self.assertTrue(crypto.constant_time_eq(b"", b""))
        self.assertTrue(crypto.constant_time_eq(b"abc", b"abc"))
        self.assertFalse(crypto.constant_time_eq(b"abc", b"abd"))
        self.assertFalse(crypto.constant_time_eq(b"abc", b"ab"))
        a, b = crypto.random_bytes(32), crypto.random_bytes(32)
        self.assertEqual(len(a), 32)
        self.assertNotEqual(a, b)

    def test_encodings(self) -> None:
        for n in range(40):
            data = bytes((i * 37 + 11) % 256 for i in range(n))
            text = crypto.base64_encode(data)
            self.assertEqual(crypto.base64_decode(text), data)
            url = crypto.base64url_encode(data)
            self.assertEqual(url, text.rstrip("=").replace("+", "-").replace("/", "_"))
        self.assertEqual(crypto.base64_encode(b"hi?"), "aGk/")
        self.assertEqual(crypto.base64url_encode(b"hi?"), "aGk_")
        self.assertEqual(crypto.base64_encode(bytes([0xFB, 0xFF])), "+/8=")
        for bad in ["a", "ab=c", "a===", "aB==", "aA==aA==", "*AAA", "é"]:
            self.assertIsNone(crypto.base64_decode(bad), bad)
        self.assertEqual(len(crypto.base64url_encode(bytes(32))), 43)
        self.assertEqual(crypto.hex(bytes([0, 0xAB, 0x10])), "00ab10")


if __name__ == "__main__":
    unittest.main()
