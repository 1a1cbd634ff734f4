"""The Python example objects (objects/python/*/app.py) against the SDK's in-memory fake: the
same answers as the Rust examples' unit tests. The black-box suite (tests/blackbox) runs them
as components in a real station, beside the Rust ones.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import unittest
from types import ModuleType

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "guest-sdk", "python", "src"))

from object_primitive import Request, alarms, dispatch, state, testing  # noqa: E402


def load(path: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hello = load("objects/python/hello/app.py", "py_hello_app")
counter = load("objects/python/counter/app.py", "py_counter_app")
calculator = load("objects/python/calculator/app.py", "py_calculator_app")
kv = load("tests/fixtures/python/kv/app.py", "py_kv_fixture")
reminder = load("objects/python/reminder/app.py", "py_reminder_app")


def call(obj: type, method: str, path: str, body: str = "") -> tuple[int, str]:
    r = dispatch(obj, Request(method, path, body=body))
    return r.status, r.text_body()


class ExamplesTest(unittest.TestCase):
    def setUp(self) -> None:
        testing.reset()

    def test_hello_greets(self) -> None:
        testing.set_object_id("hello")
        self.assertEqual(
            call(hello.Hello, "GET", "/"),
            (200, '{"message":"Hello, world!","object":"hello"}'),
        )
        self.assertEqual(
            call(hello.Hello, "GET", "/?name=Ada")[1],
            '{"message":"Hello, Ada!","object":"hello"}',
        )
        self.assertEqual(call(hello.Hello, "POST", "/")[0], 405)

    def test_counter(self) -> None:
        self.assertEqual(call(counter.Counter, "GET", "/"), (200, '{"count":0}'))
        self.assertEqual(call(counter.Counter, "POST", "/"), (200, '{"count":1}'))
        self.assertEqual(call(counter.Counter, "POST", "/"), (200, '{"count":2}'))
        self.assertEqual(call(counter.Counter, "GET", "/"), (200, '{"count":2}'))
        self.assertEqual(call(counter.Counter, "DELETE", "/"), (200, '{"count":0}'))
        self.assertEqual(call(counter.Counter, "GET", "/"), (200, '{"count":0}'))
        self.assertEqual(call(counter.Counter, "PUT", "/")[0], 405)
        self.assertEqual(testing.state(), {})
        self.assertEqual(
            testing.published_events(),
            [("count", '{"count":1}'), ("count", '{"count":2}'), ("count", '{"count":0}')],
        )

    def test_counter_is_at_most_20_lines(self) -> None:
        with open(os.path.join(ROOT, "objects/python/counter/app.py"), encoding="utf-8") as f:
            self.assertLessEqual(len(f.read().splitlines()), 20)

    def test_calculator_calculates_and_counts(self) -> None:
        self.assertEqual(
            call(calculator.Calculator, "GET", "/?a=6&b=3&op=div")[1],
            '{"a":6.0,"b":3.0,"op":"div","result":2.0}',
        )
        self.assertEqual(
            call(calculator.Calculator, "GET", "/?a=1.5&b=-2&op=mul")[1],
            '{"a":1.5,"b":-2.0,"op":"mul","result":-3.0}',
        )
        self.assertEqual(call(calculator.Calculator, "POST", "/"), (200, '{"uses":2}'))

    def test_calculator_rejects_bad_input_without_counting(self) -> None:
        for query, message in [
            ("b=1&op=add", "missing query parameter 'a'"),
            ("a=1&op=add", "missing query parameter 'b'"),
            ("a=1&b=2", "missing query parameter 'op' (add, sub, mul or div)"),
            ("a=x&b=2&op=add", "query parameter 'a' is not a number: \"x\""),
            ("a=NaN&b=2&op=add", "query parameter 'a' is not a number: \"NaN\""),
            ("a=1_0&b=2&op=add", "query parameter 'a' is not a number: \"1_0\""),
            ("a=1&b=2&op=pow", 'unknown op "pow" (expected add, sub, mul or div)'),
            ("a=1&b=0&op=div", "division by zero"),
            ("a=1e308&b=1e308&op=mul", "the result of mul is not a finite number"),
        ]:
            status, body = call(calculator.Calculator, "GET", f"/?{query}")
            self.assertEqual(status, 400, query)
            self.assertEqual(
                dispatch(calculator.Calculator, Request("GET", f"/?{query}")).json_body(),
                {"error": "bad_request", "message": message},
            )
        self.assertIsNone(state.get("uses"))

    def test_kv_fixture(self) -> None:
        self.assertEqual(call(kv.Probe, "GET", "/a")[0], 404)
        self.assertEqual(call(kv.Probe, "PUT", "/a", "one"), (200, '{"key":"a","value":"one"}'))
        self.assertEqual(call(kv.Probe, "POST", "/n", " -5 "), (200, '{"key":"n","value":-5}'))
        self.assertEqual(call(kv.Probe, "POST", "/a", "1")[0], 400)
        self.assertEqual(call(kv.Probe, "GET", "/")[1], '{"keys":["a","n"]}')
        body = '{"key":"\\\\ \\"q\\" \\r\\n","value":"x\\ty"}'
        self.assertEqual(call(kv.Probe, "PUT", "/", body)[0], 200)
        self.assertEqual(state.get('\\ "q" \r\n'), "x\ty")
        cas = '{"expected":"one","new":"two"}'
        self.assertEqual(call(kv.Probe, "PATCH", "/a", cas)[1], '{"key":"a","swapped":true}')
        self.assertEqual(call(kv.Probe, "PATCH", "/a", cas)[1], '{"key":"a","swapped":false}')
        self.assertEqual(call(kv.Probe, "DELETE", "/a")[1], '{"key":"a","deleted":true}')
        self.assertEqual(call(kv.Probe, "GET", "/a?history=x")[0], 400)
        self.assertEqual(call(kv.Probe, "PUT", "/%FF", "v")[0], 400)
        status, body = call(kv.Probe, "PUT", "/b?raise=boom", "v")
        self.assertEqual(status, 500)
        self.assertIn('"message":"boom"', body)
        self.assertEqual(call(kv.Probe, "PUT", "/b?fail=409", "v")[0], 409)


T0 = 1_700_000_000_000


class ReminderTest(unittest.TestCase):
    """The same cases as the Rust reminder's unit tests (objects/rust/reminder/src/tests.rs),
    with the same answers."""

    def setUp(self) -> None:
        testing.reset()
        testing.set_now_ms(T0)

    def call(self, method: str, path: str, body: str = "") -> tuple[int, str]:
        return call(reminder.Reminder, method, path, body)

    def test_set_list_fire_and_cancel(self) -> None:
        self.assertEqual(self.call("GET", "/"), (200, '{"pending":[],"fired":[]}'))
        self.assertEqual(
            self.call("POST", "/", '{"in_ms": 5000, "note": "tea"}'), (201, '{"id":"r1"}')
        )
        self.assertEqual(
            self.call("POST", "/", '{"in_ms": 1000, "note": "café ☕"}'), (201, '{"id":"r2"}')
        )
        self.assertEqual(self.call("POST", "/", '{"in_ms": 0}')[1], '{"id":"r3"}')
        self.assertEqual(
            self.call("GET", "/")[1],
            '{"pending":[{"id":"r3","note":"","due_ms":1700000000000},'
            '{"id":"r2","note":"café ☕","due_ms":1700000001000},'
            '{"id":"r1","note":"tea","due_ms":1700000005000}],"fired":[]}',
        )
        fired = testing.fire_due_alarms(reminder.Reminder, T0 + 1500)
        self.assertEqual(fired, [("r3", None), ("r2", None)])
        self.assertEqual(
            self.call("GET", "/")[1],
            '{"pending":[{"id":"r1","note":"tea","due_ms":1700000005000}],"fired":['
            '{"id":"r3","note":"","due_ms":1700000000000,"fired_at_ms":1700000001500},'
            '{"id":"r2","note":"café ☕","due_ms":1700000001000,"fired_at_ms":1700000001500}]}',
        )
        self.assertEqual(self.call("DELETE", "/r1"), (200, '{"id":"r1","cancelled":true}'))
        self.assertEqual(
            self.call("DELETE", "/r1"),
            (404, '{"error":"not_found","message":"no pending reminder with id r1"}'),
        )
        self.assertEqual(self.call("DELETE", "/r2")[0], 404, "a fired reminder is not pending")
        self.assertEqual(testing.fire_due_alarms(reminder.Reminder, T0 + 10_000), [])
        v = json.loads(self.call("GET", "/")[1])
        self.assertEqual(v["pending"], [])
        self.assertEqual(len(v["fired"]), 2)

    def test_ids_count_up_and_the_limits_are_inclusive(self) -> None:
        longest = '{"in_ms": 2678400000, "note": "NOTE"}'.replace("NOTE", "é" * 1000)
        self.assertEqual(self.call("POST", "/", longest), (201, '{"id":"r1"}'))
        self.assertEqual(
            self.call("POST", "/", '{"in_ms": 1, "note": null, "extra": [1]}'),
            (201, '{"id":"r2"}'),
        )
        pending = alarms.list()
        self.assertEqual(pending[1].at_ms, T0 + 2_678_400_000)
        self.assertEqual(len(pending[1].payload), 2000)

    def test_bad_input_is_400_and_sets_nothing(self) -> None:
        must_be = "field 'in_ms' must be an integer from 0 to 2678400000 (31 days)"
        not_object = "request body must be a JSON object"
        not_integer = "field 'in_ms' must be an integer"
        long_note = '{"in_ms": 1, "note": "%s"}' % ("x" * 1001)
        for body, message in [
            ("", "missing field 'in_ms'"),
            ("[]", not_object),
            ("{", not_object),
            ('"x"', not_object),
            ('{"note": "x"}', "missing field 'in_ms'"),
            ('{"in_ms": null}', "missing field 'in_ms'"),
            ('{"in_ms": "5"}', not_integer),
            ('{"in_ms": 1.5}', not_integer),
            ('{"in_ms": 1.0}', not_integer),
            ('{"in_ms": true}', not_integer),
            ('{"in_ms": -0}', not_integer),
            ('{"in_ms": 18446744073709551615}', not_integer),
            ('{"in_ms": 1, "note": "\\ud800"}', not_object),
            ('{"in_ms": 1, "note": "\\udc00"}', not_object),
            ('{"in_ms": -1, "x": "\\ud800"}', not_object),
            ('{"in_ms": -1}', must_be),
            ('{"in_ms": 2678400001}', must_be),
            ('{"in_ms": 1, "note": 5}', "field 'note' must be a string"),
            ('{"in_ms": 1, "note": ["a"]}', "field 'note' must be a string"),
            (long_note, "field 'note' must be at most 1000 characters"),
        ]:
            expected = '{"error":"bad_request","message":"%s"}' % message
            self.assertEqual(self.call("POST", "/", body), (400, expected), body)
        self.assertEqual(alarms.list(), [])
        self.assertEqual(testing.state(), {})

    def test_other_routes_are_404_or_405(self) -> None:
        self.assertEqual(
            self.call("PUT", "/"),
            (405, '{"error":"method_not_allowed","message":"PUT is not supported on /"}'),
        )
        r = dispatch(reminder.Reminder, Request("GET", "/r1"))
        self.assertEqual((r.status, r.header("allow")), (405, "DELETE"))
        r = dispatch(reminder.Reminder, Request("PUT", "/"))
        self.assertEqual(r.header("allow"), "GET, POST")
        self.assertEqual(self.call("DELETE", "/")[0], 405)
        self.assertEqual(self.call("GET", "/a/b")[0], 404)

    def test_fired_keeps_the_last_100(self) -> None:
        for i in range(105):
            body = '{"in_ms": %d, "note": "n%d"}' % (i, i)
            self.assertEqual(self.call("POST", "/", body)[0], 201)
        self.assertEqual(len(testing.fire_due_alarms(reminder.Reminder, T0 + 200)), 105)
        fired = json.loads(self.call("GET", "/")[1])["fired"]
        self.assertEqual(len(fired), 100)
        self.assertEqual(fired[0]["id"], "r6")
        self.assertEqual(fired[99]["id"], "r105")
        self.assertEqual(fired[99]["note"], "n104")
        self.assertEqual(len([k for k in testing.state() if k.startswith("fired:")]), 100)

    def test_an_alarm_fired_directly_fires_once(self) -> None:
        self.call("POST", "/", '{"in_ms": 10, "note": "a"}')
        self.assertIsNone(testing.fire_alarm(reminder.Reminder, "r1"))
        with self.assertRaises(KeyError):
            testing.fire_alarm(reminder.Reminder, "r1")
        v = json.loads(self.call("GET", "/")[1])
        self.assertEqual(
            v["fired"], [{"id": "r1", "note": "a", "due_ms": T0 + 10, "fired_at_ms": T0}]
        )

    def test_the_module_exports_both_interfaces(self) -> None:
        self.assertIs(reminder.AlarmHandler, reminder.Handler.alarm_handler)


if __name__ == "__main__":
    unittest.main()
