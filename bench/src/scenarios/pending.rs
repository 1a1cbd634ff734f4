//! Slots for the scenarios of issue 5 that need a cluster, reported as "not available yet" until
//! the host has `serve --join`. (The Python slots live with their families: [`super::http`] runs
//! Python hello GET once `objects/dist/py-hello.wasm` exists, [`super::micro`] the Python warm
//! call once `objects/dist/py-counter.wasm` exists.)
//!
//! To fill a slot: write the scenario (start stations with `Server::spawn` and `--join`), call it
//! from [`run`] when [`Ctx::host_has_flag`]`("--join")`, and keep its target here.

use super::Ctx;
use crate::report::ScenarioResult;

/// A scenario waiting for the cluster, with its target from the issue.
struct Slot {
    name: &'static str,
    target: &'static str,
}

const CLUSTER_SLOTS: &[Slot] = &[
    Slot {
        name: "cross-station call vs local",
        target: "reported as a ratio to a local call",
    },
    Slot {
        name: "replication lag",
        target: "no target yet",
    },
    Slot {
        name: "migration pause, 1k keys",
        target: "no target yet",
    },
    Slot {
        name: "migration pause, 10k keys",
        target: "target < 100 ms",
    },
    Slot {
        name: "migration pause, 100k keys",
        target: "no target yet",
    },
];

/// One `skipped` row per cluster scenario.
pub fn run(ctx: &Ctx) -> Vec<ScenarioResult> {
    let has_cluster = ctx.host_has_flag("--join");
    CLUSTER_SLOTS
        .iter()
        .map(|slot| {
            let reason = if has_cluster {
                format!(
                    "not implemented in the harness yet (the host has --join); {}",
                    slot.target
                )
            } else {
                format!(
                    "not available yet (needs a cluster: host serve --join); {}",
                    slot.target
                )
            };
            ScenarioResult::skipped(slot.name, reason)
        })
        .collect()
}
