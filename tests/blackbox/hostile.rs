//! Hostile clients: hang-ups mid-call, slow and idle connections, oversized headers, floods.
//! Each case asserts the exact answer and that the station goes on serving everyone else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::*;

#[test]
fn a_client_that_hangs_up_mid_call_leaves_the_object_serving() {
    let st = Station::start(Opts::new());
    st.deploy_fixture("mb", "misbehave");
    st.call("POST", "mb", "/ok", "before").expect(200);

    let mut s = TcpStream::connect(("127.0.0.1", st.port())).expect("connect");
    write!(
        s,
        "POST /objects/mb/slow?ms=1500 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    wait_calls_started(&st, "mb", "/slow", 1);
    // Hang up while the handler runs.
    drop(s);

    // The next call is served normally: the abandoned call either finished and committed, or
    // was dropped with its instance replaced and committed nothing.
    let v = st.call("POST", "mb", "/ok", "after").expect_json(200);
    assert_eq!(v["x"], "after", "{v}");
    let state = st.get_json("/objects/mb?state=true");
    let slow_before = match &state["state"]["slow"] {
        serde_json::Value::Null => 0,
        serde_json::Value::String(n) if n == "1" => 1,
        other => panic!("the abandoned call left slow = {other}: {state}"),
    };
    // And again: the instance is healthy, not merely replaced once.
    let v = st
        .call("POST", "mb", "/slow?ms=1", Vec::new())
        .expect_json(200);
    assert_eq!(v["count"], slow_before + 1, "{v}");
    let logs = st.get_json("/objects/mb?logs=true");
    let errors: Vec<_> = logs["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|e| e["level"] == "error")
        .collect();
    assert!(errors.is_empty(), "errors after a hang-up: {errors:?}");
}

/// Connects to the station with a read timeout long enough for any answer here.
fn connect(st: &Station) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", st.port())).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until the station closes the connection; panics if it does not within the timeout.
fn read_to_close(s: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&answer).into_owned(),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            // A reset after the answer was read counts as closed.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return String::from_utf8_lossy(&answer).into_owned();
            }
            Err(e) => panic!(
                "the station kept the connection open ({e}); read so far: {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
}

/// Asserts that `answer` is an HTTP answer with `status` and the JSON error `code`.
#[track_caller]
fn assert_json_error(answer: &str, status: u16, code: &str) {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status} ")),
        "expected {status}: {answer:?}"
    );
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {body:?}"));
    assert_eq!(json["error"], code, "{json}");
    assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{json}"
    );
}

#[test]
fn idle_and_slow_connections_are_closed_with_json_answers() {
    let st = Station::start(
        Opts::new()
            .flag("--keep-alive-secs", 1)
            .flag("--header-timeout-secs", 1)
            .flag("--body-timeout-secs", 1),
    );
    st.deploy_fixture("kv", "kv");

    // A connection that never sends anything is closed.
    let mut silent = connect(&st);
    assert_eq!(
        read_to_close(&mut silent),
        "",
        "an idle connection got an answer"
    );

    // After a complete exchange, the idle keep-alive connection is closed.
    let mut kept = connect(&st);
    write!(kept, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let answer = read_to_close(&mut kept);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");

    // Half a head: 408 header_timeout, then closed.
    let mut half = connect(&st);
    write!(half, "GET /health HTTP/1.1\r\nHost: 127.0").unwrap();
    assert_json_error(&read_to_close(&mut half), 408, "header_timeout");

    // A body that stops short of its declared length: 408 body_timeout, nothing written.
    let mut short = connect(&st);
    write!(
        short,
        "PUT /objects/kv/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nten bytes!"
    )
    .unwrap();
    assert_json_error(&read_to_close(&mut short), 408, "body_timeout");
    st.call("GET", "kv", "/slow", Vec::new()).expect(404);

    // Through it all the station serves.
    st.call("PUT", "kv", "/after", "yes").expect(200);
    assert_eq!(
        st.call("GET", "kv", "/after", Vec::new()).expect_json(200)["value"],
        "yes"
    );
}

#[test]
fn oversized_and_malformed_heads_get_json_errors() {
    let st = Station::new();
    st.deploy_fixture("kv", "kv");

    let mut big = connect(&st);
    write!(
        big,
        "GET /objects/kv/a HTTP/1.1\r\nHost: 127.0.0.1\r\nx-big: {}\r\n\r\n",
        "a".repeat(70 << 10)
    )
    .unwrap();
    assert_json_error(&read_to_close(&mut big), 431, "headers_too_large");

    let mut many = connect(&st);
    let headers: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    write!(
        many,
        "GET /objects/kv/a HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n"
    )
    .unwrap();
    assert_json_error(&read_to_close(&mut many), 431, "headers_too_large");

    for head in [
        "GET /objects/kv/a HTTP/1.1\r\nno colon here\r\n\r\n",
        "PUT /objects/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        "PUT /objects/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "PUT /objects/kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        "GET /objects/kv/a b HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut garbage = connect(&st);
        garbage.write_all(head.as_bytes()).unwrap();
        assert_json_error(&read_to_close(&mut garbage), 400, "bad_request");
    }
    st.call("GET", "kv", "/a", Vec::new()).expect(404);

    // Headers just under the limits still work.
    let r = request_with(
        &st.client(),
        &st.url,
        "PUT",
        "/objects/kv/a",
        b"fine".to_vec(),
    );
    r.expect(200);
    assert_eq!(
        st.call("GET", "kv", "/a", Vec::new()).expect_json(200)["value"],
        "fine"
    );
}

#[test]
fn connections_past_the_limit_are_refused_and_the_station_recovers() {
    let st = Station::start(Opts::new().flag("--max-connections", 3));
    // Three connections that hold their slot without sending anything.
    let hogs: Vec<TcpStream> = (0..3).map(|_| connect(&st)).collect();
    // Each is accepted in turn; one more exchange proves the first three hold their slots.
    let mut refused = connect(&st);
    write!(refused, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let answer = read_to_close(&mut refused);
    assert_json_error(&answer, 503, "too_many_connections");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );

    drop(hogs);
    // Once they are gone, clients are served again.
    poll(
        "a request to be served after the hogs left",
        Duration::from_secs(20),
        || {
            let mut s = connect(&st);
            write!(
                s,
                "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            read_to_close(&mut s)
                .starts_with("HTTP/1.1 200 ")
                .then_some(())
        },
    );
}
