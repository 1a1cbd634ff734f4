//! What only Python objects do: an uncaught exception is a 500 `exception` answer with the
//! message, its traceback in the object's log, and nothing of the call committed; the SDK's
//! `log`, `print`, `runtime` and `runtime.call` reach the station. (The Python examples' cases
//! run in `calls` and `state` through `per_lang!`, beside the Rust ones; the compiled-cache
//! restart is `state::state_survives_a_graceful_restart::python`.)
//!
//! One station and one Python deploy (`tests/fixtures/python/kv`, ~18 MB, seconds to compile)
//! for all of it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

fn rid(r: &Resp) -> String {
    r.header("x-request-id")
        .unwrap_or_else(|| panic!("{}: no x-request-id", r.what))
        .to_string()
}

/// The log entries of `id` for request `rid`, once `done` holds for them (bounded poll).
fn log_of(st: &Station, id: &str, rid: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    poll(
        &format!("the log lines of request {rid} of {id}"),
        Duration::from_secs(10),
        || {
            let v = st.get_json(&format!("/objects/{id}?logs=true&request_id={}", pct(rid)));
            let entries = v["logs"].as_array().expect("logs array").clone();
            done(&entries).then_some(entries)
        },
    )
}

/// One Python deploy for every check here (each Python component compiles for seconds).
#[test]
fn python_exceptions_logs_and_runtime() {
    let st = Station::new();
    Lang::Python.deploy(&st, "pykv", "kv");
    Lang::Rust.deploy(&st, "counter", "counter");
    exception_is_a_500_with_its_traceback_logged_and_nothing_committed(&st);
    log_print_and_runtime_reach_the_station(&st);
}

fn exception_is_a_500_with_its_traceback_logged_and_nothing_committed(st: &Station) {
    st.call("PUT", "pykv", "/a", "one").expect(200);
    st.call("POST", "pykv", "/n", "").expect(200);

    // The handler writes, then raises: 500, the message (any string) in the JSON.
    let message = "boom\t\"quoted\" \\ new\nline é 😀";
    let r = st.call("PUT", "pykv", &format!("/a?raise={}", pct(message)), "two");
    let request = rid(&r);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.expect_json(500);
    assert_eq!(
        v,
        json!({"error": "exception", "message": message, "type": "RuntimeError"}),
        "the exception answer"
    );
    let r = st.call("POST", "pykv", "/n?raise=after%20increment", "5");
    r.expect_error(500, "exception");

    // Nothing of those calls committed.
    let v = st.call("GET", "pykv", "/a", Vec::new()).expect_json(200);
    assert_eq!(v["value"], "one", "a raising call committed its write: {v}");
    let v = st.call("GET", "pykv", "/n", Vec::new()).expect_json(200);
    assert_eq!(
        v["value"], "1",
        "a raising call committed its increment: {v}"
    );
    let h = st
        .call("GET", "pykv", "/a?history=10", Vec::new())
        .expect_json(200);
    assert_eq!(
        h["history"].as_array().map(Vec::len),
        Some(1),
        "one committed version of a: {h}"
    );

    // The traceback is in the object's log, at error level, under the call's request id.
    let lines = log_of(st, "pykv", &request, |es| {
        es.iter().any(|e| e["event"] == "call.end")
    });
    let tb = lines
        .iter()
        .find(|e| e["event"] == "object" && e["level"] == "error")
        .unwrap_or_else(|| panic!("no error line from the object: {lines:?}"));
    let text = tb["message"].as_str().expect("message");
    for part in [
        "uncaught exception in Probe.put (PUT /a)",
        "Traceback (most recent call last):",
        "raise RuntimeError(message)",
        &format!("RuntimeError: {message}"),
    ] {
        assert!(text.contains(part), "traceback lacks {part:?}:\n{text}");
    }
    let errors = st.get_json("/objects/pykv?logs=true&level=error");
    assert!(
        errors["logs"]
            .as_array()
            .expect("logs")
            .iter()
            .any(|e| e["request_id"] == request.as_str() && e["message"] == text),
        "level=error lists the traceback: {errors}"
    );

    // An exception is an answer, not a trap: the instance keeps serving and commits again.
    st.call("PUT", "pykv", "/a", "three").expect(200);
    let v = st.call("GET", "pykv", "/a", Vec::new()).expect_json(200);
    assert_eq!(v["value"], "three", "{v}");
    let meta = st.get_json("/objects/pykv?metadata=true");
    assert_eq!(meta["traps"], 0, "exceptions are not traps: {meta}");

    // HTTPError answers its status: below 500 the writes commit, from 500 they do not.
    let v = st
        .call("PUT", "pykv", "/b?fail=409", "kept")
        .expect_error(409, "requested_failure");
    assert_eq!(v["message"], "failed with 409 on request", "{v}");
    st.call("PUT", "pykv", "/c?fail=503", "dropped")
        .expect_error(503, "requested_failure");
    let v = st.call("GET", "pykv", "/b", Vec::new()).expect_json(200);
    assert_eq!(v["value"], "kept", "{v}");
    st.call("GET", "pykv", "/c", Vec::new())
        .expect_error(404, "not_found");

    // A bad body is the SDK's 400, and commits nothing either.
    st.call("PATCH", "pykv", "/a", "{not json")
        .expect_error(400, "bad_request");
    st.raw("PUT", "/objects/pykv/%FF", b"v")
        .expect_error(400, "bad_request");
}

fn log_print_and_runtime_reach_the_station(st: &Station) {
    // log.* at every level, and print() to stdout and stderr.
    let r = st.call("GET", "pykv", "/?log=hello%09there", Vec::new());
    let request = rid(&r);
    r.expect(200);
    let lines = log_of(st, "pykv", &request, |es| {
        es.iter().any(|e| e["event"] == "call.end")
    });
    for level in ["trace", "debug", "info", "warn", "error"] {
        assert!(
            lines.iter().any(|e| e["event"] == "object"
                && e["level"] == level
                && e["message"] == "hello\tthere"),
            "no object line at {level}: {lines:?}"
        );
    }
    for stream in ["stdout", "stderr"] {
        assert!(
            lines.iter().any(|e| e["event"] == stream
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&format!("{stream} hello\tthere")))),
            "no {stream} line: {lines:?}"
        );
    }

    // runtime facts.
    let station = st.get_json("/health");
    let v = st
        .call("GET", "pykv", "/?runtime", Vec::new())
        .expect_json(200);
    assert_eq!(v["object_id"], "pykv", "{v}");
    if let Some(id) = station.get("station_id").or_else(|| station.get("station")) {
        assert_eq!(&v["station_id"], id, "{v} vs /health {station}");
    }
    assert!(
        v["now_ms"].as_u64().is_some_and(|t| t > 1_600_000_000_000),
        "{v}"
    );

    // runtime.call: an answer, and each CallError kind the station can produce here.
    st.call("POST", "counter", "", Vec::new()).expect(200);
    let v = st
        .call("GET", "pykv", "/?call=counter&path=/", Vec::new())
        .expect_json(200);
    assert_eq!(v, json!({"status": 200, "body": "{\"count\":1}"}));
    for (target, kind) in [
        ("nope", "not-found"),
        ("pykv", "loop-detected"),
        ("Bad%20Id", "invalid"),
    ] {
        let v = st
            .call("GET", "pykv", &format!("/?call={target}"), Vec::new())
            .expect_json(502);
        assert_eq!(v["error"], "call_failed", "{target}: {v}");
        assert_eq!(v["kind"], kind, "{target}: {v}");
    }
}
