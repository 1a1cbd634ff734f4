//! Events objects publish, streamed as Server-Sent Events at `GET /objects/{id}/events`: only
//! committed calls' events, in commit order, numbered (the SSE `id`), resumable with
//! `Last-Event-ID` after a station restart or a migration, through any station.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;

use crate::harness::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// One SSE event as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id` field.
    pub id: Option<String>,
    /// The `event` field (`message` when absent).
    pub event: String,
    /// The `data` lines, joined with `\n`.
    pub data: String,
}

/// A client of an SSE stream: a thread reads the stream and hands over each event; the
/// channel closes when the stream ends.
pub struct Subscriber {
    events: mpsc::Receiver<SseEvent>,
}

impl Subscriber {
    /// Opens `url` (through `st`'s address) with `Last-Event-ID: last` if given; panics unless
    /// it answers 200 `text/event-stream`.
    #[track_caller]
    pub fn open(url: &str, last: Option<u64>) -> Subscriber {
        let client = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .unwrap();
        let mut request = client.get(url).header("accept", "text/event-stream");
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        let response = request.send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if status != 200 || !kind.starts_with("text/event-stream") {
            panic!(
                "GET {url}: expected a 200 event stream, got {status} {kind}: {}",
                response.text().unwrap_or_default()
            );
        }
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            let reader = BufReader::new(response);
            let mut current = SseEvent {
                id: None,
                event: String::new(),
                data: String::new(),
            };
            let mut data_lines: Vec<String> = Vec::new();
            for line in reader.lines() {
                let Ok(line) = line else { return };
                if line.is_empty() {
                    if !data_lines.is_empty() {
                        current.data = data_lines.join("\n");
                        if current.event.is_empty() {
                            current.event = "message".into();
                        }
                        if tx.send(current.clone()).is_err() {
                            return;
                        }
                    }
                    current = SseEvent {
                        id: None,
                        event: String::new(),
                        data: String::new(),
                    };
                    data_lines.clear();
                    continue;
                }
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line.as_str(), ""),
                };
                match field {
                    "id" => current.id = Some(value.to_string()),
                    "event" => current.event = value.to_string(),
                    "data" => data_lines.push(value.to_string()),
                    _ => {} // comments (keep-alives) and retry
                }
            }
        });
        Subscriber { events }
    }

    /// The next event, within `timeout`.
    #[track_caller]
    pub fn next(&self, timeout: Duration) -> SseEvent {
        self.events
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("no event within {timeout:?}: {e}"))
    }

    /// The next `n` events, each within `timeout`.
    #[track_caller]
    pub fn take(&self, n: usize, timeout: Duration) -> Vec<SseEvent> {
        (0..n).map(|_| self.next(timeout)).collect()
    }

    /// Whether the stream ends within `timeout` (events still arriving are skipped).
    pub fn ends_within(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return true,
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    /// An event that arrived already, if any (does not wait).
    pub fn try_next(&self) -> Option<SseEvent> {
        self.events.try_recv().ok()
    }
}

const WAIT: Duration = Duration::from_secs(10);

fn events_url(st: &Station, id: &str, query: &str) -> String {
    format!("{}/objects/{id}/events{query}", st.url)
}

/// (id, data) of each event.
fn ids_and_data(events: &[SseEvent]) -> Vec<(u64, Value)> {
    events
        .iter()
        .map(|e| {
            let id =
                e.id.as_deref()
                    .expect("every event has an id")
                    .parse()
                    .unwrap();
            (id, serde_json::from_str(&e.data).unwrap())
        })
        .collect()
}

/// Publishes `count` events through `st` (counter's POST), each answered before the next.
fn increments(st: &Station, n: usize) {
    for _ in 0..n {
        st.call("POST", "counter", "/", Vec::new()).expect(200);
    }
}

per_lang! {
    /// The counter publishes `count` on every change; a subscriber gets each, in order,
    /// numbered from 1, with the topic as the SSE event name.
    fn the_counter_publishes_each_change_in_order(lang: Lang) {
        let st = Station::start(Opts::new());
        lang.deploy(&st, "counter", "counter");
        let sub = Subscriber::open(&events_url(&st, "counter", ""), None);
        increments(&st, 3);
        st.call("DELETE", "counter", "/", Vec::new()).expect(200);
        let got = sub.take(4, WAIT);
        assert!(got.iter().all(|e| e.event == "count"), "{got:?}");
        assert_eq!(
            ids_and_data(&got),
            [
                (1, json!({"count": 1})),
                (2, json!({"count": 2})),
                (3, json!({"count": 3})),
                (4, json!({"count": 0})),
            ]
        );
        // A GET publishes nothing.
        st.call("GET", "counter", "/", Vec::new()).expect(200);
        increments(&st, 1);
        assert_eq!(ids_and_data(&[sub.next(WAIT)]), [(5, json!({"count": 1}))]);
    }
}

#[test]
fn only_committed_calls_publish_and_numbers_follow_commit_order() {
    let st = Station::start(Opts::new().fsync());
    st.deploy_fixture("misbehave", "misbehave");
    let sub = Subscriber::open(&events_url(&st, "misbehave", ""), None);
    st.call("POST", "misbehave", "/publish?topic=t", "first")
        .expect(200);
    // Published, then trapped or failed: nothing committed, nothing published, no number used.
    st.call("POST", "misbehave", "/publish-trap?topic=t", "trapped")
        .expect_error(500, "trapped");
    st.call("POST", "misbehave", "/publish-fail?topic=t", "failed")
        .expect(500);
    st.call("POST", "misbehave", "/publish?topic=u", "second")
        .expect(200);
    let got = sub.take(2, WAIT);
    assert_eq!(
        got,
        [
            SseEvent {
                id: Some("1".into()),
                event: "t".into(),
                data: "first".into()
            },
            SseEvent {
                id: Some("2".into()),
                event: "u".into(),
                data: "second".into()
            },
        ]
    );
    // Data with line breaks arrives whole; a topic filter passes only its topic.
    let only_u = Subscriber::open(&events_url(&st, "misbehave", "?topic=u"), Some(0));
    assert_eq!(only_u.next(WAIT).data, "second");
    st.call("POST", "misbehave", "/publish?topic=t", "skipped")
        .expect(200);
    st.call("POST", "misbehave", "/publish?topic=u", "line 1\nline 2")
        .expect(200);
    let multi = only_u.next(WAIT);
    assert_eq!(
        (multi.id.as_deref(), multi.data.as_str()),
        (Some("4"), "line 1\nline 2")
    );
    assert!(
        sub.take(2, WAIT)
            .iter()
            .map(|e| e.id.clone())
            .eq([Some("3".into()), Some("4".into())])
    );
    assert!(sub.try_next().is_none(), "nothing else was published");
}

#[test]
fn bad_subscriptions_get_clear_errors() {
    let st = Station::start(Opts::new());
    st.deploy_fixture("counter", "counter");
    st.deploy_fixture("hello", "hello");
    let get = |path: &str, last: Option<&str>| {
        let mut request = st.client().get(format!("{}{path}", st.url));
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        let r = request.send().unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    let (status, body) = get("/objects/nobody/events", None);
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("object_not_found")),
        "{body}"
    );
    let (status, body) = get("/objects/counter/events", Some("seven"));
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_last_event_id")),
        "{body}"
    );
    let (status, body) = get("/objects/counter/events?topic=op.missed", None);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_topic")),
        "{body}"
    );
    // A topic the object may not publish is refused at publish time too.
    st.deploy_fixture("misbehave", "misbehave");
    st.call("POST", "misbehave", "/publish?topic=op.x", "no")
        .expect_error(500, "trapped");
}

#[test]
fn a_subscriber_resumes_with_last_event_id_after_the_station_restarts() {
    let mut st = Station::start(Opts::new().fsync());
    st.deploy_fixture("counter", "counter");
    let sub = Subscriber::open(&events_url(&st, "counter", ""), None);
    increments(&st, 3);
    let seen = ids_and_data(&sub.take(3, WAIT));
    let last = seen.last().unwrap().0;
    assert_eq!(last, 3);

    st.restart_on_same_port();
    assert!(
        sub.ends_within(WAIT),
        "the stream ends when the station stops"
    );
    // Published while the client was away.
    increments(&st, 2);
    let resumed = Subscriber::open(&events_url(&st, "counter", ""), Some(last));
    increments(&st, 1);
    assert_eq!(
        ids_and_data(&resumed.take(3, WAIT)),
        [
            (4, json!({"count": 4})),
            (5, json!({"count": 5})),
            (6, json!({"count": 6})),
        ],
        "every missed event once, then the new one"
    );
    assert!(resumed.try_next().is_none());
}

#[test]
fn events_older_than_the_retention_are_reported_missed() {
    let st = Station::start(Opts::new().flag("--event-retention", 3));
    st.deploy_fixture("counter", "counter");
    increments(&st, 6);
    let sub = Subscriber::open(&events_url(&st, "counter", ""), Some(0));
    let missed = sub.next(WAIT);
    assert_eq!(missed.event, "op.missed");
    assert_eq!(missed.id.as_deref(), Some("3"));
    assert_eq!(
        serde_json::from_str::<Value>(&missed.data).unwrap(),
        json!({"from": 1, "to": 3})
    );
    assert_eq!(
        ids_and_data(&sub.take(3, WAIT))
            .into_iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>(),
        [4, 5, 6]
    );
}

#[test]
fn events_stream_through_any_station_and_resume_after_a_migration() {
    let mut cluster = Cluster::reserve(2);
    let (st, _, id_b) = two_stations_with_counter(&mut cluster);
    let (a, b) = (&st[0], &st[1]);
    // Subscribed through the station that is not the home.
    let sub = Subscriber::open(&events_url(b, "counter", ""), None);
    increments(a, 2);
    let seen = ids_and_data(&sub.take(2, WAIT));
    assert_eq!(seen[1], (2, json!({"count": 2})));

    let body = json!({"object_id": "counter", "target_station": id_b}).to_string();
    a.request("POST", "/cluster/migrate", body).expect_json(200);
    a.wait_home("counter", &id_b);
    assert!(
        sub.ends_within(WAIT),
        "the old home's stream ends at the migration"
    );
    increments(a, 1);
    // Reconnecting through the old home reaches the new one, and misses nothing.
    let resumed = Subscriber::open(&events_url(a, "counter", ""), Some(2));
    increments(b, 1);
    assert_eq!(
        ids_and_data(&resumed.take(2, WAIT)),
        [(3, json!({"count": 3})), (4, json!({"count": 4}))]
    );
}

#[test]
fn a_0_1_0_component_runs_beside_0_2_0_ones() {
    let st = Station::start(Opts::new());
    st.deploy_fixture("legacy", "legacy");
    st.deploy_fixture("counter", "counter");
    assert_eq!(
        st.call("POST", "legacy", "/", Vec::new()).expect_json(200),
        json!({"world": "0.1.0", "count": 1})
    );
    assert_eq!(
        st.call("GET", "legacy", "/", Vec::new()).expect_json(200),
        json!({"world": "0.1.0", "count": 1})
    );
    assert_eq!(
        st.call("POST", "counter", "/", Vec::new()).expect_json(200),
        json!({"count": 1})
    );
    st.call("PUT", "legacy", "/", Vec::new())
        .expect_error(405, "method_not_allowed");
    let state = st.get_json("/objects/legacy?state=true");
    assert_eq!(state["state"], json!({"count": "1"}));
}
