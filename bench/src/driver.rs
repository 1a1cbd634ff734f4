//! The `bench-driver` binary's logic: its command line, the order of the run, the table and
//! `results.json`.
//!
//! Orchestration lives here in Rust rather than in bash because the run spawns and stops many
//! processes, reads their first stdout line, deploys thousands of objects concurrently, polls for
//! the first 200 with millisecond timing, reads /proc, and writes structured JSON: each of those
//! is a few lines with tokio, reqwest and serde_json, and error-prone in a shell script.
//! `scripts/bench.sh` only builds what is needed, installs the load generator, and calls this.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

use crate::loadgen::Tool;
use crate::machine::Machine;
use crate::report::{Report, Settings};
use crate::scenarios::{self, Ctx};

/// Families of scenarios `--only` can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Group {
    /// Load on a station against the native baseline.
    Http,
    /// The example applications: auth logins, blog posts and lists, chat messages.
    Apps,
    /// Cold deploy and restart → first response.
    Lifecycle,
    /// RSS with 1,000 and 10,000 deployed objects.
    Rss,
    /// Criterion micro-benchmarks (instantiate, warm call).
    Micro,
    /// Alarms and events: alarm firing delay, SSE delivery after a POST, RSS with 10,000 open
    /// event streams.
    Events,
    /// Joined stations: cross-station calls, replication lag, migration pause, failover.
    Cluster,
}

/// Runs Object Primitive's benchmarks: starts its own stations on 127.0.0.1, prints a table and
/// writes results.json. Scenario failures are reported, never fatal: it exits 0.
#[derive(Debug, Parser)]
#[command(name = "bench-driver", about)]
pub struct DriverArgs {
    /// Short runs (3 s per HTTP scenario, short criterion timings, a bounded deploy budget).
    #[arg(long)]
    pub quick: bool,
    /// Repository root (default: the parent of the bench crate).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// The host binary (default: ROOT/target/release/host, or $CARGO_TARGET_DIR/release/host).
    #[arg(long)]
    pub host: Option<PathBuf>,
    /// The baseline binary (default: next to the host binary).
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Where results.json goes (default: ROOT/bench/results.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only these families of scenarios (comma-separated); default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Group>,
    /// Load generator connections.
    #[arg(long, default_value_t = 32)]
    pub connections: u32,
    /// Load generator threads (the machine has 2 cores; 1 leaves one for the station).
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Seconds per HTTP scenario (default: 10, or 3 with --quick).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Seconds of warm-up load before each HTTP measurement (default: 2, or 1 with --quick).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Seconds the RSS scenario may spend deploying (default: 600, or 140 with --quick).
    #[arg(long)]
    pub deploy_budget: Option<u64>,
    /// Prefer this load generator when both are installed: wrk or oha.
    #[arg(long)]
    pub load_generator: Option<String>,
    /// The criterion bench executable (`cargo bench -p host --bench runtime --no-run` prints it);
    /// without it, the driver runs the bench through `cargo bench`.
    #[arg(long)]
    pub criterion_bench: Option<PathBuf>,
    /// The cargo used to run the criterion bench when no executable is given.
    #[arg(long, env = "CARGO", default_value = "cargo")]
    pub cargo: PathBuf,
}

/// The validated configuration every scenario reads.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Repository root.
    pub root: PathBuf,
    /// The host binary.
    pub host: PathBuf,
    /// The baseline binary.
    pub baseline: PathBuf,
    /// `objects/dist`, where built components are.
    pub dist: PathBuf,
    /// cargo, for the criterion bench.
    pub cargo: PathBuf,
    /// The criterion bench executable, if built beforehand.
    pub criterion_bench: Option<PathBuf>,
    /// results.json path.
    pub out: PathBuf,
    /// Quick mode.
    pub quick: bool,
    /// Load generator connections.
    pub connections: u32,
    /// Load generator threads.
    pub threads: u32,
    /// Measured time per HTTP scenario.
    pub duration: Duration,
    /// Warm-up time per HTTP scenario.
    pub warmup: Duration,
    /// Time the RSS scenario may spend deploying.
    pub deploy_budget: Duration,
    /// Families to run.
    pub groups: Vec<Group>,
    /// Preferred load generator.
    pub load_generator: Option<String>,
}

impl DriverArgs {
    /// Fills in defaults and checks that the binaries exist.
    pub fn into_config(self) -> anyhow::Result<DriverConfig> {
        let root = match self.root {
            Some(root) => root,
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("the bench crate lives in the repository")
                .to_path_buf(),
        };
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| if t.is_relative() { root.join(t) } else { t })
            .unwrap_or_else(|| root.join("target"));
        let host = self
            .host
            .unwrap_or_else(|| target.join("release").join("host"));
        let baseline = self.baseline.unwrap_or_else(|| {
            host.parent()
                .map(|d| d.join("baseline"))
                .unwrap_or_else(|| PathBuf::from("baseline"))
        });
        for (what, path) in [("host", &host), ("baseline", &baseline)] {
            if !path.is_file() {
                anyhow::bail!(
                    "the {what} binary {} does not exist: build it with `cargo build --release -p {}` (scripts/bench.sh does)",
                    path.display(),
                    if what == "host" { "host" } else { "bench" }
                );
            }
        }
        let (duration, warmup, budget) = if self.quick {
            (3, 1, 140)
        } else {
            (10, 2, 600)
        };
        Ok(DriverConfig {
            dist: root.join("objects").join("dist"),
            out: self
                .out
                .unwrap_or_else(|| root.join("bench").join("results.json")),
            root,
            host,
            baseline,
            cargo: self.cargo,
            criterion_bench: self.criterion_bench,
            quick: self.quick,
            connections: self.connections.max(1),
            threads: self.threads.max(1),
            duration: Duration::from_secs(self.duration.unwrap_or(duration).max(1)),
            warmup: Duration::from_secs(self.warmup.unwrap_or(warmup)),
            deploy_budget: Duration::from_secs(self.deploy_budget.unwrap_or(budget)),
            groups: if self.only.is_empty() {
                vec![
                    Group::Http,
                    Group::Apps,
                    Group::Lifecycle,
                    Group::Micro,
                    Group::Rss,
                    Group::Events,
                    Group::Cluster,
                ]
            } else {
                self.only
            },
            load_generator: self.load_generator,
        })
    }
}

/// Runs the selected scenarios, prints the table, writes results.json, and returns the report.
pub async fn run(config: DriverConfig) -> anyhow::Result<Report> {
    let started = Instant::now();
    let machine = Machine::detect(&config.root);
    let tool = Tool::detect(config.load_generator.as_deref());
    let settings = Settings {
        mode: if config.quick { "quick" } else { "full" }.into(),
        connections: config.connections,
        threads: config.threads,
        duration_s: config.duration.as_secs_f64(),
        warmup_s: config.warmup.as_secs_f64(),
        load_generator: tool
            .as_ref()
            .map(Tool::describe)
            .unwrap_or_else(|| "none installed".into()),
    };
    eprintln!(
        "bench: {} mode on {} × {} ({} MiB), {}; load generator: {}",
        settings.mode,
        machine.nproc,
        machine.cpu_model,
        machine.memory_mib,
        &machine.git_rev.get(..12).unwrap_or(&machine.git_rev),
        settings.load_generator
    );
    let groups = config.groups.clone();
    let out = config.out.clone();
    let ctx = Ctx::new(config, tool)?;
    let mut scenarios = Vec::new();
    // HTTP first (the headline figures), then the single-station families, the cluster last.
    for group in [
        Group::Http,
        Group::Apps,
        Group::Lifecycle,
        Group::Micro,
        Group::Rss,
        Group::Events,
        Group::Cluster,
    ] {
        if !groups.contains(&group) {
            continue;
        }
        scenarios.extend(match group {
            Group::Http => scenarios::http::run(&ctx).await,
            Group::Apps => scenarios::apps::run(&ctx).await,
            Group::Lifecycle => scenarios::lifecycle::run(&ctx).await,
            Group::Micro => scenarios::micro::run(&ctx).await,
            Group::Rss => scenarios::memory::run(&ctx).await,
            Group::Events => scenarios::events::run(&ctx).await,
            Group::Cluster => scenarios::cluster::run(&ctx).await,
        });
    }
    let report = Report {
        machine,
        settings,
        scenarios,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    println!();
    println!(
        "Object Primitive benchmarks ({} mode, {} connections, {} s per HTTP scenario) on {} cores, {}, {} MiB; git {}{}",
        report.settings.mode,
        report.settings.connections,
        report.settings.duration_s,
        report.machine.nproc,
        report.machine.cpu_model,
        report.machine.memory_mib,
        report
            .machine
            .git_rev
            .get(..12)
            .unwrap_or(&report.machine.git_rev),
        if report.machine.git_dirty {
            " (dirty)"
        } else {
            ""
        }
    );
    println!();
    print!("{}", report.table());
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nwrote {} ({:.0} s)", out.display(), report.total_seconds);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        DriverArgs::command().debug_assert();
    }

    #[test]
    fn only_takes_a_list() {
        let args = DriverArgs::parse_from(["bench-driver", "--quick", "--only", "http,micro"]);
        assert!(args.quick);
        assert_eq!(args.only, vec![Group::Http, Group::Micro]);
        let args = DriverArgs::parse_from(["bench-driver", "--only", "cluster"]);
        assert_eq!(args.only, vec![Group::Cluster]);
        let args = DriverArgs::parse_from(["bench-driver", "--only", "events,rss"]);
        assert_eq!(args.only, vec![Group::Events, Group::Rss]);
    }
}
