//! Idempotency keys: a call with an `Idempotency-Key` header runs once, and every retry with the
//! same key gets its answer back (`idempotent-replayed: true`), across restarts and migration.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

const REPLAYED: &str = "idempotent-replayed";

/// `POST /objects/counter` with this key.
fn post_with_key(st: &Station, key: &str) -> Resp {
    st.request_with_headers("POST", "/objects/counter", &[("idempotency-key", key)], "")
}

/// The counter's count, read with a plain GET.
fn count(st: &Station) -> i64 {
    as_i64(&st.call("GET", "counter", "", Vec::new()).expect_json(200)["count"])
}

#[test]
fn a_retried_call_runs_once_and_every_retry_gets_the_first_answer() {
    let st = Station::start(Opts::new().fsync());
    st.deploy_fixture("counter", "counter");

    let first = post_with_key(&st, "order-1").expect(200);
    assert_eq!(first.json(), json!({"count": 1}));
    assert_eq!(
        first.header(REPLAYED),
        None,
        "the first answer is not a replay"
    );
    for _ in 0..10 {
        let retry = post_with_key(&st, "order-1").expect(200);
        assert_eq!(
            retry.json(),
            json!({"count": 1}),
            "a retry replays the first answer"
        );
        assert_eq!(retry.header(REPLAYED), Some("true"));
        assert_eq!(
            retry.header("content-type"),
            first.header("content-type"),
            "a replay keeps the object's headers"
        );
    }
    assert_eq!(count(&st), 1, "the retries did not run");
    // Another key is another call; no key is a call every time.
    assert_eq!(
        post_with_key(&st, "order-2").expect_json(200),
        json!({"count": 2})
    );
    st.call("POST", "counter", "", Vec::new()).expect(200);
    st.call("POST", "counter", "", Vec::new()).expect(200);
    assert_eq!(count(&st), 4);
}

#[test]
fn retries_sent_together_run_the_call_once() {
    const RETRIES: usize = 16;
    let st = Station::start(Opts::new().fsync());
    st.deploy_fixture("counter", "counter");
    let answers: Vec<(u16, String, Option<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..RETRIES)
            .map(|_| {
                scope.spawn(|| {
                    let r = post_with_key(&st, "together");
                    (r.status, r.text(), r.header(REPLAYED).map(str::to_string))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, body, _) in &answers {
        assert_eq!(*status, 200, "{body}");
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v,
            json!({"count": 1}),
            "every retry answers the one run's count"
        );
    }
    let replayed = answers.iter().filter(|(_, _, r)| r.is_some()).count();
    assert_eq!(replayed, RETRIES - 1, "one ran, the others were replayed");
    assert_eq!(count(&st), 1);
}

#[test]
fn a_key_reused_for_another_request_is_refused_and_runs_nothing() {
    let st = Station::start(Opts::new());
    st.deploy_fixture("kv", "kv");
    st.request_with_headers("PUT", "/objects/kv/a", &[("idempotency-key", "k")], "one")
        .expect(200);
    // Same key, different body; then different path.
    let other_body =
        st.request_with_headers("PUT", "/objects/kv/a", &[("idempotency-key", "k")], "two");
    let v = other_body.expect_error(422, "idempotency_mismatch");
    assert!(
        v["message"].as_str().unwrap().contains("different request"),
        "{v}"
    );
    st.request_with_headers("PUT", "/objects/kv/b", &[("idempotency-key", "k")], "one")
        .expect_error(422, "idempotency_mismatch");
    assert_eq!(
        st.call("GET", "kv", "/a", Vec::new()).expect_json(200)["value"],
        "one"
    );
    st.call("GET", "kv", "/b", Vec::new()).expect(404);
    // A malformed key is refused before anything runs.
    let long = "x".repeat(256);
    st.request_with_headers("PUT", "/objects/kv/c", &[("idempotency-key", &long)], "v")
        .expect_error(400, "invalid_idempotency_key");
    st.call("GET", "kv", "/c", Vec::new()).expect(404);
}

#[test]
fn failed_calls_are_not_kept_and_run_again() {
    let st = Station::start(Opts::new());
    st.deploy_fixture("misbehave", "misbehave");
    for path in ["/objects/misbehave/fail", "/objects/misbehave/trap"] {
        for attempt in 0..2 {
            let r = st.request_with_headers("POST", path, &[("idempotency-key", path)], "v");
            assert_eq!(r.status, 500, "{path} attempt {attempt}: {}", r.text());
            assert_eq!(
                r.header(REPLAYED),
                None,
                "{path}: a failure is never replayed"
            );
        }
    }
    // The failed calls wrote nothing, so a successful one with the same key then runs.
    let ok = st.request_with_headers(
        "POST",
        "/objects/misbehave/ok",
        &[("idempotency-key", "after")],
        "v",
    );
    ok.expect(200);
}

#[test]
fn kept_answers_are_hidden_from_the_object_and_from_the_state_view() {
    let st = Station::start(Opts::new());
    st.deploy_fixture("kv", "kv");
    st.request_with_headers("PUT", "/objects/kv/mine", &[("idempotency-key", "k")], "v")
        .expect(200);
    let listed = st.call("GET", "kv", "", Vec::new()).expect_json(200);
    assert_eq!(
        listed["keys"],
        json!(["mine"]),
        "the object sees only its own keys"
    );
    let view = st.get_json("/objects/kv?state=true");
    assert_eq!(view["state"], json!({"mine": "v"}), "{view}");
}

#[test]
fn kept_answers_survive_a_restart() {
    let mut st = Station::start(Opts::new().fsync());
    st.deploy_fixture("counter", "counter");
    assert_eq!(
        post_with_key(&st, "k").expect_json(200),
        json!({"count": 1})
    );
    st.restart();
    let retry = post_with_key(&st, "k").expect(200);
    assert_eq!(retry.header(REPLAYED), Some("true"));
    assert_eq!(retry.json(), json!({"count": 1}));
    assert_eq!(count(&st), 1);
}

#[test]
fn a_key_is_free_again_after_its_ttl() {
    let st = Station::start(Opts::new().flag("--idempotency-ttl-secs", 1));
    st.deploy_fixture("counter", "counter");
    assert_eq!(
        post_with_key(&st, "k").expect_json(200),
        json!({"count": 1})
    );
    // Retries replay until the record expires; then the key runs the call again, once.
    let started = Instant::now();
    let rerun = poll("the key to expire", Duration::from_secs(15), || {
        let r = post_with_key(&st, "k").expect(200);
        r.header(REPLAYED).is_none().then(|| r.json())
    });
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "expired too early"
    );
    assert_eq!(rerun, json!({"count": 2}));
    assert_eq!(post_with_key(&st, "k").header(REPLAYED), Some("true"));
    assert_eq!(count(&st), 2);
}

#[test]
fn an_object_to_object_call_can_pass_a_key() {
    let st = Station::start(Opts::new());
    st.deploy_fixture("counter", "counter");
    st.deploy_fixture("misbehave", "misbehave");
    for _ in 0..3 {
        let v = st
            .call(
                "POST",
                "misbehave",
                "/call?target=counter&key=transfer-7",
                Vec::new(),
            )
            .expect_json(200);
        assert_eq!(v["status"], 200, "{v}");
        assert_eq!(
            serde_json::from_str::<Value>(v["body"].as_str().unwrap()).unwrap(),
            json!({"count": 1})
        );
    }
    assert_eq!(count(&st), 1, "the callee ran once");
}

#[test]
fn kept_answers_move_with_the_object() {
    let mut cluster = Cluster::reserve(2);
    let (st, _, id_b) = two_stations_with_counter(&mut cluster);
    let (a, b) = (&st[0], &st[1]);
    assert_eq!(post_with_key(a, "k").expect_json(200), json!({"count": 1}));

    let body = json!({"object_id": "counter", "target_station": id_b}).to_string();
    a.request("POST", "/cluster/migrate", body).expect_json(200);
    a.wait_home("counter", &id_b);
    for st in [a, b] {
        let retry = post_with_key(st, "k").expect(200);
        assert_eq!(retry.header(REPLAYED), Some("true"), "through {}", st.url);
        assert_eq!(retry.json(), json!({"count": 1}));
    }
    assert_eq!(count(b), 1);
}
