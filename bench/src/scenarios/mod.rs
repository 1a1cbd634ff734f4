//! The scenarios, one module per family. Each family returns one [`ScenarioResult`] per scenario
//! and never fails as a whole: a scenario that errors becomes an `error` row, one that cannot run
//! yet becomes a `skipped` row.
//!
//! - [`http`]: load on a running station against the native baseline (hello, counter, calculator,
//!   Python hello once built).
//! - [`apps`]: the example applications: `auth` logins (beside the PBKDF2 iteration count),
//!   `blog` post creation and listing, `chat` messages through one room.
//! - [`lifecycle`]: cold deploy → first response, restart → first response with the cache.
//! - [`memory`]: RSS of a station with 1,000 and 10,000 deployed objects.
//! - [`micro`]: the criterion benchmarks in `host/benches/runtime.rs` (the Python warm call once
//!   built).
//! - [`events`]: alarms and events: how late `reminder`'s alarms fire, how soon a `counter`
//!   event reaches its Server-Sent-Events subscriber after the POST, and the RSS of 10,000 open
//!   event streams (with one event delivered to all of them).
//! - [`cluster`]: joined stations: a forwarded call against a local one, replication lag at
//!   1,000 writes/s, migration pause with 1k, 10k and 100k keys, and kill -9 → first success
//!   after failover.
//!
//! To add a scenario that needs a new artifact (say `objects/dist/py-counter.wasm`), check
//! [`Ctx::component`] and return [`ScenarioResult::skipped`] while it is missing. Cluster
//! scenarios start their stations with [`crate::server::Server::station_with`] and `--join`.

pub mod apps;
pub mod cluster;
pub mod events;
pub mod http;
pub mod lifecycle;
pub mod memory;
pub mod micro;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::driver::DriverConfig;
use crate::loadgen::Tool;
use crate::report::ScenarioResult;

/// What every scenario needs: the configuration, the load generator, an HTTP client and a
/// scratch directory (removed at the end of the run).
pub struct Ctx {
    /// The driver's configuration.
    pub config: DriverConfig,
    /// The load generator, if one is installed.
    pub tool: Option<Tool>,
    /// Loopback HTTP client.
    pub client: reqwest::Client,
    /// Scratch directory for data dirs, scripts and server logs.
    pub work: tempfile::TempDir,
    help: std::sync::OnceLock<String>,
}

impl Ctx {
    /// A context with a fresh scratch directory under the system temp dir.
    pub fn new(config: DriverConfig, tool: Option<Tool>) -> anyhow::Result<Ctx> {
        let work = tempfile::Builder::new().prefix("op-bench-").tempdir()?;
        Ok(Ctx {
            config,
            tool,
            client: crate::server::client(),
            work,
            help: std::sync::OnceLock::new(),
        })
    }

    /// A new empty directory in the scratch directory.
    pub fn fresh_dir(&self, prefix: &str) -> anyhow::Result<PathBuf> {
        Ok(tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(self.work.path())?
            .keep())
    }

    /// Where a server's stderr goes.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.work.path().join(format!("{name}.stderr.log"))
    }

    /// A built component from `objects/dist/NAME.wasm`, or `None` if it is not built (yet).
    pub fn component(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.config.dist.join(format!("{name}.wasm"))).ok()
    }

    /// A built component that a scenario cannot run without.
    pub fn require_component(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.config.dist.join(format!("{name}.wasm"));
        std::fs::read(&path).map_err(|e| {
            anyhow::anyhow!(
                "reading {}: {e} (scripts/build-objects.sh builds it)",
                path.display()
            )
        })
    }

    /// Whether `host serve --help` lists `flag` (the cluster family checks `--join`).
    pub fn host_has_flag(&self, flag: &str) -> bool {
        let help = self.help.get_or_init(|| {
            std::process::Command::new(&self.config.host)
                .args(["serve", "--help"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        });
        help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
            .any(|word| word == flag)
    }

    /// Repetitions for the timed one-off scenarios.
    pub fn repetitions(&self) -> usize {
        if self.config.quick { 3 } else { 5 }
    }

    /// The directory of the repository.
    pub fn root(&self) -> &Path {
        &self.config.root
    }
}

/// Runs one scenario under a time limit, turning an error or a timeout into an `error` row, and
/// records how long it took.
pub async fn guarded<F>(name: &str, limit: Duration, scenario: F) -> ScenarioResult
where
    F: Future<Output = anyhow::Result<ScenarioResult>>,
{
    eprintln!("bench: {name} …");
    let started = Instant::now();
    let mut result = match tokio::time::timeout(limit, scenario).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => ScenarioResult::error(name, format!("{e:#}")),
        Err(_) => ScenarioResult::error(name, format!("did not finish within {limit:?}")),
    };
    result.seconds = started.elapsed().as_secs_f64();
    eprintln!("bench: {}", one_line(&result));
    result
}

/// A scenario's result on one line, for progress output.
pub fn one_line(result: &ScenarioResult) -> String {
    use crate::report::{Outcome, format_number};
    match &result.outcome {
        Outcome::Ok => {
            let figures: Vec<String> = result
                .figures
                .iter()
                .map(|f| {
                    let mut s = format!("{} {} {}", f.name, format_number(f.value), f.unit);
                    if let Some(r) = f.ratio {
                        s.push_str(&format!(" ({r:.2}× baseline)"));
                    }
                    match f.met {
                        Some(true) => s.push_str(" [met]"),
                        Some(false) => s.push_str(" [SHORT]"),
                        None => {}
                    }
                    s
                })
                .collect();
            format!(
                "{}: {} ({:.1} s)",
                result.name,
                figures.join("; "),
                result.seconds
            )
        }
        Outcome::Error { message } => format!("{}: error: {message}", result.name),
        Outcome::Skipped { reason } => format!("{}: {reason}", result.name),
    }
}

/// The median of some durations, in milliseconds (`NaN` when empty).
pub fn median_ms(values: &[Duration]) -> f64 {
    let mut ms: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    match ms.len() {
        0 => f64::NAN,
        n if !n.is_multiple_of(2) => ms[n / 2],
        n => (ms[n / 2 - 1] + ms[n / 2]) / 2.0,
    }
}

/// The `p` quantile (0–1, nearest rank) of sorted values; `NaN` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Durations as milliseconds, for details.
pub fn as_ms(values: &[Duration]) -> Vec<f64> {
    values
        .iter()
        .map(|d| (d.as_secs_f64() * 1e6).round() / 1e3)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        let ms = Duration::from_millis;
        assert_eq!(median_ms(&[ms(3), ms(1), ms(2)]), 2.0);
        assert_eq!(median_ms(&[ms(4), ms(1), ms(2), ms(3)]), 2.5);
        assert!(median_ms(&[]).is_nan());
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[3.0], 0.5), 3.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
