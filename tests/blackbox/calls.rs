//! Calling objects: every method reaches the object, the station's own errors, object-to-object calls.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

fn request_id(r: &Resp) -> String {
    let id = r
        .header("x-request-id")
        .unwrap_or_else(|| panic!("{}: no x-request-id header", r.what));
    assert!(!id.is_empty(), "{}: empty x-request-id", r.what);
    id.to_string()
}

#[test]
fn kv_every_method() {
    let st = Station::new();
    st.deploy_fixture("kv", "kv");

    let keys = st.call("GET", "kv", "", Vec::new()).expect_json(200);
    assert_eq!(keys["keys"], json!([]), "{keys}");

    // PUT /{key} sets the raw body.
    let r = st.call("PUT", "kv", "/a", "hello");
    assert!(
        (200..300).contains(&r.status),
        "PUT /a: {} {}",
        r.status,
        r.text()
    );
    request_id(&r);
    let v = st.call("GET", "kv", "/a", Vec::new()).expect_json(200);
    assert_eq!(v, json!({"key": "a", "value": "hello"}));
    st.call("GET", "kv", "/missing", Vec::new()).expect(404);

    // POST /{key} increments by the integer body.
    let v = st.call("POST", "kv", "/n", "5").expect_json(200);
    assert_eq!(v["key"], "n", "{v}");
    assert_eq!(as_i64(&v["value"]), 5, "{v}");
    let v = st.call("POST", "kv", "/n", "-2").expect_json(200);
    assert_eq!(as_i64(&v["value"]), 3, "{v}");
    let v = st.call("GET", "kv", "/n", Vec::new()).expect_json(200);
    assert_eq!(as_i64(&v["value"]), 3, "{v}");

    // PATCH /{key} compare-and-swap.
    let v = st
        .call(
            "PATCH",
            "kv",
            "/c",
            json!({"expected": null, "new": "x"}).to_string(),
        )
        .expect_json(200);
    assert_eq!(v, json!({"key": "c", "swapped": true}));
    let v = st
        .call(
            "PATCH",
            "kv",
            "/c",
            json!({"expected": "y", "new": "z"}).to_string(),
        )
        .expect_json(200);
    assert_eq!(v, json!({"key": "c", "swapped": false}));
    let v = st.call("GET", "kv", "/c", Vec::new()).expect_json(200);
    assert_eq!(v["value"], "x", "a failed swap changes nothing: {v}");
    let v = st
        .call(
            "PATCH",
            "kv",
            "/c",
            json!({"expected": "x", "new": null}).to_string(),
        )
        .expect_json(200);
    assert_eq!(v["swapped"], true, "{v}");
    st.call("GET", "kv", "/c", Vec::new()).expect(404);

    // DELETE /{key}.
    let v = st.call("DELETE", "kv", "/a", Vec::new()).expect_json(200);
    assert_eq!(v, json!({"key": "a", "deleted": true}));
    let v = st.call("DELETE", "kv", "/a", Vec::new()).expect_json(200);
    assert_eq!(v, json!({"key": "a", "deleted": false}));
    st.call("GET", "kv", "/a", Vec::new()).expect(404);

    // PUT / with JSON sets any key, including one with a slash.
    let r = st.call(
        "PUT",
        "kv",
        "",
        json!({"key": "a/b", "value": "v"}).to_string(),
    );
    assert!(
        (200..300).contains(&r.status),
        "PUT /: {} {}",
        r.status,
        r.text()
    );
    let v = st.call("GET", "kv", "/a%2Fb", Vec::new()).expect_json(200);
    assert_eq!(v, json!({"key": "a/b", "value": "v"}));

    let keys = st.call("GET", "kv", "", Vec::new()).expect_json(200);
    assert_eq!(
        keys["keys"],
        json!(["a/b", "n"]),
        "sorted, deleted keys gone: {keys}"
    );

    // History, newest first.
    let h = st
        .call("GET", "kv", "/n?history=10", Vec::new())
        .expect_json(200);
    assert_eq!(h["key"], "n", "{h}");
    let hist = h["history"].as_array().expect("history array");
    let values: Vec<i64> = hist.iter().map(|e| as_i64(&e["value"])).collect();
    assert_eq!(values, [3, 5], "{h}");
    let s0 = hist[0]["seq"].as_u64().expect("seq");
    let s1 = hist[1]["seq"].as_u64().expect("seq");
    assert!(s0 > s1, "newest first: {h}");
    assert!(
        hist[0]["at_ms"].as_u64().expect("at_ms") > 1_600_000_000_000,
        "{h}"
    );
    let h1 = st
        .call("GET", "kv", "/n?history=1", Vec::new())
        .expect_json(200);
    assert_eq!(h1["history"].as_array().unwrap().len(), 1, "{h1}");
}

per_lang! {
    /// The counter example, in each language: the same answers byte for byte.
    fn counter_methods_and_station_errors(lang: Lang) {
        let st = Station::new();
        lang.deploy(&st, "counter", "counter");

        let r = st.call("GET", "counter", "", Vec::new());
        let first_id = request_id(&r);
        assert_eq!(r.header("content-type"), Some("application/json"), "{lang:?}");
        assert_eq!(r.expect(200).text(), r#"{"count":0}"#, "{lang:?}");
        let r = st.call("POST", "counter", "", Vec::new());
        let second_id = request_id(&r);
        assert_ne!(first_id, second_id, "request ids are unique");
        assert_eq!(r.expect_json(200), json!({"count": 1}));
        assert_eq!(
            st.call("POST", "counter", "", Vec::new()).expect(200).text(),
            r#"{"count":2}"#
        );
        assert_eq!(
            st.call("GET", "counter", "", Vec::new()).expect_json(200),
            json!({"count": 2})
        );
        assert_eq!(
            st.call("DELETE", "counter", "", Vec::new())
                .expect(200)
                .text(),
            r#"{"count":0}"#
        );
        assert_eq!(
            st.call("GET", "counter", "", Vec::new()).expect_json(200),
            json!({"count": 0})
        );

        // The object's own 405s pass through, with the SDK's message.
        for m in ["PUT", "PATCH"] {
            let r = st.call(m, "counter", "", Vec::new()).expect(405);
            assert_eq!(
                r.text(),
                json!({
                    "error": "method_not_allowed",
                    "message": format!("{m} is not supported by this object"),
                })
                .to_string(),
                "{lang:?}"
            );
        }
        // HEAD runs as GET, without the body.
        let head = st.call("HEAD", "counter", "", Vec::new());
        assert_eq!(head.status, 200, "HEAD: {}", head.text());
        assert!(head.body.is_empty(), "HEAD sent a body");
        // A method objects do not take: the station's 405.
        st.call("OPTIONS", "counter", "", Vec::new())
            .expect_error(405, "method_not_allowed");
        // Nothing of that changed the count.
        assert_eq!(
            st.call("GET", "counter", "", Vec::new()).expect_json(200),
            json!({"count": 0})
        );

        let v = st
            .call("GET", "nope", "", Vec::new())
            .expect_error(404, "object_not_found");
        if let Some(id) = v.get("object_id") {
            assert_eq!(id, "nope", "{v}");
        }
        st.call("POST", "nope", "/deeper/path", "x")
            .expect_error(404, "object_not_found");
    }
}

per_lang! {
    /// The calculator example, in each language: results, error messages and the use count.
    fn calculator_results_and_bad_requests(lang: Lang) {
        let st = Station::new();
        lang.deploy(&st, "calc", "calculator");

        let cases = [
            ("a=6&b=3&op=add", 9.0),
            ("a=6&b=3&op=sub", 3.0),
            ("a=6&b=3&op=mul", 18.0),
            ("a=6&b=3&op=div", 2.0),
            ("a=1&b=4&op=div", 0.25),
            ("a=-2.5&b=4&op=mul", -10.0),
        ];
        for (q, want) in cases {
            let v = st
                .call("GET", "calc", &format!("?{q}"), Vec::new())
                .expect_json(200);
            let got = v["result"]
                .as_f64()
                .unwrap_or_else(|| panic!("{q}: no numeric result: {v}"));
            assert!(
                (got - want).abs() < 1e-9,
                "{q}: got {got}, want {want}: {v}"
            );
        }
        // The same JSON text in both languages, floats included (serde_json's layout).
        let exact = [
            ("a=6&b=3&op=add", r#"{"a":6.0,"b":3.0,"op":"add","result":9.0}"#),
            (
                "a=0.00001&b=1e-7&op=add",
                r#"{"a":0.00001,"b":1e-7,"op":"add","result":0.000010100000000000002}"#,
            ),
            ("a=1e20&b=3&op=mul", r#"{"a":1e+20,"b":3.0,"op":"mul","result":3e+20}"#),
        ];
        for (q, want) in exact {
            let r = st
                .call("GET", "calc", &format!("?{q}"), Vec::new())
                .expect(200);
            assert_eq!(r.text(), want, "{lang:?} {q}");
        }
        let bad = [
            ("a=1&op=add", "missing query parameter 'b'"),
            ("b=1&op=add", "missing query parameter 'a'"),
            ("a=x&b=1&op=add", r#"query parameter 'a' is not a number: "x""#),
            ("a=1_0&b=1&op=add", r#"query parameter 'a' is not a number: "1_0""#),
            ("a=inf&b=1&op=add", r#"query parameter 'a' is not a number: "inf""#),
            ("a=1&b=1&op=pow", r#"unknown op "pow" (expected add, sub, mul or div)"#),
            ("a=1&b=0&op=div", "division by zero"),
            ("a=1&b=1", "missing query parameter 'op' (add, sub, mul or div)"),
            ("a=1e308&b=1e308&op=add", "the result of add is not a finite number"),
            ("", "missing query parameter 'a'"),
        ];
        for (q, message) in bad {
            let v = st
                .call("GET", "calc", &format!("?{q}"), Vec::new())
                .expect_json(400);
            assert_eq!(
                v,
                json!({"error": "bad_request", "message": message}),
                "{lang:?} {q}"
            );
        }
        // Only the successful uses were counted (and committed).
        let v = st.call("POST", "calc", "", Vec::new()).expect_json(200);
        assert_eq!(
            as_i64(&v["uses"]),
            (cases.len() + exact.len()) as i64,
            "{v}"
        );
    }
}

per_lang! {
    /// The hello example, in each language.
    fn hello_greets_by_name(lang: Lang) {
        let st = Station::new();
        lang.deploy(&st, "hello", "hello");
        let r = st.call("GET", "hello", "", Vec::new()).expect(200);
        assert_eq!(
            r.text(),
            r#"{"message":"Hello, world!","object":"hello"}"#,
            "{lang:?}"
        );
        let v = st
            .call("GET", "hello", "?name=Ada", Vec::new())
            .expect_json(200);
        assert_eq!(v["message"], "Hello, Ada!", "{v}");
        let v = st
            .call("GET", "hello", "?name=%C3%89mile%20Z", Vec::new())
            .expect_json(200);
        assert_eq!(v["message"], "Hello, Émile Z!", "query is decoded: {v}");
        let v = st
            .call("GET", "hello", "?name=%22%5C%0A%09", Vec::new())
            .expect_json(200);
        assert_eq!(v["message"], "Hello, \"\\\n\t!", "escaped in JSON: {v}");
        for m in ["POST", "PUT", "DELETE", "PATCH"] {
            st.call(m, "hello", "", Vec::new())
                .expect_error(405, "method_not_allowed");
        }
    }
}

/// Parse the `body` field of a misbehave `/call` answer: a string holding JSON, or JSON itself.
fn inner_body(v: &Value) -> Value {
    match &v["body"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
        other => other.clone(),
    }
}

#[test]
fn object_to_object_calls() {
    let st = Station::new();
    st.deploy_fixture("mb", "misbehave");
    st.deploy_fixture("hello", "hello");

    // Calling itself is a cycle: refused, not a deadlock.
    let t0 = Instant::now();
    let v = st
        .call("POST", "mb", "/call?target=mb&path=/", Vec::new())
        .expect_json(508);
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "cycle took {:?}",
        t0.elapsed()
    );
    assert_eq!(v["call_error"], "loop-detected", "{v}");
    assert_eq!(v["error"], "loop_detected", "{v}");

    let v = st
        .call("POST", "mb", "/call?target=nope&path=/", Vec::new())
        .expect_json(404);
    assert_eq!(v["call_error"], "not-found", "{v}");

    let v = st
        .call("POST", "mb", "/call?target=Bad%20Id&path=/", Vec::new())
        .expect_json(400);
    assert_eq!(v["call_error"], "invalid", "{v}");

    let v = st
        .call(
            "POST",
            "mb",
            "/call?target=hello&path=/&method=GET",
            Vec::new(),
        )
        .expect_json(200);
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(inner_body(&v)["message"], "Hello, world!", "{v}");

    // The station still serves mb after the refused cycle.
    st.call("POST", "mb", "/ok", "after").expect(200);
    let g = st.call("GET", "mb", "", Vec::new()).expect_json(200);
    assert_eq!(g["x"], "after", "{g}");
}

#[test]
fn a_trailing_slash_reaches_the_object_as_path_slash() {
    // `/objects/{id}` and `/objects/{id}/` both mean the object's path `/` (wit: "`/` when empty");
    // users type both, and the kv object documents `GET /` as its key listing.
    let st = Station::new();
    st.deploy_fixture("kv", "kv");
    st.deploy_fixture("counter", "counter");
    st.call("PUT", "kv", "/a", "1");
    let bare = st.call("GET", "kv", "", Vec::new()).expect_json(200);
    assert_eq!(bare["keys"], json!(["a"]), "{bare}");
    let slash = st.call("GET", "kv", "/", Vec::new()).expect_json(200);
    assert_eq!(slash, bare, "GET /objects/kv/ differs from GET /objects/kv");
    assert_eq!(
        st.call("POST", "counter", "/", Vec::new()).expect_json(200),
        json!({"count": 1})
    );
}

#[test]
fn head_is_get_without_a_body_and_a_status_outside_200_to_599_is_refused() {
    let st = Station::new();
    st.deploy_fixture("counter", "counter");
    st.call("POST", "counter", "", Vec::new()).expect(200);
    let get = st.call("GET", "counter", "", Vec::new()).expect(200);
    let head = st.request("HEAD", "/objects/counter", Vec::new());
    assert_eq!(head.status, 200, "{}", head.text());
    assert!(head.body.is_empty(), "HEAD sent a body");
    assert_eq!(head.header("content-type"), get.header("content-type"));
    assert!(head.header("x-request-id").is_some());

    st.deploy_fixture("m", "misbehave");
    for code in [100, 101, 103, 199, 600, 999, 65535] {
        let r = st.call("POST", "m", &format!("/status?code={code}"), Vec::new());
        let v = r.expect_error(502, "invalid_response");
        assert!(
            v["message"].as_str().unwrap().contains(&code.to_string()),
            "{v}"
        );
    }
    for code in [200, 201, 404, 418, 599] {
        let r = st.call("POST", "m", &format!("/status?code={code}"), Vec::new());
        assert_eq!(r.status, code, "{}", r.text());
        assert_eq!(r.text(), format!("status {code}"));
    }
    // The object and the station go on serving.
    st.call("POST", "m", "/ok", "after").expect(200);
}
