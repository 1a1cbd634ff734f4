//! Black-box tests of the `host` binary.
//!
//! Every test starts the real binary (`env!("CARGO_BIN_EXE_host")`) as a station on port 0
//! with its own temporary data directory, talks to it over HTTP (or runs the CLI against it),
//! and checks what a user relies on. Nothing here links the host crate: the contract is
//! `.notes/API.md` and `wit/object.wit`.
//!
//! # Layout
//! - `harness`: the only helpers — starting/stopping stations, HTTP calls (also raw,
//!   for paths an HTTP client would normalise), guest fixture paths, TSV checks, the CLI,
//!   and `Lang` with the `per_lang!` macro: the cases of the example objects (`hello`,
//!   `counter`, `calculator`) and of `kv` are written once and run against the Rust and the
//!   Python components (`calls::hello_greets_by_name::rust` / `::python`).
//! - one module per area: `deploy`, `calls`, `state`, `durability`, `limits`, `admin`,
//!   `logs`, `watch`, `cli`, `cluster` (several stations on loopback: membership, routing,
//!   replication, failover, migration); `ui`: the inspector in headless Chromium; `python`:
//!   what only Python objects do (exceptions, the SDK's imports, the compiled cache).
//!
//! Guest components are built by `scripts/build-objects.sh` into `objects/dist/` and
//! `tests/fixtures/dist/` (Python ones as `py-<name>.wasm`); a test whose component is
//! missing panics saying so. `cargo test -p host --test blackbox -- --skip python` runs
//! without the Python components.

#[macro_use]
mod harness;

mod admin;
mod alarms;
mod apps;
mod calls;
mod cli;
mod cluster;
mod deploy;
mod directory;
mod durability;
mod events;
mod follow;
mod hostile;
mod idempotency;
mod limits;
mod logs;
mod metrics;
mod parallel;
mod partition;
mod python;
mod quota;
mod state;
mod tls;
mod trace;
mod trust;
mod ui;
mod watch;
