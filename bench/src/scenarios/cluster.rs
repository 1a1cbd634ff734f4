//! Cluster scenarios: stations joined on 127.0.0.1 (`host serve --join 127.0.0.1:PORT`, all
//! with `--durability fsync`). Each scenario starts its own cluster, except the three
//! migrations, which share one.
//!
//! - **Cross-station call vs local**: two stations with fast gossip. The load generator runs
//!   `GET /objects/counter` on the home A, then on B, which forwards each call one hop to A. The
//!   forwarded figures use the local ones as their baseline. Measured with the stations' default
//!   threads, then on a second cluster with `--workers 1` (two stations sharing the cores).
//! - **Replication lag**: two stations (B replicates A). A paced writer POSTs to the counter on
//!   A at 1,000/s. It runs open loop: a 1 ms interval with a few requests in flight. Meanwhile a
//!   poller reads B's applied seq every ~1 ms. A write's lag is the time B first showed its seq
//!   minus the time A acknowledged it, clamped at 0. Each counter POST commits one batch (one
//!   seq). The station commits once per call (`host/src/station/call.rs`), and a batch with no
//!   writes takes no seq. So the write answering count `c` has seq `s0 + c - c0`, with `s0`
//!   and `c0` read before the run. A's applied seq at the end must agree, or the scenario fails.
//! - **Migration pause**: N keys of the kv object on A (16-byte values, 64 PUTs in flight),
//!   replicated to B, then `POST /cluster/migrate` to B. The pause and the bytes moved come from
//!   the answer, the wall time from the client. A key is then read back through B. 100k keys
//!   run in quick mode only when the 10k run predicts under [`QUICK_100K_BUDGET`].
//! - **Failover**: three stations with `--sync-replicas 1` and the default failure detection
//!   (gossip every 500 ms, phi threshold 8). Some acknowledged writes reach both replicas, then A
//!   gets SIGKILL and B is called with `POST` every 20 ms. The figure is the time from the kill
//!   to the first 200. The count that 200 answers must cover every write acknowledged before the
//!   kill.
//!
//! Every wait is a bounded poll. Each scenario stops the stations it started, on error too, and
//! a scenario that times out drops its servers, which kills them.

use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Ctx, as_ms, guarded, median_ms, percentile};
use crate::loadgen::{LoadResult, Paths};
use crate::report::{Figure, ScenarioResult, Target};
use crate::server::{self, Server};

/// Cross-station call scenario name.
pub const CROSS_STATION: &str = "cross-station call vs local";
/// Replication lag scenario name.
pub const REPLICATION_LAG: &str = "replication lag at 1,000 writes/s";
/// Migration of 1,000 keys.
pub const MIGRATION_1K: &str = "migration pause, 1k keys";
/// Migration of 10,000 keys.
pub const MIGRATION_10K: &str = "migration pause, 10k keys";
/// Migration of 100,000 keys.
pub const MIGRATION_100K: &str = "migration pause, 100k keys";
/// Failover scenario name.
pub const FAILOVER: &str = "failover: kill -9 → first success";

/// Every station of this family writes with fsync, like a real deployment.
const DURABILITY: &str = "fsync";
/// Gossip flags for the scenarios that only need the cluster to converge quickly (failover runs
/// with the defaults, since detection time is what it measures).
const FAST_GOSSIP: &[&str] = &["--gossip-interval-ms", "100"];
/// Bound for one convergence step: joining, an object's claim spreading, a replica catching up.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two polls of a convergence wait.
const POLL_PAUSE: Duration = Duration::from_millis(50);

/// Writes per second the replication lag scenario asks for.
const LAG_RATE: u64 = 1_000;
/// Most writes in flight at once in the replication lag scenario (a write due while they are all
/// busy goes out as soon as one returns, and is counted as late).
const LAG_IN_FLIGHT: usize = 16;
/// How often the replication lag poller reads the replica's applied seq.
const LAG_POLL_EVERY: Duration = Duration::from_millis(1);
/// How long the replica may take to apply the last write after the writer stops.
const LAG_DRAIN: Duration = Duration::from_secs(15);

/// Bytes of every value the migration scenarios write.
const MIGRATION_VALUE: &str = "value-0123456789";
/// PUTs in flight while filling the kv object.
const FILL_CONCURRENCY: usize = 64;
/// In quick mode, the 100k migration runs only if the 10k run predicts it takes less than this.
pub const QUICK_100K_BUDGET: Duration = Duration::from_secs(30);

/// Counter writes acknowledged before the failover kill.
const FAILOVER_WRITES: i64 = 10;
/// How often the failover scenario calls B after the kill.
const FAILOVER_POLL_EVERY: Duration = Duration::from_millis(20);
/// Bound for one call while the cluster fails over.
const FAILOVER_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the failover scenario waits for the first success.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// The target from the issue: a killed home's objects take writes again within 3 s.
const FAILOVER_TARGET_MS: f64 = 3_000.0;
/// The target from the issue: forwarded calls at ≥ 0.8× the local throughput.
const FORWARDED_TARGET: f64 = 0.8;

/// Runs every cluster scenario, in order.
pub async fn run(ctx: &Ctx) -> Vec<ScenarioResult> {
    let names = [
        CROSS_STATION,
        REPLICATION_LAG,
        MIGRATION_1K,
        MIGRATION_10K,
        MIGRATION_100K,
        FAILOVER,
    ];
    if !ctx.host_has_flag("--join") {
        return names
            .iter()
            .map(|name| {
                ScenarioResult::skipped(
                    *name,
                    "not available: this host has no `serve --join` (needs a cluster)",
                )
            })
            .collect();
    }
    let mut results = vec![cross_station(ctx).await, replication_lag(ctx).await];
    results.extend(migrations(ctx).await);
    results.push(failover(ctx).await);
    results
}

// ---------------------------------------------------------------------------------------
// Cross-station call vs local

/// Two stations; the load on A (local), then on B (forwarded to A). Measured twice, each on a
/// cluster of its own: with each station's default threads (one per CPU: two stations on this
/// machine then run twice as many threads as it has cores), and with `--workers 1` (the two
/// stations share the machine's cores as if each had its own machine's share). The target is
/// checked on the second, where local and forwarded both run as the stations would in a
/// deployment of one station per machine.
async fn cross_station(ctx: &Ctx) -> ScenarioResult {
    if ctx.tool.is_none() {
        return ScenarioResult::error(
            CROSS_STATION,
            "no load generator: install wrk (apt-get install -y wrk) or oha (cargo install oha --locked)",
        );
    }
    let limit = 4 * (ctx.config.warmup + ctx.config.duration) + Duration::from_secs(240);
    guarded(CROSS_STATION, limit, async {
        let bytes = ctx.require_component("counter")?;
        let mut runs = Vec::new();
        for (n, (label, extra)) in cross_station_configs(ctx).into_iter().enumerate() {
            let mut flags = FAST_GOSSIP.to_vec();
            flags.extend_from_slice(extra);
            let cluster = Cluster::start(ctx, &format!("cross{n}"), 2, &flags).await?;
            let outcome = cross_station_on(ctx, &cluster, &bytes).await;
            let outcome = cluster.explain(outcome);
            let flags = cluster.flags.clone();
            cluster.stop().await;
            runs.push((label, flags, outcome?));
        }
        Ok(cross_station_result(runs))
    })
    .await
}

/// The configurations the cross-station scenario measures: a label for its figures and the
/// flags each station gets. The last one carries the target.
fn cross_station_configs(ctx: &Ctx) -> Vec<(&'static str, &'static [&'static str])> {
    let mut configs = vec![("", &[][..])];
    if ctx.host_has_flag("--workers") {
        configs.push((", one worker per station", &["--workers", "1"][..]));
    }
    configs
}

/// Deploys the counter on A and measures both loads: (local, forwarded).
async fn cross_station_on(
    ctx: &Ctx,
    cluster: &Cluster,
    bytes: &[u8],
) -> anyhow::Result<(LoadResult, LoadResult)> {
    let (a, b) = (cluster.server(0)?, cluster.server(1)?);
    server::deploy(&ctx.client, &a.url, "counter", bytes).await?;
    cluster.wait_routed(ctx, "counter", 0).await?;
    let path = Paths::One("/objects/counter".into());
    let local = super::http::measure(ctx, a, Method::GET, path.clone())
        .await
        .context("load on the home station A (local)")?;
    let forwarded = super::http::measure(ctx, b, Method::GET, path)
        .await
        .context("load on station B (forwarded to A)")?;
    Ok((local, forwarded))
}

/// The figures of every configuration measured, the target on the last.
fn cross_station_result(
    runs: Vec<(&str, Vec<String>, (LoadResult, LoadResult))>,
) -> ScenarioResult {
    let last = runs.len().saturating_sub(1);
    let mut figures = Vec::new();
    let mut details = Vec::new();
    let mut notes = Vec::new();
    for (i, (label, flags, (local, forwarded))) in runs.into_iter().enumerate() {
        let mut ratio = Figure::new(
            format!("forwarded throughput{label}"),
            forwarded.success_rps,
            "req/s",
        )
        .with_baseline(Some(local.success_rps));
        if i == last {
            ratio = ratio.with_target(Target::ratio_at_least(FORWARDED_TARGET, "≥ 0.8× local"));
        }
        figures.extend([
            Figure::new(
                format!("local throughput{label}"),
                local.success_rps,
                "req/s",
            ),
            Figure::new(format!("local latency p50{label}"), local.p50_ms, "ms"),
            Figure::new(format!("local latency p99{label}"), local.p99_ms, "ms"),
            ratio,
            Figure::new(
                format!("forwarded latency p50{label}"),
                forwarded.p50_ms,
                "ms",
            )
            .with_baseline(Some(local.p50_ms)),
            Figure::new(
                format!("forwarded latency p99{label}"),
                forwarded.p99_ms,
                "ms",
            )
            .with_baseline(Some(local.p99_ms)),
        ]);
        for (what, load) in [("local", &local), ("forwarded", &forwarded)] {
            if let Some(note) = load_note(load) {
                notes.push(format!("{what}{label}: {note}"));
            }
        }
        details.push(json!({
            "local": local,
            "forwarded": forwarded,
            "flags": flags,
        }));
    }
    let mut result = ScenarioResult::ok(CROSS_STATION, figures).with_details(json!({
        "runs": details,
        "stations": 2,
        "path": "GET /objects/counter",
        "machine_note": "both stations and the load generator share the machine's cores, so the forwarded figures include B's CPU cost as well as the extra hop",
    }));
    for note in notes {
        result = result.with_note(note);
    }
    result
}

/// A remark for a load that saw failures.
fn load_note(load: &LoadResult) -> Option<String> {
    (load.non_success > 0 || load.socket_errors > 0).then(|| {
        format!(
            "{} of {} responses were not 2xx/3xx, {} socket errors (excluded from throughput)",
            load.non_success, load.requests, load.socket_errors
        )
    })
}

// ---------------------------------------------------------------------------------------
// Replication lag

/// Two stations; paced writes on A, B's applied seq polled.
async fn replication_lag(ctx: &Ctx) -> ScenarioResult {
    let seconds = if ctx.config.quick { 3 } else { 10 };
    let limit = Duration::from_secs(seconds) + LAG_DRAIN + Duration::from_secs(150);
    guarded(REPLICATION_LAG, limit, async {
        let bytes = ctx.require_component("counter")?;
        let cluster = Cluster::start(ctx, "lag", 2, FAST_GOSSIP).await?;
        let outcome = replication_lag_on(ctx, &cluster, &bytes, Duration::from_secs(seconds)).await;
        let outcome = cluster.explain(outcome);
        cluster.stop().await;
        outcome
    })
    .await
}

/// What the replica poller saw: the times B's applied seq grew, and how often it looked.
#[derive(Debug, Default)]
struct PollLog {
    /// (time the answer arrived, applied seq), one entry per increase.
    samples: Vec<(Instant, u64)>,
    polls: u64,
    errors: u64,
    last_error: Option<String>,
    round_trips: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// Runs the writer and the poller on a started cluster and computes the lags.
async fn replication_lag_on(
    ctx: &Ctx,
    cluster: &Cluster,
    bytes: &[u8],
    duration: Duration,
) -> anyhow::Result<ScenarioResult> {
    let (a, b) = (cluster.url(0), cluster.url(1));
    server::deploy(&ctx.client, a, "counter", bytes).await?;
    cluster.wait_routed(ctx, "counter", 0).await?;
    // One write first: the instance is warm and replication to B flows before the clock runs.
    post_counter(ctx, a, Duration::from_secs(10)).await?;
    cluster.wait_caught_up(ctx, "counter", 0, &[1]).await?;
    let s0 = position(ctx, a, "counter").await?.applied_seq;
    let c0 = counter_value(ctx, a).await?;

    let until = Arc::new(AtomicU64::new(u64::MAX));
    let mut poller = tokio::task::JoinSet::new();
    poller.spawn(poll_applied(
        ctx.client.clone(),
        b.to_string(),
        until.clone(),
        Instant::now() + duration + LAG_DRAIN + Duration::from_secs(30),
    ));

    // The writer: one write due per tick of a 1 ms interval, sent at once while fewer than
    // LAG_IN_FLIGHT are in flight, else as soon as one returns (counted as late), so the
    // schedule holds through a short stall.
    let period = Duration::from_secs_f64(1.0 / LAG_RATE as f64);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let end = started + duration;
    let mut in_flight = FuturesUnordered::new();
    let (mut acks, mut latencies) = (Vec::new(), Vec::new());
    let (mut due, mut sent, mut late, mut failed) = (0u64, 0u64, 0u64, 0u64);
    let mut last_failure = None;
    loop {
        let ticked = tokio::select! {
            _ = tick.tick(), if Instant::now() < end => {
                due += 1;
                true
            }
            Some((at, answer)) = in_flight.next(), if !in_flight.is_empty() => {
                match answer {
                    Ok((count, acked)) => {
                        acks.push((count, acked));
                        latencies.push(acked - at);
                    }
                    Err(e) => {
                        failed += 1;
                        last_failure = Some(format!("{e:#}"));
                    }
                }
                false
            }
            else => break,
        };
        while due > 0 && in_flight.len() < LAG_IN_FLIGHT {
            due -= 1;
            sent += 1;
            if !ticked {
                late += 1;
            }
            in_flight.push(async {
                let at = Instant::now();
                (at, post_counter(ctx, a, Duration::from_secs(10)).await)
            });
        }
    }
    let writing = acks
        .iter()
        .map(|(_, at)| *at)
        .max()
        .unwrap_or(end)
        .saturating_duration_since(started);
    if acks.is_empty() {
        bail!("no write was acknowledged ({sent} sent; last failure: {last_failure:?})");
    }

    // Map counts to seqs, and check the mapping against the home's applied seq.
    let c_end = counter_value(ctx, a).await?;
    let s_end = position(ctx, a, "counter").await?.applied_seq;
    if s_end.checked_sub(s0) != u64::try_from(c_end - c0).ok() {
        bail!(
            "one seq per counter POST does not hold: the count went {c0} → {c_end} while A's applied seq went {s0} → {s_end}"
        );
    }
    until.store(s_end, Ordering::Release);
    let polled = match poller.join_next().await {
        Some(Ok(log)) => log,
        Some(Err(e)) => bail!("the replica poller failed: {e}"),
        None => bail!("the replica poller is gone"),
    };

    let mut lags = Vec::with_capacity(acks.len());
    let (mut clamped, mut missing) = (0usize, 0usize);
    for (count, acked) in &acks {
        let seq = s0 + (count - c0) as u64;
        let i = polled.samples.partition_point(|(_, s)| *s < seq);
        match polled.samples.get(i) {
            Some((seen, _)) => {
                if seen < acked {
                    clamped += 1;
                }
                lags.push(seen.saturating_duration_since(*acked).as_secs_f64() * 1e3);
            }
            None => missing += 1,
        }
    }
    if missing > 0 {
        bail!(
            "B never showed the seq of {missing} of {} acknowledged writes within {LAG_DRAIN:?} (last applied seq seen {:?}, A at {s_end}; poll errors {}, last {:?})",
            acks.len(),
            polled.samples.last().map(|(_, s)| s),
            polled.errors,
            polled.last_error
        );
    }
    lags.sort_by(f64::total_cmp);
    latencies.sort();
    let poll_span = match (polled.first, polled.last) {
        (Some(first), Some(last)) => last - first,
        _ => Duration::ZERO,
    };
    let poll_interval_ms = poll_span.as_secs_f64() * 1e3 / polled.polls.max(1) as f64;
    let rate = acks.len() as f64 / writing.as_secs_f64().max(1e-9);
    let latency_ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    let mut result = ScenarioResult::ok(
        REPLICATION_LAG,
        vec![
            Figure::new("lag p50", percentile(&lags, 0.50), "ms"),
            Figure::new("lag p99", percentile(&lags, 0.99), "ms"),
            Figure::new("lag max", percentile(&lags, 1.0), "ms"),
            Figure::new("achieved write rate", rate, "writes/s"),
        ],
    )
    .with_details(json!({
        "requested_rate_per_s": LAG_RATE,
        "seconds": duration.as_secs_f64(),
        "max_in_flight": LAG_IN_FLIGHT,
        "sent": sent,
        "acknowledged": acks.len(),
        "failed": failed,
        "last_failure": last_failure,
        "sent_late_all_in_flight": late,
        "write_latency_ms": {
            "p50": percentile(&latency_ms, 0.50),
            "p99": percentile(&latency_ms, 0.99),
            "max": percentile(&latency_ms, 1.0),
        },
        "lag_clamped_to_zero": clamped,
        "lag_definition": "time B's applied seq was first seen at or past the write's seq (poll answer received) minus the time A's 200 was received; clamped at 0",
        "seq_mapping": {"s0": s0, "c0": c0, "final_seq": s_end, "final_count": c_end},
        "poll": {
            "target_interval_ms": LAG_POLL_EVERY.as_secs_f64() * 1e3,
            "mean_interval_ms": poll_interval_ms,
            "mean_round_trip_ms": polled.round_trips.as_secs_f64() * 1e3 / polled.polls.max(1) as f64,
            "polls": polled.polls,
            "errors": polled.errors,
            "last_error": polled.last_error,
        },
        "replicas": 1,
        "sync_replicas": 0,
        "flags": cluster.flags,
    }));
    result = result.with_note(format!(
        "lag resolution is the replica poll interval, {poll_interval_ms:.2} ms on average; \
         B had applied {clamped} of {} writes before A's answer arrived (lag 0)",
        acks.len()
    ));
    if failed > 0 || late > 0 {
        result = result.with_note(format!(
            "{failed} writes failed; {late} were sent late, with {LAG_IN_FLIGHT} writes in flight"
        ));
    }
    Ok(result)
}

/// Reads B's applied seq of `counter` about every [`LAG_POLL_EVERY`] until it reaches `until`
/// (unknown, `u64::MAX`, while the writer runs) or `deadline`.
async fn poll_applied(
    client: reqwest::Client,
    url: String,
    until: Arc<AtomicU64>,
    deadline: Instant,
) -> PollLog {
    let path = format!("{url}/cluster/internal/objects/counter/position");
    let mut log = PollLog::default();
    let mut seen = 0;
    // An interval keeps the 1 ms cadence (a sleep per poll rounds up to the timer's next
    // millisecond and makes it ~2 ms); a poll that overran is followed at once by the next.
    let mut tick = tokio::time::interval(LAG_POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let sent = Instant::now();
        let answer = async {
            client
                .get(&path)
                .timeout(Duration::from_secs(2))
                .send()
                .await?
                .error_for_status()?
                .json::<Position>()
                .await
        }
        .await;
        let at = Instant::now();
        log.polls += 1;
        log.round_trips += at - sent;
        log.first.get_or_insert(sent);
        log.last = Some(at);
        match answer {
            Ok(p) if p.applied_seq > seen => {
                seen = p.applied_seq;
                log.samples.push((at, seen));
            }
            Ok(_) => {}
            Err(e) => {
                log.errors += 1;
                log.last_error = Some(e.to_string());
            }
        }
        if seen >= until.load(Ordering::Acquire) || at >= deadline {
            return log;
        }
    }
}

/// `POST /objects/counter`: the count it answers and when the answer arrived.
async fn post_counter(ctx: &Ctx, url: &str, timeout: Duration) -> anyhow::Result<(i64, Instant)> {
    let response = ctx
        .client
        .post(format!("{url}/objects/counter"))
        .timeout(timeout)
        .send()
        .await
        .context("POST /objects/counter")?;
    let status = response.status();
    let body = response.bytes().await.context("POST /objects/counter")?;
    let at = Instant::now();
    if !status.is_success() {
        bail!(
            "POST /objects/counter: {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok((count_of(&body)?, at))
}

/// `GET /objects/counter`: the count.
async fn counter_value(ctx: &Ctx, url: &str) -> anyhow::Result<i64> {
    let v = get_json(ctx, url, "/objects/counter").await?;
    v["count"]
        .as_i64()
        .ok_or_else(|| anyhow!("GET /objects/counter answered {v}, without a count"))
}

/// The `count` of a counter answer.
fn count_of(body: &[u8]) -> anyhow::Result<i64> {
    let v: Value = serde_json::from_slice(body).with_context(|| {
        format!(
            "the counter answered {:?}, not JSON",
            String::from_utf8_lossy(body)
        )
    })?;
    v["count"]
        .as_i64()
        .ok_or_else(|| anyhow!("the counter answered {v}, without a count"))
}

// ---------------------------------------------------------------------------------------
// Migration pause

/// The three migration scenarios, on one cluster of two stations.
async fn migrations(ctx: &Ctx) -> Vec<ScenarioResult> {
    let names = [MIGRATION_1K, MIGRATION_10K, MIGRATION_100K];
    let all_failed = |message: String| {
        names
            .iter()
            .map(|name| ScenarioResult::error(*name, message.clone()))
            .collect::<Vec<_>>()
    };
    let bytes = match ctx.require_component("kv") {
        Ok(bytes) => bytes,
        Err(e) => return all_failed(format!("{e:#}")),
    };
    eprintln!("bench: starting two stations for the migration scenarios …");
    let cluster = match Cluster::start(ctx, "migrate", 2, FAST_GOSSIP).await {
        Ok(cluster) => cluster,
        Err(e) => return all_failed(format!("{e:#}")),
    };
    let case = async |name: &'static str, id: &'static str, keys: usize, target, limit| {
        let case = MigrationCase {
            name,
            id,
            keys,
            target,
        };
        guarded(name, Duration::from_secs(limit), async {
            cluster.explain(migration(ctx, &cluster, &bytes, case).await)
        })
        .await
    };
    let mut results = vec![case(MIGRATION_1K, "kv-1k", 1_000, None, 120).await];
    let target = Target::below(100.0, "< 100 ms");
    let ten_k = case(MIGRATION_10K, "kv-10k", 10_000, Some(target), 240).await;
    let ten_k_seconds =
        matches!(ten_k.outcome, crate::report::Outcome::Ok).then_some(ten_k.seconds);
    results.push(ten_k);
    // 100k keys: always in a full run; in a quick run only if the 10k run says it is short.
    let predicted = ten_k_seconds.map(|s| Duration::from_secs_f64(s * 10.0));
    let skip = match predicted {
        _ if !ctx.config.quick => None,
        Some(p) if p < QUICK_100K_BUDGET => None,
        Some(p) => Some(format!(
            "full run only (the 10k run predicts ~{:.0} s, over the quick budget of {} s)",
            p.as_secs_f64(),
            QUICK_100K_BUDGET.as_secs()
        )),
        None => Some("full run only (the 10k run failed, so no estimate)".to_string()),
    };
    results.push(match skip {
        Some(reason) => ScenarioResult::skipped(MIGRATION_100K, reason),
        None => case(MIGRATION_100K, "kv-100k", 100_000, None, 900).await,
    });
    cluster.stop().await;
    results
}

/// One migration scenario: its name, the kv object's id, how many keys, and the target.
struct MigrationCase {
    name: &'static str,
    id: &'static str,
    keys: usize,
    target: Option<Target>,
}

/// Deploys kv on A, fills the keys, waits until B holds them, migrates to B, and reads the
/// first and last key back through B.
async fn migration(
    ctx: &Ctx,
    cluster: &Cluster,
    bytes: &[u8],
    case: MigrationCase,
) -> anyhow::Result<ScenarioResult> {
    let MigrationCase {
        name,
        id,
        keys,
        target,
    } = case;
    let (a, b) = (cluster.url(0), cluster.url(1));
    server::deploy(&ctx.client, a, id, bytes).await?;
    cluster.wait_routed(ctx, id, 0).await?;
    let fill = fill_kv(ctx, a, id, keys).await?;
    let caught_up_at = Instant::now();
    let seq = cluster.wait_caught_up(ctx, id, 0, &[1]).await?;
    let catch_up = caught_up_at.elapsed();

    // B's id, as the migration names it.
    let info = get_json(ctx, b, "/cluster/info").await?;
    let target_station = info["station_id"]
        .as_str()
        .ok_or_else(|| anyhow!("GET /cluster/info on B answered {info}, without station_id"))?
        .to_string();
    let started = Instant::now();
    let (status, report) = send_json(
        ctx,
        Method::POST,
        a,
        "/cluster/migrate",
        &json!({"object_id": id, "target_station": target_station}),
        Duration::from_secs(600),
    )
    .await?;
    let wall = started.elapsed();
    if status != 200 {
        bail!("POST /cluster/migrate answered {status}: {report}");
    }
    let pause_ms = report["pause_ms"]
        .as_f64()
        .ok_or_else(|| anyhow!("the migration answer has no pause_ms: {report}"))?;
    let moved = report["bytes"]
        .as_u64()
        .ok_or_else(|| anyhow!("the migration answer has no bytes: {report}"))?;

    // The data is there: a key through B (its new home) answers 200 with its value.
    let mut verified = Vec::new();
    for i in [0, keys - 1] {
        let path = format!("/objects/{id}/{}", kv_key(i));
        let (status, v) = send_json(
            ctx,
            Method::GET,
            b,
            &path,
            &Value::Null,
            Duration::from_secs(30),
        )
        .await?;
        if status != 200 || v["value"] != MIGRATION_VALUE {
            bail!("after the migration, GET {path} through B answered {status}: {v}");
        }
        verified.push(json!({"path": path, "status": status, "value": v["value"]}));
    }
    let mut figure = Figure::new("pause", pause_ms, "ms");
    if let Some(target) = target {
        figure = figure.with_target(target);
    }
    let mut result = ScenarioResult::ok(
        name,
        vec![
            figure,
            Figure::new("bytes moved", moved as f64 / 1024.0, "KiB"),
            Figure::new("migration wall time", wall.as_secs_f64() * 1e3, "ms"),
        ],
    )
    .with_details(json!({
        "keys": keys,
        "value_bytes": MIGRATION_VALUE.len(),
        "fill_seconds": fill.as_secs_f64(),
        "fill_rate_per_s": keys as f64 / fill.as_secs_f64().max(1e-9),
        "fill_concurrency": FILL_CONCURRENCY,
        "replica_caught_up_ms": catch_up.as_secs_f64() * 1e3,
        "applied_seq_before": seq,
        "report": report,
        "client_wall_ms": wall.as_secs_f64() * 1e3,
        "verified_through_b": verified,
        "flags": cluster.flags,
    }));
    if report["keys"].as_u64() != Some(keys as u64) {
        result = result.with_note(format!(
            "the migration answer reports {} keys moved, {keys} were written",
            report["keys"]
        ));
    }
    if report["to"].as_str() != Some(target_station.as_str()) {
        result = result.with_note(format!(
            "the migration answer names {} as the new home, asked for {target_station}",
            report["to"]
        ));
    }
    Ok(result)
}

/// The key of the `i`th value written.
fn kv_key(i: usize) -> String {
    format!("k{i:06}")
}

/// `PUT /objects/{id}/k{i}` for every i below `keys`, [`FILL_CONCURRENCY`] at a time.
async fn fill_kv(ctx: &Ctx, url: &str, id: &str, keys: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut puts = futures::stream::iter(0..keys)
        .map(|i| {
            let path = format!("/objects/{id}/{}", kv_key(i));
            async move {
                let response = ctx
                    .client
                    .put(format!("{url}{path}"))
                    .body(MIGRATION_VALUE)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .with_context(|| format!("PUT {path}"))?;
                let status = response.status();
                let body = response.bytes().await.unwrap_or_default();
                if !status.is_success() {
                    bail!("PUT {path}: {status}: {}", String::from_utf8_lossy(&body));
                }
                Ok(())
            }
        })
        .buffer_unordered(FILL_CONCURRENCY);
    while let Some(put) = puts.next().await {
        put?;
    }
    Ok(started.elapsed())
}

// ---------------------------------------------------------------------------------------
// Failover

/// One failover repetition.
#[derive(Debug, Serialize)]
struct FailoverRun {
    /// Kill → first 200, ms.
    first_success_ms: f64,
    /// Writes acknowledged before the kill.
    acknowledged: i64,
    /// The count the first successful POST answered (it includes itself).
    count_after: i64,
    /// The stations' ids, by name (A is killed).
    stations: std::collections::BTreeMap<&'static str, String>,
    /// The station B lists as the object's home afterwards, and its epoch.
    new_home: Value,
    new_epoch: Value,
    /// Calls made after the kill, and how the failed ones answered.
    attempts: u64,
    failures: std::collections::BTreeMap<String, u64>,
}

/// Repetitions of a failover, each on a fresh cluster of three stations.
async fn failover(ctx: &Ctx) -> ScenarioResult {
    // Three even in quick mode: one kill is too noisy a figure to hold against a target.
    let reps = if ctx.config.quick { 3 } else { 5 };
    let limit = Duration::from_secs(150 * reps as u64);
    guarded(FAILOVER, limit, async {
        let bytes = ctx.require_component("counter")?;
        let mut runs = Vec::new();
        for rep in 0..reps {
            let flags = ["--sync-replicas", "1"];
            let mut cluster = Cluster::start(ctx, &format!("failover{rep}"), 3, &flags).await?;
            let outcome = failover_once(ctx, &mut cluster, &bytes).await;
            let outcome = cluster.explain(outcome);
            cluster.stop().await;
            runs.push(outcome.with_context(|| format!("repetition {}", rep + 1))?);
        }
        let times: Vec<Duration> = runs
            .iter()
            .map(|r| Duration::from_secs_f64(r.first_success_ms / 1e3))
            .collect();
        Ok(ScenarioResult::ok(
            FAILOVER,
            vec![
                Figure::new("kill -9 → first success", median_ms(&times), "ms")
                    .with_target(Target::below(FAILOVER_TARGET_MS, "< 3 s")),
            ],
        )
        .with_details(json!({
            "repetitions": reps,
            "first_success_ms": as_ms(&times),
            "runs": runs,
            "stations": 3,
            "flags": ["--sync-replicas", "1"],
            "failure_detection": "defaults: --gossip-interval-ms 500, --phi-threshold 8",
            "poll": format!("POST /objects/counter through B every {} ms, {} s timeout per call", FAILOVER_POLL_EVERY.as_millis(), FAILOVER_CALL_TIMEOUT.as_secs()),
        })))
    })
    .await
}

/// One failover: writes on A, replicas caught up, SIGKILL to A, POSTs through B until a 200.
async fn failover_once(
    ctx: &Ctx,
    cluster: &mut Cluster,
    bytes: &[u8],
) -> anyhow::Result<FailoverRun> {
    let (a, b) = (cluster.url(0).to_string(), cluster.url(1).to_string());
    server::deploy(&ctx.client, &a, "counter", bytes).await?;
    cluster.wait_routed(ctx, "counter", 0).await?;
    for n in 1..=FAILOVER_WRITES {
        let (count, _) = post_counter(ctx, &a, Duration::from_secs(10)).await?;
        if count != n {
            bail!("write {n} on A answered count {count}");
        }
    }
    cluster.wait_caught_up(ctx, "counter", 0, &[1, 2]).await?;

    let home = cluster.take(0)?;
    let killed = Instant::now();
    home.kill().await;
    let mut attempts = 0u64;
    let mut failures = std::collections::BTreeMap::new();
    let (count_after, first) = loop {
        let sent = Instant::now();
        attempts += 1;
        let answer = post_counter(ctx, &b, FAILOVER_CALL_TIMEOUT).await;
        match answer {
            Ok((count, at)) => break (count, at - killed),
            Err(e) => *failures.entry(failure_kind(&e)).or_insert(0) += 1,
        }
        if killed.elapsed() > FAILOVER_TIMEOUT {
            bail!(
                "no 200 from B within {FAILOVER_TIMEOUT:?} of the kill ({attempts} calls: {failures:?})"
            );
        }
        tokio::time::sleep_until((sent + FAILOVER_POLL_EVERY).into()).await;
    };
    if count_after < FAILOVER_WRITES + 1 {
        bail!(
            "acknowledged writes were lost: the first POST after the failover answered count {count_after}, after {FAILOVER_WRITES} acknowledged writes (expected at least {})",
            FAILOVER_WRITES + 1
        );
    }
    let entry = get_json(ctx, &b, "/objects")
        .await?
        .get("objects")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|o| o["id"] == "counter").cloned())
        .unwrap_or(Value::Null);
    Ok(FailoverRun {
        first_success_ms: first.as_secs_f64() * 1e3,
        acknowledged: FAILOVER_WRITES,
        count_after,
        stations: ["A", "B", "C"]
            .into_iter()
            .zip(cluster.ids.clone())
            .collect(),
        new_home: entry["home"].clone(),
        new_epoch: entry["epoch"].clone(),
        attempts,
        failures,
    })
}

/// A short class of a failed call, for counting: the status and error code, or the transport
/// error.
fn failure_kind(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    if let Some(rest) = text
        .strip_prefix("POST /objects/counter: ")
        .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    {
        // "503 Service Unavailable: {"error":"home_unavailable",…}"
        let status = rest.split(':').next().unwrap_or(rest).trim();
        let code = rest
            .split_once(": ")
            .and_then(|(_, body)| serde_json::from_str::<Value>(body).ok())
            .and_then(|v| v["error"].as_str().map(str::to_string));
        return match code {
            Some(code) => format!("{status} {code}"),
            None => status.to_string(),
        };
    }
    if text.contains("timed out") || text.contains("operation timed out") {
        "timed out".into()
    } else if text.contains("onnection refused") {
        "connection refused".into()
    } else {
        text.chars().take(80).collect()
    }
}

// ---------------------------------------------------------------------------------------
// A cluster of stations

/// Stations joined into one cluster, all seeded with the first one's address. [`Cluster::stop`]
/// stops every station still running.
struct Cluster {
    stations: Vec<Option<Server>>,
    urls: Vec<String>,
    ids: Vec<String>,
    flags: Vec<String>,
}

impl Cluster {
    /// Starts `n` stations on fresh data dirs with `flags`, the second and later with `--join`
    /// the first, and waits until each is ready and lists `n` alive stations.
    async fn start(ctx: &Ctx, label: &str, n: usize, flags: &[&str]) -> anyhow::Result<Cluster> {
        let mut stations: Vec<Server> = Vec::new();
        let joined = async {
            for i in 0..n {
                let data = ctx.fresh_dir(&format!("{label}-{i}-"))?;
                let mut extra: Vec<OsString> = flags.iter().map(OsString::from).collect();
                if let Some(seed) = stations.first() {
                    extra.push("--join".into());
                    extra.push(seed.address().into());
                }
                let log = ctx.log_path(&format!("{label}-station{i}"));
                let station =
                    Server::station_with(&ctx.config.host, &data, DURABILITY, &extra, &log)
                        .await
                        .with_context(|| format!("starting station {i} of the {label} cluster"))?;
                stations.push(station);
            }
            wait_joined(ctx, &stations).await
        }
        .await;
        match joined {
            Ok(ids) => Ok(Cluster {
                urls: stations.iter().map(|s| s.url.clone()).collect(),
                stations: stations.into_iter().map(Some).collect(),
                ids,
                flags: flags.iter().map(|f| f.to_string()).collect(),
            }),
            Err(e) => {
                let tails = stderr_tails(stations.iter());
                for station in stations {
                    station.stop().await;
                }
                Err(anyhow!("{e:#}; {tails}"))
            }
        }
    }

    /// The running station `i`.
    fn server(&self, i: usize) -> anyhow::Result<&Server> {
        self.stations
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| anyhow!("station {i} is not running"))
    }

    /// The URL of station `i` (`http://127.0.0.1:PORT`).
    fn url(&self, i: usize) -> &str {
        &self.urls[i]
    }

    /// Takes station `i` out of the cluster's care (to kill it).
    fn take(&mut self, i: usize) -> anyhow::Result<Server> {
        self.stations
            .get_mut(i)
            .and_then(Option::take)
            .ok_or_else(|| anyhow!("station {i} is not running"))
    }

    /// Adds the stations' last stderr lines to an error.
    fn explain<T>(&self, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
        outcome.map_err(|e| anyhow!("{e:#}; {}", stderr_tails(self.stations.iter().flatten())))
    }

    /// Stops every station still running.
    async fn stop(self) {
        for station in self.stations.into_iter().flatten() {
            station.stop().await;
        }
    }

    /// Waits until every running station routes object `id` to station `home`.
    async fn wait_routed(&self, ctx: &Ctx, id: &str, home: usize) -> anyhow::Result<()> {
        let home_id = &self.ids[home];
        for (i, url) in self.urls.iter().enumerate() {
            if self.stations[i].is_none() {
                continue;
            }
            poll(
                &format!("{url} to list object {id} homed on {home_id}"),
                async || {
                    let v = get_json(ctx, url, "/objects").await.map_err(text)?;
                    let entry = v["objects"]
                        .as_array()
                        .and_then(|a| a.iter().find(|o| o["id"] == id));
                    match entry {
                        Some(e) if e["home"] == home_id.as_str() => Ok(()),
                        other => Err(format!("entry {other:?}")),
                    }
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Waits until stations `replicas` hold `id` as replicas of station `home` at its applied
    /// seq; returns that seq.
    async fn wait_caught_up(
        &self,
        ctx: &Ctx,
        id: &str,
        home: usize,
        replicas: &[usize],
    ) -> anyhow::Result<u64> {
        let home_id = &self.ids[home];
        poll(
            &format!("the replicas of {id} to reach the applied seq of its home"),
            async || {
                let h = position(ctx, &self.urls[home], id).await.map_err(text)?;
                if h.role.as_deref() != Some("home") {
                    return Err(format!("the home holds it as {h:?}"));
                }
                for r in replicas {
                    let p = position(ctx, &self.urls[*r], id).await.map_err(text)?;
                    if p.role.as_deref() != Some("replica")
                        || p.home != *home_id
                        || p.applied_seq != h.applied_seq
                    {
                        return Err(format!(
                            "home at seq {}, station {r} at {p:?}",
                            h.applied_seq
                        ));
                    }
                }
                Ok(h.applied_seq)
            },
        )
        .await
    }
}

/// Waits until each station answers `/health` ready and lists all of them alive; returns their
/// ids (from `/cluster/info`).
async fn wait_joined(ctx: &Ctx, stations: &[Server]) -> anyhow::Result<Vec<String>> {
    let n = stations.len();
    let mut ids = Vec::new();
    for station in stations {
        let url = &station.url;
        let id = poll(
            &format!("{url} to be ready and list {n} alive stations"),
            async || {
                let (_, health) = send_json(
                    ctx,
                    Method::GET,
                    url,
                    "/health",
                    &Value::Null,
                    Duration::from_secs(5),
                )
                .await
                .map_err(text)?;
                if health["ready"] != true {
                    return Err(format!("/health answered {health}"));
                }
                let v = get_json(ctx, url, "/cluster/stations")
                    .await
                    .map_err(text)?;
                let alive = v["stations"]
                    .as_array()
                    .map_or(0, |a| a.iter().filter(|m| m["state"] == "alive").count());
                if alive < n {
                    return Err(format!("/cluster/stations lists {alive} alive: {v}"));
                }
                let info = get_json(ctx, url, "/cluster/info").await.map_err(text)?;
                info["station_id"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("/cluster/info without station_id: {info}"))
            },
        )
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

/// The last stderr lines of some stations, on one line.
fn stderr_tails<'a>(stations: impl Iterator<Item = &'a Server>) -> String {
    let tails: Vec<String> = stations
        .map(|s| format!("{} stderr: {}", s.url, s.stderr_tail()))
        .collect();
    tails.join("; ")
}

// ---------------------------------------------------------------------------------------
// HTTP helpers

/// `GET /cluster/internal/objects/{id}/position`.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct Position {
    role: Option<String>,
    epoch: u64,
    home: String,
    applied_seq: u64,
}

/// The position of object `id` on the station at `url`.
async fn position(ctx: &Ctx, url: &str, id: &str) -> anyhow::Result<Position> {
    let v = get_json(
        ctx,
        url,
        &format!("/cluster/internal/objects/{id}/position"),
    )
    .await?;
    serde_json::from_value(v.clone()).with_context(|| format!("position of {id}: {v}"))
}

/// `GET path`, which must answer 2xx with JSON.
async fn get_json(ctx: &Ctx, url: &str, path: &str) -> anyhow::Result<Value> {
    let (status, v) = send_json(
        ctx,
        Method::GET,
        url,
        path,
        &Value::Null,
        Duration::from_secs(10),
    )
    .await?;
    if !(200..300).contains(&status) {
        bail!("GET {path} on {url} answered {status}: {v}");
    }
    Ok(v)
}

/// `METHOD path` with a JSON body (none for `Null`): the status and the JSON answer (a string
/// when the answer is not JSON).
async fn send_json(
    ctx: &Ctx,
    method: Method,
    url: &str,
    path: &str,
    body: &Value,
    timeout: Duration,
) -> anyhow::Result<(u16, Value)> {
    let mut request = ctx
        .client
        .request(method.clone(), format!("{url}{path}"))
        .timeout(timeout);
    if !body.is_null() {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{method} {path} on {url}"))?;
    let status = response.status().as_u16();
    let bytes = response
        .bytes()
        .await
        .with_context(|| format!("{method} {path} on {url}: reading the answer"))?;
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, v))
}

/// An error as one line.
fn text(e: anyhow::Error) -> String {
    format!("{e:#}")
}

/// Calls `check` every [`POLL_PAUSE`] until it answers `Ok`, for at most [`CONVERGE_TIMEOUT`];
/// `Err` says what it saw, for the timeout message.
async fn poll<T>(
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let last = match check().await {
            Ok(v) => return Ok(v),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            bail!("timed out after {CONVERGE_TIMEOUT:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(POLL_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classed() {
        let e = anyhow!(
            "POST /objects/counter: 503 Service Unavailable: {{\"error\":\"home_unavailable\",\"message\":\"x\"}}"
        );
        assert_eq!(failure_kind(&e), "503 Service Unavailable home_unavailable");
        let e = anyhow!("POST /objects/counter: 502 Bad Gateway: oops");
        assert_eq!(failure_kind(&e), "502 Bad Gateway");
        let e = anyhow!("connection refused").context("POST /objects/counter");
        assert_eq!(failure_kind(&e), "connection refused");
    }
}
