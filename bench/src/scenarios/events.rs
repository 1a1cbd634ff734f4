//! Alarms and events: how late an alarm fires, how soon an event reaches a subscriber after the
//! call that published it answered, and what open event streams cost the station.
//!
//! - [`ALARM_DELAY`]: the `reminder` object (`objects/dist/reminder.wasm`) sets [`REMINDERS`]
//!   alarms (fewer with `--quick`) due 500 ms to ~2.5 s ahead, 20 ms apart; once the last is due
//!   the driver polls `GET /objects/reminder/` until every one has fired, then reports the
//!   quantiles of `fired_at_ms − due_ms`. Both are the station's wall clock (`due_ms` is the time
//!   the alarm was set for, `fired_at_ms` the object's `now_ms()` in `on_alarm`), so there is no
//!   clock skew. The baseline is the median round trip of the same `GET`, measured in the run.
//!   Nothing calls the object while its alarms are due, so no request competes with the fires.
//! - [`SSE_LATENCY`]: one `GET /objects/counter/events` stream, then sequential
//!   `POST /objects/counter/`, each publishing `{"count":N}`; per POST the time from sending it to
//!   its answer (the baseline) and to the event with its count arriving on the stream, which may
//!   come before the answer.
//! - [`STREAMS_RSS`]: [`STREAMS`] event streams (fewer with `--quick`) held open on one station
//!   at once: its RSS before and after they are open (every stream answered 200 and
//!   `op_event_subscribers` counts them all), then one POST, and how many streams received its
//!   event, and how soon.
//!
//! The streams are read by a small Server-Sent-Events parser ([`SseParser`]): the driver only
//! needs `event` and `data`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::{Ctx, as_ms, guarded, median_ms, percentile};
use crate::report::{Figure, ScenarioResult, format_number};
use crate::server::{self, Server};

/// Alarm scenario name.
pub const ALARM_DELAY: &str = "alarm firing delay (reminder)";
/// SSE latency scenario name.
pub const SSE_LATENCY: &str = "SSE delivery after commit (counter)";
/// Open streams scenario name.
pub const STREAMS_RSS: &str = "RSS with open event streams (counter)";

/// Reminders set by the alarm scenario (the object keeps its last 100 fired ones, so at most 100).
pub const REMINDERS: usize = 100;
/// Reminders with `--quick`.
const QUICK_REMINDERS: usize = 50;
/// The first reminder's wait, and the step between two reminders' waits, in ms.
const FIRST_IN_MS: u64 = 500;
const STEP_MS: u64 = 20;
/// Timed `GET /objects/reminder/` calls for the baseline.
const BASELINE_GETS: usize = 30;

/// POSTs timed by the SSE latency scenario.
pub const POSTS: usize = 200;
/// POSTs with `--quick`.
const QUICK_POSTS: usize = 50;
/// Untimed POSTs first (the first one instantiates the object).
const WARMUP_POSTS: usize = 5;

/// Streams held open by the RSS scenario.
pub const STREAMS: usize = 10_000;
/// Streams with `--quick`.
const QUICK_STREAMS: usize = 2_000;
/// Streams being opened at once (a connect and its 200), so the listen backlog never overflows.
const OPENING_AT_ONCE: usize = 64;
/// File descriptors the driver keeps for itself besides the streams.
const RESERVED_DESCRIPTORS: u64 = 256;

/// Runs the three scenarios, each on a station of its own.
pub async fn run(ctx: &Ctx) -> Vec<ScenarioResult> {
    let alarm = match ctx.component("reminder") {
        None => ScenarioResult::skipped(
            ALARM_DELAY,
            "needs objects/dist/reminder.wasm (scripts/build-objects.sh builds it)",
        ),
        Some(bytes) => {
            guarded(
                ALARM_DELAY,
                Duration::from_secs(180),
                alarm_delay(ctx, bytes),
            )
            .await
        }
    };
    let sse = guarded(SSE_LATENCY, Duration::from_secs(180), sse_latency(ctx)).await;
    let streams = guarded(STREAMS_RSS, Duration::from_secs(480), open_streams(ctx)).await;
    vec![alarm, sse, streams]
}

// ---------------------------------------------------------------------------------------
// Alarm firing delay

async fn alarm_delay(ctx: &Ctx, bytes: Vec<u8>) -> anyhow::Result<ScenarioResult> {
    let data = ctx.fresh_dir("alarms-")?;
    let station =
        Server::station(&ctx.config.host, &data, "fsync", &ctx.log_path("alarms")).await?;
    let result = fire_reminders(ctx, &station, &bytes).await;
    let tail = station.stderr_tail();
    station.stop().await;
    result.with_context(|| tail)
}

async fn fire_reminders(
    ctx: &Ctx,
    station: &Server,
    bytes: &[u8],
) -> anyhow::Result<ScenarioResult> {
    let count = if ctx.config.quick {
        QUICK_REMINDERS
    } else {
        REMINDERS
    };
    server::deploy(&ctx.client, &station.url, "reminder", bytes).await?;
    let path = "/objects/reminder/";
    // Warm the instance, then the baseline: the same GET the polling uses, before any alarm.
    for _ in 0..3 {
        server::call(&ctx.client, &station.url, Method::GET, path).await?;
    }
    let mut gets = Vec::with_capacity(BASELINE_GETS);
    for _ in 0..BASELINE_GETS {
        gets.push(server::call(&ctx.client, &station.url, Method::GET, path).await?);
    }
    let baseline_ms = median_ms(&gets);

    let mut ids = Vec::with_capacity(count);
    let mut last_due = Instant::now();
    for i in 0..count {
        let in_ms = FIRST_IN_MS + i as u64 * STEP_MS;
        let sent = Instant::now();
        let (status, body) = send_json(
            ctx,
            &station.url,
            Method::POST,
            path,
            Some(json!({"in_ms": in_ms, "note": format!("bench {i}")})),
        )
        .await?;
        ensure!(status == 201, "POST {path} answered {status}: {body}");
        let id = body["id"]
            .as_str()
            .ok_or_else(|| anyhow!("POST {path} answered {body}, without an id"))?;
        ids.push(id.to_string());
        last_due = last_due.max(sent + Duration::from_millis(in_ms));
    }

    // Leave the object alone while its alarms are due, then poll until all have fired.
    tokio::time::sleep_until((last_due + Duration::from_millis(200)).into()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (fired, pending) = loop {
        let (status, body) = send_json(ctx, &station.url, Method::GET, path, None).await?;
        ensure!(status == 200, "GET {path} answered {status}: {body}");
        let fired = body["fired"].as_array().cloned().unwrap_or_default();
        let pending = body["pending"].as_array().map_or(0, Vec::len);
        if pending == 0 && fired.len() >= count {
            break (fired, pending);
        }
        if Instant::now() > deadline {
            break (fired, pending);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut delays = Vec::with_capacity(count);
    for entry in &fired {
        let id = entry["id"].as_str().unwrap_or_default();
        if !ids.iter().any(|i| i == id) {
            continue;
        }
        let (Some(due), Some(at)) = (entry["due_ms"].as_i64(), entry["fired_at_ms"].as_i64())
        else {
            bail!("a fired reminder without due_ms and fired_at_ms: {entry}");
        };
        delays.push((at - due) as f64);
    }
    ensure!(
        delays.len() == count,
        "{} of {count} reminders fired within 30 s of the last one's due time ({pending} still pending)",
        delays.len()
    );
    let mut sorted = delays.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let p50 = percentile(&sorted, 0.5);
    let p99 = percentile(&sorted, 0.99);
    let max = sorted.last().copied().unwrap_or(f64::NAN);
    Ok(ScenarioResult::ok(
        ALARM_DELAY,
        vec![
            Figure::new(
                format!("firing delay p50 (fired_at − due), {count} alarms"),
                p50,
                "ms",
            )
            .with_baseline(Some(baseline_ms)),
            Figure::new("firing delay p99", p99, "ms").with_baseline(Some(baseline_ms)),
            Figure::new("firing delay max", max, "ms"),
        ],
    )
    .with_note(format!(
        "baseline: the median round trip of GET {path} ({BASELINE_GETS} calls); delays in whole ms (the station's clock, in ms)"
    ))
    .with_details(json!({
        "reminders": count,
        "in_ms": {"first": FIRST_IN_MS, "step": STEP_MS},
        "delay_ms": delays,
        "baseline_get_ms": as_ms(&gets),
        "durability": "fsync",
    })))
}

/// Sends a request with an optional JSON body; returns the status and the JSON answer.
async fn send_json(
    ctx: &Ctx,
    url: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = ctx.client.request(method.clone(), format!("{url}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{method} {path}"))?;
    let status = response.status().as_u16();
    let bytes = response
        .bytes()
        .await
        .with_context(|| format!("reading the answer to {method} {path}"))?;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, value))
}

// ---------------------------------------------------------------------------------------
// SSE delivery latency

/// The counter's events path.
const EVENTS_PATH: &str = "/objects/counter/events";

async fn sse_latency(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let bytes = ctx.require_component("counter")?;
    let data = ctx.fresh_dir("sse-")?;
    let station = Server::station(&ctx.config.host, &data, "fsync", &ctx.log_path("sse")).await?;
    let result = time_deliveries(ctx, &station, &bytes).await;
    let tail = station.stderr_tail();
    station.stop().await;
    result.with_context(|| tail)
}

async fn time_deliveries(
    ctx: &Ctx,
    station: &Server,
    bytes: &[u8],
) -> anyhow::Result<ScenarioResult> {
    let posts = if ctx.config.quick { QUICK_POSTS } else { POSTS };
    server::deploy(&ctx.client, &station.url, "counter", bytes).await?;
    let streams = stream_client();
    let response = open_stream(&streams, &station.url).await?;
    // The reader stamps each `count` event when its bytes arrive.
    let (tx, mut rx) = mpsc::unbounded_channel::<(i64, Instant)>();
    let reader = tokio::spawn(async move {
        let mut body = response.bytes_stream();
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            let at = Instant::now();
            parser.push(&chunk, &mut events);
            for event in events.drain(..) {
                if let Some(n) = count_event(&event)
                    && tx.send((n, at)).is_err()
                {
                    return;
                }
            }
        }
    });
    let result = async {
        let (mut answers, mut events, mut after_answer) = (vec![], vec![], vec![]);
        for i in 0..WARMUP_POSTS + posts {
            let sent = Instant::now();
            let response = ctx
                .client
                .post(format!("{}/objects/counter/", station.url))
                .send()
                .await
                .context("POST /objects/counter/")?;
            let status = response.status();
            let body = response.bytes().await.context("reading a POST's answer")?;
            let answered = sent.elapsed();
            ensure!(
                status.is_success(),
                "POST /objects/counter/ answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
            let count = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["count"].as_i64())
                .ok_or_else(|| {
                    anyhow!(
                        "the counter answered {:?}, without a count",
                        String::from_utf8_lossy(&body)
                    )
                })?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let arrived = loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some((n, at))) if n == count => break at,
                    Ok(Some((n, _))) if n < count => continue,
                    Ok(Some((n, _))) => bail!("the event of count {n} came before {count}'s"),
                    Ok(None) => bail!("the event stream ended before count {count}'s event"),
                    Err(_) => bail!("count {count}'s event did not arrive within 10 s"),
                }
            };
            if i < WARMUP_POSTS {
                continue;
            }
            let event = arrived.saturating_duration_since(sent);
            answers.push(answered);
            events.push(event);
            after_answer.push((event.as_secs_f64() - answered.as_secs_f64()) * 1e3);
        }
        Ok::<_, anyhow::Error>((answers, events, after_answer))
    }
    .await;
    reader.abort();
    let (answers, events, after_answer) = result?;
    let sorted_ms = |values: &[Duration]| {
        let mut ms: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        ms
    };
    let (answer_ms, event_ms) = (sorted_ms(&answers), sorted_ms(&events));
    let mut gap_ms = after_answer.clone();
    gap_ms.sort_by(|a, b| a.total_cmp(b));
    let answer_p50 = percentile(&answer_ms, 0.5);
    let before_answer = after_answer.iter().filter(|g| **g < 0.0).count();
    Ok(ScenarioResult::ok(
        SSE_LATENCY,
        vec![
            Figure::new("POST send → event p50", percentile(&event_ms, 0.5), "ms")
                .with_baseline(Some(answer_p50)),
            Figure::new("POST send → event p99", percentile(&event_ms, 0.99), "ms")
                .with_baseline(Some(percentile(&answer_ms, 0.99))),
            Figure::new("event after the answer p50", percentile(&gap_ms, 0.5), "ms"),
            Figure::new(
                "events that came before their answer",
                100.0 * before_answer as f64 / posts as f64,
                "%",
            ),
        ],
    )
    .with_note(format!(
        "baseline: the POST's own round trip (send → answer), p50 and p99, over the same {posts} sequential POSTs; \
         \"event after the answer\" is (send → event) − (send → answer) per POST, negative when the event came first"
    ))
    .with_details(json!({
        "posts": posts,
        "warmup_posts": WARMUP_POSTS,
        "answer_ms": as_ms(&answers),
        "event_ms": as_ms(&events),
        "event_after_answer_ms": after_answer,
        "durability": "fsync",
    })))
}

/// A client for event streams: HTTP/1.1, no overall timeout (a stream lasts as long as the
/// scenario), a bounded connect.
fn stream_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .connect_timeout(Duration::from_secs(30))
        .build()
        .expect("building an HTTP client")
}

/// `GET /objects/counter/events`, checked for its 200.
async fn open_stream(client: &reqwest::Client, url: &str) -> anyhow::Result<reqwest::Response> {
    let response = client
        .get(format!("{url}{EVENTS_PATH}"))
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .with_context(|| format!("GET {EVENTS_PATH}"))?;
    let status = response.status();
    if status != 200 {
        let body = response.text().await.unwrap_or_default();
        bail!("GET {EVENTS_PATH} answered {status}: {body}");
    }
    Ok(response)
}

/// The count of a counter's `count` event (`{"count":N}`).
fn count_event(event: &SseEvent) -> Option<i64> {
    if event.event != "count" {
        return None;
    }
    serde_json::from_str::<Value>(&event.data).ok()?["count"].as_i64()
}

// ---------------------------------------------------------------------------------------
// Many open streams

/// What the stream tasks report.
#[derive(Default)]
struct Tally {
    /// Streams that answered 200.
    opened: AtomicUsize,
    /// Streams that could not be opened.
    failed: AtomicUsize,
    /// Streams that ended (the station closed them) before the end of the scenario.
    ended: AtomicUsize,
    /// When each stream received the published event.
    arrivals: Mutex<Vec<Instant>>,
    /// The first failure to open, for the error or the note.
    first_error: Mutex<Option<String>>,
}

async fn open_streams(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let bytes = ctx.require_component("counter")?;
    let wanted = if ctx.config.quick {
        QUICK_STREAMS
    } else {
        STREAMS
    };
    let files = raise_open_files_limit();
    let count = wanted.min(files.saturating_sub(RESERVED_DESCRIPTORS) as usize);
    ensure!(
        count > 0,
        "the open-files limit ({files}) leaves no descriptors for streams"
    );
    let mut extra = Vec::new();
    if ctx.host_has_flag("--max-connections") {
        extra = vec!["--max-connections".into(), "20000".into()];
    }
    let data = ctx.fresh_dir("streams-")?;
    let station = Server::station_with(
        &ctx.config.host,
        &data,
        "fsync",
        &extra,
        &ctx.log_path("streams"),
    )
    .await?;
    let result = hold_streams(ctx, &station, &bytes, count).await;
    let tail = station.stderr_tail();
    station.stop().await;
    let mut result = result.with_context(|| tail)?;
    if count < wanted {
        result = result.with_note(format!(
            "the open-files limit ({files}) allowed {} streams of the {} wanted",
            format_number(count as f64),
            format_number(wanted as f64)
        ));
    }
    Ok(result)
}

async fn hold_streams(
    ctx: &Ctx,
    station: &Server,
    bytes: &[u8],
    count: usize,
) -> anyhow::Result<ScenarioResult> {
    server::deploy(&ctx.client, &station.url, "counter", bytes).await?;
    // A live instance before the first reading, so the difference is the streams'.
    server::call(&ctx.client, &station.url, Method::GET, "/objects/counter").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = station.memory()?;
    let client_before = own_rss_kib();

    let tally = Arc::new(Tally::default());
    let client = stream_client();
    let opening = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for _ in 0..count {
        tasks.spawn(hold_stream(
            client.clone(),
            station.url.clone(),
            tally.clone(),
            opening.clone(),
        ));
    }
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let done = tally.opened.load(Ordering::Acquire) + tally.failed.load(Ordering::Acquire);
            if done >= count {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{} of {count} streams open after 300 s",
                tally.opened.load(Ordering::Acquire)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let open_secs = started.elapsed().as_secs_f64();
        let opened = tally.opened.load(Ordering::Acquire);
        let failed = tally.failed.load(Ordering::Acquire);
        let first_error = tally.first_error.lock().unwrap().clone();
        ensure!(
            opened > 0,
            "no stream opened: {}",
            first_error.as_deref().unwrap_or("?")
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let subscribers = loop {
            let n = event_subscribers(ctx, &station.url).await?;
            if n >= opened as u64 || Instant::now() > deadline {
                break n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = station.memory()?;
        let client_after = own_rss_kib();

        // One event for every stream.
        let published = Instant::now();
        server::call(&ctx.client, &station.url, Method::POST, "/objects/counter/").await?;
        let deadline = published + Duration::from_secs(30);
        let live = opened - tally.ended.load(Ordering::Acquire);
        while tally.arrivals.lock().unwrap().len() < live && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let arrivals: Vec<Duration> = tally
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .map(|at| at.saturating_duration_since(published))
            .collect();
        let delivered = arrivals.len();
        let ended = tally.ended.load(Ordering::Acquire);
        let mut delivery_ms: Vec<f64> = arrivals.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        delivery_ms.sort_by(|a, b| a.total_cmp(b));

        let per_stream_kib =
            (after.vm_rss_kib as f64 - before.vm_rss_kib as f64) / opened as f64;
        let label = format_number(opened as f64);
        let mut result = ScenarioResult::ok(
            STREAMS_RSS,
            vec![
                Figure::new("RSS before the streams", before.rss_mib(), "MiB"),
                Figure::new(format!("RSS, {label} streams open"), after.rss_mib(), "MiB"),
                Figure::new("RSS per open stream", per_stream_kib, "KiB"),
                Figure::new(
                    "streams that got the event",
                    delivered as f64,
                    &format!("of {label}"),
                ),
                Figure::new(
                    "publish → median stream got it",
                    percentile(&delivery_ms, 0.5),
                    "ms",
                ),
                Figure::new(
                    "publish → last stream got it",
                    delivery_ms.last().copied().unwrap_or(f64::NAN),
                    "ms",
                ),
                Figure::new(format!("open {label} streams"), open_secs, "s"),
            ],
        )
        .with_details(json!({
            "wanted": count,
            "opened": opened,
            "failed": failed,
            "ended_early": ended,
            "delivered": delivered,
            "op_event_subscribers": subscribers,
            "opening_at_once": OPENING_AT_ONCE,
            "memory_kib": {"before": before, "after": after},
            "driver_rss_kib": {"before": client_before, "after": client_after},
            "delivery_ms": {
                "p50": percentile(&delivery_ms, 0.5),
                "p99": percentile(&delivery_ms, 0.99),
                "max": delivery_ms.last(),
            },
        }));
        if failed > 0 {
            result = result.with_note(format!(
                "{failed} of {count} streams could not be opened (first: {})",
                first_error.as_deref().unwrap_or("?")
            ));
        }
        if subscribers < opened as u64 {
            result = result.with_note(format!(
                "op_event_subscribers read {subscribers}, not {opened}, 30 s after every stream answered 200"
            ));
        }
        if ended > 0 {
            result = result.with_note(format!("{ended} streams ended before the scenario did"));
        }
        if delivered < opened {
            result = result.with_note(format!(
                "{} of {opened} open streams did not receive the event within 30 s",
                opened - delivered
            ));
        }
        Ok(result)
    }
    .await;
    // Close every stream before the station stops.
    tasks.shutdown().await;
    drop(client);
    result
}

/// One stream: opened (at most [`OPENING_AT_ONCE`] at a time), then read until the scenario
/// aborts it, stamping the first `count` event.
async fn hold_stream(
    client: reqwest::Client,
    url: String,
    tally: Arc<Tally>,
    opening: Arc<Semaphore>,
) {
    let permit = opening.acquire_owned().await;
    let response = match open_stream(&client, &url).await {
        Ok(response) => response,
        Err(e) => {
            tally
                .first_error
                .lock()
                .unwrap()
                .get_or_insert_with(|| format!("{e:#}"));
            tally.failed.fetch_add(1, Ordering::AcqRel);
            return;
        }
    };
    drop(permit);
    drop(client);
    drop(url);
    tally.opened.fetch_add(1, Ordering::AcqRel);
    let mut body = response.bytes_stream();
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    let mut got = false;
    while let Some(Ok(chunk)) = body.next().await {
        parser.push(&chunk, &mut events);
        if !got && events.iter().any(|e| e.event == "count") {
            got = true;
            tally.arrivals.lock().unwrap().push(Instant::now());
        }
        events.clear();
    }
    tally.ended.fetch_add(1, Ordering::AcqRel);
}

/// The station's `op_event_subscribers` gauge.
async fn event_subscribers(ctx: &Ctx, url: &str) -> anyhow::Result<u64> {
    let text = ctx
        .client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .context("GET /metrics")?
        .text()
        .await
        .context("reading /metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix("op_event_subscribers "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| anyhow!("GET /metrics has no op_event_subscribers gauge"))
}

/// Raises this process's soft open-files limit to the hard one; returns the soft limit now.
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

/// The driver's own VmRSS in KiB (0 if unreadable).
fn own_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Server-Sent Events

/// One Server-Sent Event: its `id`, `event` and `data` fields (several `data` lines joined
/// with `\n`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id` field, if any.
    pub id: Option<String>,
    /// The `event` field (empty if none).
    pub event: String,
    /// The `data` lines.
    pub data: String,
}

/// An incremental `text/event-stream` parser: feed it the body's chunks as they come.
/// Comments (`:` lines, the station's keep-alives) are skipped.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Parses `bytes`, appending every event they complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        for &byte in bytes {
            if byte == b'\n' {
                self.end_line(out);
            } else {
                self.line.push(byte);
            }
        }
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            if self.has_data || !self.current.event.is_empty() || self.current.id.is_some() {
                out.push(std::mem::take(&mut self.current));
            }
            self.has_data = false;
        } else if line[0] != b':' {
            let text = String::from_utf8_lossy(&line);
            let (field, value) = match text.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (&*text, ""),
            };
            match field {
                "id" => self.current.id = Some(value.to_string()),
                "event" => self.current.event = value.to_string(),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        line.clear();
        self.line = line;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_anywhere() {
        let stream = b": keep-alive\n\nid: 1\nevent: count\ndata: {\"count\":1}\n\nid: 2\r\nevent: count\r\ndata:{\"count\":2}\r\n\r\ndata: a\ndata: b\n\n";
        let expected = vec![
            SseEvent {
                id: Some("1".into()),
                event: "count".into(),
                data: "{\"count\":1}".into(),
            },
            SseEvent {
                id: Some("2".into()),
                event: "count".into(),
                data: "{\"count\":2}".into(),
            },
            SseEvent {
                id: None,
                event: String::new(),
                data: "a\nb".into(),
            },
        ];
        for split in 0..stream.len() {
            let mut parser = SseParser::default();
            let mut out = Vec::new();
            parser.push(&stream[..split], &mut out);
            parser.push(&stream[split..], &mut out);
            assert_eq!(out, expected, "split at {split}");
        }
        assert_eq!(count_event(&expected[1]), Some(2));
        assert_eq!(count_event(&expected[2]), None);
    }
}
