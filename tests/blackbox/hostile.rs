//! Hostile clients: hang-ups mid-call, slow and idle connections, oversized headers, floods.
//! Each case asserts the exact answer and that the station goes on serving everyone else.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::*;

/// Waits until the object's log shows the start of a call whose line contains `route`.
fn wait_call_started(st: &Station, id: &str, route: &str) {
    poll(
        &format!("call.start of {route} in {id}'s log"),
        Duration::from_secs(30),
        || {
            let logs = st.get_json(&format!("/objects/{id}?logs=true"));
            logs["logs"]
                .as_array()
                .expect("logs")
                .iter()
                .any(|e| {
                    e["event"] == "call.start"
                        && e["message"].as_str().is_some_and(|m| m.contains(route))
                })
                .then_some(())
        },
    );
}

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
    wait_call_started(&st, "mb", "/slow");
    // Hang up while the handler runs.
    drop(s);

    // The next call is served normally (it queues behind the abandoned one, which runs to
    // completion and commits).
    let v = st.call("POST", "mb", "/ok", "after").expect_json(200);
    assert_eq!(v["x"], "after", "{v}");
    let state = st.get_json("/objects/mb?state=true");
    assert_eq!(
        state["state"]["slow"], "1",
        "the abandoned call did not run to completion: {state}"
    );
    // And again: the instance is healthy, not merely replaced once.
    let v = st
        .call("POST", "mb", "/slow?ms=1", Vec::new())
        .expect_json(200);
    assert_eq!(v["count"], 2, "{v}");
    let logs = st.get_json("/objects/mb?logs=true");
    let errors: Vec<_> = logs["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|e| e["level"] == "error")
        .collect();
    assert!(errors.is_empty(), "errors after a hang-up: {errors:?}");
}
