"""A calculator that counts its uses.

- ``GET ?a=1&b=2&op=add|sub|mul|div`` → ``{"a":1.0,"b":2.0,"op":"add","result":3.0}`` and
  adds one to the state key ``uses``. Missing or non-numeric input, an unknown op, division
  by zero or a result that is not a finite number → 400
  ``{"error":"bad_request","message":"..."}`` (not counted).
- ``POST`` → ``{"uses":N}``.
"""

import json
import math
import re

from object_primitive import BadRequest, Object, Request, Response, export, state

# What Rust's `f64::from_str` accepts (the Rust calculator's parser): no `_`, no `0x`.
NUMBER = re.compile(
    r"[+-]?(?:inf|infinity|nan|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)",
    re.IGNORECASE,
)


def number(req: Request, name: str) -> float:
    """A finite number from query parameter ``name``; BadRequest (400) otherwise."""
    raw = req.query(name)
    if raw is None:
        raise BadRequest(f"missing query parameter '{name}'")
    text = raw.strip()
    x = float(text) if NUMBER.fullmatch(text) else math.nan
    if not math.isfinite(x):
        quoted = json.dumps(raw, ensure_ascii=False)
        raise BadRequest(f"query parameter '{name}' is not a number: {quoted}")
    return x


class Calculator(Object):
    def get(self, req: Request) -> Response:
        a = number(req, "a")
        b = number(req, "b")
        op = req.query("op")
        if op is None:
            raise BadRequest("missing query parameter 'op' (add, sub, mul or div)")
        if op == "add":
            result = a + b
        elif op == "sub":
            result = a - b
        elif op == "mul":
            result = a * b
        elif op == "div":
            if b == 0.0:
                raise BadRequest("division by zero")
            result = a / b
        else:
            raise BadRequest(
                f"unknown op {json.dumps(op, ensure_ascii=False)} (expected add, sub, mul or div)"
            )
        if not math.isfinite(result):
            raise BadRequest(f"the result of {op} is not a finite number")
        state.increment("uses")
        # The Rust calculator's `json!` object writes its keys sorted: same order here.
        return Response.json({"a": a, "b": b, "op": op, "result": result})

    def post(self, req: Request) -> Response:
        try:
            uses = int(state.get("uses") or 0)
        except ValueError:
            uses = 0
        return Response.json({"uses": uses})


Handler = export(Calculator)
