//! A calculator that counts its uses.
//!
//! - `GET ?a=1&b=2&op=add|sub|mul|div` → `{"result":3.0,"a":1.0,"b":2.0,"op":"add"}` and
//!   adds one to the state key `uses`. Missing or non-numeric input, an unknown op,
//!   division by zero or a result that is not a finite number → 400
//!   `{"error":"bad_request","message":"..."}` (not counted).
//! - `POST` → `{"uses":N}`.

use object_primitive::{Object, Request, Response, export_object, json, state};

struct Calculator;

/// A finite number from query parameter `name`.
fn number(req: &Request, name: &str) -> Result<f64, Response> {
    let raw = req
        .query(name)
        .ok_or_else(|| Response::bad_request(&format!("missing query parameter '{name}'")))?;
    match raw.trim().parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(Response::bad_request(&format!(
            "query parameter '{name}' is not a number: {raw:?}"
        ))),
    }
}

fn calculate(req: &Request) -> Result<Response, Response> {
    let a = number(req, "a")?;
    let b = number(req, "b")?;
    let op = req.query("op").ok_or_else(|| {
        Response::bad_request("missing query parameter 'op' (add, sub, mul or div)")
    })?;
    let result = match op {
        "add" => a + b,
        "sub" => a - b,
        "mul" => a * b,
        "div" if b == 0.0 => return Err(Response::bad_request("division by zero")),
        "div" => a / b,
        other => {
            return Err(Response::bad_request(&format!(
                "unknown op {other:?} (expected add, sub, mul or div)"
            )));
        }
    };
    if !result.is_finite() {
        return Err(Response::bad_request(&format!(
            "the result of {op} is not a finite number"
        )));
    }
    state::increment("uses", 1);
    Ok(Response::json(
        &json!({ "result": result, "a": a, "b": b, "op": op }),
    ))
}

impl Object for Calculator {
    fn get(req: Request) -> Response {
        calculate(&req).unwrap_or_else(|error| error)
    }

    fn post(_: Request) -> Response {
        let uses = state::get("uses")
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        Response::json(&json!({ "uses": uses }))
    }
}

export_object!(Calculator);

#[cfg(test)]
mod tests {
    use super::*;
    use object_primitive::serde_json::Value;

    fn get(query: &str) -> (u16, Value) {
        let r = Calculator::get(Request::new("GET", &format!("/?{query}")));
        (r.status, r.json_body().unwrap())
    }

    #[test]
    fn calculates_and_counts() {
        assert_eq!(get("a=6&b=3&op=div").1["result"], 2.0);
        let (status, body) = get("a=1.5&b=-2&op=mul");
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"result": -3.0, "a": 1.5, "b": -2.0, "op": "mul"})
        );
        let uses = Calculator::post(Request::new("POST", "/"));
        assert_eq!(uses.json_body::<Value>().unwrap(), json!({"uses": 2}));
    }

    #[test]
    fn rejects_bad_input_without_counting() {
        for (query, says) in [
            ("b=1&op=add", "'a'"),
            ("a=1&op=add", "'b'"),
            ("a=1&b=2", "'op'"),
            ("a=x&b=2&op=add", "not a number"),
            ("a=NaN&b=2&op=add", "not a number"),
            ("a=1&b=2&op=pow", "unknown op"),
            ("a=1&b=0&op=div", "division by zero"),
            ("a=1e308&b=1e308&op=mul", "finite"),
        ] {
            let (status, body) = get(query);
            assert_eq!(status, 400, "{query}");
            assert_eq!(body["error"], "bad_request");
            assert!(
                body["message"].as_str().unwrap().contains(says),
                "{query}: {body}"
            );
        }
        assert_eq!(state::get("uses"), None);
    }
}
