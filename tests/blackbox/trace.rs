//! Traces: every call answers with a W3C `traceparent` in the caller's trace (or a new one), its
//! log lines carry the trace id, and with `--otlp-endpoint` each call's span reaches an OTLP/HTTP
//! collector — across stations, with object-to-object calls as child spans.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// The W3C specification's example: trace `4bf9…4736`, parent span `00f0…02b7`, sampled.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// `(trace id, span id, flags)` of a `traceparent` header, asserting its shape.
#[track_caller]
fn parse_traceparent(header: &str) -> (String, String, String) {
    let fields: Vec<&str> = header.split('-').collect();
    assert_eq!(fields.len(), 4, "traceparent {header:?}");
    assert_eq!(fields[0], "00", "traceparent {header:?}");
    assert_eq!(fields[1].len(), 32, "traceparent {header:?}");
    assert_eq!(fields[2].len(), 16, "traceparent {header:?}");
    for f in &fields[1..] {
        assert!(
            f.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "traceparent {header:?}"
        );
    }
    assert_ne!(fields[1], "0".repeat(32), "traceparent {header:?}");
    (
        fields[1].to_string(),
        fields[2].to_string(),
        fields[3].to_string(),
    )
}

/// The answer's `traceparent`.
#[track_caller]
fn traceparent_of(r: &Resp) -> (String, String, String) {
    parse_traceparent(
        r.header("traceparent")
            .unwrap_or_else(|| panic!("{}: no traceparent", r.what)),
    )
}

#[test]
fn a_call_answers_in_the_callers_trace_and_its_log_lines_carry_the_trace_id() {
    let st = Station::new();
    st.deploy_fixture("m", "misbehave");
    let client = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = st
        .request_with_headers("POST", "/objects/m/log", &[("traceparent", &client)], "")
        .expect(200);
    let (trace, span, flags) = traceparent_of(&r);
    assert_eq!(trace, CLIENT_TRACE, "the call joins the client's trace");
    assert_ne!(span, CLIENT_SPAN, "the call has a span of its own");
    assert_eq!(flags, "01");
    let request_id = r.header("x-request-id").expect("x-request-id").to_string();
    let logs = st.get_json(&format!("/objects/m?logs=true&request_id={request_id}"));
    let lines = logs["logs"].as_array().expect("logs");
    assert!(
        lines.len() >= 3,
        "call.start, the object's lines, call.end: {logs}"
    );
    for line in lines {
        assert_eq!(line["trace_id"], CLIENT_TRACE, "{line}");
    }

    // An unsampled client trace stays unsampled; a trap answers in the trace too.
    let unsampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00");
    let r = st
        .request_with_headers(
            "POST",
            "/objects/m/trap",
            &[("traceparent", &unsampled)],
            "x",
        )
        .expect(500);
    let (trace, _, flags) = traceparent_of(&r);
    assert_eq!((trace.as_str(), flags.as_str()), (CLIENT_TRACE, "00"));

    // Without a traceparent, or with a malformed one, each call starts a trace of its own.
    let mut traces = std::collections::BTreeSet::new();
    for header in [None, Some("00-zz-00f067aa0ba902b7-01"), Some("garbage")] {
        let headers: Vec<(&str, &str)> = header.map(|h| ("traceparent", h)).into_iter().collect();
        let r = st
            .request_with_headers("GET", "/objects/m", &headers, "")
            .expect(200);
        let (trace, _, flags) = traceparent_of(&r);
        assert_ne!(trace, CLIENT_TRACE);
        assert_eq!(flags, "01");
        traces.insert(trace);
    }
    assert_eq!(traces.len(), 3, "each call is a new trace: {traces:?}");
}

/// A minimal OTLP/HTTP collector on loopback: it answers every POST with 200 and keeps the
/// JSON bodies posted to `/v1/traces`.
struct Collector {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the collector");
        listener.set_nonblocking(true).expect("nonblocking accept");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (kept, stopping) = (bodies.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let kept = kept.clone();
                        std::thread::spawn(move || serve_collector_connection(stream, &kept));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Collector {
            url,
            bodies,
            stop,
            thread: Some(thread),
        }
    }

    /// Every span received: `(name, trace id, span id, parent span id, attributes)`.
    fn spans(&self) -> Vec<Value> {
        let mut spans = Vec::new();
        for body in self.bodies.lock().unwrap().iter() {
            for resource in body["resourceSpans"].as_array().into_iter().flatten() {
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    spans.extend(scope["spans"].as_array().into_iter().flatten().cloned());
                }
            }
        }
        spans
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers the requests of one connection (keep-alive) until the client closes it.
fn serve_collector_connection(stream: TcpStream, kept: &Mutex<Vec<Value>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().expect("clone the connection");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if request_line.starts_with("POST /v1/traces ")
            && let Ok(json) = serde_json::from_slice::<Value>(&body)
        {
            kept.lock().unwrap().push(json);
        }
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// The string value of a span attribute.
fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]["stringValue"]
        .as_str()
}

#[test]
fn one_trace_shows_a_call_chain_across_stations_at_the_otlp_collector() {
    let collector = Collector::start();
    let opts = Opts::new()
        .flag("--otlp-endpoint", &collector.url)
        .flag("--otlp-protocol", "json");
    let mut cluster = Cluster::reserve(2);
    let mut st = cluster.start_joined(2, opts);
    let ids: Vec<String> = st.iter().map(Station::station_id).collect();
    st[0].deploy_fixture("ma", "misbehave");
    st[1].deploy_fixture("mb", "misbehave");
    for s in &st {
        s.wait_home("ma", &ids[0]);
        s.wait_home("mb", &ids[1]);
    }

    // A client call to `ma` on the first station; `ma` calls `mb` on the second.
    let client = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = st[0]
        .request_with_headers(
            "POST",
            "/objects/ma/call?target=mb&path=/log&method=POST",
            &[("traceparent", &client)],
            "",
        )
        .expect(200);
    let (_, ma_span, _) = traceparent_of(&r);
    let inner = r.json();
    assert_eq!(inner["status"], 200, "{inner}");

    // `mb`'s log, on the other station, carries the client's trace id.
    let logs = st[1].get_json("/objects/mb?logs=true&limit=20");
    let object_lines: Vec<&Value> = logs["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|l| l["event"] == "object")
        .collect();
    assert!(!object_lines.is_empty(), "{logs}");
    assert!(
        object_lines.iter().all(|l| l["trace_id"] == CLIENT_TRACE),
        "{logs}"
    );

    // Stopping the stations flushes their exporters: both spans are at the collector.
    for s in &mut st {
        s.stop();
    }
    let spans = collector.spans();
    let find = |object: &str| {
        spans
            .iter()
            .find(|s| attribute(s, "op.object") == Some(object) && s["traceId"] == CLIENT_TRACE)
            .unwrap_or_else(|| panic!("no span of {object} in trace {CLIENT_TRACE}: {spans:#?}"))
            .clone()
    };
    let (ma, mb) = (find("ma"), find("mb"));
    assert_eq!(ma["spanId"], ma_span.as_str(), "{ma}");
    assert_eq!(
        ma["parentSpanId"], CLIENT_SPAN,
        "ma is the client's child: {ma}"
    );
    assert_eq!(mb["parentSpanId"], ma["spanId"], "mb is ma's child: {mb}");
    assert_eq!(attribute(&ma, "op.station"), Some(ids[0].as_str()), "{ma}");
    assert_eq!(attribute(&mb, "op.station"), Some(ids[1].as_str()), "{mb}");
    assert_eq!(ma["name"], "POST ma", "{ma}");
    assert_eq!(mb["name"], "POST mb", "{mb}");
}
