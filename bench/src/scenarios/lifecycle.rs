//! Cold deploy → first response, and restart → first response with the compiled cache.
//!
//! Cold deploy: a station on a fresh data dir (so no compiled artifact is cached), then
//! `PUT /admin/objects/hello` (compiles) and the first `GET /objects/hello` (instantiates); both
//! timed, a few repetitions, medians reported.
//!
//! Restart: the last cold-deploy station is stopped and started again on the same data dir,
//! timing from spawn to the `listening` line and to the first 200 of `GET /objects/hello` (which
//! loads the cached `.cwasm` and instantiates).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::Method;

use super::{Ctx, as_ms, guarded, median_ms};
use crate::report::{Figure, ScenarioResult};
use crate::server::{self, Server};

/// Cold deploy scenario name.
pub const COLD_DEPLOY: &str = "cold deploy → first response (hello)";
/// Restart scenario name.
pub const RESTART: &str = "restart → first response, cached (hello)";

/// Runs both scenarios.
pub async fn run(ctx: &Ctx) -> Vec<ScenarioResult> {
    let reps = ctx.repetitions();
    let limit = Duration::from_secs(60 + 30 * reps as u64);
    let mut kept_data_dir = None;
    let cold = guarded(COLD_DEPLOY, limit, async {
        let bytes = ctx.require_component("hello")?;
        let (mut starts, mut puts, mut gets, mut totals) = (vec![], vec![], vec![], vec![]);
        for rep in 0..reps {
            let data = ctx.fresh_dir("cold-")?;
            let station =
                Server::station(&ctx.config.host, &data, "fsync", &ctx.log_path("cold")).await?;
            starts.push(station.startup);
            let put = server::deploy(&ctx.client, &station.url, "hello", &bytes).await;
            let get = match &put {
                Ok(_) => server::call(&ctx.client, &station.url, Method::GET, "/objects/hello")
                    .await
                    .map_err(|e| e.context(station.stderr_tail())),
                Err(_) => Ok(Duration::ZERO),
            };
            station.stop().await;
            let (put, get) = (put?, get?);
            puts.push(put);
            gets.push(get);
            totals.push(put + get);
            if rep + 1 == reps {
                kept_data_dir = Some(data);
            }
        }
        Ok(ScenarioResult::ok(
            COLD_DEPLOY,
            vec![
                Figure::new("deploy → first response", median_ms(&totals), "ms"),
                Figure::new("PUT (compile + store)", median_ms(&puts), "ms"),
                Figure::new("first GET (instantiate)", median_ms(&gets), "ms"),
                Figure::new("station start → listening", median_ms(&starts), "ms"),
            ],
        )
        .with_details(serde_json::json!({
            "repetitions": reps,
            "put_ms": as_ms(&puts),
            "first_get_ms": as_ms(&gets),
            "start_ms": as_ms(&starts),
        })))
    })
    .await;

    let restart = match kept_data_dir {
        None => ScenarioResult::error(RESTART, "needs a data dir from the cold deploy scenario"),
        Some(data) => {
            guarded(RESTART, limit, async {
                let (mut listening, mut first) = (vec![], vec![]);
                for _ in 0..reps {
                    let spawned = Instant::now();
                    let station =
                        Server::station(&ctx.config.host, &data, "fsync", &ctx.log_path("restart"))
                            .await?;
                    listening.push(station.startup);
                    let answered = first_200(ctx, &station.url, "/objects/hello").await;
                    let elapsed = spawned.elapsed();
                    let tail = station.stderr_tail();
                    station.stop().await;
                    answered.with_context(|| tail)?;
                    first.push(elapsed);
                }
                Ok(ScenarioResult::ok(
                    RESTART,
                    vec![
                        Figure::new("spawn → first 200", median_ms(&first), "ms"),
                        Figure::new("spawn → listening", median_ms(&listening), "ms"),
                    ],
                )
                .with_details(serde_json::json!({
                    "repetitions": reps,
                    "first_200_ms": as_ms(&first),
                    "listening_ms": as_ms(&listening),
                })))
            })
            .await
        }
    };
    vec![cold, restart]
}

/// Polls `path` until it answers 200 (a station may answer 503 while it loads).
async fn first_200(ctx: &Ctx, url: &str, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match ctx.client.get(format!("{url}{path}")).send().await {
            Ok(r) if r.status() == 200 => return Ok(()),
            Ok(r) => format!("status {}", r.status()),
            Err(e) => format!("{e}"),
        };
        if Instant::now() > deadline {
            bail!("GET {path} did not answer 200 within 30 s (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
