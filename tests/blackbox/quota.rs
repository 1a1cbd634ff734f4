//! Quotas per object: state size and keys, bytes written per call, log rate, queued calls and
//! call rate; station defaults and overrides at deploy. Each refusal has its stable code, commits
//! nothing, and leaves the station (and the object) serving.

use std::thread;
use std::time::Duration;

use crate::harness::*;

/// Deploys fixture `name` as `id` with quota overrides `quota`.
#[track_caller]
fn deploy_with_quota(st: &Station, id: &str, name: &str, quota: &str) -> serde_json::Value {
    st.request(
        "PUT",
        &format!("/admin/objects/{id}?quota={}", pct(quota)),
        fixture_bytes(name),
    )
    .expect_json(201)
}

#[test]
fn a_state_quota_refuses_growth_and_commits_nothing() {
    let st = Station::new();
    deploy_with_quota(&st, "kv", "kv", "keys=3,state-mb=1");
    for key in ["a", "b", "c"] {
        st.call("PUT", "kv", &format!("/{key}"), "v").expect(200);
    }
    let refused = st
        .call("PUT", "kv", "/d", "v")
        .expect_error(507, "state_quota_exceeded");
    assert_eq!(refused["object_id"], "kv", "{refused}");
    st.call("GET", "kv", "/d", Vec::new()).expect(404);
    // Changing a key that exists is not growth in keys.
    st.call("PUT", "kv", "/a", "changed").expect(200);
    // A value that would take the state past 1 MiB.
    let big = "x".repeat((1 << 20) + 1);
    st.call("PUT", "kv", "/b", big)
        .expect_error(507, "state_quota_exceeded");
    assert_eq!(
        st.call("GET", "kv", "/b", Vec::new()).expect_json(200)["value"],
        "v"
    );
    // Room made, room used.
    st.call("DELETE", "kv", "/c", Vec::new()).expect(200);
    st.call("PUT", "kv", "/d", "v").expect(200);

    let meta = st.get_json("/objects/kv?metadata=true");
    assert_eq!(meta["quota"]["keys"], 3, "{meta}");
    assert_eq!(meta["quota"]["state_bytes"], 1 << 20, "{meta}");
    assert_eq!(meta["usage"]["keys"], 3, "{meta}");
    assert_eq!(meta["quota_overrides"], "state-mb=1,keys=3", "{meta}");
}

#[test]
fn a_call_writing_past_its_write_quota_traps_and_commits_nothing() {
    let st = Station::start(Opts::new().flag("--quota-write-mb", 1));
    st.deploy_fixture("kv", "kv");
    st.call("PUT", "kv", "/small", "before").expect(200);
    let big = "x".repeat(2 << 20);
    let refused = st
        .call("PUT", "kv", "/small", big)
        .expect_error(413, "write_quota_exceeded");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("write quota")),
        "{refused}"
    );
    assert_eq!(
        st.call("GET", "kv", "/small", Vec::new()).expect_json(200)["value"],
        "before"
    );
    // A deploy may raise it for one object.
    deploy_with_quota(&st, "kv2", "kv", "write-mb=4");
    st.call("PUT", "kv2", "/big", "y".repeat(2 << 20))
        .expect(200);
    st.call("PUT", "kv", "/small", "after").expect(200);
}

#[test]
fn calls_past_the_queue_quota_get_429_too_busy() {
    let st = Station::new();
    deploy_with_quota(&st, "mb", "misbehave", "queue=2");
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (client, base) = (st.client(), st.url.clone());
            thread::spawn(move || {
                request_with(
                    &client,
                    &base,
                    "POST",
                    "/objects/mb/slow?ms=1500",
                    Vec::new(),
                )
            })
        })
        .collect();
    // Both are in: one running, one waiting for its turn.
    wait_calls_started(&st, "mb", "/slow", 2);
    let r = st.call("POST", "mb", "/ok", "third");
    assert_eq!(r.header("retry-after"), Some("1"), "{}", r.text());
    r.expect_error(429, "too_busy");
    for call in slow {
        call.join().expect("slow call").expect(200);
    }
    // The third committed nothing; once the queue drains, calls go through.
    assert_eq!(
        st.get_json("/objects/mb?state=true")["state"]["x"],
        serde_json::Value::Null
    );
    st.call("POST", "mb", "/ok", "fourth").expect(200);
}

#[test]
fn calls_past_the_rate_quota_get_429_rate_limited() {
    let st = Station::start(Opts::new().flag("--quota-rate", 1));
    st.deploy_fixture("kv", "kv");
    let answers: Vec<Resp> = (0..5)
        .map(|i| st.call("PUT", "kv", "/n", i.to_string()))
        .collect();
    let limited: Vec<&Resp> = answers.iter().filter(|r| r.status == 429).collect();
    assert!(
        answers.iter().all(|r| r.status == 200 || r.status == 429),
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        !limited.is_empty(),
        "five calls at once were all admitted at 1 call/s"
    );
    for r in &limited {
        let secs: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!((1..=2).contains(&secs), "Retry-After {secs}");
        assert_eq!(r.json()["error"], "rate_limited");
    }
    // Another object has its own rate.
    st.deploy_fixture("other", "kv");
    st.call("PUT", "other", "/n", "1").expect(200);
    // An override lifts it for one object.
    deploy_with_quota(&st, "free", "kv", "rate=0");
    for i in 0..5 {
        st.call("PUT", "free", "/n", i.to_string()).expect(200);
    }
}

#[test]
fn log_lines_over_the_log_quota_are_dropped_and_counted() {
    let st = Station::new();
    deploy_with_quota(&st, "mb", "misbehave", "log-kb-s=1");
    // Each call writes seven lines of its own; forty calls are far over 1 KiB/s.
    for _ in 0..40 {
        st.call("POST", "mb", "/log", Vec::new()).expect(200);
    }
    let object_lines = |logs: &serde_json::Value| {
        logs["logs"]
            .as_array()
            .expect("logs")
            .iter()
            .filter(|e| e["event"] == "object")
            .count()
    };
    let logs = st.get_json("/objects/mb?logs=true&limit=10000");
    assert!(
        object_lines(&logs) < 40 * 5,
        "every object line was kept: {} lines",
        object_lines(&logs)
    );
    // Once the rate has room again, the next line comes with one summary of what was dropped.
    let summary = poll("a log.dropped summary", Duration::from_secs(30), || {
        st.call("POST", "mb", "/log", Vec::new()).expect(200);
        let logs = st.get_json("/objects/mb?logs=true&limit=10000");
        logs["logs"]
            .as_array()
            .expect("logs")
            .iter()
            .find(|e| e["event"] == "log.dropped")
            .cloned()
    });
    let message = summary["message"].as_str().expect("message");
    assert!(
        message.contains("dropped: over the log quota of 1 KiB/s"),
        "{message}"
    );
    // Host events are not the object's lines: every call is still in the log.
    let logs = st.get_json("/objects/mb?logs=true&limit=10000");
    let ends = logs["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|e| e["event"] == "call.end")
        .count();
    assert!(ends >= 41, "call.end lines: {ends}");
}

#[test]
fn quota_overrides_are_checked_carry_over_and_clear() {
    let st = Station::new();
    st.request(
        "PUT",
        "/admin/objects/kv?quota=keys%3Dmany",
        fixture_bytes("kv"),
    )
    .expect_error(400, "bad_quota");
    st.request(
        "PUT",
        "/admin/objects/kv?quota=bogus%3D1",
        fixture_bytes("kv"),
    )
    .expect_error(400, "bad_quota");
    assert!(st.object_ids().is_empty(), "a refused deploy deployed");

    deploy_with_quota(&st, "kv", "kv", "keys=1");
    // Same bytes, no quota: unchanged, the override stays.
    let v = st.put_component("kv", fixture_bytes("kv")).expect_json(200);
    assert_eq!(v["unchanged"], true, "{v}");
    // New bytes without a quota keep the override.
    st.put_component("kv", fixture_bytes("counter"))
        .expect_json(201);
    assert_eq!(
        st.get_json("/objects/kv?metadata=true")["quota_overrides"],
        "keys=1"
    );
    // Same bytes with another quota is a new version under it.
    let v = deploy_with_quota(&st, "kv", "counter", "keys=2");
    assert_eq!(v["version"], 3, "{v}");
    let v = deploy_with_quota(&st, "kv", "counter", "default");
    assert_eq!(v["version"], 4, "{v}");
    let meta = st.get_json("/objects/kv?metadata=true");
    assert_eq!(meta["quota_overrides"], "", "{meta}");
    assert_eq!(meta["quota"]["keys"], 1_000_000, "{meta}");
    let versions = st.get_json("/objects/kv?versions=true");
    assert!(versions.to_string().contains("keys=2"), "{versions}");
}
