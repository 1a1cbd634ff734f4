//! HTTP load scenarios: the native baseline, then one station with `--durability fsync` (hello,
//! calculator, counter on one object and over 100 objects, Python hello when built) and one with
//! `--durability none` (counter on one object).
//!
//! Each scenario primes its target with one request (a clear error if the object does not
//! answer 2xx), runs a short warm-up load, then the measured load. Throughput counts 2xx/3xx
//! responses only.

use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use reqwest::Method;

use super::{Ctx, guarded};
use crate::loadgen::{self, Load, LoadResult, Paths};
use crate::report::{Figure, ScenarioResult, Target};
use crate::server::{self, Server};

/// Scenario names, as they appear in the table.
pub const BASELINE: &str = "hello GET, native axum (baseline)";
/// Hello object, Rust.
pub const HELLO: &str = "hello GET, Rust object";
/// Hello object, Python.
pub const PY_HELLO: &str = "hello GET, Python object";
/// Hello deployed with parallel reads (quota `readers=4`), against the plain hello.
pub const HELLO_PARALLEL: &str = "hello GET, Rust object, parallel reads (readers=4)";
/// Calculator object.
pub const CALCULATOR: &str = "calculator GET";
/// Counter, one object, fsync.
pub const COUNTER_FSYNC: &str = "counter POST, 1 object, fsync";
/// Counter, one object, no fsync.
pub const COUNTER_NONE: &str = "counter POST, 1 object, durability none";
/// Counter over 100 objects, fsync.
pub const COUNTER_SPREAD: &str = "counter POST, 100 objects, fsync";
/// Counter over 100 objects, no fsync.
pub const COUNTER_SPREAD_NONE: &str = "counter POST, 100 objects, durability none";

/// Objects the spread scenario deploys (`c0` … `c99`).
const SPREAD_OBJECTS: u32 = 100;

/// Runs every HTTP scenario, in order.
pub async fn run(ctx: &Ctx) -> Vec<ScenarioResult> {
    let mut results = Vec::new();
    let Some(_) = &ctx.tool else {
        let message = "no load generator: install wrk (apt-get install -y wrk) or oha (cargo install oha --locked)";
        for name in [
            BASELINE,
            HELLO,
            HELLO_PARALLEL,
            CALCULATOR,
            COUNTER_FSYNC,
            COUNTER_SPREAD,
            COUNTER_NONE,
            COUNTER_SPREAD_NONE,
        ] {
            results.push(ScenarioResult::error(name, message));
        }
        return results;
    };
    let limit = ctx.config.warmup + ctx.config.duration + Duration::from_secs(120);

    // The baseline first, alone on the machine.
    let baseline = guarded(BASELINE, limit, async {
        let server = Server::spawn(
            &ctx.config.baseline,
            &["--port".into(), "0".into()],
            &ctx.log_path("baseline"),
        )
        .await
        .context("starting the baseline")?;
        let load = measure(
            ctx,
            &server,
            Method::GET,
            Paths::One("/objects/hello".into()),
        )
        .await;
        server.stop().await;
        Ok(http_result(BASELINE, &load?, None, None))
    })
    .await;
    let baseline_rps = baseline.figures.first().map(|f| f.value);
    results.push(baseline);

    // One station with fsync for the object scenarios.
    let fsync_names = [
        HELLO,
        HELLO_PARALLEL,
        CALCULATOR,
        COUNTER_FSYNC,
        COUNTER_SPREAD,
    ];
    match start_station(ctx, "fsync").await {
        Err(e) => {
            for name in fsync_names {
                results.push(ScenarioResult::error(name, format!("{e:#}")));
            }
        }
        Ok(station) => {
            results.push(
                guarded(HELLO, limit, async {
                    prepare(ctx, &station, &[("hello", "hello")]).await?;
                    let load = measure(
                        ctx,
                        &station,
                        Method::GET,
                        Paths::One("/objects/hello".into()),
                    )
                    .await?;
                    Ok(http_result(
                        HELLO,
                        &load,
                        baseline_rps,
                        Some(Target::ratio_at_least(0.7, "≥ 0.7× baseline")),
                    ))
                })
                .await,
            );
            let hello_rps = results
                .last()
                .and_then(|r| r.figures.first())
                .map(|f| f.value);
            results.push(
                guarded(HELLO_PARALLEL, limit, async {
                    let bytes = ctx.require_component("hello")?;
                    server::deploy_with(
                        &ctx.client,
                        &station.url,
                        "hello-par",
                        "quota=readers%3D4",
                        &bytes,
                    )
                    .await?;
                    let load = measure(
                        ctx,
                        &station,
                        Method::GET,
                        Paths::One("/objects/hello-par".into()),
                    )
                    .await?;
                    Ok(http_result(HELLO_PARALLEL, &load, hello_rps, None))
                })
                .await,
            );
            results.push(
                guarded(CALCULATOR, limit, async {
                    prepare(ctx, &station, &[("calculator", "calculator")]).await?;
                    let path = "/objects/calculator?a=6&b=7&op=mul".to_string();
                    let load = measure(ctx, &station, Method::GET, Paths::One(path)).await?;
                    Ok(http_result(CALCULATOR, &load, None, None))
                })
                .await,
            );
            results.push(
                guarded(COUNTER_FSYNC, limit, async {
                    prepare(ctx, &station, &[("counter", "counter")]).await?;
                    let load = measure(
                        ctx,
                        &station,
                        Method::POST,
                        Paths::One("/objects/counter".into()),
                    )
                    .await?;
                    Ok(http_result(
                        COUNTER_FSYNC,
                        &load,
                        None,
                        Some(Target::at_least(20_000.0, "≥ 20,000/s")),
                    ))
                })
                .await,
            );
            results.push(
                spread(
                    ctx,
                    &station,
                    COUNTER_SPREAD,
                    Some(Target::at_least(50_000.0, "≥ 50,000/s")),
                    limit,
                )
                .await,
            );
            results.push(python_hello(ctx, &station, baseline_rps, limit).await);
            station.stop().await;
        }
    }

    // A second station without fsync.
    match start_station(ctx, "none").await {
        Err(e) => results.push(ScenarioResult::error(COUNTER_NONE, format!("{e:#}"))),
        Ok(station) => {
            results.push(
                guarded(COUNTER_NONE, limit, async {
                    prepare(ctx, &station, &[("counter", "counter")]).await?;
                    let load = measure(
                        ctx,
                        &station,
                        Method::POST,
                        Paths::One("/objects/counter".into()),
                    )
                    .await?;
                    Ok(http_result(COUNTER_NONE, &load, None, None))
                })
                .await,
            );
            // The same spread without fsync: what the CPU allows, for comparison.
            results.push(spread(ctx, &station, COUNTER_SPREAD_NONE, None, limit).await);
            station.stop().await;
        }
    }
    results
}

/// Counter POST spread over [`SPREAD_OBJECTS`] objects (`c0` … `c99`) deployed on `station`.
async fn spread(
    ctx: &Ctx,
    station: &Server,
    name: &str,
    target: Option<Target>,
    limit: Duration,
) -> ScenarioResult {
    guarded(name, limit + Duration::from_secs(60), async {
        let bytes = ctx.require_component("counter")?;
        let ids: Vec<String> = (0..SPREAD_OBJECTS).map(|i| format!("c{i}")).collect();
        deploy_many(ctx, &station.url, &ids, &bytes, 8).await?;
        let paths = Paths::Spread {
            prefix: "/objects/c".into(),
            count: SPREAD_OBJECTS,
        };
        // Prime every object, so the measurement sees warm instances.
        call_many(ctx, &station.url, Method::POST, &ids, 8).await?;
        let load = measure(ctx, station, Method::POST, paths).await?;
        Ok(http_result(name, &load, None, target))
    })
    .await
}

/// Python hello GET, once `objects/dist/py-hello.wasm` is built.
async fn python_hello(
    ctx: &Ctx,
    station: &Server,
    baseline_rps: Option<f64>,
    limit: Duration,
) -> ScenarioResult {
    if ctx.component("py-hello").is_none() {
        return ScenarioResult::skipped(
            PY_HELLO,
            "not available yet (needs objects/dist/py-hello.wasm from the Python SDK)",
        );
    }
    // Compiling an 18 MB Python component takes seconds: allow for it.
    guarded(PY_HELLO, limit + Duration::from_secs(120), async {
        prepare(ctx, station, &[("py-hello", "py-hello")]).await?;
        let load = measure(
            ctx,
            station,
            Method::GET,
            Paths::One("/objects/py-hello".into()),
        )
        .await?;
        Ok(http_result(PY_HELLO, &load, baseline_rps, None))
    })
    .await
}

/// Starts a station on a fresh data dir.
async fn start_station(ctx: &Ctx, durability: &str) -> anyhow::Result<Server> {
    let data = ctx.fresh_dir(&format!("http-{durability}-"))?;
    Server::station(
        &ctx.config.host,
        &data,
        durability,
        &ctx.log_path(&format!("station-{durability}")),
    )
    .await
}

/// Deploys `(id, component)` pairs.
async fn prepare(ctx: &Ctx, station: &Server, objects: &[(&str, &str)]) -> anyhow::Result<()> {
    for (id, component) in objects {
        let bytes = ctx.require_component(component)?;
        server::deploy(&ctx.client, &station.url, id, &bytes)
            .await
            .with_context(|| station.stderr_tail())?;
    }
    Ok(())
}

/// Deploys `bytes` under every id, `concurrency` PUTs at a time.
pub async fn deploy_many(
    ctx: &Ctx,
    station: &str,
    ids: &[String],
    bytes: &[u8],
    concurrency: usize,
) -> anyhow::Result<()> {
    let mut puts = futures::stream::iter(ids)
        .map(|id| server::deploy(&ctx.client, station, id, bytes))
        .buffer_unordered(concurrency);
    while let Some(result) = puts.next().await {
        result?;
    }
    Ok(())
}

/// Calls every object once with `method`, `concurrency` at a time.
pub async fn call_many(
    ctx: &Ctx,
    station: &str,
    method: Method,
    ids: &[String],
    concurrency: usize,
) -> anyhow::Result<()> {
    let mut calls = futures::stream::iter(ids)
        .map(|id| {
            let method = method.clone();
            async move {
                let path = format!("/objects/{id}");
                server::call(&ctx.client, station, method, &path).await
            }
        })
        .buffer_unordered(concurrency);
    while let Some(result) = calls.next().await {
        result?;
    }
    Ok(())
}

/// Primes the target with one request, runs the warm-up load, then the measured load (the
/// cluster family uses it too).
pub async fn measure(
    ctx: &Ctx,
    server: &Server,
    method: Method,
    paths: Paths,
) -> anyhow::Result<LoadResult> {
    let tool = ctx.tool.as_ref().context("no load generator")?;
    let probe = match &paths {
        Paths::One(path) => path.clone(),
        Paths::Spread { prefix, .. } => format!("{prefix}0"),
    };
    server::call(&ctx.client, &server.url, method.clone(), &probe)
        .await
        .with_context(|| {
            format!(
                "the first request failed; server stderr: {}",
                server.stderr_tail()
            )
        })?;
    let mut load = Load {
        method: method.to_string(),
        paths,
        connections: ctx.config.connections,
        threads: ctx.config.threads,
        duration: ctx.config.warmup,
    };
    if !ctx.config.warmup.is_zero() {
        loadgen::run(tool, &server.url, &load, ctx.work.path())
            .await
            .context("warm-up load")?;
    }
    load.duration = ctx.config.duration;
    let result = loadgen::run(tool, &server.url, &load, ctx.work.path()).await?;
    if result.requests == 0 || result.requests == result.non_success {
        bail!(
            "no successful response under load ({} requests, {} non-2xx, {} socket errors); server stderr: {}",
            result.requests,
            result.non_success,
            result.socket_errors,
            server.stderr_tail()
        );
    }
    Ok(result)
}

/// Figures of an HTTP scenario: throughput (with baseline and target) and latency.
fn http_result(
    name: &str,
    load: &LoadResult,
    baseline: Option<f64>,
    target: Option<Target>,
) -> ScenarioResult {
    let mut throughput = Figure::new("throughput", load.success_rps, "req/s");
    if baseline.is_some() || target.as_ref().is_some_and(|t| t.on_ratio) {
        throughput = throughput.with_baseline(baseline);
    }
    if let Some(target) = target {
        throughput = throughput.with_target(target);
    }
    let mut result = ScenarioResult::ok(
        name,
        vec![
            throughput,
            Figure::new("latency p50", load.p50_ms, "ms"),
            Figure::new("latency p99", load.p99_ms, "ms"),
        ],
    )
    .with_details(serde_json::to_value(load).unwrap_or_default());
    if load.non_success > 0 || load.socket_errors > 0 {
        result = result.with_note(format!(
            "{} of {} responses were not 2xx/3xx, {} socket errors (excluded from throughput)",
            load.non_success, load.requests, load.socket_errors
        ));
    }
    result
}
