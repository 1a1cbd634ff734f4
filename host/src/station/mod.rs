//! The station's objects: what is deployed, each object's turn queue and live activation, and the
//! path of one call from request to durable response.
//!
//! This is where the runtime and the store meet. A call takes the object's turn (one call at a
//! time per object), runs on the live activation (created on first use, replaced after a trap),
//! commits the call's writes as one batch when the status is below 500, releases the turn so the
//! next call can run while the batch is being made durable, and answers only once it is durable.
//! It knows nothing of HTTP routes or the CLI.
//!
//! Where things are: `call.rs` the path of one call; `deploy.rs` deploys, rollbacks and undeploys;
//! `live.rs` a deployed object's live parts; `lifecycle.rs` warm-up, idle deactivation, shutdown;
//! `replica.rs` the copies this station keeps for other homes; `migration.rs` and `failover.rs` an
//! object changing home; `ownership.rs` who may serve and write (the directory's answer);
//! `quota.rs` per-object limits; `services.rs` calls to objects elsewhere; `events.rs` what the
//! cluster hears; `error.rs` the one error type; `id.rs` object ids.

mod admin_locks;
mod alarms;
mod call;
mod deploy;
mod error;
mod events;
mod failover;
mod firing;
mod id;
pub mod idempotency;
mod lifecycle;
mod live;
mod migration;
mod ownership;
mod pubsub;
mod quota;
mod replica;
mod services;
mod subscribe;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use alarms::PendingAlarm;
pub use call::{CallResult, CallSummary};
pub use deploy::{DeployOptions, DeployOutcome};
pub use error::Error;
pub use events::ObjectEvent;
pub use id::{IdError, validate_object_id};
pub use migration::{Copied, ObjectExport, Paused, Precopy};
pub use ownership::{Elsewhere, Ownership, OwnershipError};
pub use pubsub::StoredEvent;
pub use replica::{ApplyOutcome, ReplicationSink};
pub use services::RemoteCalls;
pub use subscribe::{EventStream, StreamItem};

use live::{LiveObject, VersionSlot};

use crate::runtime::Runtime;
use crate::store::{self, ObjectState, Store, VersionRecord, now_ms};

pub use quota::{BadQuota, Quota, QuotaOverrides};

/// Settings for calls, from the command line.
#[derive(Clone, Debug)]
pub struct StationConfig {
    /// Time a call may take, including waiting for its turn (→ 504 past it).
    pub call_deadline: Duration,
    /// An object with no call for this long drops its live instance.
    pub idle_timeout: Duration,
    /// The quotas of objects deployed without overrides.
    pub quota: Quota,
    /// How long the answer to a call with an `Idempotency-Key` is kept for its retries.
    pub idempotency_ttl: Duration,
    /// Where each call's span goes (nowhere without `--otlp-endpoint`).
    pub tracer: crate::trace::Tracer,
    /// Events kept per object for subscribers that reconnect (`--event-retention`).
    pub event_retention: u64,
    /// The wait before an alarm's first retry; it doubles for each retry after
    /// (`--alarm-retry-base-ms`).
    pub alarm_retry_base: Duration,
}

/// The handle to this station's objects. Cheap to clone.
#[derive(Clone)]
pub struct Station {
    inner: Arc<Inner>,
}

/// A map keyed by object id. Every call looks up its object several times: hashed with
/// foldhash, not std's SipHash (ids are validated and their number is bounded, so SipHash's
/// resistance to crafted keys buys nothing here).
type IdMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

struct Inner {
    runtime: Runtime,
    store: Store,
    config: StationConfig,
    objects: Mutex<IdMap<Arc<LiveObject>>>,
    /// Deploys, rollbacks and undeploys of one object run one at a time.
    admin: admin_locks::AdminLocks,
    /// Object calls running or waiting for their turn.
    in_flight: Arc<AtomicU64>,
    /// Where changes of what this station homes are announced (the cluster listens).
    events: Mutex<Option<tokio::sync::mpsc::UnboundedSender<ObjectEvent>>>,
    /// How objects reach objects that are not on this station.
    remote: OnceLock<Arc<dyn RemoteCalls>>,
    /// Where committed batches go for replication.
    replication: OnceLock<Arc<dyn ReplicationSink>>,
    /// Who may serve and write objects (the cluster's directory).
    ownership: OnceLock<Arc<dyn Ownership>>,
    /// Objects held here as replicas of another station's.
    replicas: Mutex<IdMap<replica::ReplicaObject>>,
    /// Objects that moved away: id → new home's address, for forwarding.
    moved: Mutex<IdMap<String>>,
    /// What the call path records for `GET /metrics`.
    metrics: crate::metrics::CallMetrics,
    /// What migrations and failovers record for `GET /metrics`.
    move_metrics: crate::metrics::MoveMetrics,
    /// When each object with pending alarms is next due.
    alarm_clock: alarms::AlarmClock,
    /// The durable event mark of each object with subscribers.
    event_hub: pubsub::EventHub,
}

/// What `GET /objects` lists for one object.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ObjectSummary {
    /// Object id.
    pub id: String,
    /// Current version number.
    pub version: u32,
    /// sha256 of the current version.
    pub sha256: String,
    /// The station that serves it.
    pub home: String,
    /// Stations holding replicas (none on a single station).
    pub replicas: Vec<String>,
    /// Deployed stateless: served by any station holding its code (`home` is then this station).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stateless: bool,
}

/// Compiles (or loads from the cache) a component, recording how long it took.
fn timed_compile(
    runtime: &Runtime,
    metrics: &crate::metrics::CallMetrics,
    sha256: &str,
    bytes: &[u8],
) -> Result<crate::runtime::CompiledObject, crate::runtime::Error> {
    let started = std::time::Instant::now();
    let compiled = runtime.compile(sha256, bytes);
    metrics.compiled(started.elapsed());
    compiled
}

/// What `GET /metrics` reads of one object at a scrape.
#[derive(Debug, Clone)]
pub struct ObjectGauges {
    /// Object id.
    pub id: String,
    /// Current version number.
    pub version: u32,
    /// Calls running or waiting for its turn.
    pub queued: u32,
    /// Whether it has a live instance.
    pub live_instance: bool,
    /// Calls that trapped or ran out of time since the station started.
    pub traps: u64,
    /// The object's live keys (without the host's: idempotent answers, alarms, events), if its
    /// state is open.
    pub state_keys: Option<u64>,
    /// Bytes of those keys and their values, if its state is open.
    pub state_bytes: Option<u64>,
}

/// What `?metadata=true` shows for one object.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ObjectMetadata {
    /// Object id.
    pub object_id: String,
    /// Current version.
    pub version: u32,
    /// sha256 of the current version.
    pub sha256: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// Deploy time of the current version, unix ms.
    pub deployed_at: u64,
    /// Whether a live instance is warm right now.
    pub active: bool,
    /// Calls since the station started.
    pub calls: u64,
    /// Traps and timeouts since the station started.
    pub traps: u64,
    /// Last committed state sequence number.
    pub state_seq: u64,
    /// The station serving it.
    pub home: String,
    /// The quota it runs under (station defaults with its deploy's overrides).
    pub quota: Quota,
    /// The quota overrides of its current version (empty: the defaults).
    pub quota_overrides: String,
    /// What its state holds now, against `quota.keys` and `quota.state_bytes`.
    pub usage: store::Usage,
}

impl Station {
    /// Registers every object deployed in the store. Components are compiled (or loaded from the
    /// artifact cache) on their first call, so start-up time does not grow with the object count.
    pub fn open(runtime: Runtime, store: Store, config: StationConfig) -> Result<Station, Error> {
        let mut objects = IdMap::default();
        let mut replicas = IdMap::default();
        for id in store.versions().known_ids()? {
            let placement = store.versions().placement(&id)?;
            if let Some(placement) = placement
                .as_ref()
                .filter(|p| p.role == store::Role::Replica)
            {
                replicas.insert(
                    id.clone(),
                    replica::ReplicaObject {
                        state: store.state(&id)?,
                        placement: placement.clone(),
                        needs_snapshot: false,
                    },
                );
                continue;
            }
            if let Some(record) = store.versions().current(&id)? {
                let stateless = store.versions().is_stateless(&id);
                let object = LiveObject::new(&id, record, None, stateless, &config.quota);
                if let Some(placement) = placement {
                    object.epoch.store(placement.epoch, Ordering::Relaxed);
                }
                objects.insert(id.clone(), Arc::new(object));
            }
        }
        tracing::info!(
            objects = objects.len(),
            replicas = replicas.len(),
            "station opened"
        );
        Ok(Station {
            inner: Arc::new(Inner {
                runtime,
                store,
                config,
                objects: Mutex::new(objects),
                admin: admin_locks::AdminLocks::default(),
                in_flight: Arc::new(AtomicU64::new(0)),
                events: Mutex::new(None),
                remote: OnceLock::new(),
                replication: OnceLock::new(),
                ownership: OnceLock::new(),
                replicas: Mutex::new(replicas),
                moved: Mutex::new(IdMap::default()),
                metrics: crate::metrics::CallMetrics::default(),
                move_metrics: crate::metrics::MoveMetrics::default(),
                alarm_clock: alarms::AlarmClock::default(),
                event_hub: pubsub::EventHub::default(),
            }),
        })
    }

    /// The counter of calls in flight (running or queued), for load reports.
    pub fn in_flight_counter(&self) -> Arc<AtomicU64> {
        self.inner.in_flight.clone()
    }

    /// Sets who decides ownership (the cluster's directory). Set once, before serving.
    pub fn set_ownership(&self, ownership: Arc<dyn Ownership>) {
        let _ = self.inner.ownership.set(ownership);
    }

    /// Maps a directory refusal for `id` to the station's error.
    fn ownership_error(id: &str, e: OwnershipError) -> Error {
        match e {
            OwnershipError::Elsewhere(home) => Error::HomedElsewhere {
                object: id.to_string(),
                home,
            },
            OwnershipError::ModeConflict => Error::ModeConflict {
                object: id.to_string(),
                stateless: false,
            },
            OwnershipError::Unavailable(message) => Error::DirectoryUnavailable(message),
        }
    }

    /// Sets how calls to objects not on this station are made (the cluster). Set once.
    pub fn set_remote(&self, remote: Arc<dyn RemoteCalls>) {
        let _ = self.inner.remote.set(remote);
    }

    /// The version and sha256 of a stateless object deployed here; `None` if `id` is not deployed
    /// here or keeps state.
    pub fn stateless(&self, id: &str) -> Option<(u32, String)> {
        let objects = self.inner.objects.lock().expect("objects lock");
        let object = objects.get(id).filter(|o| o.stateless)?;
        let slot = object.current();
        Some((slot.record.version, slot.record.sha256.clone()))
    }

    /// How this station serves `id`: `Some(true)` stateless, `Some(false)` with state, `None` not
    /// at all. One lookup, for routing every call.
    pub fn serves_stateless(&self, id: &str) -> Option<bool> {
        self.inner
            .objects
            .lock()
            .expect("objects lock")
            .get(id)
            .map(|o| o.stateless)
    }

    /// Whether this station holds `id` as an object with state (homed here or as a replica).
    pub fn holds_with_state(&self, id: &str) -> bool {
        let homed = self
            .inner
            .objects
            .lock()
            .expect("objects lock")
            .get(id)
            .is_some_and(|o| !o.stateless);
        homed
            || self
                .inner
                .replicas
                .lock()
                .expect("replicas lock")
                .contains_key(id)
    }

    /// Whether this station serves calls to `id` itself.
    pub fn serves(&self, id: &str) -> bool {
        self.inner
            .objects
            .lock()
            .expect("objects lock")
            .contains_key(id)
    }

    /// The longest a call may run (`--deadline-ms`); a deadline forwarded by another station is
    /// capped at it.
    pub fn call_deadline(&self) -> std::time::Duration {
        self.inner.config.call_deadline
    }

    /// Where this station's call spans go, and how new traces are sampled.
    pub fn tracer(&self) -> &crate::trace::Tracer {
        &self.inner.config.tracer
    }

    /// This station's id.
    pub fn station_id(&self) -> &str {
        self.inner.store.station_id()
    }

    /// The store, for read-only admin views (logs, versions).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Number of deployed objects.
    pub fn object_count(&self) -> usize {
        self.inner.objects.lock().expect("objects lock").len()
    }

    /// A snapshot of the objects homed here (the lock is not held afterwards).
    fn live_objects(&self) -> Vec<Arc<LiveObject>> {
        self.inner
            .objects
            .lock()
            .expect("objects lock")
            .values()
            .cloned()
            .collect()
    }

    fn object(&self, id: &str) -> Result<Arc<LiveObject>, Error> {
        validate_object_id(id)?;
        self.inner
            .objects
            .lock()
            .expect("objects lock")
            .get(id)
            .cloned()
            .ok_or_else(|| Error::ObjectNotFound(id.to_string()))
    }

    /// Object calls running or waiting for their turn on this station.
    pub fn in_flight(&self) -> u64 {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// The store's counters.
    pub fn store_stats(&self) -> store::StoreStats {
        self.inner.store.stats()
    }

    /// The metrics the call path records.
    pub fn call_metrics(&self) -> &crate::metrics::CallMetrics {
        &self.inner.metrics
    }

    /// The metrics migrations and failovers record (the directory records its failovers here).
    pub fn move_metrics(&self) -> &crate::metrics::MoveMetrics {
        &self.inner.move_metrics
    }

    /// What `GET /metrics` shows of each deployed object, sorted by id (reads only what is in
    /// memory: an object whose state was never opened shows none).
    pub fn object_gauges(&self) -> Vec<ObjectGauges> {
        let mut gauges: Vec<ObjectGauges> = self
            .live_objects()
            .iter()
            .map(|o| {
                let usage = o.state.get().map(|state| state.object_usage());
                ObjectGauges {
                    id: o.id.clone(),
                    version: o.current().record.version,
                    queued: o.queued.load(Ordering::Relaxed),
                    // Locked: a call is running in it, so it is live.
                    live_instance: o.turn.try_lock().map_or(true, |turn| turn.is_some()),
                    traps: o.traps.load(Ordering::Relaxed),
                    state_keys: usage.map(|u| u.keys),
                    state_bytes: usage.map(|u| u.bytes),
                }
            })
            .collect();
        gauges.sort_by(|a, b| a.id.cmp(&b.id));
        gauges
    }

    /// Every deployed object, sorted by id.
    pub fn list(&self) -> Vec<ObjectSummary> {
        let objects: Vec<Arc<LiveObject>> = self.live_objects();
        let mut list: Vec<ObjectSummary> = objects
            .iter()
            .map(|o| {
                let slot = o.current();
                ObjectSummary {
                    id: o.id.clone(),
                    version: slot.record.version,
                    sha256: slot.record.sha256.clone(),
                    home: self.station_id().to_string(),
                    replicas: Vec::new(),
                    stateless: o.stateless,
                }
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Metadata of one object.
    pub async fn metadata(&self, id: &str) -> Result<ObjectMetadata, Error> {
        let object = self.object(id)?;
        let slot = object.current();
        let active = match object.turn.try_lock() {
            Ok(guard) => guard.is_some(),
            Err(_) => true,
        };
        let state = self.state_of(&object).await?;
        Ok(ObjectMetadata {
            object_id: object.id.clone(),
            version: slot.record.version,
            sha256: slot.record.sha256.clone(),
            size: slot.record.size,
            deployed_at: slot.record.deployed_at,
            active,
            calls: object.calls.load(Ordering::Relaxed),
            traps: object.traps.load(Ordering::Relaxed),
            state_seq: state.applied_seq(),
            home: self.station_id().to_string(),
            quota: slot.meters.quota,
            quota_overrides: slot.record.quota.clone(),
            usage: state.usage(),
        })
    }

    /// The committed state of an object (opened on first use).
    pub async fn state(&self, id: &str) -> Result<ObjectState, Error> {
        let object = self.object(id)?;
        self.state_of(&object).await
    }

    async fn state_of(&self, object: &LiveObject) -> Result<ObjectState, Error> {
        let state = object
            .state
            .get_or_try_init(|| async {
                self.inner
                    .store
                    .state_async(&object.id)
                    .await
                    .map_err(Error::Storage)
            })
            .await?;
        Ok(state.clone())
    }

    /// Versions of an object, oldest first, and the current version number.
    pub async fn versions(&self, id: &str) -> Result<(u32, Vec<VersionRecord>), Error> {
        let object = self.object(id)?;
        let current = object.current().record.version;
        let store = self.inner.store.clone();
        let id = id.to_string();
        let list = blocking(move || store.versions().list(&id)).await??;
        Ok((current, list))
    }
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))
}
