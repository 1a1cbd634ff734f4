//! Parallel reads: the GET calls of an object deployed with `--parallel-reads` (quota `readers=N`)
//! run side by side on up to N instances; a state write in such a GET traps; every other method
//! keeps the turn queue.

use serde_json::{Value, json};

use crate::harness::*;

/// Deploys the misbehave fixture as `id`, with quota overrides `quota` (may be empty).
fn deploy_misbehave(st: &Station, id: &str, quota: &str) {
    let path = format!("/admin/objects/{id}?quota={}", pct(quota));
    st.request("PUT", &path, fixture_bytes("misbehave"))
        .expect(201);
}

/// `(start_ms, end_ms)` of `n` concurrent `GET /busy?ms=MS` calls to `id`.
fn busy_intervals(st: &Station, id: &str, n: usize, ms: u64) -> Vec<(i64, i64)> {
    let mut intervals: Vec<(i64, i64)> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..n)
            .map(|_| {
                scope.spawn(|| {
                    let v = st
                        .call("GET", id, &format!("/busy?ms={ms}"), Vec::new())
                        .expect_json(200);
                    (as_i64(&v["start_ms"]), as_i64(&v["end_ms"]))
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    intervals.sort_unstable();
    intervals
}

#[test]
fn gets_run_side_by_side_only_for_an_object_deployed_with_readers() {
    let st = Station::start(Opts::new());
    deploy_misbehave(&st, "parallel", "readers=4");
    deploy_misbehave(&st, "serial", "");

    // The turn queue: one call after the other, never two at once.
    let serial = busy_intervals(&st, "serial", 4, 150);
    for pair in serial.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "calls overlapped in the turn queue: {serial:?}"
        );
    }
    // Readers: the four calls ran at the same time, at least two of them overlapping.
    let parallel = busy_intervals(&st, "parallel", 4, 300);
    let overlapping = parallel.windows(2).any(|pair| pair[1].0 < pair[0].1);
    assert!(overlapping, "no two reads overlapped: {parallel:?}");
    let meta = st.get_json("/objects/parallel?metadata=true");
    assert_eq!(meta["quota"]["readers"], 4, "{meta}");
}

#[test]
fn a_parallel_read_sees_committed_state_and_cannot_write() {
    let st = Station::start(Opts::new());
    deploy_misbehave(&st, "parallel", "readers=2");
    st.call("POST", "parallel", "/ok", "v1").expect(200);
    let read = st
        .call("GET", "parallel", "/busy?ms=1", Vec::new())
        .expect_json(200);
    assert_eq!(read["x"], "v1", "a read sees the committed write: {read}");

    let trapped = st
        .call("GET", "parallel", "/write", Vec::new())
        .expect_error(500, "trapped");
    let message = trapped["message"].as_str().unwrap_or_default();
    assert!(message.contains("parallel read"), "{trapped}");
    assert_eq!(
        st.call("GET", "parallel", "", Vec::new()).expect_json(200)["x"],
        "v1",
        "the trapped GET wrote nothing"
    );
    // With an idempotency key a GET takes the turn (its answer is kept), and still cannot write.
    st.request_with_headers(
        "GET",
        "/objects/parallel/write",
        &[("idempotency-key", "k")],
        Vec::new(),
    )
    .expect_error(500, "trapped");
    // Writes keep working through the turn queue.
    st.call("POST", "parallel", "/ok", "v2").expect(200);
    assert_eq!(
        st.call("GET", "parallel", "", Vec::new()).expect_json(200)["x"],
        "v2"
    );

    // The same GET writes when the object is not deployed with readers.
    deploy_misbehave(&st, "serial", "");
    let wrote: Value = st
        .call("GET", "serial", "/write", Vec::new())
        .expect_json(200);
    assert_eq!(wrote["x"], "written by a GET", "{wrote}");
}

/// `host deploy <misbehave> --id par ARGS... --station <st>`, asserting it succeeds; then the
/// object's quota as `?metadata=true` shows it.
fn deploy_par_with_cli(st: &Station, args: &[&str]) -> Value {
    let file = fixture("misbehave");
    let mut all = vec!["deploy", file.to_str().unwrap(), "--id", "par"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--station", &st.url]);
    cli(&all, &[]).ok();
    st.get_json("/objects/par?metadata=true")["quota"].clone()
}

#[test]
fn host_deploy_parallel_reads_sets_the_readers_and_a_redeploy_without_it_clears_them() {
    let st = Station::start(Opts::new());
    let quota = deploy_par_with_cli(&st, &["--parallel-reads"]);
    assert_eq!(quota["readers"], 4, "the default is 4: {quota}");
    let quota = deploy_par_with_cli(&st, &["--quota", "rate=1000", "--parallel-reads", "2"]);
    assert_eq!(
        (quota["readers"].clone(), quota["rate"].clone()),
        (json!(2), json!(1000)),
        "{quota}"
    );
    let quota = deploy_par_with_cli(&st, &["--quota", "default"]);
    assert_eq!(quota["readers"], 0, "{quota}");
}
