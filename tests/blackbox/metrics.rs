//! `GET /metrics`: the Prometheus (OpenMetrics) exposition of a station.

use crate::harness::*;

/// The value of the exposition line that starts with `series ` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_count_calls_traps_state_and_the_directory() {
    let st = Station::start(Opts::new().fsync());
    st.deploy_fixture("counter", "counter");
    st.deploy_fixture("misbehave", "misbehave");
    for _ in 0..3 {
        st.call("POST", "counter", "", Vec::new()).expect(200);
    }
    st.call("GET", "counter", "/nope", Vec::new());
    st.call("POST", "misbehave", "/trap", "v").expect(500);

    let r = st.get("/metrics").expect(200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        r.header("content-type")
    );
    let text = r.text();
    let expect = |series: &str, want: f64| {
        assert_eq!(value(&text, series), Some(want), "{series} in:\n{text}");
    };
    expect(
        r#"op_calls_total{object="counter",method="POST",status="2xx"}"#,
        3.0,
    );
    expect(
        r#"op_calls_total{object="misbehave",method="POST",status="error"}"#,
        1.0,
    );
    expect(r#"op_object_traps_total{object="misbehave"}"#, 1.0);
    expect(r#"op_call_duration_seconds_count{object="counter"}"#, 4.0);
    expect(r#"op_object_state_keys{object="counter"}"#, 1.0);
    expect(r#"op_object_live_instance{object="counter"}"#, 1.0);
    expect("op_objects", 2.0);
    expect(r#"op_cluster_stations{state="alive"}"#, 1.0);
    expect("op_raft_is_leader", 1.0);
    expect("op_raft_voters", 1.0);
    // Every durable write went through the write-ahead log: its syncs are timed, its rounds
    // sized; both deploys compiled a component; the scrape's own connection is open.
    for series in [
        "op_store_syncs_total",
        "op_store_log_sync_seconds_count",
        "op_store_round_batches_count",
        "op_store_log_written_bytes_total",
        "op_compile_seconds_count",
        "op_http_connections_open",
    ] {
        assert!(
            value(&text, series).is_some_and(|n| n >= 1.0),
            "{series} in:\n{text}"
        );
    }
    assert!(
        text.contains(r#"op_store_log_sync_seconds_bucket{le="+Inf"}"#),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    // Labels name objects, methods and status classes only: a path never becomes a series.
    assert!(!text.contains("nope"), "{text}");
}

#[test]
fn metrics_need_the_admin_token_when_one_is_set() {
    let st = Station::start(Opts::new().flag("--admin-token", "s3cret-token-for-tests"));
    st.get("/metrics").expect_error(401, "unauthorized");
    st.request_with_headers(
        "GET",
        "/metrics",
        &[("authorization", "Bearer s3cret-token-for-tests")],
        Vec::new(),
    )
    .expect(200);
}

#[test]
fn metrics_show_each_replica_catching_up() {
    let mut cluster = Cluster::reserve(2);
    let (st, _, id_b) = two_stations_with_counter(&mut cluster);
    let a = &st[0];
    for _ in 0..5 {
        a.call("POST", "counter", "", Vec::new()).expect(200);
    }
    let seqs = format!(r#"op_replication_lag_seqs{{object="counter",replica="{id_b}"}}"#);
    let seconds = format!(r#"op_replication_lag_seconds{{object="counter",replica="{id_b}"}}"#);
    let text = poll(
        "the replica to hold every batch",
        std::time::Duration::from_secs(30),
        || {
            let text = a.get("/metrics").expect(200).text();
            (value(&text, &seqs) == Some(0.0)).then_some(text)
        },
    );
    assert_eq!(value(&text, &seconds), Some(0.0), "{text}");
}
