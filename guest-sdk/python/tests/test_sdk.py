"""Unit tests of the Python SDK against its in-memory fake (no component, no station).

Run: python3 -m unittest discover -s guest-sdk/python/tests   (scripts/test.sh does)
"""

from __future__ import annotations

import json
import os
import sys
import unittest
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from object_primitive import (  # noqa: E402
    BadRequest,
    CallError,
    HTTPError,
    Level,
    NotFound,
    Object,
    Request,
    Response,
    Version,
    dispatch,
    export,
    log,
    runtime,
    state,
    testing,
)
from object_primitive._http import dumps  # noqa: E402


class Nothing(Object):
    pass


class Echo(Object):
    def patch(self, req: Request) -> Response:
        log.info("patching %s", req.path)
        return Response.text(req.text())


class Raises(Object):
    def get(self, req: Request) -> Response:
        state.set("written", "yes")
        raise ValueError("the message")

    def post(self, req: Request) -> Response:
        raise HTTPError(409, "conflict", "it changed", headers={"retry-after": "1"})

    def put(self, req: Request) -> Response:
        return {"not": "a response"}  # type: ignore[return-value]

    def delete(self, req: Request) -> Response:
        raise KeyError()

    def patch(self, req: Request) -> Response:
        raise SystemExit(3)


class RequestTest(unittest.TestCase):
    def test_new_splits_and_normalises(self) -> None:
        req = Request("get", "items/a%20b?limit=2&x=y+z%21&flag")
        self.assertEqual(req.method, "GET")
        self.assertEqual(req.path, "/items/a%20b")
        self.assertEqual(req.segments(), ["items", "a b"])
        self.assertEqual(req.query("limit"), "2")
        self.assertEqual(req.query("x"), "y z!")
        self.assertEqual(req.query("flag"), "")
        self.assertIsNone(req.query("nope"))
        self.assertEqual(req.query("nope", "d"), "d")
        self.assertEqual(Request("GET", "/?a=1&a=2").query_all("a"), ["1", "2"])
        self.assertEqual(Request("GET", "/?a=1", query={"b": "2"}).query_pairs, [("a", "1"), ("b", "2")])

    def test_segments(self) -> None:
        req = Request("GET", "/%41b%2fc/%zz/%4/%E2%82%AC/")
        self.assertEqual(req.segments(), ["Ab/c", "%zz", "%4", "€"])
        self.assertEqual(req.segment(1), "%zz")
        self.assertIsNone(req.segment(9))
        self.assertEqual(Request("GET", "/").segments(), [])
        self.assertEqual(Request("GET", "/a//b%2Fc/%09").segments(), ["a", "b/c", "\t"])
        bad = Request("GET", "/ok/%FF")
        self.assertEqual(bad.segments()[1], "\ufffd")
        with self.assertRaises(BadRequest) as cm:
            bad.try_segments()
        self.assertEqual(cm.exception.response.status, 400)
        self.assertEqual(Request("GET", "/a%0A").try_segments(), ["a\n"])

    def test_headers(self) -> None:
        req = Request("GET", "/", headers=[("X-Thing", "v")])
        self.assertEqual(req.headers, [("x-thing", "v")])
        self.assertEqual(req.header("X-THING"), "v")
        self.assertIsNone(req.header("other"))

    def test_body_helpers(self) -> None:
        with self.assertRaises(BadRequest) as cm:
            Request("POST", "/", body=b"\xff\xfe").text()
        self.assertEqual(cm.exception.response.json_body()["error"], "bad_request")
        req = Request("POST", "/", json={"k": [1, 2]})
        self.assertEqual(req.json(), {"k": [1, 2]})
        self.assertEqual(req.header("content-type"), "application/json")
        self.assertEqual(Request("POST", "/", body="é").body, "é".encode())
        with self.assertRaises(BadRequest) as cm:
            Request("POST", "/", body="{").json()
        self.assertIn("not the expected JSON", cm.exception.message)
        with self.assertRaises(TypeError):
            Request("POST", "/", body="x", json=1)


class ResponseTest(unittest.TestCase):
    def test_constructors(self) -> None:
        r = Response.json({"count": 1, "name": "é"})
        self.assertEqual((r.status, r.body), (200, '{"count":1,"name":"é"}'.encode()))
        self.assertEqual(r.header("Content-Type"), "application/json")
        self.assertEqual(Response.json([], status=201).status, 201)
        r = Response.text("hi").with_header("Content-Type", "text/html")
        self.assertEqual(r.headers, [("content-type", "text/html")])
        self.assertEqual(r.text_body(), "hi")
        self.assertEqual(Response().status, 204)
        self.assertEqual(Response.binary(b"\x00", "image/png").header("content-type"), "image/png")
        self.assertEqual(Response.text("x").with_status(202).status, 202)
        r = Response.method_not_allowed()
        self.assertEqual((r.status, r.json_body()["error"]), (405, "method_not_allowed"))
        self.assertEqual(Response.not_found("x").status, 404)
        self.assertEqual(Response.bad_request("x").status, 400)

    def test_error_escaping_matches_serde_json(self) -> None:
        r = Response.error(418, "teapot", 'short "and" stout')
        self.assertEqual(r.body, b'{"error":"teapot","message":"short \\"and\\" stout"}')
        nasty = "".join(map(chr, range(0x80))) + "€\U0010ffff"
        body = Response.error(400, 'c"\\', nasty).text_body()
        self.assertEqual(json.loads(body), {"error": 'c"\\', "message": nasty})
        # serde_json's escapes: \b \f \n \r \t short, other controls \u00XX lower-case, DEL raw.
        self.assertIn("\\u0000\\u0001", body)
        self.assertIn("\\b\\t\\n\\u000b\\f\\r", body)
        self.assertIn("\\u001f !", body)
        self.assertIn("~\x7f€", body)

    def test_floats_written_like_serde_json(self) -> None:
        cases = {
            1.0: "1.0",
            -0.0: "-0.0",
            0.25: "0.25",
            100.0: "100.0",
            1e15: "1000000000000000.0",
            1e16: "1e+16",
            1.5e300: "1.5e+300",
            0.0001: "0.0001",
            0.00001: "0.00001",
            2.5e-5: "0.000025",
            1e-6: "1e-6",
            1.5e-7: "1.5e-7",
            5e-324: "5e-324",
            0.1 + 0.2: "0.30000000000000004",
        }
        for x, want in cases.items():
            self.assertEqual(dumps(x), want, repr(x))
            self.assertEqual(float(dumps(x)), x)

    def test_json_values(self) -> None:
        @dataclass
        class P:
            x: int
            y: list

        self.assertEqual(
            dumps({"a": [1, 2.5, None, True, False, "s"], 1: (1,), "p": P(1, [])}),
            '{"a":[1,2.5,null,true,false,"s"],"1":[1],"p":{"x":1,"y":[]}}',
        )
        self.assertEqual(dumps(Version(3, 4, None)), '{"seq":3,"at_ms":4,"value":null}')
        for bad in ({1, 2}, float("nan"), float("inf"), {(1,): 2}):
            r = Response.json(bad)
            self.assertEqual(r.status, 500, bad)
            self.assertEqual(r.json_body()["error"], "serialization_failed")
        loop: list = []
        loop.append(loop)
        self.assertEqual(Response.json(loop).status, 500)


class StateTest(unittest.TestCase):
    def setUp(self) -> None:
        testing.reset()

    def test_set_get_delete_keys(self) -> None:
        self.assertIsNone(state.get("a"))
        state.set("a", "1")
        state.set("ab", "2")
        state.set("b", "3")
        self.assertEqual(state.get("a"), "1")
        self.assertEqual(state.keys("a"), ["a", "ab"])
        self.assertEqual(state.keys(), ["a", "ab", "b"])
        self.assertEqual(state.keys("c"), [])
        self.assertTrue(state.delete("a"))
        self.assertFalse(state.delete("a"))
        self.assertEqual(testing.state(), {"ab": "2", "b": "3"})
        with self.assertRaises(TypeError):
            state.set("n", 1)  # type: ignore[arg-type]

    def test_increment_and_cas(self) -> None:
        self.assertEqual(state.increment("n", 5), 5)
        self.assertEqual(state.increment("n", -7), -2)
        self.assertEqual(state.increment("n"), -1)
        self.assertFalse(state.compare_and_swap("n", "5", "0"))
        self.assertTrue(state.compare_and_swap("n", "-1", None))
        self.assertIsNone(state.get("n"))
        self.assertTrue(state.compare_and_swap("n", None, "x"))
        self.assertFalse(state.compare_and_swap("n", None, "y"))
        self.assertEqual(state.get("n"), "x")
        with self.assertRaises(RuntimeError):
            state.increment("n")
        state.set("big", str(2**63 - 1))
        with self.assertRaises(RuntimeError):
            state.increment("big")
        with self.assertRaises(OverflowError):
            state.increment("m", 2**63)

    def test_history_newest_first_with_deletes(self) -> None:
        state.set("k", "v1")
        state.set("other", "x")
        state.set("k", "v2")
        state.delete("k")
        h = state.history("k", 10)
        self.assertEqual([v.value for v in h], [None, "v2", "v1"])
        self.assertTrue(h[0].seq > h[1].seq > h[2].seq)
        self.assertEqual(len(state.history("k", 1)), 1)
        self.assertEqual(state.history("none"), [])
        self.assertTrue(dumps(h[0]).endswith('"value":null}'))

    def test_json_values(self) -> None:
        state.set_json("j", [1, 2, {"é": None}])
        self.assertEqual(state.get("j"), '[1,2,{"é":null}]')
        self.assertEqual(state.get_json("j"), [1, 2, {"é": None}])
        self.assertEqual(state.get_json("missing", 0), 0)
        state.set("text", "not json")
        self.assertIsNone(state.get_json("text"))
        with self.assertRaises(ValueError):
            state.set_json("nan", float("nan"))


class LogAndRuntimeTest(unittest.TestCase):
    def setUp(self) -> None:
        testing.reset()

    def test_levels(self) -> None:
        log.trace("t")
        log.debug("d %d", 1)
        log.info("i")
        log.warn("w")
        log.warning("w2")
        log.error("e %s", "x")
        self.assertEqual(
            testing.take_logs(),
            [
                (Level.TRACE, "t"),
                (Level.DEBUG, "d 1"),
                (Level.INFO, "i"),
                (Level.WARN, "w"),
                (Level.WARN, "w2"),
                (Level.ERROR, "e x"),
            ],
        )
        self.assertEqual(testing.logs(), [])
        self.assertEqual(str(Level.WARN), "warn")

    def test_runtime_fake(self) -> None:
        self.assertEqual(runtime.object_id(), "test-object")
        testing.set_station_id("s9")
        self.assertEqual(runtime.station_id(), "s9")
        self.assertGreater(runtime.now_ms(), 1_600_000_000_000)
        with self.assertRaises(CallError) as cm:
            runtime.call("other", Request("GET", "/"))
        self.assertEqual(cm.exception.kind, "unavailable")
        self.assertTrue(str(cm.exception).startswith("unavailable: "))
        self.assertEqual(str(CallError("timeout")), "timeout: the callee did not answer in time")

    def test_registered_objects_answer_calls(self) -> None:
        testing.register_object("echo", Echo)
        r = runtime.call("echo", Request("PATCH", "/p", body="hi"))
        self.assertEqual((r.status, r.text_body()), (200, "hi"))
        self.assertEqual(runtime.call("echo").status, 405)


class ObjectTest(unittest.TestCase):
    def setUp(self) -> None:
        testing.reset()

    def test_defaults_are_405(self) -> None:
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]:
            r = dispatch(Nothing, Request(method, "/"))
            self.assertEqual(r.status, 405, method)
            v = r.json_body()
            self.assertEqual(v["error"], "method_not_allowed")
            self.assertEqual(v["message"], f"{method} is not supported by this object")

    def test_dispatch_routes_and_logs(self) -> None:
        r = dispatch(Echo(), Request("patch", "/x", body="hi"))
        self.assertEqual((r.status, r.text_body()), (200, "hi"))
        self.assertEqual(testing.take_logs(), [(Level.INFO, "patching /x")])
        self.assertEqual(dispatch(Echo, Request("PATCH", "/", body=b"\xff")).status, 400)

    def test_exception_is_a_500_with_the_message_and_a_logged_traceback(self) -> None:
        r = dispatch(Raises, Request("GET", "/where"))
        self.assertEqual(r.status, 500)
        self.assertEqual(
            r.json_body(), {"error": "exception", "message": "the message", "type": "ValueError"}
        )
        [(level, line)] = testing.take_logs()
        self.assertEqual(level, Level.ERROR)
        self.assertIn("Raises.get (GET /where)", line)
        self.assertIn("Traceback (most recent call last)", line)
        self.assertIn('raise ValueError("the message")', line)
        self.assertTrue(line.endswith("ValueError: the message"), line)
        # An exception without a message is named by its type; SystemExit is caught too.
        self.assertEqual(dispatch(Raises, Request("DELETE", "/")).json_body()["message"], "KeyError")
        self.assertEqual(dispatch(Raises, Request("PATCH", "/")).json_body()["type"], "SystemExit")

    def test_http_error_answers_its_response(self) -> None:
        r = dispatch(Raises, Request("POST", "/"))
        self.assertEqual(r.status, 409)
        self.assertEqual(r.json_body(), {"error": "conflict", "message": "it changed"})
        self.assertEqual(r.header("retry-after"), "1")
        self.assertEqual(NotFound("x").response.status, 404)
        self.assertEqual(testing.logs(), [])

    def test_a_non_response_is_a_500(self) -> None:
        r = dispatch(Raises, Request("PUT", "/"))
        self.assertEqual(r.status, 500)
        self.assertIn("returned dict, expected a Response", r.json_body()["message"])

    def test_export(self) -> None:
        handler_class = export(Echo)
        self.assertEqual(handler_class.__name__, "Handler")
        self.assertIs(handler_class.object_class, Echo)  # type: ignore[attr-defined]
        handler = handler_class()
        wit_req = Request._raw("PATCH", "/x", [], [], b"body")
        r = handler.patch(wit_req)
        self.assertEqual((r.status, r.body), (200, b"body"))
        self.assertEqual(handler.get(Request._raw("GET", "/", [], [], b"")).status, 405)
        with self.assertRaises(TypeError):
            export(Request)  # type: ignore[arg-type]

    def test_the_instance_is_created_once_and_lazily(self) -> None:
        created = []

        class Lazy(Object):
            def __init__(self) -> None:
                created.append(state.get("x"))  # the station is reachable here

            def get(self, req: Request) -> Response:
                return Response.json(len(created))

        handler = export(Lazy)()
        self.assertEqual(created, [])
        handler.get(Request._raw("GET", "/", [], [], b""))
        r = handler.get(Request._raw("GET", "/", [], [], b""))
        self.assertEqual((r.body, created), (b"1", [None]))


if __name__ == "__main__":
    unittest.main()
