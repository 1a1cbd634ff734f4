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
    Alarm,
    BadRequest,
    CallError,
    HTTPError,
    Level,
    NotFound,
    Object,
    Request,
    Response,
    Version,
    alarms,
    dispatch,
    events,
    export,
    log,
    runtime,
    state,
    testing,
)
from object_primitive._fake import Trap  # noqa: E402
from object_primitive._http import dumps  # noqa: E402
from object_primitive._sys import FireFailed  # noqa: E402
from object_primitive.route import JsonBody  # noqa: E402


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


class Alarmed(Object):
    """Writes what each alarm carried, fails for payload ``fail``, and re-sets ``again``."""

    def on_alarm(self, name: str, payload: bytes, scheduled_ms: int) -> None:
        if payload == b"fail":
            raise RuntimeError(f"{name} failed")
        if name == "again":
            alarms.set("again", scheduled_ms + 10)
        fired = state.increment("fired")
        state.set(f"fired:{fired}", f"{name}@{scheduled_ms}/{runtime.now_ms()}")
        events.publish("fired", name)


class AlarmsTest(unittest.TestCase):
    def setUp(self) -> None:
        testing.reset()

    def test_set_move_cancel_and_list_soonest_first(self) -> None:
        alarms.set("b", 20, b"2")
        alarms.set("a", 20, "1")
        alarms.set("c", 10, bytearray(b"3"))
        self.assertEqual([a.name for a in alarms.list()], ["c", "a", "b"])
        self.assertEqual(alarms.list()[1], Alarm("a", 20, b"1"))
        alarms.set("c", 30, b"moved")
        self.assertEqual(alarms.list()[-1], Alarm("c", 30, b"moved"))
        self.assertEqual(len(alarms.list()), 3)
        self.assertTrue(alarms.cancel("a"))
        self.assertFalse(alarms.cancel("a"))
        self.assertFalse(alarms.cancel("never"))
        alarms.set("empty", 5)
        self.assertEqual(alarms.list()[0], Alarm("empty", 5, b""))

    def test_bad_arguments(self) -> None:
        for args, error in [
            ((1, 0), TypeError),
            (("a", "0"), TypeError),
            (("a", True), TypeError),
            (("a", 1.0), TypeError),
            (("a", -1), ValueError),
            (("a", 2**64), ValueError),
            (("a", 0, 5), TypeError),
        ]:
            with self.assertRaises(error, msg=repr(args)):
                alarms.set(*args)  # type: ignore[arg-type]
        with self.assertRaisesRegex(Trap, "alarm name is 0 bytes"):
            alarms.set("", 0)
        with self.assertRaisesRegex(Trap, "alarm name is 257 bytes"):
            alarms.set("é" * 128 + "x", 0)
        with self.assertRaisesRegex(Trap, "the limit is 65536"):
            alarms.set("big", 0, bytes(65537))
        alarms.set("x" * 256, 2**64 - 1, bytes(65536))
        self.assertEqual(alarms.list()[0].at_ms, 2**64 - 1)

    def test_fire_due_alarms_in_order_with_the_clock_set(self) -> None:
        alarms.set("late", 300)
        alarms.set("first", 100)
        alarms.set("broken", 150, b"fail")
        alarms.set("again", 200)
        fired = testing.fire_due_alarms(Alarmed, 250)
        self.assertEqual(
            fired,
            [("first", None), ("broken", "RuntimeError: broken failed"), ("again", None)],
        )
        self.assertEqual(state.get("fired:1"), "first@100/250")
        self.assertEqual(state.get("fired:2"), "again@200/250")
        # The failed alarm stays; the re-set one moved; the late one waits.
        self.assertEqual(
            [(a.name, a.at_ms) for a in alarms.list()],
            [("broken", 150), ("again", 210), ("late", 300)],
        )
        self.assertEqual(runtime.now_ms(), 250)
        [(level, line)] = testing.take_logs()
        self.assertEqual(level, Level.ERROR)
        self.assertIn("Alarmed.on_alarm (broken)", line)
        self.assertTrue(line.endswith("RuntimeError: broken failed"), line)
        self.assertEqual(testing.take_published_events(), [("fired", "first"), ("fired", "again")])
        self.assertEqual(testing.published_events(), [])
        self.assertIsNone(testing.fire_alarm(Alarmed(), "late"), "fire_alarm ignores the time")
        with self.assertRaises(KeyError):
            testing.fire_alarm(Alarmed, "late")
        self.assertEqual(testing.fire_due_alarms(Alarmed, 0), [])

    def test_the_default_on_alarm_warns_and_removes_the_alarm(self) -> None:
        alarms.set("x", 5)
        self.assertIsNone(testing.fire_alarm(Nothing, "x"))
        self.assertEqual(alarms.list(), [])
        [(level, line)] = testing.take_logs()
        self.assertEqual(level, Level.WARN)
        self.assertIn('alarm "x" fired, but this object has no alarm handler', line)

    def test_state_versions_use_the_frozen_clock(self) -> None:
        testing.set_now_ms(42)
        state.set("k", "v")
        self.assertEqual(state.history("k", 1)[0].at_ms, 42)
        with self.assertRaises(ValueError):
            testing.set_now_ms(-1)
        testing.reset()
        self.assertGreater(runtime.now_ms(), 1_600_000_000_000)
        self.assertEqual(alarms.list(), [])

    def test_export_defines_alarm_handler_in_the_calling_module(self) -> None:
        namespace: dict[str, object] = {"export": export, "Alarmed": Alarmed}
        exec("Handler = export(Alarmed)", namespace)
        handler_class = namespace["Handler"]
        alarm_handler_class = namespace["AlarmHandler"]
        self.assertIs(handler_class.alarm_handler, alarm_handler_class)  # type: ignore
        self.assertEqual(alarm_handler_class.__name__, "AlarmHandler")  # type: ignore
        self.assertIs(alarm_handler_class.object_class, Alarmed)  # type: ignore
        alarm_handler = alarm_handler_class()  # type: ignore
        testing.set_now_ms(99)
        self.assertIsNone(alarm_handler.fire("a", b"", 7))
        self.assertEqual(state.get("fired:1"), "a@7/99")
        with self.assertRaises(FireFailed) as cm:
            alarm_handler.fire("b", b"fail", 8)
        self.assertEqual(cm.exception.value, "RuntimeError: b failed")
        # A module that defines its own AlarmHandler keeps it.
        mine = type("AlarmHandler", (), {})
        namespace = {"export": export, "Alarmed": Alarmed, "AlarmHandler": mine}
        exec("Handler = export(Alarmed)", namespace)
        self.assertIs(namespace["AlarmHandler"], mine)

    def test_handler_and_alarm_handler_share_the_instance(self) -> None:
        created = []

        class Counted(Object):
            def __init__(self) -> None:
                created.append(1)

            def get(self, req: Request) -> Response:
                return Response.json(len(created))

            def on_alarm(self, name: str, payload: bytes, scheduled_ms: int) -> None:
                pass

        handler_class = export(Counted)
        handler = handler_class()
        handler_class.alarm_handler().fire("x", b"", 0)  # type: ignore[attr-defined]
        handler.get(Request._raw("GET", "/", [], [], b""))
        self.assertEqual(created, [1])


class EventsTest(unittest.TestCase):
    def setUp(self) -> None:
        testing.reset()

    def test_publish_str_and_json(self) -> None:
        events.publish("t", "data")
        events.publish("count", {"count": 3, "note": "é", "x": [1.5, None, True]})
        events.publish("n", 7)
        self.assertEqual(
            testing.published_events(),
            [
                ("t", "data"),
                ("count", '{"count":3,"note":"é","x":[1.5,null,true]}'),
                ("n", "7"),
            ],
        )
        testing.reset()
        self.assertEqual(testing.published_events(), [])

    def test_bad_topics_and_data(self) -> None:
        for topic, why in [
            ("", "0 bytes"),
            ("op.missed", "which the host reserves"),
            ("a\nb", "control character"),
            ("a\x85b", "control character"),
            ("x" * 129, "129 bytes"),
        ]:
            with self.assertRaisesRegex(Trap, why, msg=repr(topic)):
                events.publish(topic, "x")
        with self.assertRaisesRegex(Trap, "the limit is 65536"):
            events.publish("t", "x" * 65537)
        with self.assertRaises(TypeError):
            events.publish(1, "x")  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            events.publish("t", b"bytes")
        with self.assertRaises(ValueError):
            events.publish("t", float("nan"))
        events.publish("ok.topic é", "x" * 65536)
        self.assertEqual(len(testing.published_events()), 1)


class JsonBodyParityTest(unittest.TestCase):
    def test_minus_zero_and_lone_surrogates_as_serde_json(self) -> None:
        text = '{"a": -0, "b": 0, "c": "\\ud83d\\ude00"}'
        body = JsonBody.parse(Request("POST", "/", body=text))
        with self.assertRaisesRegex(BadRequest, "field 'a' must be an integer"):
            body.int("a")
        self.assertEqual(body.int("b"), 0)
        self.assertEqual(body.str("c"), "\U0001f600")
        for bad in ['{"a": "\\ud800"}', '{"a": ["\\udc00"]}', '{"\\ud800": 1}']:
            with self.assertRaisesRegex(BadRequest, "must be a JSON object", msg=bad):
                JsonBody.parse(Request("POST", "/", body=bad))


if __name__ == "__main__":
    unittest.main()
