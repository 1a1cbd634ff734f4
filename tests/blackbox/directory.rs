//! Ownership through the cluster directory (issue 9): a deploy is routed by every station as soon
//! as it is acknowledged, concurrent claims of one id end with one home, and the directory's Raft
//! group has voters and a leader that survive a restart.
//!
//! Every wait is a bounded poll; nothing here sleeps to synchronise.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::harness::*;

fn ids(stations: &[Station]) -> Vec<String> {
    stations.iter().map(Station::station_id).collect()
}

fn count(v: &Value) -> i64 {
    as_i64(&v["count"])
}

/// The home every station lists for `id` (asserting they agree).
#[track_caller]
fn agreed_home(stations: &[&Station], id: &str) -> String {
    let homes: BTreeSet<String> = stations
        .iter()
        .map(|s| {
            s.object_entry(id)
                .and_then(|e| e["home"].as_str().map(str::to_string))
                .unwrap_or_else(|| panic!("{} does not list {id}", s.url))
        })
        .collect();
    assert_eq!(
        homes.len(),
        1,
        "stations disagree on the home of {id}: {homes:?}"
    );
    homes.into_iter().next().unwrap()
}

#[test]
fn a_deploy_is_routed_by_every_station_as_soon_as_it_is_acknowledged() {
    let mut cluster = Cluster::reserve(3);
    let st = cluster.start_joined(3, Opts::new());
    st[0].deploy_fixture("counter", "counter");
    // No wait: the deploy's answer means the directory committed it, and a station that has not
    // applied it yet asks the leader before it would answer 404.
    for n in 1..=100 {
        let v = st[1 + n as usize % 2]
            .call("POST", "counter", "", Vec::new())
            .expect_json(200);
        assert_eq!(count(&v), n, "POST {n}: {v}");
    }
    let ids = ids(&st);
    assert_eq!(agreed_home(&[&st[0], &st[1], &st[2]], "counter"), ids[0]);
    // An id no station has is still a 404 everywhere, after asking the leader.
    st[2]
        .call("GET", "nothing-here", "", Vec::new())
        .expect_error(404, "object_not_found");
}

#[test]
fn three_stations_watching_one_folder_end_with_one_home_and_one_history() {
    let folder = tempfile::tempdir().expect("temp dir");
    std::fs::copy(fixture("counter"), folder.path().join("counter.wasm")).expect("copy");
    let opts = Opts::new()
        .arg("--watch")
        .arg(folder.path().to_str().unwrap());
    let mut cluster = Cluster::reserve(3);
    let st = cluster.start_joined(3, opts);
    let all = [&st[0], &st[1], &st[2]];
    let home = poll(
        "counter listed with one home on every station",
        CLUSTER_TIMEOUT,
        || {
            let entries: Vec<Option<Value>> =
                all.iter().map(|s| s.object_entry("counter")).collect();
            let homes: BTreeSet<String> = entries
                .iter()
                .flatten()
                .filter_map(|e| e["home"].as_str().map(str::to_string))
                .collect();
            (entries.iter().all(Option::is_some) && homes.len() == 1)
                .then(|| homes.into_iter().next().unwrap())
        },
    );
    // Every write succeeds, through any station, and they form one history.
    for n in 1..=30 {
        let v = all[n as usize % 3]
            .call("POST", "counter", "", Vec::new())
            .expect_json(200);
        assert_eq!(count(&v), n, "POST {n}: {v}");
    }
    assert_eq!(agreed_home(&all, "counter"), home);
    let versions = all
        .iter()
        .find(|s| s.station_id() == home)
        .unwrap()
        .get_json("/admin/objects/counter/versions");
    assert_eq!(
        versions["versions"].as_array().map(Vec::len),
        Some(1),
        "identical bytes from three watchers make one version: {versions}"
    );
}

#[test]
fn the_same_id_deployed_to_two_stations_at_once_ends_with_one_home() {
    let mut cluster = Cluster::reserve(3);
    let st = cluster.start_joined(3, Opts::new());
    let (kv, counter) = (fixture_bytes("kv"), fixture_bytes("counter"));
    let answers: Vec<u16> = std::thread::scope(|s| {
        let a = s.spawn(|| st[0].put_component("race", kv.clone()).status);
        let b = s.spawn(|| st[1].put_component("race", counter.clone()).status);
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    for status in &answers {
        assert!(
            *status == 200 || *status == 201,
            "both deploys are acknowledged (one as the next version at the winner): {answers:?}"
        );
    }
    let all = [&st[0], &st[1], &st[2]];
    let home = agreed_home(&all, "race");
    // A station that deployed neither lists the directory's entry a moment later.
    let entry = st[2].wait_object("race", "at version 2", |e| e["version"] == 2);
    assert_eq!(
        entry["home"], home,
        "the second deploy is the home's second version: {entry}"
    );
    // Writes succeed through every station, whichever code won the last version.
    for (n, s) in all.iter().enumerate() {
        let r = s.call("POST", "race", "/k", "1");
        assert_eq!(r.status, 200, "POST {n} through {}: {}", s.url, r.text());
    }
    assert_eq!(agreed_home(&all, "race"), home);
}

#[test]
fn the_first_three_stations_vote_and_a_fourth_is_a_learner() {
    let mut cluster = Cluster::reserve(4);
    let st = cluster.start_joined(4, Opts::new());
    let ids = ids(&st);
    let group = poll("three voters and one learner", CLUSTER_TIMEOUT, || {
        let d = st[3].cluster_stations()["directory"].clone();
        let voters = d["voters"].as_array().map(Vec::len).unwrap_or(0);
        let learners = d["learners"].as_array().map(Vec::len).unwrap_or(0);
        (voters == 3 && learners == 1 && d["leader"].is_string()).then_some(d)
    });
    assert_eq!(group["learners"][0], ids[3], "{group}");
    let out = cli(&["stations", "--station", &st[3].url], &[]);
    let text = out.ok();
    assert!(text.contains("directory: leader "), "{text}");
    assert!(text.contains("learner"), "{text}");
    assert!(text.contains("voter") || text.contains("leader"), "{text}");
}

#[test]
fn a_single_station_keeps_its_objects_homed_across_a_restart() {
    let mut st = Station::start(Opts::new().fsync());
    st.deploy_fixture("counter", "counter");
    for n in 1..=3 {
        assert_eq!(
            count(&st.call("POST", "counter", "", Vec::new()).expect_json(200)),
            n
        );
    }
    st.restart();
    // Served at once after the restart: the station announces itself only once it leads its
    // one-voter directory and holds its write lease.
    let v = st.call("POST", "counter", "", Vec::new()).expect_json(200);
    assert_eq!(count(&v), 4, "{v}");
    let d = st.cluster_stations()["directory"].clone();
    assert_eq!(d["voters"].as_array().map(Vec::len), Some(1), "{d}");
    assert!(
        st.data_dir().join("cluster").join("raft.redb").is_file(),
        "the directory lives under data/cluster/"
    );
}

#[test]
fn kill_9_of_the_leader_during_a_deploy_leaves_one_home_once_a_survivor_answers() {
    let mut cluster = Cluster::reserve(3);
    let mut st = cluster.start_joined(3, Opts::new());
    let ids = ids(&st);
    let leader = poll("a directory leader", CLUSTER_TIMEOUT, || {
        st[1].cluster_stations()["directory"]["leader"]
            .as_str()
            .map(str::to_string)
    });
    let l = ids
        .iter()
        .position(|i| *i == leader)
        .expect("the leader is a station");
    let (d, other) = ((l + 1) % 3, (l + 2) % 3);
    // Deploy through a follower while the leader is killed: whatever the interleaving, the deploy
    // either was acknowledged or failed with a retryable error, and a retry settles it.
    let bytes = fixture_bytes("counter");
    let url = st[d].url.clone();
    let body = bytes.clone();
    let deploy = std::thread::spawn(move || {
        let http = reqwest::blocking::Client::new();
        try_request_with(
            &http,
            &url,
            "PUT",
            "/admin/objects/lk",
            body,
            Some(CLUSTER_TIMEOUT),
        )
    });
    st[l].kill9();
    let first = deploy.join().expect("deploy thread");
    if let Ok(r) = &first {
        assert!(
            [200, 201, 502, 503].contains(&r.status),
            "a deploy during a leader crash answers success or a retryable error: {} {}",
            r.status,
            r.text()
        );
    }
    let settled = poll(
        "the deploy to be acknowledged by a survivor",
        CLUSTER_TIMEOUT,
        || {
            let r = st[d].put_component("lk", bytes.clone());
            [200, 201].contains(&r.status).then_some(r)
        },
    );
    let outcome = settled.json();
    assert_eq!(outcome["sha256"], sha256_hex(&bytes), "{outcome}");
    // Both survivors route it to one home, and writes through both form one history.
    for n in 1..=10 {
        let s = if n % 2 == 0 { &st[d] } else { &st[other] };
        let v = s.call("POST", "lk", "", Vec::new()).expect_json(200);
        assert_eq!(count(&v), n, "POST {n} through {}: {v}", s.url);
    }
    assert_eq!(
        agreed_home(&[&st[d], &st[other]], "lk"),
        ids[d],
        "the station the deploy was made on homes it"
    );
}
