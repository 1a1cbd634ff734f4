//! Alarms: set and cancelled with a call's batch, fired at or after their time in the object's
//! turn, on its home only, after a kill -9 and restart, a migration and a failover; a failing
//! one retried with backoff, then dropped.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::Duration;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Sets a reminder due in `in_ms` through `st`; returns its id.
fn remind(st: &Station, in_ms: u64, note: &str) -> String {
    let body = json!({"in_ms": in_ms, "note": note}).to_string();
    let v = st.call("POST", "reminder", "/", body).expect_json(201);
    v["id"].as_str().expect("an id").to_string()
}

fn reminders(st: &Station) -> Value {
    st.call("GET", "reminder", "/", Vec::new()).expect_json(200)
}

/// Polls `st` until `n` reminders fired; returns the `GET /` answer.
#[track_caller]
fn wait_fired(st: &Station, n: usize, timeout: Duration) -> Value {
    poll(&format!("{n} reminders to fire"), timeout, || {
        let v = reminders(st);
        (v["fired"].as_array().map_or(0, Vec::len) >= n).then_some(v)
    })
}

/// Lines of `id`'s log with this event.
fn log_events(st: &Station, id: &str, event: &str) -> Vec<Value> {
    let v = st.get_json(&format!("/objects/{id}?logs=true&limit=10000"));
    v["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["event"] == event)
        .cloned()
        .collect()
}

per_lang! {
    /// Reminders fire at or after their time, soonest first; a cancelled one never fires.
    fn reminders_fire_on_time_and_cancelled_ones_never(lang: Lang) {
        let st = Station::start(Opts::new());
        lang.deploy(&st, "reminder", "reminder");
        let set_at = now_ms();
        // Far enough out that the three are pending when listed, even on a loaded machine.
        let later = remind(&st, 4_000, "later");
        let soon = remind(&st, 2_500, "soon");
        let cancelled = remind(&st, 3_000, "never");
        let pending = reminders(&st)["pending"].clone();
        let notes: Vec<&str> = pending
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["note"].as_str().unwrap())
            .collect();
        assert_eq!(notes, ["soon", "never", "later"], "{pending}");
        let admin = st.get_json("/objects/reminder?alarms=true");
        assert_eq!(admin["alarms"].as_array().unwrap().len(), 3, "{admin}");

        let v = st
            .call("DELETE", "reminder", &format!("/{cancelled}"), Vec::new())
            .expect_json(200);
        assert_eq!(v, json!({"id": cancelled, "cancelled": true}));
        st.call("DELETE", "reminder", &format!("/{cancelled}"), Vec::new())
            .expect(404);

        let v = wait_fired(&st, 2, Duration::from_secs(15));
        let fired = v["fired"].as_array().unwrap();
        let ids: Vec<&str> = fired.iter().map(|f| f["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [soon.as_str(), later.as_str()], "{v}");
        for f in fired {
            let (due, at) = (as_i64(&f["due_ms"]), as_i64(&f["fired_at_ms"]));
            assert!(due as u64 >= set_at, "{f}");
            assert!(at >= due, "fired before it was due: {f}");
        }
        assert_eq!(v["pending"], json!([]), "{v}");
        assert_eq!(st.get_json("/objects/reminder?alarms=true")["alarms"], json!([]));
        assert_eq!(log_events(&st, "reminder", "alarm.end").len(), 2);
    }
}

#[test]
fn an_alarm_due_while_the_station_was_down_fires_after_it_restarts() {
    let mut st = Station::start(Opts::new().fsync());
    st.deploy_fixture("reminder", "reminder");
    let id = remind(&st, 800, "while down");
    let due = as_i64(&reminders(&st)["pending"][0]["due_ms"]) as u64;
    st.kill9();
    // Down past its time.
    while now_ms() <= due + 200 {
        std::thread::sleep(Duration::from_millis(50));
    }
    st.restart();
    let v = wait_fired(&st, 1, Duration::from_secs(15));
    assert_eq!(v["fired"][0]["id"], id.as_str(), "{v}");
    assert_eq!(v["fired"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["pending"], json!([]));
}

#[test]
fn a_trapped_call_sets_no_alarm_and_a_failing_one_is_retried_then_dropped() {
    let st = Station::start(Opts::new().flag("--alarm-retry-base-ms", 40));
    st.deploy_fixture("misbehave", "misbehave");
    st.call(
        "POST",
        "misbehave",
        "/alarm-trap?name=t&in_ms=0",
        Vec::new(),
    )
    .expect_error(500, "trapped");
    assert_eq!(
        st.get_json("/objects/misbehave?alarms=true")["alarms"],
        json!([])
    );

    let retries_of = |name: &str| {
        let needle = format!("{name:?}");
        log_events(&st, "misbehave", "alarm.retry")
            .iter()
            .filter(|l| l["message"].as_str().unwrap().contains(&needle))
            .count()
    };
    // Fails while blocked (its failed fires commit nothing), then succeeds: fired once, with
    // the time it was set for.
    st.call("POST", "misbehave", "/block?name=flaky", Vec::new())
        .expect(200);
    let set = st
        .call("POST", "misbehave", "/alarm?name=flaky&in_ms=0", Vec::new())
        .expect_json(200);
    poll("two retries of flaky", Duration::from_secs(15), || {
        (retries_of("flaky") >= 2).then_some(())
    });
    st.call("POST", "misbehave", "/unblock?name=flaky", Vec::new())
        .expect(200);
    let flaky = poll("flaky to fire", Duration::from_secs(15), || {
        let v = st
            .call("GET", "misbehave", "/alarm?name=flaky", Vec::new())
            .expect_json(200);
        (v["fired"] == true).then_some(v)
    });
    assert_eq!(flaky["scheduled_ms"], set["at_ms"], "{flaky}");
    assert!(retries_of("flaky") < 6);

    // Always fails: 1 try and 6 retries, then dropped, nothing of it committed.
    st.call("POST", "misbehave", "/block?name=doomed", Vec::new())
        .expect(200);
    st.call(
        "POST",
        "misbehave",
        "/alarm?name=doomed&in_ms=0",
        Vec::new(),
    )
    .expect(200);
    poll("doomed to be dropped", Duration::from_secs(30), || {
        (!log_events(&st, "misbehave", "alarm.dropped").is_empty()).then_some(())
    });
    let v = st
        .call("GET", "misbehave", "/alarm?name=doomed", Vec::new())
        .expect_json(200);
    assert_eq!(v["fired"], false, "{v}");
    assert_eq!(retries_of("doomed"), 6);
    assert_eq!(
        st.get_json("/objects/misbehave?alarms=true")["alarms"],
        json!([])
    );
}

#[test]
fn alarms_move_with_a_migration_and_fire_on_the_new_home_only() {
    let mut cluster = Cluster::reserve(2);
    let st = cluster.start_joined(2, Opts::new());
    let (id_a, id_b) = (st[0].station_id(), st[1].station_id());
    let (a, b) = (&st[0], &st[1]);
    a.deploy_fixture("reminder", "reminder");
    a.wait_home("reminder", &id_a);
    b.wait_home("reminder", &id_a);
    let first = remind(a, 1_500, "after the move");
    let second = remind(b, 2_500, "later still");

    let body = json!({"object_id": "reminder", "target_station": id_b}).to_string();
    a.request("POST", "/cluster/migrate", body).expect_json(200);
    a.wait_home("reminder", &id_b);
    let v = wait_fired(a, 2, Duration::from_secs(20));
    let ids: Vec<&str> = v["fired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [first.as_str(), second.as_str()],
        "each fired once: {v}"
    );
    // The log moved with the object: every fire ran on the new home.
    let fires = log_events(b, "reminder", "alarm.end");
    assert_eq!(fires.len(), 2, "{fires:?}");
}

#[test]
fn after_a_failover_each_alarm_fires_once() {
    let opts = Opts::new().fsync().flag("--sync-replicas", 1);
    let mut cluster = Cluster::reserve(3);
    let mut st = cluster.start_joined(3, opts);
    let ids: Vec<String> = st.iter().map(Station::station_id).collect();
    st[0].deploy_fixture("reminder", "reminder");
    for s in &st {
        s.wait_home("reminder", &ids[0]);
    }
    let early = remind(&st[1], 200, "before the kill");
    let late = remind(&st[1], 4_000, "after the failover");
    wait_fired(&st[1], 1, Duration::from_secs(15));
    wait_replicas_caught_up(&st[0], &ids[0], &[&st[1], &st[2]], "reminder");

    st[0].kill9();
    let (h, _) = wait_one_home(&[&st[1], &st[2]], "reminder");
    let home = &st[h + 1];
    let v = wait_fired(home, 2, Duration::from_secs(30));
    let fired: Vec<&str> = v["fired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(fired, [early.as_str(), late.as_str()], "{v}");
    assert_eq!(v["pending"], json!([]), "{v}");
}
