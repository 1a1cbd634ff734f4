//! Black-box tests of the `host` binary.
//!
//! Every test starts the real binary (`env!("CARGO_BIN_EXE_host")`) as a station on port 0
//! with its own temporary data directory, talks to it over HTTP (or runs the CLI against it),
//! and checks what a user relies on. Nothing here links the host crate: the contract is
//! `.notes/API.md` and `wit/object.wit`.
//!
//! # Layout
//! - `harness`: the only helpers — starting/stopping stations, HTTP calls (also raw,
//!   for paths an HTTP client would normalise), guest fixture paths, TSV checks, the CLI.
//! - one module per area: `deploy`, `calls`, `state`, `durability`, `limits`, `admin`,
//!   `logs`, `watch`, `cli`.
//!
//! Guest components are built by `scripts/build-objects.sh` into `objects/dist/` and
//! `tests/fixtures/dist/`; a test whose component is missing panics saying so.

mod harness;

mod admin;
mod calls;
mod cli;
mod deploy;
mod durability;
mod limits;
mod logs;
mod state;
mod watch;
