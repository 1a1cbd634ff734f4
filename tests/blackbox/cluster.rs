//! The cluster (issue 4): several `host serve` stations on 127.0.0.1 acting as one system.
//! Membership, one-hop routing from any station, replication, failover after `kill -9` with
//! fencing of the returning old home, live migration under load, a late joiner catching up,
//! call cycles across stations, `--min-stations`, and the `stations` / `migrate` verbs.
//!
//! Every wait is a bounded poll ([`CLUSTER_TIMEOUT`] unless said otherwise); figures measured
//! on the way (failover time, migration pause) are printed, not asserted.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

/// The ids of `stations`, in order.
fn ids(stations: &[Station]) -> Vec<String> {
    stations.iter().map(Station::station_id).collect()
}

/// Wait until every station routes object `id` to the station `home`.
#[track_caller]
fn wait_routed(stations: &[&Station], id: &str, home: &str) {
    for st in stations {
        st.wait_home(id, home);
    }
}

/// The `count` of a counter answer.
fn count(v: &Value) -> i64 {
    as_i64(&v["count"])
}

/// A short account of a write load, for assertion messages.
fn describe(logs: &[WriterLog]) -> String {
    logs.iter()
        .map(|l| {
            format!(
                "{}: {} acknowledged, {} failed{}",
                l.target,
                l.acks.len(),
                l.failures.len(),
                l.failures
                    .iter()
                    .take(5)
                    .map(|(_, f)| format!("\n    {f}"))
                    .collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn three_stations_join_and_list_each_other() {
    let mut cluster = Cluster::reserve(3);
    let st = cluster.start_joined(3, Opts::new());
    let ids = ids(&st);
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        3,
        "station ids are not distinct: {ids:?}"
    );
    for (i, s) in st.iter().enumerate() {
        let health = s.get("/health").expect_json(200);
        assert_eq!(health["ready"], true, "{health}");
        assert_eq!(health["station"], ids[i], "{health}");

        let v = s.cluster_stations();
        assert_eq!(v["station"], ids[i], "/cluster/stations on {}: {v}", s.url);
        let members = v["stations"].as_array().expect("stations array");
        assert_eq!(members.len(), 3, "/cluster/stations on {}: {v}", s.url);
        for (j, id) in ids.iter().enumerate() {
            let m = members
                .iter()
                .find(|m| m["id"] == *id)
                .unwrap_or_else(|| panic!("{} does not list {id}: {v}", s.url));
            assert_eq!(m["state"], "alive", "{m}");
            assert_eq!(m["ready"], true, "{m}");
            assert_eq!(m["self"], i == j, "{m}");
            assert_eq!(
                m["address"].as_str().map(|a| a.trim_end_matches('/')),
                Some(st[j].url.as_str()),
                "{m}"
            );
            for field in ["cpu", "memory", "in_flight"] {
                assert!(m["load"][field].is_number(), "load.{field} in {m}");
            }
            assert_eq!(m["objects"], json!([]), "{m}");
        }
    }
}

#[test]
fn a_call_on_any_station_reaches_the_home() {
    let mut cluster = Cluster::reserve(3);
    let st = cluster.start_joined(3, Opts::new());
    let ids = ids(&st);
    let (a, b, c) = (&st[0], &st[1], &st[2]);
    a.deploy_fixture("counter", "counter");
    wait_routed(&[a, b, c], "counter", &ids[0]);

    for (n, s) in [b, c, b, c, a, c].iter().enumerate() {
        let r = s.call("POST", "counter", "", Vec::new()).expect(200);
        assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
        assert_eq!(r.json(), json!({"count": n + 1}), "POST through {}", s.url);
    }
    for s in [a, b, c] {
        let v = s.call("GET", "counter", "", Vec::new()).expect_json(200);
        assert_eq!(count(&v), 6, "GET through {}: {v}", s.url);
    }

    // Every station describes the object the same way: home A, replicas B and C.
    let sha = sha256_hex(&fixture_bytes("counter"));
    for s in [a, b, c] {
        let e = s.object_entry("counter").expect("counter listed");
        assert_eq!(e["home"], ids[0], "GET /objects on {}: {e}", s.url);
        assert_eq!(e["version"], 1, "{e}");
        assert_eq!(e["sha256"], sha, "{e}");
        let replicas: BTreeSet<&str> = e["replicas"]
            .as_array()
            .expect("replicas array")
            .iter()
            .map(|r| r.as_str().expect("replica id"))
            .collect();
        assert_eq!(
            replicas,
            BTreeSet::from([ids[1].as_str(), ids[2].as_str()]),
            "{e}"
        );
    }
    // The home lists the object among those it homes.
    let home = c.member(&ids[0]).expect("C lists A");
    assert_eq!(home["objects"], json!(["counter"]), "{home}");

    // Admin views forward to the home too.
    let state = b.get_json("/admin/objects/counter/state");
    assert_eq!(state["state"]["count"], "6", "{state}");
    // An object nobody has is not found on any station.
    for s in [a, b, c] {
        s.call("GET", "nope", "", Vec::new())
            .expect_error(404, "object_not_found");
    }
}

#[test]
fn replicas_hold_the_state() {
    let mut cluster = Cluster::reserve(3);
    let mut st = cluster.start_joined(3, Opts::new());
    let ids = ids(&st);
    st[0].deploy_fixture("kv", "kv");
    wait_routed(&[&st[0], &st[1], &st[2]], "kv", &ids[0]);

    for i in 0..30 {
        st[i % 3]
            .call("PUT", "kv", &format!("/key{i}"), format!("v{i}"))
            .expect(200);
    }
    // Deletes travel as tombstones.
    st[1].call("DELETE", "kv", "/key0", Vec::new()).expect(200);
    let seq = wait_replicas_caught_up(&st[0], &ids[0], &[&st[1], &st[2]], "kv");
    assert!(seq >= 31, "31 committed writes, applied seq {seq}");

    // The state is really there: stop the home, and the replica that takes over serves it all.
    st[0].stop();
    st[1].wait_object("kv", "homed on a survivor", |e| {
        e["home"] != ids[0] && e["home"].is_string()
    });
    let (h, _) = wait_one_home(&[&st[1], &st[2]], "kv");
    wait_routed(&[&st[1], &st[2]], "kv", &ids[h + 1]);
    let mut expected: Vec<String> = (1..30).map(|i| format!("key{i}")).collect();
    expected.sort();
    for s in &st[1..] {
        let keys = poll("the new home to serve kv", CLUSTER_TIMEOUT, || {
            match s.call("GET", "kv", "/", Vec::new()) {
                r if r.status == 200 => Some(r.json()),
                _ => None,
            }
        });
        assert_eq!(keys["keys"], json!(expected), "keys through {}", s.url);
        let v = s.call("GET", "kv", "/key7", Vec::new()).expect_json(200);
        assert_eq!(v["value"], "v7", "{v}");
        s.call("GET", "kv", "/key0", Vec::new())
            .expect_error(404, "not_found");
    }
}

#[test]
fn kill_9_of_the_home_under_load_loses_no_acknowledged_write() {
    let opts = Opts::new().fsync().flag("--sync-replicas", 1);
    let mut cluster = Cluster::reserve(3);
    let mut st = cluster.start_joined(3, opts);
    let ids = ids(&st);
    st[0].deploy_fixture("kv", "kv");
    wait_routed(&[&st[0], &st[1], &st[2]], "kv", &ids[0]);
    for w in 0..4 {
        st[1].call("POST", "kv", &format!("/k{w}"), "1").expect(200);
    }
    wait_replicas_caught_up(&st[0], &ids[0], &[&st[1], &st[2]], "kv");

    // Four writers, each incrementing its own key through a station that is not the home.
    let paths: Vec<String> = (0..4).map(|w| format!("/objects/kv/k{w}")).collect();
    let load = WriteLoad::start(&[
        (&st[1], paths[0].clone(), "1"),
        (&st[2], paths[1].clone(), "1"),
        (&st[1], paths[2].clone(), "1"),
        (&st[2], paths[3].clone(), "1"),
    ]);
    load.wait_acks_each(20, Instant::now(), Duration::from_secs(30));

    let killed = Instant::now();
    st[0].kill9();
    let takeover = poll(
        "a replica to take over kv (GET /objects on a survivor)",
        Duration::from_secs(15),
        || {
            st[1]
                .object_entry("kv")
                .filter(|e| e["home"] != ids[0] && e["home"].is_string())
        },
    );
    let taken_over = killed.elapsed();
    let new_home = takeover["home"].as_str().unwrap().to_string();
    assert!(ids[1..].contains(&new_home), "{takeover}");
    // One home (no split brain), and it is the one listed at the takeover.
    let (h, _) = wait_one_home(&[&st[1], &st[2]], "kv");
    let (h, r) = (h + 1, 2 - h);
    assert_eq!(ids[h], new_home, "the home listed at the takeover changed");
    load.wait_acks_each(10, Instant::now(), Duration::from_secs(20));
    let logs = load.finish();

    let first_success = logs
        .iter()
        .filter_map(|l| l.acks.iter().find(|a| a.sent > killed).map(|a| a.at))
        .min()
        .expect("writes succeeded after the kill");
    let failed_after_kill: usize = logs
        .iter()
        .map(|l| l.failures.iter().filter(|(t, _)| *t > killed).count())
        .sum();
    println!(
        "failover: kill -9 to the first successful write {:?}, to the new home ({new_home}, \
         epoch {}) listed {taken_over:?}; {failed_after_kill} writes failed meanwhile",
        first_success - killed,
        takeover["epoch"]
    );

    let survivors: Vec<&Station> = st[1..].iter().collect();
    assert_no_acknowledged_increment_lost(&logs, &survivors, "k", 1);
    // The other survivor replicates the new home.
    wait_replicas_caught_up(&st[h], &new_home, &[&st[r]], "kv");

    // The leader that committed the failover counted it once, with the time kv had no writer.
    let scraped: Vec<String> = survivors
        .iter()
        .map(|s| s.get("/metrics").expect(200).text())
        .collect();
    let total = |series: &str| -> f64 {
        scraped
            .iter()
            .filter_map(|text| metric_value(text, series))
            .sum()
    };
    assert_eq!(total("op_failovers_total"), 1.0, "{scraped:?}");
    assert_eq!(total("op_failover_pause_seconds_count"), 1.0, "{scraped:?}");
    let pause = total("op_failover_pause_seconds_sum");
    assert!(
        pause > 0.0 && pause < taken_over.as_secs_f64() + 1.0,
        "failover pause {pause} s, takeover seen after {taken_over:?}"
    );
}

/// The value of one series (name with its labels, exactly as exposed) in a metrics scrape.
fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Poll `st` until object `id` has `replicas` replicas and all of them are in its in-sync set;
/// returns the entry.
#[track_caller]
fn wait_fully_in_sync(st: &Station, id: &str, replicas: usize) -> Value {
    st.wait_object(id, &format!("with all {replicas} replicas in sync"), |e| {
        let listed = |field: &str| e[field].as_array().map_or(0, Vec::len);
        e["home"].is_string() && listed("replicas") == replicas && listed("in_sync") == replicas
    })
}

/// Each writer's acknowledged values only grow (its key `{key}{w}` has no other writer: an
/// acknowledged increment lost would show as a value answered twice); every station then serves
/// at least the last acknowledged value and no more than the increments sent (`before` of them
/// before the load).
#[track_caller]
fn assert_no_acknowledged_increment_lost(
    logs: &[WriterLog],
    stations: &[&Station],
    key: &str,
    before: usize,
) {
    for (w, log) in logs.iter().enumerate() {
        let values: Vec<i64> = log.acks.iter().map(|a| as_i64(&a.body["value"])).collect();
        for pair in values.windows(2) {
            assert!(
                pair[1] > pair[0],
                "{key}{w}: acknowledged {} after {}: an acknowledged write was lost\n{}",
                pair[1],
                pair[0],
                describe(logs)
            );
        }
        let max_acked = *values.last().expect("acks");
        let attempts = before + log.acks.len() + log.failures.len();
        for s in stations {
            let v = s
                .call("GET", "kv", &format!("/{key}{w}"), Vec::new())
                .expect_json(200);
            let final_value = as_i64(&v["value"]);
            assert!(
                final_value >= max_acked,
                "{key}{w} through {}: {final_value} < {max_acked} acknowledged\n{}",
                s.url,
                describe(logs)
            );
            assert!(
                final_value <= attempts as i64,
                "{key}{w}: {final_value} is more than the {attempts} increments sent"
            );
        }
    }
}

#[test]
fn restarting_every_station_in_turn_under_load_loses_no_acknowledged_write() {
    let opts = Opts::new()
        .fsync()
        .flag("--replicas", 2)
        .flag("--sync-replicas", 1);
    let mut cluster = Cluster::reserve(3);
    let mut st = cluster.start_joined(3, opts);
    let ids = ids(&st);
    st[0].deploy_fixture("kv", "kv");
    wait_routed(&[&st[0], &st[1], &st[2]], "kv", &ids[0]);

    // Four writers, each incrementing its own key through every station in turn.
    let targets = Targets::of(&st);
    let writers: Vec<(Targets, String, &str)> = (0..4)
        .map(|w| (targets.clone(), format!("/objects/kv/r{w}"), "1"))
        .collect();
    let load = WriteLoad::start_rotating(&writers);
    load.wait_acks_each(10, Instant::now(), CLUSTER_TIMEOUT);

    // The home and the directory's first leader go first; one station crashes instead of
    // stopping.
    for i in 0..3 {
        let before = wait_fully_in_sync(&st[(i + 1) % 3], "kv", 2);
        let restarted = Instant::now();
        if i == 1 {
            st[i].kill9();
        }
        // Back on a new port (the tests bind port 0), so it joins through a live station, as
        // a restarted station lists its peers.
        let rejoin = st[i].opts().without_joins().join(&st[(i + 1) % 3]);
        st[i].restart_with(rejoin);
        targets.set(i, &st[i].url);
        st[i].wait_ready();
        for s in &st {
            s.wait_alive(&ids);
        }
        load.wait_acks_each(10, Instant::now(), CLUSTER_TIMEOUT);
        let after = wait_fully_in_sync(&st[i], "kv", 2);
        let failed: usize = load
            .snapshot()
            .iter()
            .map(|l| l.failures.iter().filter(|(t, _)| *t > restarted).count())
            .sum();
        println!(
            "restart of {} ({}): home {} → {}, epoch {} → {}, {failed} writes failed meanwhile, \
             back in sync after {:?}",
            ids[i],
            if i == 1 { "kill -9" } else { "SIGTERM" },
            before["home"],
            after["home"],
            before["epoch"],
            after["epoch"],
            restarted.elapsed()
        );
    }
    let logs = load.finish();
    let all: Vec<&Station> = st.iter().collect();
    assert_no_acknowledged_increment_lost(&logs, &all, "r", 0);

    // One history: every copy equals the home's.
    let (h, _) = wait_one_home(&all, "kv");
    let others: Vec<&Station> = (0..3).filter(|&j| j != h).map(|j| &st[j]).collect();
    wait_replicas_caught_up(&st[h], &ids[h], &others, "kv");
    let copy = |s: &Station| s.get_json("/cluster/internal/objects/kv/snapshot");
    let home_copy = copy(&st[h]);
    for s in &others {
        assert_eq!(
            copy(s),
            home_copy,
            "the copy on {} differs from the home's",
            s.url
        );
    }
}

#[test]
fn migration_under_load_neither_loses_nor_duplicates_a_write() {
    let mut cluster = Cluster::reserve(3);
    let st = cluster.start_joined(3, Opts::new());
    let ids = ids(&st);
    let (a, b, c) = (&st[0], &st[1], &st[2]);
    a.deploy_fixture("counter", "counter");
    wait_routed(&[a, b, c], "counter", &ids[0]);

    let path = "/objects/counter".to_string();
    let load = WriteLoad::start(&[
        (a, path.clone(), ""),
        (b, path.clone(), ""),
        (c, path.clone(), ""),
        (b, path.clone(), ""),
    ]);
    load.wait_acks_each(10, Instant::now(), Duration::from_secs(30));

    let body = json!({"object_id": "counter", "target_station": ids[2]}).to_string();
    let report = b.request("POST", "/cluster/migrate", body).expect_json(200);
    let moved = Instant::now();
    assert_eq!(report["object_id"], "counter", "{report}");
    assert_eq!(report["from"], ids[0], "{report}");
    assert_eq!(report["to"], ids[2], "{report}");
    assert!(report["epoch"].as_u64().is_some_and(|e| e >= 2), "{report}");
    let pause_ms = report["pause_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no pause_ms in {report}"));
    assert!(pause_ms >= 0.0, "{report}");
    assert!(report["bytes"].as_u64().is_some_and(|n| n > 0), "{report}");
    assert!(report["keys"].as_u64().is_some_and(|n| n >= 1), "{report}");
    assert!(
        report["versions"].as_u64().is_some_and(|n| n >= 1),
        "{report}"
    );

    // The old home, which ran the migration, counted it with the pause it reported.
    let scrape = a.get("/metrics").expect(200).text();
    assert_eq!(
        metric_value(&scrape, r#"op_migrations_total{result="ok"}"#),
        Some(1.0),
        "{scrape}"
    );
    let pause_s = metric_value(&scrape, "op_migration_pause_seconds_sum").unwrap_or(-1.0);
    assert!(
        (pause_s * 1000.0 - pause_ms).abs() < 0.01,
        "metric {pause_s} s, report {pause_ms} ms"
    );

    load.wait_acks_each(10, moved, Duration::from_secs(30));
    let logs = load.finish();
    // Every POST answered 200 carries the count after it: exactly 1..=N, once each (a refused
    // POST, checked below, is not applied).
    let mut counts: Vec<i64> = logs
        .iter()
        .flat_map(|l| l.acks.iter().map(|a| count(&a.body)))
        .collect();
    counts.sort_unstable();
    let n = counts.len() as i64;
    let expected: Vec<i64> = (1..=n).collect();
    if counts != expected {
        let mut seen = BTreeSet::new();
        let dup: Vec<i64> = counts
            .iter()
            .copied()
            .filter(|c| !seen.insert(*c))
            .collect();
        panic!(
            "{n} acknowledged POSTs answered counts that are not 1..={n}: duplicated {dup:?}, \
             highest {:?}",
            counts.last()
        );
    }
    println!(
        "migration under load: pause {pause_ms} ms, {} bytes, {n} acknowledged writes, \
         report {report}",
        report["bytes"]
    );

    wait_routed(&[a, b, c], "counter", &ids[2]);
    for s in [a, b, c] {
        let v = s.call("GET", "counter", "", Vec::new()).expect_json(200);
        assert_eq!(count(&v), n, "GET through {}: {v}", s.url);
    }
    let p = c.position("counter");
    assert_eq!(p["role"], "home", "{p}");
    assert_eq!(p["epoch"], report["epoch"], "{p}");
    let home = a.member(&ids[2]).expect("A lists C");
    assert_eq!(home["objects"], json!(["counter"]), "{home}");

    // Calls that arrive during the move wait and then run on the new home, through any
    // station: none is refused.
    let failed: usize = logs.iter().map(|l| l.failures.len()).sum();
    assert_eq!(
        failed,
        0,
        "calls during the move should wait, not fail:\n{}",
        describe(&logs)
    );
}

#[test]
fn the_restarted_old_home_is_fenced() {
    let opts = Opts::new().fsync().flag("--sync-replicas", 1);
    let mut cluster = Cluster::reserve(3);
    let mut st = cluster.start_joined(3, opts);
    let ids = ids(&st);
    st[0].deploy_fixture("counter", "counter");
    wait_routed(&[&st[0], &st[1], &st[2]], "counter", &ids[0]);
    for n in 1..=10 {
        let v = st[0]
            .call("POST", "counter", "", Vec::new())
            .expect_json(200);
        assert_eq!(count(&v), n, "{v}");
    }
    wait_replicas_caught_up(&st[0], &ids[0], &[&st[1], &st[2]], "counter");
    let old_epoch = st[0].position("counter")["epoch"].as_u64().unwrap();

    st[0].kill9();
    st[1].wait_object("counter", "homed on a survivor", |e| {
        e["home"] != ids[0] && e["home"].is_string()
    });
    // One survivor took over, at a higher epoch; the other replicates it.
    let (h, position) = wait_one_home(&[&st[1], &st[2]], "counter");
    let h = h + 1;
    let new_home = ids[h].clone();
    let new_epoch = position["epoch"].as_u64().expect("epoch");
    assert!(new_epoch > old_epoch, "epoch {old_epoch} → {position}");
    wait_routed(&[&st[1], &st[2]], "counter", &new_home);
    for n in 11..=12 {
        let v = st[1]
            .call("POST", "counter", "", Vec::new())
            .expect_json(200);
        assert_eq!(count(&v), n, "{v}");
    }

    // The old home comes back on its data directory and joins a survivor.
    let opts = st[0].opts().without_joins().join(&st[1]);
    st[0].restart_with(opts);
    st[0].wait_ready();
    let p = poll(
        "the old home to hold counter as a replica of the new home",
        CLUSTER_TIMEOUT,
        || {
            let p = st[0].position("counter");
            (p["role"] == "replica" && p["home"] == new_home).then_some(p)
        },
    );
    assert_eq!(p["epoch"], new_epoch, "{p}");
    st[0].wait_home("counter", &new_home);

    // It does not run the object itself: a call through it is forwarded to the new home and the
    // count continues, no reset, no split brain. (A client's own hop count is ignored: only a
    // station's requests steer another station.)
    let r =
        st[0].request_with_headers("POST", "/objects/counter", &[("x-op-hop", "2")], Vec::new());
    assert_eq!(
        r.header("x-op-station"),
        Some(new_home.as_str()),
        "served by the new home"
    );
    let v = r.expect_json(200);
    assert_eq!(count(&v), 13, "POST through the old home: {v}");
    for s in &st {
        let v = s.call("GET", "counter", "", Vec::new()).expect_json(200);
        assert_eq!(count(&v), 13, "GET through {}: {v}", s.url);
        assert_eq!(s.object_entry("counter").unwrap()["home"], new_home);
    }
    let others: Vec<&Station> = (0..3).filter(|i| *i != h).map(|i| &st[i]).collect();
    wait_replicas_caught_up(&st[h], &new_home, &others, "counter");
}

#[test]
fn a_late_joining_station_catches_up() {
    let opts = Opts::new().flag("--replicas", 2);
    let mut cluster = Cluster::reserve(3);
    let st = cluster.start_joined(2, opts.clone());
    let mut ids = ids(&st);
    let (a, b) = (&st[0], &st[1]);
    a.deploy_fixture("counter", "counter");
    wait_routed(&[a, b], "counter", &ids[0]);
    for n in 1..=50 {
        let s = if n % 2 == 0 { a } else { b };
        let v = s.call("POST", "counter", "", Vec::new()).expect_json(200);
        assert_eq!(count(&v), n, "{v}");
    }

    let c = cluster.start(opts.join(a));
    c.wait_ready();
    ids.push(c.station_id());
    for s in [a, b, &c] {
        s.wait_alive(&ids);
    }
    // Three stations, two replicas: every station but the home replicates.
    let e = a.wait_object("counter", "with C among the replicas", |e| {
        e["replicas"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| *r == ids[2]))
    });
    assert_eq!(e["home"], ids[0], "{e}");
    let seq = wait_replicas_caught_up(a, &ids[0], &[b, &c], "counter");
    assert!(seq >= 50, "50 committed writes, applied seq {seq}");
    let v = c.call("GET", "counter", "", Vec::new()).expect_json(200);
    assert_eq!(count(&v), 50, "{v}");
}

#[test]
fn a_call_cycle_across_stations_is_refused_with_508() {
    let mut cluster = Cluster::reserve(2);
    let st = cluster.start_joined(2, Opts::new());
    let ids = ids(&st);
    let (a, b) = (&st[0], &st[1]);
    a.deploy_fixture("ma", "misbehave");
    b.deploy_fixture("mb", "misbehave");
    wait_routed(&[a, b], "ma", &ids[0]);
    wait_routed(&[a, b], "mb", &ids[1]);

    // A plain cross-station call: ma (on A) reads mb (on B).
    let v = a
        .call(
            "POST",
            "ma",
            "/call?target=mb&path=/&method=GET",
            Vec::new(),
        )
        .expect_json(200);
    assert_eq!(v["status"], 200, "{v}");

    // ma → mb → ma: the innermost call is refused, and the whole chain answers quickly.
    let t0 = Instant::now();
    let r = a
        .try_request(
            "POST",
            "/objects/ma/call?target=mb&path=%2Fcall%3Ftarget%3Dma",
            Vec::new(),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("the cycle did not finish within 10 s: {e}"));
    let took = t0.elapsed();
    let v = r.expect_json(200);
    assert_eq!(v["status"], 508, "mb's answer to ma: {v}");
    let inner: Value = serde_json::from_str(v["body"].as_str().expect("body text"))
        .unwrap_or_else(|e| panic!("mb's body is not JSON ({e}): {v}"));
    assert_eq!(inner["call_error"], "loop-detected", "{inner}");
    assert_eq!(inner["error"], "loop_detected", "{inner}");
    println!("cross-station cycle refused in {took:?}");

    // Both objects still serve, through either station.
    b.call("POST", "ma", "/ok", "after").expect(200);
    a.call("POST", "mb", "/ok", "after").expect(200);
}

#[test]
fn min_stations_keeps_a_station_not_ready_until_enough_are_alive() {
    let mut cluster = Cluster::reserve(2);
    let a = cluster.start(Opts::new().flag("--min-stations", 2));
    let r = a.get("/health");
    let v = r.clone().expect_json(503);
    assert_eq!(v["status"], "not_ready", "{v}");
    assert_eq!(v["ready"], false, "{v}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("--min-stations"), "reason: {v}");

    a.deploy_fixture("counter", "counter");
    let v = a
        .call("POST", "counter", "", Vec::new())
        .expect_error(503, "not_ready");
    assert!(
        v["message"].as_str().unwrap().contains("--min-stations"),
        "{v}"
    );

    let b = cluster.start(Opts::new().join(&a));
    a.wait_ready();
    b.wait_ready();
    let v = a.call("POST", "counter", "", Vec::new()).expect_json(200);
    assert_eq!(count(&v), 1, "{v}");
    let v = a.get("/health").expect_json(200);
    assert_eq!(v["live_stations"], 2, "{v}");
}

#[test]
fn host_stations_and_host_migrate() {
    let mut cluster = Cluster::reserve(2);
    let st = cluster.start_joined(2, Opts::new());
    let ids = ids(&st);
    let (a, b) = (&st[0], &st[1]);
    a.deploy_fixture("counter", "counter");
    wait_routed(&[a, b], "counter", &ids[0]);
    let request_ids: Vec<String> = (0..3)
        .map(|_| {
            let r = b.call("POST", "counter", "", Vec::new()).expect(200);
            r.header("x-request-id").expect("x-request-id").to_string()
        })
        .collect();

    let out = cli(&["stations", "--station", &a.url], &[]);
    let table = out.ok();
    for (i, id) in ids.iter().enumerate() {
        let row = table
            .lines()
            .filter(|l| !l.starts_with("directory:"))
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("`host stations` does not list {id}:\n{table}"));
        assert!(row.contains("alive"), "{row}");
        assert!(row.contains(&st[i].url), "{row}");
        assert_eq!(row.contains("counter"), i == 0, "{row}");
    }

    let out = cli(
        &["migrate", "counter", "--to", &ids[1], "--station", &a.url],
        &[],
    );
    let said = out.ok();
    assert!(
        said.contains(&format!("migrated counter from {} to {}", ids[0], ids[1])),
        "{said}"
    );
    println!("host migrate: {}", said.trim());
    wait_routed(&[a, b], "counter", &ids[1]);
    let v = a.call("GET", "counter", "", Vec::new()).expect_json(200);
    assert_eq!(count(&v), 3, "{v}");
    // The log moved with the object, each line once.
    let logs = b.get_json("/admin/objects/counter/logs?limit=1000");
    let lines = logs["logs"].as_array().expect("logs array");
    for id in &request_ids {
        let starts = lines
            .iter()
            .filter(|l| l["request_id"] == *id && l["event"] == "call.start")
            .count();
        assert_eq!(starts, 1, "call {id} in the new home's log: {logs}");
    }
    let deploys = lines.iter().filter(|l| l["event"] == "deploy").count();
    assert_eq!(deploys, 1, "{logs}");

    // Errors name the problem in one line.
    let line = cli(
        &[
            "migrate",
            "counter",
            "--to",
            "no-such-station",
            "--station",
            &a.url,
        ],
        &[],
    )
    .fails_with_one_line();
    assert!(line.contains("no-such-station"), "{line}");
}

#[test]
fn a_stateless_object_runs_on_the_least_loaded_station_holding_its_code() {
    let mut cluster = Cluster::reserve(2);
    let st = cluster.start_joined(2, Opts::new().flag("--deadline-ms", 12000));
    let ids = ids(&st);
    let (a, b) = (&st[0], &st[1]);

    // Deployed stateless on A, its code spreads to B by itself.
    let v = a
        .request(
            "PUT",
            "/admin/objects/sl?stateless=true",
            fixture_bytes("counter"),
        )
        .expect_json(201);
    assert_eq!(v["version"], 1, "{v}");
    for s in [a, b] {
        let e = s.wait_object("sl", "held by both stations", |e| {
            e["stations"].as_array().is_some_and(|h| h.len() == 2)
        });
        assert_eq!(e["stateless"], true, "{e}");
        assert_eq!(e["version"], 1, "{e}");
        assert!(
            e.get("home").is_none(),
            "a stateless object has no home: {e}"
        );
    }
    let holder = b.member(&ids[1]).expect("B lists itself");
    assert_eq!(holder["stateless"], json!(["sl"]), "{holder}");
    let listed = cli(&["objects", "--station", &a.url], &[]);
    let listed = listed.ok();
    let row = listed
        .lines()
        .find(|l| l.starts_with("sl "))
        .unwrap_or_else(|| panic!("`host objects` does not list sl:\n{listed}"));
    assert!(
        row.contains("stateless on") && row.contains(&ids[0]) && row.contains(&ids[1]),
        "{row}"
    );
    let table = cli(&["stations", "--station", &b.url], &[]);
    let table = table.ok();
    assert!(table.contains("sl (stateless)"), "{table}");

    // Reads see no state; a write traps and commits nothing, on either station.
    for s in [a, b] {
        let v = s.call("GET", "sl", "", Vec::new()).expect_json(200);
        assert_eq!(count(&v), 0, "{v}");
        let e = s
            .call("POST", "sl", "", Vec::new())
            .expect_error(500, "trapped");
        assert!(
            e["message"].as_str().unwrap_or("").contains("stateless"),
            "{e}"
        );
    }
    // It keeps its mode, and it has no home to migrate.
    a.put_component("sl", fixture_bytes("hello"))
        .expect_error(409, "mode_conflict");
    a.request(
        "POST",
        "/cluster/migrate",
        json!({"object_id": "sl", "target_station": ids[1]}).to_string(),
    )
    .expect_error(409, "stateless");

    // Load A with calls in flight (looping calls to another object, held until the deadline):
    // calls to the stateless object arriving at A then run on B.
    a.deploy_fixture("busy", "misbehave");
    let loaders: Vec<_> = (0..8)
        .map(|_| {
            let url = a.url.clone();
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                let _ = try_request_with(
                    &http,
                    &url,
                    "POST",
                    "/objects/busy/loop",
                    Vec::new(),
                    Some(Duration::from_secs(25)),
                );
            })
        })
        .collect();
    poll("B to see A loaded", CLUSTER_TIMEOUT, || {
        b.member(&ids[0])
            .filter(|m| as_i64(&m["load"]["in_flight"]) >= 6)
    });
    poll("A to see itself loaded", CLUSTER_TIMEOUT, || {
        a.member(&ids[0])
            .filter(|m| as_i64(&m["load"]["in_flight"]) >= 6)
    });
    for _ in 0..3 {
        let r = a.call("GET", "sl", "", Vec::new()).expect(200);
        assert_eq!(
            r.header("x-op-station"),
            Some(ids[1].as_str()),
            "a call on the loaded station A should run on B: {r:?}"
        );
    }
    for t in loaders {
        t.join().expect("loader thread");
    }

    // Undeployed on A: B stops serving it too, and nobody lists it.
    a.request("DELETE", "/admin/objects/sl", Vec::new())
        .expect(200);
    poll("B to undeploy sl", CLUSTER_TIMEOUT, || {
        let r = b.call("GET", "sl", "", Vec::new());
        (r.status == 404).then_some(r)
    })
    .expect_error(404, "object_not_found");
    // Stateless objects are listed from gossip: the listing follows within a gossip round.
    for s in [a, b] {
        poll(
            &format!("{} to stop listing sl after the undeploy", s.url),
            CLUSTER_TIMEOUT,
            || s.object_entry("sl").is_none().then_some(()),
        );
    }
}

/// POSTs JSON to a station's internal route (no cluster secret is configured in these tests).
fn post_internal(st: &Station, path: &str, body: &Value) -> Value {
    st.request_with_headers(
        "POST",
        path,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .expect_json(200)
}

#[test]
fn a_replica_with_another_history_under_the_same_seqs_is_replaced_by_the_homes() {
    let mut cluster = Cluster::reserve(2);
    let st = cluster.start_joined(2, Opts::new().flag("--replicas", 1));
    let ids = ids(&st);
    st[0].deploy_fixture("kv", "kv");
    wait_routed(&[&st[0], &st[1]], "kv", &ids[0]);
    for i in 0..5 {
        st[0]
            .call("PUT", "kv", &format!("/key{i}"), format!("v{i}"))
            .expect(200);
    }
    let seq = wait_replicas_caught_up(&st[0], &ids[0], &[&st[1]], "kv");
    let epoch = st[0].object_entry("kv").expect("kv listed")["epoch"].clone();
    let copy = |s: &Station| s.get_json("/cluster/internal/objects/kv/snapshot");
    let home_copy = copy(&st[0]);
    assert_eq!(
        copy(&st[1]),
        home_copy,
        "the replica holds the home's history"
    );
    assert!(
        home_copy["chain"].is_string(),
        "a snapshot carries the chain hash: {home_copy}"
    );

    // A batch that claims to follow another history at the next seq is refused, not applied.
    let forged = json!({
        "home": ids[0],
        "items": [{
            "object": "kv",
            "epoch": epoch,
            "batches": [{
                "seq": seq + 1,
                "records": [{"key": "key0", "value": "forged", "hlc": 1}],
                "prev": "1".repeat(64),
            }],
        }],
    });
    let answer = post_internal(&st[1], "/cluster/internal/replicate", &forged);
    assert_eq!(answer[0]["outcome"]["status"], "needs_snapshot", "{answer}");
    assert_eq!(
        copy(&st[1]),
        home_copy,
        "nothing of the forged batch applied"
    );

    // Give the replica another history under the same seqs (what a home that lost unsynced
    // batches to a power loss and committed others in their place would have left it with).
    let mut other = home_copy.clone();
    let keys = other["keys"].as_array_mut().expect("keys");
    let key3 = keys.iter_mut().find(|k| k["key"] == "key3").expect("key3");
    let versions = key3["versions"].as_array_mut().expect("versions");
    versions.last_mut().expect("a version")["value"] = json!("v3-of-another-history");
    other["chain"] = json!("0".repeat(64));
    let path = format!(
        "/cluster/internal/objects/kv/snapshot?home={}&epoch={epoch}",
        ids[0]
    );
    let installed = post_internal(&st[1], &path, &other);
    assert_eq!(installed["status"], "applied", "{installed}");
    assert_eq!(installed["applied_seq"], seq, "{installed}");
    assert_ne!(
        copy(&st[1]),
        home_copy,
        "the replica now holds another history"
    );

    // The home's next batch does not continue the replica's history: the replica asks for a
    // snapshot instead of applying it on top, and ends with the home's history exactly.
    st[0].call("PUT", "kv", "/key5", "v5").expect(200);
    let home_copy = copy(&st[0]);
    poll(
        "the replica's copy to equal the home's",
        CLUSTER_TIMEOUT,
        || (copy(&st[1]) == home_copy).then_some(()),
    );
}
