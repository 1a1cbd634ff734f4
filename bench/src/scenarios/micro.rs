//! In-process micro-benchmarks: runs the criterion bench `host/benches/runtime.rs` (the executable
//! scripts/bench.sh built, or through `cargo bench`) and reads criterion's medians from its
//! `estimates.json` files.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};

use super::{Ctx, guarded};
use crate::report::{Figure, ScenarioResult, Target};

/// Rust scenario name.
pub const RUST: &str = "Rust counter, in-process (criterion)";
/// Python scenario name.
pub const PYTHON: &str = "Python counter, in-process (criterion)";

/// The criterion group of `host/benches/runtime.rs`; benchmark ids are `runtime/<name>`.
const GROUP: &str = "runtime";

/// Runs the bench once and turns its estimates into two scenarios.
pub async fn run(ctx: &Ctx) -> Vec<ScenarioResult> {
    let home = ctx.work.path().join("criterion");
    let limit = if ctx.config.quick {
        Duration::from_secs(240)
    } else {
        Duration::from_secs(600)
    };
    let rust = guarded(RUST, limit, async {
        run_criterion(ctx, &home).await?;
        let instantiate = median_us(&home, "instantiate_counter")?;
        let warm_post = median_us(&home, "warm_call_counter_post")?;
        let warm_get = median_us(&home, "warm_call_hello_get")?;
        Ok(ScenarioResult::ok(
            RUST,
            vec![
                Figure::new("instantiate (fresh activation)", instantiate, "µs"),
                Figure::new("warm call, counter POST", warm_post, "µs")
                    .with_target(Target::below(20.0, "< 20 µs")),
                Figure::new("warm call, hello GET", warm_get, "µs"),
            ],
        )
        .with_details(serde_json::json!({ "statistic": "criterion median", "group": GROUP })))
    })
    .await;

    let python = if ctx.component("py-counter").is_none() {
        ScenarioResult::skipped(
            PYTHON,
            "not available yet (needs objects/dist/py-counter.wasm from the Python SDK); target: warm call < 1 ms",
        )
    } else if !matches!(rust.outcome, crate::report::Outcome::Ok) {
        ScenarioResult::error(PYTHON, "the criterion run failed (see the Rust row)")
    } else {
        let result = (|| -> anyhow::Result<ScenarioResult> {
            let instantiate = median_us(&home, "instantiate_py_counter")?;
            let warm = median_us(&home, "warm_call_py_counter_post")?;
            Ok(ScenarioResult::ok(
                PYTHON,
                vec![
                    Figure::new("instantiate (fresh activation)", instantiate, "µs"),
                    Figure::new("warm call, counter POST", warm, "µs")
                        .with_target(Target::below(1000.0, "< 1 ms")),
                ],
            ))
        })();
        result.unwrap_or_else(|e| ScenarioResult::error(PYTHON, format!("{e:#}")))
    };
    vec![rust, python]
}

/// `runtime-bench --bench <timing flags>` (or the same through `cargo bench -p host --bench
/// runtime --profile release`), with criterion's output under `home`.
async fn run_criterion(ctx: &Ctx, home: &Path) -> anyhow::Result<()> {
    let timing: &[&str] = if ctx.config.quick {
        &[
            "--warm-up-time",
            "1",
            "--measurement-time",
            "2",
            "--sample-size",
            "20",
        ]
    } else {
        &["--warm-up-time", "2", "--measurement-time", "5"]
    };
    let log = ctx.work.path().join("criterion.log");
    let out = std::fs::File::create(&log)?;
    let mut command = match &ctx.config.criterion_bench {
        Some(executable) => {
            let mut command = tokio::process::Command::new(executable);
            command.args(["--bench", "--noplot"]);
            command
        }
        None => {
            let mut command = tokio::process::Command::new(&ctx.config.cargo);
            command.args([
                "bench",
                "-p",
                "host",
                "--bench",
                "runtime",
                "--profile",
                "release",
                "--",
                "--noplot",
            ]);
            command
        }
    };
    let status = command
        .current_dir(ctx.root())
        .args(timing)
        .env("CRITERION_HOME", home)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out))
        .kill_on_drop(true)
        .status()
        .await
        .context("running cargo bench")?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        bail!(
            "cargo bench failed ({status}): {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    // Criterion's own summary lines (low, median, high), for the log.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut name = "";
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some((before, after)) = trimmed.split_once("time:") {
            let id = if before.trim().is_empty() {
                name
            } else {
                before.trim()
            };
            eprintln!("bench:   criterion {id}: {}", after.trim());
        } else if trimmed.starts_with(GROUP) {
            name = trimmed;
        }
    }
    Ok(())
}

/// Criterion's median estimate for `runtime/<name>`, in µs.
fn median_us(home: &Path, name: &str) -> anyhow::Result<f64> {
    let path = home
        .join(GROUP)
        .join(name)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading criterion's {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let ns = v["median"]["point_estimate"]
        .as_f64()
        .with_context(|| format!("no median in {}", path.display()))?;
    Ok(ns / 1000.0)
}
