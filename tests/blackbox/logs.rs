//! An object's log: host events per call, traps, the object's own lines; filters.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

fn rid(r: &Resp) -> String {
    r.header("x-request-id")
        .unwrap_or_else(|| panic!("{}: no x-request-id", r.what))
        .to_string()
}

fn entries(v: &Value) -> Vec<Value> {
    v["logs"]
        .as_array()
        .unwrap_or_else(|| panic!("no logs array: {v}"))
        .clone()
}

fn find<'a>(logs: &'a [Value], what: &str, f: impl Fn(&Value) -> bool) -> &'a Value {
    logs.iter().find(|e| f(e)).unwrap_or_else(|| {
        panic!(
            "no log entry {what} in:\n{}",
            logs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

#[test]
fn logs_record_calls_traps_and_object_lines() {
    let st = Station::new();
    st.deploy_fixture("mb", "misbehave");
    st.deploy_fixture("hello", "hello");

    let r = st.call("GET", "hello", "", Vec::new()).expect(200);
    let rid_hello = rid(&r);
    let r = st.call("POST", "mb", "/log", Vec::new()).expect(200);
    let rid_log = rid(&r);
    let r = st.call("POST", "mb", "/trap", "boom");
    // Checked at the end, so that a missing header does not hide the rest.
    let rid_trap_header = r.header("x-request-id").map(str::to_string);
    let trap = r.expect_error(500, "trapped");
    let trap_msg = trap["message"].as_str().unwrap().to_string();

    // Wait (bounded) until the last call's events are visible.
    let all = poll(
        "the call.trap event in the log",
        Duration::from_secs(10),
        || {
            let v = st.get_json("/objects/mb?logs=true");
            entries(&v)
                .iter()
                .any(|e| e["event"] == "call.trap")
                .then_some(v)
        },
    );
    let rid_trap = entries(&all)
        .iter()
        .find(|e| e["event"] == "call.trap")
        .and_then(|e| e["request_id"].as_str().map(str::to_string))
        .expect("call.trap has a request_id");
    assert_eq!(all["object_id"], "mb", "{all}");
    let logs = entries(&all);
    let ts: Vec<u64> = logs
        .iter()
        .map(|e| e["ts"].as_u64().unwrap_or_else(|| panic!("ts in ms: {e}")))
        .collect();
    assert!(ts.windows(2).all(|w| w[0] >= w[1]), "newest first: {ts:?}");
    assert!(
        ts[0] > 1_600_000_000_000,
        "ts in ms since the epoch: {}",
        ts[0]
    );

    let start = find(&logs, "call.start of POST /log", |e| {
        e["event"] == "call.start" && e["request_id"] == rid_log.as_str()
    });
    assert_eq!(start["level"], "info", "{start}");
    assert_eq!(start["message"], "POST /log", "{start}");
    let end = find(&logs, "call.end of POST /log", |e| {
        e["event"] == "call.end" && e["request_id"] == rid_log.as_str()
    });
    assert!(
        end["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("POST /log -> 200"),
        "{end}"
    );
    for level in ["trace", "debug", "info", "warn", "error"] {
        find(&logs, &format!("object line at {level}"), |e| {
            e["event"] == "object" && e["level"] == level && e["request_id"] == rid_log.as_str()
        });
    }
    find(&logs, "stdout line", |e| {
        e["event"] == "stdout" && e["level"] == "info" && e["request_id"] == rid_log.as_str()
    });
    find(&logs, "stderr line", |e| {
        e["event"] == "stderr" && e["level"] == "warn" && e["request_id"] == rid_log.as_str()
    });

    let t = find(&logs, "call.trap", |e| {
        e["event"] == "call.trap" && e["request_id"] == rid_trap.as_str()
    });
    assert_eq!(t["level"], "error", "{t}");
    let logged = t["message"].as_str().unwrap_or("");
    assert!(!logged.is_empty(), "trap event without its message: {t}");
    // The guest panicked, which traps on `unreachable`: both carry that trap text.
    for (what, text) in [
        ("the 500 answer", trap_msg.as_str()),
        ("the call.trap event", logged),
    ] {
        assert!(
            text.contains("unreachable"),
            "{what} lacks the trap text: {text:?}"
        );
    }
    find(&logs, "call.start of the trapped call", |e| {
        e["event"] == "call.start" && e["request_id"] == rid_trap.as_str()
    });
    assert!(
        !logs.iter().any(|e| e["request_id"] == rid_hello.as_str()),
        "hello's call is in mb's log"
    );

    let hello = entries(&st.get_json("/objects/hello?logs=true"));
    let s = find(&hello, "hello's call.start", |e| {
        e["event"] == "call.start" && e["request_id"] == rid_hello.as_str()
    });
    assert_eq!(s["message"], "GET /", "{s}");

    // level = minimum level.
    let warn = st.get_json("/objects/mb?logs=true&level=warn");
    let want: Vec<Value> = logs
        .iter()
        .filter(|e| e["level"] == "warn" || e["level"] == "error")
        .cloned()
        .collect();
    assert!(
        want.len() >= 4,
        "warn+error entries: object warn, object error, stderr, trap"
    );
    assert_eq!(entries(&warn), want, "level=warn");

    // limit = the newest N.
    let two = st.get_json("/objects/mb?logs=true&limit=2");
    assert_eq!(entries(&two), logs[..2].to_vec(), "limit=2");

    // request_id filter.
    let one = st.get_json(&format!(
        "/objects/mb?logs=true&request_id={}",
        pct(&rid_log)
    ));
    let want: Vec<Value> = logs
        .iter()
        .filter(|e| e["request_id"] == rid_log.as_str())
        .cloned()
        .collect();
    assert!(
        want.len() >= 9,
        "start, end, 5 object lines, stdout, stderr"
    );
    assert_eq!(entries(&one), want, "request_id filter");

    // since = not older than.
    let since = ts[logs.len() / 2];
    let recent = entries(&st.get_json(&format!("/objects/mb?logs=true&since={since}")));
    assert!(
        recent.iter().all(|e| e["ts"].as_u64().unwrap() >= since),
        "since={since}"
    );
    let newer = logs
        .iter()
        .filter(|e| e["ts"].as_u64().unwrap() > since)
        .count();
    assert!(recent.len() >= newer, "since={since} dropped newer entries");
    assert!(
        recent.len() < logs.len() || ts[logs.len() - 1] == since,
        "since={since} filtered nothing"
    );

    // The admin route is the same view.
    assert_eq!(st.get_json("/admin/objects/mb/logs"), all);
    assert_eq!(st.get_json("/admin/objects/mb/logs?level=warn"), warn);
    assert_eq!(st.get_json("/admin/objects/mb/logs?limit=2"), two);
    st.get("/objects/nope?logs=true")
        .expect_error(404, "object_not_found");

    // A trapped call's answer carries its request id too: it is how a user finds the trap.
    assert_eq!(
        rid_trap_header.as_deref(),
        Some(rid_trap.as_str()),
        "x-request-id of the trapped call's 500 answer vs the call.trap event"
    );
}
