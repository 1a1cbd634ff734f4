//! The `host` CLI against a running station.

use crate::harness::*;

#[test]
fn cli_deploys_calls_and_inspects() {
    let st = Station::new();
    let url = st.url.as_str();
    let counter = fixture("counter");
    let counter_path = counter.to_str().unwrap();
    let sha = sha256_hex(&fixture_bytes("counter"));

    let out = cli(&["deploy", counter_path, "--station", url], &[]);
    let printed = out.ok();
    assert!(
        printed.contains("deployed counter version 1") && printed.contains(&sha),
        "deploy printed {printed:?}"
    );
    let out = cli(&["deploy", counter_path, "--station", url], &[]);
    assert!(
        out.ok().contains("counter unchanged at version 1"),
        "second deploy printed {:?}",
        out.stdout
    );

    let out = cli(&["call", "counter", "POST", "--station", url], &[]);
    assert_eq!(out.ok().trim(), r#"{"count":1}"#);
    // The station URL from the environment.
    let out = cli(&["call", "counter"], &[("OP_STATION", url)]);
    assert_eq!(out.ok().trim(), r#"{"count":1}"#);
    assert_eq!(
        st.call("GET", "counter", "", Vec::new()).expect_json(200)["count"],
        1
    );

    let out = cli(&["objects", "--station", url], &[]);
    assert!(
        out.ok().contains("counter"),
        "objects printed {:?}",
        out.stdout
    );

    // A second version under the same id, with --id and --note.
    let hello = fixture("hello");
    let out = cli(
        &[
            "deploy",
            hello.to_str().unwrap(),
            "--id",
            "counter",
            "--note",
            "oops",
            "--station",
            url,
        ],
        &[],
    );
    assert!(
        out.ok().contains("deployed counter version 2"),
        "{:?}",
        out.stdout
    );
    let out = cli(&["versions", "counter", "--station", url], &[]);
    let printed = out.ok();
    assert!(printed.contains(&sha[..12]), "versions printed {printed:?}");
    assert!(
        printed.contains("oops"),
        "versions printed no note: {printed:?}"
    );

    let out = cli(&["rollback", "counter", "1", "--station", url], &[]);
    out.ok();
    let v = st.get_json("/objects/counter?versions=true");
    assert_eq!(v["current"], 3, "{v}");
    assert_eq!(v["versions"][2]["sha256"], sha.as_str(), "{v}");
    let out = cli(&["call", "counter", "POST", "--station", url], &[]);
    assert_eq!(
        out.ok().trim(),
        r#"{"count":2}"#,
        "state kept across versions"
    );

    let out = cli(&["logs", "counter", "--station", url], &[]);
    assert!(out.ok().contains("POST"), "logs printed {:?}", out.stdout);
    let out = cli(
        &[
            "logs",
            "counter",
            "--limit",
            "1",
            "--level",
            "info",
            "--station",
            url,
        ],
        &[],
    );
    out.ok();

    // Failures: non-zero exit and one line on stderr.
    let out = cli(&["call", "nope", "--station", url], &[]);
    out.fails_with_one_line();
    let out = cli(&["call", "counter", "PUT", "--station", url], &[]);
    assert!(!out.status.success(), "a 405 must exit non-zero: {out:?}");
    let out = cli(&["deploy", "/nonexistent.wasm", "--station", url], &[]);
    let line = out.fails_with_one_line();
    assert!(
        line.contains("/nonexistent.wasm"),
        "the error names the file: {line:?}"
    );
    let out = cli(&["rollback", "counter", "99", "--station", url], &[]);
    out.fails_with_one_line();
}

#[test]
fn cli_reports_an_unreachable_station() {
    // A port nobody listens on: bind, read the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let out = cli(&["objects", "--station", &url], &[]);
    out.fails_with_one_line();
    let out = cli(&["call", "counter", "--station", &url], &[]);
    out.fails_with_one_line();
}

#[test]
fn host_top_shows_the_stations_and_the_busiest_objects_with_their_call_rate() {
    let st = Station::new();
    st.deploy_fixture("busy", "counter");
    st.deploy_fixture("quiet", "counter");
    for _ in 0..5 {
        st.call("POST", "busy", "/", "").expect(200);
    }
    st.call("POST", "quiet", "/", "").expect(200);
    // Calls keep arriving while `host top` takes its two samples.
    let url = st.url.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = {
        let stop = stop.clone();
        let st_url = url.clone();
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::new();
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 5_000 {
                let _ = http.post(format!("{st_url}/objects/busy")).send();
                sent += 1;
            }
        })
    };
    let out = cli(
        &["top", "--once", "--interval-ms", "500", "--station", &url],
        &[],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    loader.join().unwrap();
    let screen = out.ok();
    let lines: Vec<&str> = screen.lines().collect();
    let id = st.station_id();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&id) && l.contains("leader")),
        "the station with its role:\n{screen}"
    );
    let row = |object: &str| {
        lines
            .iter()
            .position(|l| l.split_whitespace().next() == Some(object))
            .unwrap_or_else(|| panic!("no row for {object}:\n{screen}"))
    };
    assert!(row("busy") < row("quiet"), "busiest first:\n{screen}");
    let busy: Vec<&str> = lines[row("busy")].split_whitespace().collect();
    let rate: f64 = busy[3]
        .parse()
        .unwrap_or_else(|_| panic!("calls/s in {busy:?}"));
    assert!(rate > 0.0, "busy is being called: {busy:?}");
}
