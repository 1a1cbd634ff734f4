//! Object Primitive's benchmark harness (issue 5): what `scripts/bench.sh` runs.
//!
//! The machines this runs on are shared and noisy, so every throughput figure that has a natural
//! reference is reported next to a baseline measured in the same run, and targets are checked as
//! *met* / *short*: a benchmark never fails.
//!
//! # Layout
//! - [`baseline`]: the native axum server (`baseline` binary) that answers `GET /objects/hello`
//!   with the hello object's JSON and header shape: the in-run reference for the HTTP figures.
//! - [`driver`]: the `bench-driver` binary's logic: its configuration and the order of the run.
//! - [`scenarios`]: one module per family of scenarios (HTTP load, deploy and restart, RSS,
//!   criterion micro-benchmarks, alarms and event streams, and the cluster: forwarding,
//!   replication lag, migration, failover).
//! - [`server`]: spawning a server process (`host serve` or `baseline`), reading its address from
//!   its first stdout line, its RSS, and stopping it.
//! - [`loadgen`]: the load generator: `wrk` with a Lua script, or `oha` as a fallback.
//! - [`report`]: figures, targets, the printed table and `results.json`.
//! - [`machine`]: what the run ran on (cores, CPU model, memory, date, git revision).

#![deny(missing_docs)]

pub mod baseline;
pub mod driver;
pub mod loadgen;
pub mod machine;
pub mod report;
pub mod scenarios;
pub mod server;
