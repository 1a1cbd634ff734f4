//! A key/value store over REST that exercises every method and every state function.
//!
//! | request | answer |
//! |---|---|
//! | `GET /[?prefix=P]` | `{"keys":[...]}` (sorted) |
//! | `GET /{key}` | `{"key":k,"value":v}`, or 404 `not_found` |
//! | `GET /{key}?history=N` | `{"key":k,"history":[{"seq","at_ms","value"}]}`, newest first, `value` null for deletes |
//! | `PUT /{key}` body = value (UTF-8) | `{"key":k,"value":v}` |
//! | `PUT /` body `{"key":k,"value":v}` | `{"key":k,"value":v}` (for keys awkward in a URL) |
//! | `POST /{key}` body = integer delta (empty = 1) | `{"key":k,"value":n}` |
//! | `DELETE /{key}` | `{"key":k,"deleted":bool}` |
//! | `PATCH /{key}` body `{"expected":str\|null,"new":str\|null}` | `{"key":k,"swapped":bool}` |
//!
//! The key is the first path segment, percent-decoded (`%2F`, `%09`, `%0A` round-trip).
//! Bad input answers 400 `{"error":"bad_request","message":"..."}`.

use object_primitive::{Object, Request, Response, export_object, json, state};
use serde::Deserialize;

struct Kv;

/// The key named by the path, if any. A segment that is not UTF-8 once decoded is a 400.
fn key_of(req: &Request) -> Result<Option<String>, Response> {
    Ok(req.try_segments()?.into_iter().next())
}

fn required_key(req: &Request) -> Result<String, Response> {
    key_of(req)?.ok_or_else(|| Response::bad_request("missing key: use /{key}"))
}

fn get(req: &Request) -> Result<Response, Response> {
    let Some(key) = key_of(req)? else {
        let keys = state::keys(req.query("prefix").unwrap_or(""));
        return Ok(Response::json(&json!({ "keys": keys })));
    };
    if let Some(limit) = req.query("history") {
        let limit = match limit.trim() {
            "" => 10,
            n => n.parse::<u32>().map_err(|_| {
                Response::bad_request(&format!(
                    "history must be a non-negative integer, not {n:?}"
                ))
            })?,
        };
        let history = state::history(&key, limit);
        return Ok(Response::json(&json!({ "key": key, "history": history })));
    }
    match state::get(&key) {
        Some(value) => Ok(Response::json(&json!({ "key": key, "value": value }))),
        None => Err(Response::not_found(&format!("no key {key:?}"))),
    }
}

#[derive(Deserialize)]
struct Entry {
    key: String,
    value: String,
}

fn put(req: &Request) -> Result<Response, Response> {
    let (key, value) = match key_of(req)? {
        Some(key) => (key, req.text()?.to_string()),
        None => {
            let entry: Entry = req.json()?;
            (entry.key, entry.value)
        }
    };
    state::set(&key, &value);
    Ok(Response::json(&json!({ "key": key, "value": value })))
}

fn post(req: &Request) -> Result<Response, Response> {
    let key = required_key(req)?;
    let delta = match req.text()?.trim() {
        "" => 1,
        d => d.parse::<i64>().map_err(|_| {
            Response::bad_request(&format!("the body must be an integer delta, not {d:?}"))
        })?,
    };
    // state::increment traps on a non-integer value or overflow: answer 400 instead.
    if let Some(current) = state::get(&key) {
        let n = current.parse::<i64>().map_err(|_| {
            Response::bad_request(&format!("the value of {key:?} is not an integer"))
        })?;
        n.checked_add(delta)
            .ok_or_else(|| Response::bad_request("the sum overflows a 64-bit integer"))?;
    }
    let value = state::increment(&key, delta);
    Ok(Response::json(&json!({ "key": key, "value": value })))
}

fn delete(req: &Request) -> Result<Response, Response> {
    let key = required_key(req)?;
    let deleted = state::delete(&key);
    Ok(Response::json(&json!({ "key": key, "deleted": deleted })))
}

#[derive(Deserialize)]
struct Swap {
    #[serde(default)]
    expected: Option<String>,
    #[serde(default)]
    new: Option<String>,
}

fn patch(req: &Request) -> Result<Response, Response> {
    let key = required_key(req)?;
    let swap: Swap = req.json()?;
    let swapped = state::compare_and_swap(&key, swap.expected.as_deref(), swap.new.as_deref());
    Ok(Response::json(&json!({ "key": key, "swapped": swapped })))
}

impl Object for Kv {
    fn get(req: Request) -> Response {
        get(&req).unwrap_or_else(|e| e)
    }
    fn put(req: Request) -> Response {
        put(&req).unwrap_or_else(|e| e)
    }
    fn post(req: Request) -> Response {
        post(&req).unwrap_or_else(|e| e)
    }
    fn delete(req: Request) -> Response {
        delete(&req).unwrap_or_else(|e| e)
    }
    fn patch(req: Request) -> Response {
        patch(&req).unwrap_or_else(|e| e)
    }
}

export_object!(Kv);

#[cfg(test)]
mod tests {
    use super::*;
    use object_primitive::dispatch;
    use object_primitive::serde_json::{Value, json};

    fn call(method: &str, path: &str, body: &str) -> (u16, Value) {
        let r = dispatch::<Kv>(Request::new(method, path).with_body(body));
        (r.status, r.json_body().unwrap())
    }

    #[test]
    fn every_method() {
        assert_eq!(call("GET", "/a", "").0, 404);
        assert_eq!(
            call("PUT", "/a", "one").1,
            json!({"key": "a", "value": "one"})
        );
        assert_eq!(call("GET", "/a", "").1, json!({"key": "a", "value": "one"}));
        assert_eq!(call("POST", "/n", "").1, json!({"key": "n", "value": 1}));
        assert_eq!(
            call("POST", "/n", " -5 ").1,
            json!({"key": "n", "value": -4})
        );
        assert_eq!(call("POST", "/a", "1").0, 400);
        assert_eq!(call("POST", "/n", "x").0, 400);
        assert_eq!(call("GET", "/", "").1, json!({"keys": ["a", "n"]}));
        assert_eq!(call("GET", "/?prefix=n", "").1, json!({"keys": ["n"]}));
        let cas = r#"{"expected":"one","new":"two"}"#;
        assert_eq!(
            call("PATCH", "/a", cas).1,
            json!({"key": "a", "swapped": true})
        );
        assert_eq!(
            call("PATCH", "/a", cas).1,
            json!({"key": "a", "swapped": false})
        );
        assert_eq!(
            call("PATCH", "/b", r#"{"expected":null,"new":"B"}"#).1["swapped"],
            true
        );
        assert_eq!(call("PATCH", "/a", "nope").0, 400);
        assert_eq!(
            call("DELETE", "/a", "").1,
            json!({"key": "a", "deleted": true})
        );
        assert_eq!(
            call("DELETE", "/a", "").1,
            json!({"key": "a", "deleted": false})
        );
        let h = call("GET", "/a?history=5", "").1;
        let values: Vec<_> = h["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["value"].clone())
            .collect();
        assert_eq!(values, [Value::Null, json!("two"), json!("one")]);
        assert!(h["history"][0]["seq"].is_u64() && h["history"][0]["at_ms"].is_u64());
        assert_eq!(call("GET", "/a?history=x", "").0, 400);
        assert_eq!(call("DELETE", "/", "").0, 400);
    }

    #[test]
    fn hostile_keys() {
        assert_eq!(call("PUT", "/a%2Fb%09c%0Ad", "v").1["key"], "a/b\tc\nd");
        assert_eq!(call("GET", "/a%2fb%09c%0ad", "").1["value"], "v");
        let body = json!({"key": "\\ \"quoted\" \r\n%00", "value": "x\ty"}).to_string();
        assert_eq!(call("PUT", "/", &body).1["value"], "x\ty");
        assert_eq!(state::get("\\ \"quoted\" \r\n%00").as_deref(), Some("x\ty"));
        assert_eq!(call("PUT", "/%FF", "v").0, 400);
        let r = dispatch::<Kv>(Request::new("PUT", "/k").with_body(vec![0xC3]));
        assert_eq!(r.status, 400);
    }
}
