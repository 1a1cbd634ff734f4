//! RSS of a station with many deployed objects.
//!
//! One station (`--durability none`, fresh data dir) gets the hello component deployed under
//! 1,000 ids, then under up to 10,000, with concurrent PUTs; VmRSS is read from /proc/PID/status
//! after each step. Then 1,000 of the objects are called once each (every call creates a live
//! instance) and RSS is read again. Deploys are bounded by a time budget: if 10,000 are not reached
//! in time, the scenario reports how far it got and extrapolates linearly, and says so.
//!
//! The target is on RSS, as the issue states it. RSS counts a file-backed page once per mapping,
//! so compiled artifacts mmapped once per object inflate it; the anonymous part and PSS
//! (smaps_rollup, shared pages counted once) are reported next to it.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use reqwest::Method;

use super::http::{call_many, deploy_many};
use super::{Ctx, guarded, median_ms};
use crate::report::{Figure, ScenarioResult, Target, format_number};
use crate::server::Server;

/// Scenario name.
pub const RSS: &str = "RSS with many deployed objects (hello)";

const FIRST: usize = 1_000;
const TOTAL: usize = 10_000;
const CALLED: usize = 1_000;
const CONCURRENCY: usize = 16;
const CHUNK: usize = 250;

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> Vec<ScenarioResult> {
    let budget = ctx.config.deploy_budget;
    let limit = budget + Duration::from_secs(180);
    vec![guarded(RSS, limit, measure(ctx, budget)).await]
}

async fn measure(ctx: &Ctx, budget: Duration) -> anyhow::Result<ScenarioResult> {
    let bytes = ctx.require_component("hello")?;
    let data = ctx.fresh_dir("rss-")?;
    let station = Server::station(&ctx.config.host, &data, "none", &ctx.log_path("rss")).await?;
    let result = steps(ctx, &station, &bytes, budget).await;
    station.stop().await;
    result
}

/// Scrapes of `GET /metrics` timed after the deploys.
const SCRAPES: usize = 5;
/// The bound on one scrape with 10,000 objects deployed.
const SCRAPE_TARGET_MS: f64 = 100.0;

/// Times [`SCRAPES`] scrapes of `GET /metrics`: the median in ms and the exposition's bytes.
async fn scrape_metrics(ctx: &Ctx, url: &str) -> anyhow::Result<(f64, usize)> {
    let mut times = Vec::with_capacity(SCRAPES);
    let mut bytes = 0;
    for _ in 0..SCRAPES {
        let started = Instant::now();
        let response = ctx
            .client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .context("GET /metrics")?;
        anyhow::ensure!(
            response.status().is_success(),
            "GET /metrics answered {}",
            response.status()
        );
        bytes = response.bytes().await.context("reading /metrics")?.len();
        times.push(started.elapsed());
    }
    Ok((median_ms(&times), bytes))
}

async fn steps(
    ctx: &Ctx,
    station: &Server,
    bytes: &[u8],
    budget: Duration,
) -> anyhow::Result<ScenarioResult> {
    let ids: Vec<String> = (0..TOTAL).map(|i| format!("o{i}")).collect();
    let idle = station.memory()?;

    let started = Instant::now();
    deploy_many(ctx, &station.url, &ids[..FIRST], bytes, CONCURRENCY).await?;
    let first_secs = started.elapsed().as_secs_f64();
    let at_first = station.memory()?;

    // The rest, chunk by chunk, while the budget lasts.
    let mut deployed = FIRST;
    while deployed < TOTAL && started.elapsed() < budget {
        let end = (deployed + CHUNK).min(TOTAL);
        deploy_many(ctx, &station.url, &ids[deployed..end], bytes, CONCURRENCY).await?;
        deployed = end;
    }
    let deploy_secs = started.elapsed().as_secs_f64();
    let at_total = station.memory()?;

    let called_at = Instant::now();
    call_many(ctx, &station.url, Method::GET, &ids[..CALLED], CONCURRENCY).await?;
    let call_secs = called_at.elapsed().as_secs_f64();
    let after_calls = station.memory()?;
    let (scrape_ms, scrape_bytes) = scrape_metrics(ctx, &station.url).await?;

    let mut figures = vec![
        Figure::new("RSS, idle station", idle.rss_mib(), "MiB"),
        Figure::new("RSS, 1,000 deployed", at_first.rss_mib(), "MiB"),
    ];
    let per_object_kib = if deployed > FIRST {
        (at_total.vm_rss_kib as f64 - at_first.vm_rss_kib as f64) / (deployed - FIRST) as f64
    } else {
        (at_first.vm_rss_kib as f64 - idle.vm_rss_kib as f64) / FIRST as f64
    };
    let target = Target::below(1024.0, "< 1 GiB");
    let mut notes = Vec::new();
    if deployed == TOTAL {
        figures.push(
            Figure::new("RSS, 10,000 deployed", at_total.rss_mib(), "MiB").with_target(target),
        );
    } else {
        let extrapolated = at_total.rss_mib() + per_object_kib * (TOTAL - deployed) as f64 / 1024.0;
        figures.push(Figure::new(
            format!(
                "RSS, {} deployed (budget hit)",
                format_number(deployed as f64)
            ),
            at_total.rss_mib(),
            "MiB",
        ));
        figures.push(
            Figure::new("RSS, 10,000 deployed (extrapolated)", extrapolated, "MiB")
                .with_target(target),
        );
        let rate = deployed as f64 / deploy_secs;
        notes.push(format!(
            "deploying stopped at {} objects after {deploy_secs:.0} s (budget {:.0} s); \
             at {rate:.0} deploys/s, 10,000 would take {:.0} s; the 10,000 figure is extrapolated \
             at {per_object_kib:.1} KiB per object",
            format_number(deployed as f64),
            budget.as_secs_f64(),
            TOTAL as f64 / rate
        ));
    }
    figures.push(Figure::new(
        format!(
            "  of which anonymous, {} deployed",
            format_number(deployed as f64)
        ),
        at_total.anon_mib(),
        "MiB",
    ));
    figures.push(Figure::new(
        format!("PSS, {} deployed", format_number(deployed as f64)),
        at_total.pss_mib(),
        "MiB",
    ));
    figures.push(Figure::new(
        format!(
            "RSS, {} deployed + 1,000 called once",
            format_number(deployed as f64)
        ),
        after_calls.rss_mib(),
        "MiB",
    ));
    figures.push(Figure::new(
        "RSS per deployed object",
        per_object_kib,
        "KiB",
    ));
    figures.push(Figure::new(
        "RSS per live instance",
        (after_calls.vm_rss_kib as f64 - at_total.vm_rss_kib as f64) / CALLED as f64,
        "KiB",
    ));
    let scrape = Figure::new(
        format!(
            "GET /metrics scrape, {} deployed (median of {SCRAPES})",
            format_number(deployed as f64)
        ),
        scrape_ms,
        "ms",
    );
    figures.push(if deployed == TOTAL {
        scrape.with_target(Target::below(SCRAPE_TARGET_MS, "< 100 ms"))
    } else {
        scrape
    });
    figures.push(Figure::new(
        "  exposition size",
        scrape_bytes as f64 / 1024.0,
        "KiB",
    ));
    figures.push(Figure::new(
        "deploy rate, first 1,000",
        FIRST as f64 / first_secs,
        "deploys/s",
    ));
    figures.push(Figure::new(
        "deploy rate, overall",
        deployed as f64 / deploy_secs,
        "deploys/s",
    ));
    let mut result = ScenarioResult::ok(RSS, figures).with_details(serde_json::json!({
        "deployed": deployed,
        "deploy_seconds": deploy_secs,
        "first_1000_seconds": first_secs,
        "call_1000_seconds": call_secs,
        "concurrency": CONCURRENCY,
        "memory_kib": {
            "idle": idle,
            "deployed_1000": at_first,
            "deployed_all": at_total,
            "after_1000_calls": after_calls,
        },
        "durability": "none",
    }));
    for note in notes {
        result = result.with_note(note);
    }
    Ok(result)
}
