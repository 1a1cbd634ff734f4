"""The Python example objects (objects/python/*/app.py) against the SDK's in-memory fake: the
same answers as the Rust examples' unit tests. The black-box suite (tests/blackbox) runs them
as components in a real station, beside the Rust ones.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import unittest
from types import ModuleType

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "guest-sdk", "python", "src"))

from object_primitive import Request, dispatch, state, testing  # noqa: E402


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


if __name__ == "__main__":
    unittest.main()
