//! The counter against the SDK's in-memory fake: the answers and the `count` events.

use super::*;
use object_primitive::{dispatch, testing};

fn call(method: &str) -> (u16, String) {
    let r = dispatch::<Counter>(Request::new(method, "/"));
    (r.status, r.text_body())
}

#[test]
fn counts_and_publishes_every_change() {
    testing::reset();
    assert_eq!(call("GET"), (200, r#"{"count":0}"#.to_string()));
    assert_eq!(call("POST"), (200, r#"{"count":1}"#.to_string()));
    assert_eq!(call("POST"), (200, r#"{"count":2}"#.to_string()));
    assert_eq!(call("GET"), (200, r#"{"count":2}"#.to_string()));
    assert_eq!(call("DELETE"), (200, r#"{"count":0}"#.to_string()));
    assert_eq!(call("PUT").0, 405);
    let events: Vec<(String, String)> = [1, 2, 0]
        .iter()
        .map(|n| ("count".to_string(), format!(r#"{{"count":{n}}}"#)))
        .collect();
    assert_eq!(testing::published_events(), events);
    assert!(testing::state().is_empty());
}
