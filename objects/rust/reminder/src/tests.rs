//! The reminder against the SDK's in-memory fake, with a frozen clock. The Python
//! reminder's tests (`guest-sdk/python/tests/test_examples.py`) check the same answers.

use super::*;
use object_primitive::serde_json::{Value, json};
use object_primitive::{dispatch, testing};

const T0: u64 = 1_700_000_000_000;

fn call(method: &str, path: &str, body: &str) -> (u16, String) {
    let r = dispatch::<Reminder>(Request::new(method, path).with_body(body.to_string()));
    (r.status, r.text_body())
}

fn setup() {
    testing::reset();
    testing::set_now_ms(T0);
}

#[test]
fn set_list_fire_and_cancel() {
    setup();
    assert_eq!(
        call("GET", "/", ""),
        (200, r#"{"pending":[],"fired":[]}"#.to_string())
    );
    assert_eq!(
        call("POST", "/", r#"{"in_ms": 5000, "note": "tea"}"#),
        (201, r#"{"id":"r1"}"#.to_string())
    );
    assert_eq!(
        call("POST", "/", r#"{"in_ms": 1000, "note": "café ☕"}"#),
        (201, r#"{"id":"r2"}"#.to_string())
    );
    assert_eq!(call("POST", "/", r#"{"in_ms": 0}"#).1, r#"{"id":"r3"}"#);
    assert_eq!(
        call("GET", "/", "").1,
        concat!(
            r#"{"pending":[{"id":"r3","note":"","due_ms":1700000000000},"#,
            r#"{"id":"r2","note":"café ☕","due_ms":1700000001000},"#,
            r#"{"id":"r1","note":"tea","due_ms":1700000005000}],"fired":[]}"#
        )
    );

    let fired = testing::fire_due_alarms::<Reminder>(T0 + 1500);
    let names: Vec<_> = fired.iter().map(|(n, r)| (n.as_str(), r.is_ok())).collect();
    assert_eq!(names, [("r3", true), ("r2", true)]);
    assert_eq!(
        call("GET", "/", "").1,
        concat!(
            r#"{"pending":[{"id":"r1","note":"tea","due_ms":1700000005000}],"fired":["#,
            r#"{"id":"r3","note":"","due_ms":1700000000000,"fired_at_ms":1700000001500},"#,
            r#"{"id":"r2","note":"café ☕","due_ms":1700000001000,"fired_at_ms":1700000001500}]}"#
        )
    );

    assert_eq!(
        call("DELETE", "/r1", ""),
        (200, r#"{"id":"r1","cancelled":true}"#.to_string())
    );
    assert_eq!(
        call("DELETE", "/r1", ""),
        (
            404,
            r#"{"error":"not_found","message":"no pending reminder with id r1"}"#.to_string()
        )
    );
    assert_eq!(
        call("DELETE", "/r2", "").0,
        404,
        "a fired reminder is not pending"
    );
    assert!(testing::fire_due_alarms::<Reminder>(T0 + 10_000).is_empty());
    let v: Value = serde_json_body(&call("GET", "/", "").1);
    assert_eq!(v["pending"], json!([]));
    assert_eq!(v["fired"].as_array().unwrap().len(), 2);
}

fn serde_json_body(text: &str) -> Value {
    object_primitive::serde_json::from_str(text).unwrap()
}

#[test]
fn ids_count_up_and_the_limits_are_inclusive() {
    setup();
    let max = r#"{"in_ms": 2678400000, "note": "NOTE"}"#.replace("NOTE", &"é".repeat(1000));
    assert_eq!(call("POST", "/", &max), (201, r#"{"id":"r1"}"#.to_string()));
    assert_eq!(
        call("POST", "/", r#"{"in_ms": 1, "note": null, "extra": [1]}"#),
        (201, r#"{"id":"r2"}"#.to_string())
    );
    let pending = alarms::list();
    assert_eq!(pending[1].at_ms, T0 + 2_678_400_000);
    assert_eq!(pending[1].payload.len(), 2000);
}

#[test]
fn bad_input_is_400_and_sets_nothing() {
    setup();
    let must_be = "field 'in_ms' must be an integer from 0 to 2678400000 (31 days)";
    let long_note = format!(r#"{{"in_ms": 1, "note": "{}"}}"#, "x".repeat(1001));
    for (body, message) in [
        ("", "missing field 'in_ms'"),
        ("[]", "request body must be a JSON object"),
        ("{", "request body must be a JSON object"),
        ("\"x\"", "request body must be a JSON object"),
        (r#"{"note": "x"}"#, "missing field 'in_ms'"),
        (r#"{"in_ms": null}"#, "missing field 'in_ms'"),
        (r#"{"in_ms": "5"}"#, "field 'in_ms' must be an integer"),
        (r#"{"in_ms": 1.5}"#, "field 'in_ms' must be an integer"),
        (r#"{"in_ms": 1.0}"#, "field 'in_ms' must be an integer"),
        (r#"{"in_ms": true}"#, "field 'in_ms' must be an integer"),
        (r#"{"in_ms": -0}"#, "field 'in_ms' must be an integer"),
        (
            r#"{"in_ms": 18446744073709551615}"#,
            "field 'in_ms' must be an integer",
        ),
        (
            r#"{"in_ms": 1, "note": "\ud800"}"#,
            "request body must be a JSON object",
        ),
        (
            r#"{"in_ms": 1, "note": "\udc00"}"#,
            "request body must be a JSON object",
        ),
        (
            r#"{"in_ms": -1, "x": "\ud800"}"#,
            "request body must be a JSON object",
        ),
        (r#"{"in_ms": -1}"#, must_be),
        (r#"{"in_ms": 2678400001}"#, must_be),
        (
            r#"{"in_ms": 1, "note": 5}"#,
            "field 'note' must be a string",
        ),
        (
            r#"{"in_ms": 1, "note": ["a"]}"#,
            "field 'note' must be a string",
        ),
        (&long_note, "field 'note' must be at most 1000 characters"),
    ] {
        let (status, text) = call("POST", "/", body);
        assert_eq!(status, 400, "{body}");
        let expected = Response::bad_request(message).text_body();
        assert_eq!(text, expected, "{body}");
    }
    assert!(alarms::list().is_empty());
    assert!(testing::state().is_empty());
}

#[test]
fn other_routes_are_404_or_405() {
    setup();
    let (status, text) = call("PUT", "/", "");
    assert_eq!(status, 405);
    assert_eq!(
        text,
        r#"{"error":"method_not_allowed","message":"PUT is not supported on /"}"#
    );
    let r = dispatch::<Reminder>(Request::new("GET", "/r1"));
    assert_eq!((r.status, r.header("allow")), (405, Some("DELETE")));
    assert_eq!(call("DELETE", "/", "").0, 405);
    assert_eq!(call("GET", "/a/b", "").0, 404);
}

#[test]
fn fired_keeps_the_last_100() {
    setup();
    for i in 0..105 {
        let body = format!(r#"{{"in_ms": {i}, "note": "n{i}"}}"#);
        assert_eq!(call("POST", "/", &body).0, 201);
    }
    assert_eq!(testing::fire_due_alarms::<Reminder>(T0 + 200).len(), 105);
    let v = serde_json_body(&call("GET", "/", "").1);
    let fired = v["fired"].as_array().unwrap();
    assert_eq!(fired.len(), 100);
    assert_eq!(fired[0]["id"], "r6");
    assert_eq!(fired[99]["id"], "r105");
    assert_eq!(fired[99]["note"], "n104");
    assert_eq!(
        testing::state()
            .keys()
            .filter(|k| k.starts_with("fired:"))
            .count(),
        100
    );
}

#[test]
fn an_alarm_fired_directly_fires_once() {
    setup();
    call("POST", "/", r#"{"in_ms": 10, "note": "a"}"#);
    assert_eq!(testing::fire_alarm::<Reminder>("r1"), Some(Ok(())));
    assert_eq!(testing::fire_alarm::<Reminder>("r1"), None);
    let v = serde_json_body(&call("GET", "/", "").1);
    assert_eq!(
        v["fired"],
        json!([{"id": "r1", "note": "a", "due_ms": T0 + 10, "fired_at_ms": T0}])
    );
}
