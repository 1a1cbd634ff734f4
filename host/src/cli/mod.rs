//! The command line: one clap definition for every verb, validated into the small configs each
//! module takes. `serve` runs a station; the other verbs talk to one over HTTP (see [`client`]).

pub mod client;
pub mod progress;
pub mod scaffold;
pub mod top;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Default station address for the client verbs.
pub const DEFAULT_STATION: &str = "http://127.0.0.1:8001";

/// Object Primitive: WebAssembly objects served as durable REST endpoints.
#[derive(Debug, Parser)]
#[command(name = "host", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a station: serve deployed objects over HTTP.
    Serve(Box<ServeArgs>),
    /// Deploy a component (.wasm) as a new version of an object.
    Deploy {
        /// The component file.
        file: PathBuf,
        /// Object id (default: the file name without `.wasm`).
        #[arg(long)]
        id: Option<String>,
        /// A note stored with the version.
        #[arg(long, default_value = "")]
        note: String,
        /// Where a new object is homed: `here` (the station deployed to) or `auto` (the least-loaded station).
        #[arg(long, value_enum, default_value_t = Place::Here)]
        place: Place,
        /// Deploy without state: state writes trap, and every station runs it (calls go to the
        /// least-loaded station holding its code; the code spreads to every station by itself).
        #[arg(long)]
        stateless: bool,
        /// Quota overrides for this object, e.g. `state-mb=64,keys=10000,write-mb=4,log-kb-s=64,
        /// queue=100,rate=50` (any subset; the rest are the station's defaults), or `default` to
        /// clear them. Without it the current version's overrides carry over.
        #[arg(long, value_name = "NAME=N,...")]
        quota: Option<String>,
        /// Serve GET calls side by side on up to N instances (default 4), outside the turn
        /// queue: each sees the state as committed when it starts, and a state write in a GET
        /// traps. The quota override `readers=N` (added to --quota, which it joins).
        #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "4",
              value_parser = clap::value_parser!(u32).range(1..=64))]
        parallel_reads: Option<u32>,
        #[command(flatten)]
        station: StationArgs,
    },
    /// Call an object and print the response body.
    Call {
        /// Object id.
        id: String,
        /// HTTP method.
        #[arg(default_value = "GET")]
        method: String,
        /// Request body (usually JSON).
        #[arg(long)]
        data: Option<String>,
        /// Path after /objects/ID, e.g. /items/3?x=1.
        #[arg(long, default_value = "/")]
        path: String,
        #[command(flatten)]
        station: StationArgs,
    },
    /// Show an object's log, newest last.
    Logs {
        /// Object id.
        id: String,
        /// Minimum level: trace, debug, info, warn, error.
        #[arg(long)]
        level: Option<String>,
        /// Number of lines.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Keep printing new lines as they arrive (Ctrl-C to stop).
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        station: StationArgs,
    },
    /// List an object's versions.
    Versions {
        /// Object id.
        id: String,
        #[command(flatten)]
        station: StationArgs,
    },
    /// Deploy the bytes of an earlier version as a new version.
    Rollback {
        /// Object id.
        id: String,
        /// The version to bring back.
        version: u32,
        #[command(flatten)]
        station: StationArgs,
    },
    /// List the objects a station serves.
    Objects {
        #[command(flatten)]
        station: StationArgs,
    },
    /// List the stations of the cluster: id, address, state, load, objects homed.
    Stations {
        #[command(flatten)]
        station: StationArgs,
    },
    /// Show the stations and the busiest objects, refreshed in the terminal (Ctrl-C to stop).
    Top {
        /// Time between refreshes, in ms.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Objects shown, busiest first.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Print one screen (after two samples an interval apart) and exit.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        station: StationArgs,
    },
    /// Move an object (versions, state, log) to another station, live.
    Migrate {
        /// Object id.
        id: String,
        /// Target station id (see `host stations`).
        #[arg(long)]
        to: String,
        #[command(flatten)]
        station: StationArgs,
    },
    /// Repair a data directory a station refuses to open because a file is damaged: keeps what is
    /// intact, copies everything it changes to DATA/repair/TIME/ and reports what was lost. Run
    /// it with the station stopped.
    Repair {
        /// The data directory.
        #[arg(long, default_value = "data")]
        data: PathBuf,
    },
    /// Build a Python object into a component with componentize-py (reports time and size).
    Build {
        /// The module defining the object and `Handler = export(MyObject)`.
        app: PathBuf,
        /// The component to write.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Create a new object project that builds as-is.
    New {
        /// Object name (also the directory created).
        name: String,
        /// Language of the object.
        #[arg(long, value_enum, default_value_t = Lang::Rust)]
        lang: Lang,
        /// Parent directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// Where `host deploy` homes a new object.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Place {
    /// On the station the deploy is sent to.
    Here,
    /// On the least-loaded station of the cluster.
    Auto,
}

/// Languages `host new` can scaffold.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Lang {
    /// A Rust crate built with `cargo build --target wasm32-wasip2 --release`.
    Rust,
    /// A Python module built with `host build app.py` (componentize-py).
    Python,
}

/// Where the client verbs send their requests.
#[derive(Debug, Clone, clap::Args)]
pub struct StationArgs {
    /// Station URL.
    #[arg(long, env = "OP_STATION", default_value = DEFAULT_STATION)]
    pub station: String,
    /// Admin token, when the station requires one.
    #[arg(long, env = "OP_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate(s) to trust for an https:// station (besides the platform's roots).
    #[arg(long, env = "OP_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// How state writes reach the disk before a call is answered.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DurabilityArg {
    /// fsync each commit group before answering (default).
    Fsync,
    /// Write to the OS without fsync: fast, loses recent writes on power loss. For tests.
    None,
}

/// `host serve` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// TCP port (0 picks a free one; the address is printed on the first line of stdout).
    #[arg(long, default_value_t = 8001)]
    pub port: u16,
    /// Address to bind. A non-loopback address requires --admin-token.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Data directory (state, logs, versions, compiled cache).
    #[arg(long, default_value = "./data")]
    pub data: PathBuf,
    /// Directory watched for *.wasm files: each becomes the next version of the object named by
    /// its file stem. Skipped if the directory does not exist.
    #[arg(long, default_value = "./objects")]
    pub watch: PathBuf,
    /// Do not watch any directory.
    #[arg(long)]
    pub no_watch: bool,
    /// Durability of state writes.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Fsync)]
    pub durability: DurabilityArg,
    /// Deadline per call in milliseconds, including waiting for the object's turn (→ 504).
    #[arg(long, default_value_t = 10_000)]
    pub deadline_ms: u64,
    /// Memory cap per object instance in MiB (→ 500 trapped past it). 128 fits a Python object
    /// handling a body at the default 10 MiB limit.
    #[arg(long, default_value_t = 128)]
    pub memory_mb: u64,
    /// Seconds without calls before an object's live instance is dropped.
    #[arg(long, default_value_t = 300)]
    pub idle_secs: u64,
    /// Largest request body passed to an object, in bytes (→ 413).
    #[arg(long, default_value_t = 10 << 20)]
    pub max_body_bytes: usize,
    /// Default quota: MiB of live state per object (→ 507 `state_quota_exceeded`).
    #[arg(long, default_value_t = 1024)]
    pub quota_state_mb: u64,
    /// Default quota: live keys per object (→ 507 `state_quota_exceeded`).
    #[arg(long, default_value_t = 1_000_000)]
    pub quota_keys: u64,
    /// Default quota: MiB one call may write (→ 413 `write_quota_exceeded`).
    #[arg(long, default_value_t = 32)]
    pub quota_write_mb: u64,
    /// Default quota: KiB per second of an object's own log lines (over it: dropped, counted in
    /// one summary line a second; 0 drops them all).
    #[arg(long, default_value_t = 256)]
    pub quota_log_kb_s: u64,
    /// Default quota: calls running or waiting per object (→ 429 `too_busy`).
    #[arg(long, default_value_t = 256)]
    pub quota_queue: u32,
    /// Default quota: calls per second per object, 0 = unlimited (→ 429 `rate_limited`).
    #[arg(long, default_value_t = 0)]
    pub quota_rate: u32,
    /// Most client connections open at once (past it: 503 `too_many_connections`). Lowered to
    /// fit the open-files limit.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, default_value_t = 60)]
    pub keep_alive_secs: u64,
    /// Seconds a request head may take to arrive after its first byte (→ 408 `header_timeout`).
    #[arg(long, default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds a request body may take to arrive once the station reads it (→ 408
    /// `body_timeout`).
    #[arg(long, default_value_t = 30)]
    pub body_timeout_secs: u64,
    /// Largest component a deploy accepts, in bytes.
    #[arg(long, default_value_t = 128 << 20)]
    pub max_component_bytes: usize,
    /// Most live instances at once (sizes the instance pool).
    #[arg(long, default_value_t = 1000)]
    pub max_instances: u32,
    /// Versions of each state key kept for history by compaction.
    #[arg(long, default_value_t = 16)]
    pub history: usize,
    /// Export each call's span to this OpenTelemetry collector over OTLP/HTTP
    /// (`http://HOST:4318`; `/v1/traces` is added). Off by default.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// The share (0–1) of the traces begun at this station that `--otlp-endpoint` exports
    /// (traces begun by a client's or another station's `traceparent` keep its sampled flag).
    #[arg(long, default_value_t = 1.0)]
    pub otlp_sample_ratio: f64,
    /// The OTLP/HTTP encoding for `--otlp-endpoint`.
    #[arg(long, value_enum, default_value_t = crate::trace::OtlpProtocol::Protobuf)]
    pub otlp_protocol: crate::trace::OtlpProtocol,
    /// Require `Authorization: Bearer TOKEN` on /admin routes.
    #[arg(long, env = "OP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// HTTP address (HOST:PORT) of a station to join; repeat for more seeds.
    #[arg(long, value_name = "HOST:PORT")]
    pub join: Vec<String>,
    /// Voters of the cluster directory's Raft group: the first stations to join vote, later ones
    /// are learners, promoted when a voter is gone (3 tolerates one failure, 5 two).
    #[arg(long, default_value_t = 3)]
    pub voters: usize,
    /// Replicas per object besides its home (capped by the cluster size).
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// Interval between gossip rounds, in milliseconds. Failure detection scales with it.
    #[arg(long, default_value_t = 500)]
    pub gossip_interval_ms: u64,
    /// Phi-accrual threshold above which a silent station is declared dead (lower = faster, less tolerant).
    #[arg(long, default_value_t = 8.0)]
    pub phi_threshold: f64,
    /// Stations that must be alive before this one serves object calls (503 `not_ready` until then).
    #[arg(long, default_value_t = 1)]
    pub min_stations: usize,
    /// Shared secret required on station-to-station routes; stations with different secrets do not join.
    #[arg(long, env = "OP_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Replicas that must hold each write durably before it is acknowledged (0 = asynchronous
    /// replication: a failure of the home can lose its last writes).
    #[arg(long, default_value_t = 0)]
    pub sync_replicas: usize,
    /// HTTP base URL other stations use to reach this one (default: http://BIND:PORT, or
    /// https:// with --tls-cert).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) trusted for stations reached over https (besides the platform's
    /// roots): the cluster's own CA.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Seconds the answer to a call with an `Idempotency-Key` header is kept: a retry with the
    /// same key within it gets that answer back instead of running again.
    #[arg(long, default_value_t = 86_400)]
    pub idempotency_ttl_secs: u64,
    /// Events kept per object for subscribers that reconnect with `Last-Event-ID` (the newest
    /// N; older ones are removed as new ones are published).
    #[arg(long, value_name = "N", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub event_retention: u64,
    /// Milliseconds before a failed alarm's first retry; each of its (up to 6) retries waits
    /// twice as long as the one before.
    #[arg(long, value_name = "MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub alarm_retry_base_ms: u64,
    /// Threads that run calls and network I/O (default: one per CPU). Lower it when stations
    /// share a machine: threads beyond the cores it has cost a context switch on every hand-off.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
}

/// `serve` settings after validation.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The parsed flags.
    pub args: ServeArgs,
    /// Watched directory, if any.
    pub watch: Option<PathBuf>,
    /// Per-call deadline.
    pub deadline: Duration,
}

impl ServeArgs {
    /// Checks the flags that depend on each other.
    pub fn validate(self) -> anyhow::Result<ServeConfig> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.otlp_sample_ratio),
            "--otlp-sample-ratio must be between 0 and 1, not {}",
            self.otlp_sample_ratio
        );
        for (flag, value) in [
            ("--admin-token", &self.admin_token),
            ("--cluster-secret", &self.cluster_secret),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                anyhow::bail!(
                    "{flag} is empty: an empty credential would be matched by an empty header; give a long random value or leave the flag out"
                );
            }
        }
        if !self.bind.is_loopback() && self.admin_token.is_none() {
            anyhow::bail!(
                "refusing to bind {} without --admin-token: admin routes would be open to the network",
                self.bind
            );
        }
        if !self.bind.is_loopback() && self.cluster_secret.is_none() {
            anyhow::bail!(
                "refusing to bind {} without --cluster-secret: station-to-station routes would be open to the network",
                self.bind
            );
        }
        if self.bind.is_unspecified() && self.advertise.is_none() {
            anyhow::bail!(
                "binding {} needs --advertise http://HOST:PORT so other stations can reach this one",
                self.bind
            );
        }
        if self.gossip_interval_ms < 10 {
            anyhow::bail!("--gossip-interval-ms must be at least 10");
        }
        if self.sync_replicas > self.replicas {
            anyhow::bail!(
                "--sync-replicas {} exceeds --replicas {}",
                self.sync_replicas,
                self.replicas
            );
        }
        if self.min_stations == 0 {
            anyhow::bail!("--min-stations must be at least 1");
        }
        if self.voters == 0 || self.voters > 9 {
            anyhow::bail!("--voters must be between 1 and 9, not {}", self.voters);
        }
        if self.memory_mb == 0 || self.memory_mb > 4096 {
            anyhow::bail!(
                "--memory-mb must be between 1 and 4096, not {}",
                self.memory_mb
            );
        }
        if self.deadline_ms == 0 {
            anyhow::bail!("--deadline-ms must be positive");
        }
        for (flag, value, most) in [
            ("--max-connections", self.max_connections as u64, 1_000_000),
            ("--keep-alive-secs", self.keep_alive_secs, 86_400),
            ("--header-timeout-secs", self.header_timeout_secs, 86_400),
            ("--body-timeout-secs", self.body_timeout_secs, 86_400),
        ] {
            if value == 0 || value > most {
                anyhow::bail!("{flag} must be between 1 and {most}, not {value}");
            }
        }
        for (flag, value) in [
            ("--quota-state-mb", self.quota_state_mb),
            ("--quota-keys", self.quota_keys),
            ("--quota-write-mb", self.quota_write_mb),
            ("--quota-queue", u64::from(self.quota_queue)),
        ] {
            if value == 0 {
                anyhow::bail!("{flag} must be at least 1");
            }
        }
        if self.history == 0 {
            anyhow::bail!("--history must be at least 1");
        }
        let watch = (!self.no_watch && self.watch.is_dir()).then(|| self.watch.clone());
        Ok(ServeConfig {
            deadline: Duration::from_millis(self.deadline_ms),
            watch,
            args: self,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn non_loopback_bind_needs_a_token() {
        let cli = Cli::parse_from(["host", "serve", "--bind", "0.0.0.0"]);
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        assert!(args.validate().is_err());
    }

    #[test]
    fn connection_limits_and_timeouts_are_bounded() {
        for (flag, value) in [
            ("--max-connections", "0"),
            ("--max-connections", "99999999999"),
            ("--keep-alive-secs", "18446744073709551615"),
            ("--header-timeout-secs", "0"),
            ("--body-timeout-secs", "86401"),
        ] {
            let cli = Cli::parse_from(["host", "serve", flag, value]);
            let Command::Serve(args) = cli.command else {
                panic!()
            };
            let error = args.validate().expect_err("out of range");
            assert!(error.to_string().contains(flag), "{error}");
        }
    }

    #[test]
    fn empty_credentials_are_refused() {
        for flag in ["--admin-token", "--cluster-secret"] {
            for value in ["", "  "] {
                let cli = Cli::parse_from(["host", "serve", flag, value]);
                let Command::Serve(args) = cli.command else {
                    panic!()
                };
                let error = args.validate().expect_err("an empty credential");
                assert!(error.to_string().contains(flag), "{error}");
            }
        }
    }
}
