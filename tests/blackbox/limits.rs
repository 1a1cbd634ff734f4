//! Bounds on guest work: deadline, memory cap, request body size.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn an_endless_loop_hits_the_deadline_and_the_station_keeps_serving() {
    let st = Station::start(Opts::new().flag("--deadline-ms", 1000));
    st.deploy_fixture("mb", "misbehave");
    st.deploy_fixture("hello", "hello");
    st.call("POST", "mb", "/ok", "before").expect(200);
    st.call("GET", "hello", "", Vec::new()).expect(200); // warm

    let (client, base) = (st.client(), st.url.clone());
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    let looping = thread::spawn(move || {
        let r = request_with(
            &client,
            &base,
            "POST",
            "/objects/mb/loop",
            b"looping".to_vec(),
        );
        let _ = tx.send(());
        (r, t0.elapsed())
    });

    // Wait until the loop call has started (its call.start is in the log)...
    wait_calls_started(&st, "mb", "/loop", 1);
    assert!(
        rx.try_recv().is_err(),
        "the loop call ended before its start could be observed (was the log view blocked by the running call?)"
    );
    // ...then, while it runs, other objects answer promptly.
    let t = Instant::now();
    let v = st.call("GET", "hello", "", Vec::new()).expect_json(200);
    assert_eq!(v["message"], "Hello, world!", "{v}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "hello took {:?} during the loop",
        t.elapsed()
    );
    assert!(
        rx.try_recv().is_err(),
        "hello only answered after the loop call ended"
    );

    let (r, took) = looping.join().expect("loop thread");
    r.expect_error(504, "deadline_exceeded");
    assert!(
        took >= Duration::from_millis(900),
        "deadline hit after only {took:?}"
    );
    assert!(
        took < Duration::from_secs(30),
        "deadline of 1 s took {took:?}"
    );

    // Afterwards: other objects, and the same object, serve; the loop committed nothing.
    st.call("GET", "hello", "", Vec::new()).expect(200);
    let v = st.call("GET", "mb", "", Vec::new()).expect_json(200);
    assert_eq!(
        v["x"], "before",
        "a timed-out call committed something: {v}"
    );
    st.call("POST", "mb", "/ok", "after").expect(200);
    let v = st.call("GET", "mb", "", Vec::new()).expect_json(200);
    assert_eq!(v["x"], "after", "{v}");

    let logs = st.get_json("/objects/mb?logs=true");
    assert!(
        logs["logs"]
            .as_array()
            .expect("logs")
            .iter()
            .any(|e| e["event"] == "call.timeout"),
        "no call.timeout event: {logs}"
    );
}

#[test]
fn a_memory_hog_traps_and_the_station_keeps_serving() {
    let st = Station::start(Opts::new().flag("--memory-mb", 32));
    st.deploy_fixture("mb", "misbehave");
    st.deploy_fixture("hello", "hello");
    st.call("POST", "mb", "/ok", "before").expect(200);

    let t0 = Instant::now();
    st.call("POST", "mb", "/hog", Vec::new())
        .expect_error(500, "trapped");
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "hog took {:?}",
        t0.elapsed()
    );

    st.call("GET", "hello", "", Vec::new()).expect(200);
    let v = st.call("GET", "mb", "", Vec::new()).expect_json(200);
    assert_eq!(v["x"], "before", "{v}");
    st.call("POST", "mb", "/ok", "after").expect(200);
    let v = st.call("GET", "mb", "", Vec::new()).expect_json(200);
    assert_eq!(v["x"], "after", "{v}");
    // And it can hog (and be stopped) again.
    st.call("POST", "mb", "/hog", Vec::new())
        .expect_error(500, "trapped");
    st.call("POST", "mb", "/ok", "again").expect(200);
}

#[test]
fn an_oversized_body_is_refused() {
    // Deploy without the limit (a component is larger than 1 KiB), then restart with it.
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut st = Station::start(Opts::new().data(&data));
    st.deploy_fixture("kv", "kv");
    st.stop();
    drop(st);
    let st = Station::start(Opts::new().data(&data).flag("--max-body-bytes", 1024));

    st.call("PUT", "kv", "/big", vec![b'x'; 2048])
        .expect_error(413, "body_too_large");
    st.call("GET", "kv", "/big", Vec::new()).expect(404);

    // Under the limit it goes through.
    let r = st.call("PUT", "kv", "/small", vec![b'y'; 512]);
    assert!(
        (200..300).contains(&r.status),
        "512 bytes: {} {}",
        r.status,
        r.text()
    );
    let v = st.call("GET", "kv", "/small", Vec::new()).expect_json(200);
    assert_eq!(v["value"].as_str().map(str::len), Some(512), "{v}");
}

#[test]
fn a_declared_length_over_the_limit_is_refused_before_the_body_arrives() {
    use std::io::{Read, Write};
    let st = Station::start(Opts::new().flag("--max-body-bytes", 1024));
    st.deploy_fixture("kv", "kv");
    // The header promises a megabyte and no body follows: the answer must not wait for it.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", st.port())).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "PUT /objects/kv/big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1048576\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") || !answer.ends_with(b"}") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "no answer while the body is missing ({e}); got {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"error\":\"body_too_large\""), "{text}");
    st.call("GET", "kv", "/big", Vec::new()).expect(404);
}
