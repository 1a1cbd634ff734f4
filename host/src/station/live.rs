//! A deployed object as the station holds it: its current version (with its compiled component
//! and quota meters), its turn queue and live activation, its state and counters.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use super::{ObjectEvent, Quota, QuotaOverrides, quota};
use crate::runtime::{Activation, CompiledObject};
use crate::store::{ObjectState, VersionRecord};

/// A deployed object and its live parts.
pub(super) struct LiveObject {
    pub(super) id: String,
    /// The version calls run; swapped by deploys, read at the start of every turn.
    pub(super) version: Mutex<Arc<VersionSlot>>,
    /// The turn queue and the live activation it guards.
    pub(super) turn: Arc<tokio::sync::Mutex<Option<Activation>>>,
    /// Set when the object was handed off to another station: its address.
    pub(super) moved_to: Mutex<Option<String>>,
    /// Committed state, opened on first use.
    pub(super) state: tokio::sync::OnceCell<ObjectState>,
    pub(super) calls: AtomicU64,
    pub(super) traps: AtomicU64,
    /// Calls running or waiting for the turn (bounded by the queue quota).
    pub(super) queued: std::sync::atomic::AtomicU32,
    /// Placement epoch: increases whenever the object changes home.
    pub(super) epoch: AtomicU64,
    /// Deployed stateless: no state, writes trap, runs on any station holding its code. Fixed for
    /// the life of the object (switching needs an undeploy).
    pub(super) stateless: bool,
    /// Its call counters and duration histogram, resolved on its first call.
    pub(super) call_meters: std::sync::OnceLock<crate::metrics::ObjectCallMeters>,
}

/// One deployed version: its record and, once loaded, its compiled component.
pub(super) struct VersionSlot {
    pub(super) record: VersionRecord,
    pub(super) compiled: tokio::sync::OnceCell<CompiledObject>,
    /// The quota this version runs under, with its rate meters.
    pub(super) meters: quota::Meters,
    /// The instances its parallel reads run on (none unless the quota allows readers).
    pub(super) readers: ReaderPool,
}

/// Instances of one version that serve GET calls side by side: at most `readers` (the version's
/// quota) run at once; an idle one is kept for the next read.
pub(super) struct ReaderPool {
    running: tokio::sync::Semaphore,
    idle: Mutex<Vec<Activation>>,
}

impl ReaderPool {
    fn new(readers: u32) -> ReaderPool {
        ReaderPool {
            running: tokio::sync::Semaphore::new(readers as usize),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A turn to run a read, waiting while `readers` run.
    pub(super) async fn enter(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.running
            .acquire()
            .await
            .expect("the reader semaphore is never closed")
    }

    /// An idle instance, if one is kept.
    pub(super) fn take(&self) -> Option<Activation> {
        self.idle.lock().expect("readers lock").pop()
    }

    /// Keeps an instance that finished a read cleanly for the next one.
    pub(super) fn put(&self, activation: Activation) {
        self.idle.lock().expect("readers lock").push(activation);
    }
}

impl LiveObject {
    pub(super) fn new(
        id: &str,
        record: VersionRecord,
        compiled: Option<CompiledObject>,
        stateless: bool,
        defaults: &Quota,
    ) -> LiveObject {
        LiveObject {
            id: id.to_string(),
            version: Mutex::new(Arc::new(VersionSlot::new(record, compiled, defaults))),
            turn: Arc::new(tokio::sync::Mutex::new(None)),
            moved_to: Mutex::new(None),
            state: tokio::sync::OnceCell::new(),
            calls: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            queued: std::sync::atomic::AtomicU32::new(0),
            epoch: AtomicU64::new(1),
            stateless,
            call_meters: std::sync::OnceLock::new(),
        }
    }

    /// What the cluster should gossip about a stateless object: the version of the code this
    /// station holds. Stateful objects are the directory's, not gossip's.
    pub(super) fn code_event(&self) -> Option<ObjectEvent> {
        if !self.stateless {
            return None;
        }
        let slot = self.current();
        Some(ObjectEvent::Code {
            id: self.id.clone(),
            version: slot.record.version,
            sha256: Some(slot.record.sha256.clone()),
        })
    }

    pub(super) fn current(&self) -> Arc<VersionSlot> {
        self.version.lock().expect("version lock").clone()
    }
}

impl VersionSlot {
    pub(super) fn new(
        record: VersionRecord,
        compiled: Option<CompiledObject>,
        defaults: &Quota,
    ) -> VersionSlot {
        let cell = tokio::sync::OnceCell::new();
        if let Some(compiled) = compiled {
            let _ = cell.set(compiled);
        }
        let overrides = record.quota.parse::<QuotaOverrides>().unwrap_or_else(|e| {
            tracing::warn!(
                version = record.version,
                "{e}; the station's default quota applies"
            );
            QuotaOverrides::default()
        });
        let quota = overrides.over(defaults);
        VersionSlot {
            readers: ReaderPool::new(quota.readers),
            meters: quota::Meters::new(quota),
            record,
            compiled: cell,
        }
    }
}
