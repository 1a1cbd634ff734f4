//! The station's objects: what is deployed, each object's turn queue and live activation, and the
//! path of one call from request to durable response.
//!
//! This is where the runtime and the store meet. A call takes the object's turn (one call at a
//! time per object), runs on the live activation (created on first use, replaced after a trap),
//! commits the call's writes as one batch when the status is below 500, releases the turn so the
//! next call can run while the batch is being made durable, and answers only once it is durable.
//! It knows nothing of HTTP routes or the CLI.

mod admin_locks;
mod call;
mod deploy;
mod id;
mod ownership;
mod quota;
mod replica;
mod services;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use call::{CallResult, CallSummary};
pub use deploy::{DeployOptions, DeployOutcome};
pub use id::{IdError, validate_object_id};
pub use ownership::{Elsewhere, Ownership, OwnershipError};
pub use replica::{ApplyOutcome, Copied, ObjectExport, Paused, Precopy, ReplicationSink};
pub use services::RemoteCalls;

use crate::runtime::{self, Activation, CompiledObject, Runtime};
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
}

/// Errors a station operation reports; the API maps each to a status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object id is malformed.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// No object with this id is deployed here.
    #[error("no object `{0}` is deployed")]
    ObjectNotFound(String),
    /// The object has no such version.
    #[error("object `{object}` has no version {version}")]
    VersionNotFound {
        /// Object id.
        object: String,
        /// Requested version.
        version: u32,
    },
    /// The object is homed on this station (so it cannot receive it from another).
    #[error("object `{0}` is homed on this station")]
    HomedHere(String),
    /// The deploy would switch an object between stateful and stateless.
    #[error(
        "object `{object}` is deployed {}; undeploy it first to deploy it {}",
        if *stateless { "stateless" } else { "with state" },
        if *stateless { "with state" } else { "stateless" }
    )]
    ModeConflict {
        /// Object id.
        object: String,
        /// Whether it is stateless now.
        stateless: bool,
    },
    /// The component was refused at deploy.
    #[error(transparent)]
    Component(runtime::Error),
    /// The object could not be instantiated to serve a call.
    #[error("object `{object}` could not start: {source}")]
    Activation {
        /// Object id.
        object: String,
        /// Why.
        source: runtime::Error,
    },
    /// The call trapped; nothing was committed.
    #[error("object `{object}` trapped: {message}")]
    Trapped {
        /// Object id.
        object: String,
        /// The trap.
        message: String,
        /// The guest backtrace, for the log.
        backtrace: String,
    },
    /// The call ran out of time; nothing was committed.
    #[error("object `{object}` did not answer within {deadline_ms} ms")]
    DeadlineExceeded {
        /// Object id.
        object: String,
        /// The deadline that applied.
        deadline_ms: u64,
    },
    /// The object moved to another station while the call waited; it must be sent there.
    #[error("object `{object}` moved to {address}")]
    Moved {
        /// Object id.
        object: String,
        /// The new home's address.
        address: String,
    },
    /// Replicas did not acknowledge the write in time (`--sync-replicas`). The write is durable
    /// here but was not acknowledged.
    #[error(
        "object `{object}`: the write is durable on its home but no replica acknowledged it: {message}"
    )]
    ReplicationFailed {
        /// Object id.
        object: String,
        /// Why.
        message: String,
    },
    /// The object answered with something that is not a valid HTTP response.
    #[error("object `{object}` answered with an invalid response: {message}")]
    InvalidResponse {
        /// Object id.
        object: String,
        /// What was wrong.
        message: String,
    },
    /// Another station homes the object; the request belongs there.
    #[error("object `{object}` is homed on station {}", .home.station)]
    HomedElsewhere {
        /// Object id.
        object: String,
        /// Its home.
        home: Elsewhere,
    },
    /// This station may not serve the object right now (not its home at this epoch in the
    /// directory, or its write lease lapsed): retry; the cluster routes it.
    #[error("object `{object}` cannot be served here right now: {reason}")]
    NotWriter {
        /// Object id.
        object: String,
        /// Why.
        reason: String,
    },
    /// The cluster directory cannot commit the change now.
    #[error("the cluster directory is unavailable: {0}")]
    DirectoryUnavailable(String),
    /// The store failed; the write may not be durable, so the call is reported as failed.
    #[error("storage error: {0}")]
    Storage(#[from] store::Error),
    /// A call would grow the object's state past its quota; nothing was committed.
    #[error("{message}")]
    StateQuotaExceeded {
        /// Object id.
        object: String,
        /// Which limit, and by how much.
        message: String,
    },
    /// A call wrote more than its write quota; nothing was committed.
    #[error("object `{object}`: {message}; nothing committed")]
    WriteQuotaExceeded {
        /// Object id.
        object: String,
        /// What it wrote, and the quota.
        message: String,
    },
    /// The object already has its quota of calls running or waiting for its turn.
    #[error("object `{object}` has {limit} calls running or queued, its quota; retry shortly")]
    TooBusy {
        /// Object id.
        object: String,
        /// The queue quota.
        limit: u32,
    },
    /// The object is over its quota of calls per second.
    #[error("object `{object}` is over its quota of {rate} calls per second")]
    RateLimited {
        /// Object id.
        object: String,
        /// The quota.
        rate: u32,
        /// When a call would be admitted.
        retry_after: Duration,
    },
    /// A deploy's quota overrides do not parse.
    #[error(transparent)]
    BadQuota(#[from] BadQuota),
    /// A blocking task panicked or was cancelled.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A deployed object and its live parts.
struct LiveObject {
    id: String,
    /// The version calls run; swapped by deploys, read at the start of every turn.
    version: Mutex<Arc<VersionSlot>>,
    /// The turn queue and the live activation it guards.
    turn: Arc<tokio::sync::Mutex<Option<Activation>>>,
    /// Set when the object was handed off to another station: its address.
    moved_to: Mutex<Option<String>>,
    /// Committed state, opened on first use.
    state: tokio::sync::OnceCell<ObjectState>,
    calls: AtomicU64,
    traps: AtomicU64,
    /// Calls running or waiting for the turn (bounded by the queue quota).
    queued: std::sync::atomic::AtomicU32,
    /// Placement epoch: increases whenever the object changes home.
    epoch: AtomicU64,
    /// Deployed stateless: no state, writes trap, runs on any station holding its code. Fixed for
    /// the life of the object (switching needs an undeploy).
    stateless: bool,
}

/// One deployed version: its record and, once loaded, its compiled component.
struct VersionSlot {
    record: VersionRecord,
    compiled: tokio::sync::OnceCell<CompiledObject>,
    /// The quota this version runs under, with its rate meters.
    meters: quota::Meters,
}

impl LiveObject {
    fn new(
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
        }
    }

    /// What the cluster should gossip about a stateless object: the version of the code this
    /// station holds. Stateful objects are the directory's, not gossip's.
    fn code_event(&self) -> Option<ObjectEvent> {
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

    fn current(&self) -> Arc<VersionSlot> {
        self.version.lock().expect("version lock").clone()
    }
}

impl VersionSlot {
    fn new(
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
        VersionSlot {
            meters: quota::Meters::new(overrides.over(defaults)),
            record,
            compiled: cell,
        }
    }
}

/// The handle to this station's objects. Cheap to clone.
#[derive(Clone)]
pub struct Station {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Runtime,
    store: Store,
    config: StationConfig,
    objects: Mutex<HashMap<String, Arc<LiveObject>>>,
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
    replicas: Mutex<HashMap<String, replica::ReplicaObject>>,
    /// Objects that moved away: id → new home's address, for forwarding.
    moved: Mutex<HashMap<String, String>>,
}

/// A change in the stateless code this station holds, for the cluster to gossip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectEvent {
    /// This station holds (`sha256` set) or has undeployed (`None`) version `version` of a
    /// stateless object's code. Stateless objects have no home: every station holding the newest
    /// code serves them, and stations fetch code they lack from one that holds it.
    Code {
        /// Object id.
        id: String,
        /// Version number.
        version: u32,
        /// sha256 of the code, or `None` for an undeploy (a tombstone).
        sha256: Option<String>,
    },
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
        let mut objects = HashMap::new();
        let mut replicas = HashMap::new();
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
                moved: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The counter of calls in flight (running or queued), for load reports.
    pub fn in_flight_counter(&self) -> Arc<AtomicU64> {
        self.inner.in_flight.clone()
    }

    /// Subscribes to changes of the stateless code held here; the receiver first gets a `Code`
    /// event for every stateless object held now. There is one subscriber: a new one replaces the
    /// previous one.
    pub fn subscribe(&self) -> tokio::sync::mpsc::UnboundedReceiver<ObjectEvent> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut events = self.inner.events.lock().expect("events lock");
        for object in self.inner.objects.lock().expect("objects lock").values() {
            if let Some(event) = object.code_event() {
                let _ = tx.send(event);
            }
        }
        *events = Some(tx);
        rx
    }

    fn announce(&self, event: ObjectEvent) {
        if let Some(tx) = self.inner.events.lock().expect("events lock").as_ref() {
            let _ = tx.send(event);
        }
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
        let store = self.inner.store.clone();
        let id = object.id.clone();
        let state = object
            .state
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || store.state(&id))
                    .await
                    .map_err(|e| Error::Internal(format!("opening state: {e}")))?
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

    /// Drops live instances idle for longer than the configured time. Returns how many.
    pub fn deactivate_idle(&self) -> usize {
        self.deactivate_where(|a| a.last_used.elapsed() >= self.inner.config.idle_timeout)
    }

    /// Drops idle live instances matching `pred` (objects in a call are skipped).
    fn deactivate_where(&self, pred: impl Fn(&Activation) -> bool) -> usize {
        let objects: Vec<Arc<LiveObject>> = self.live_objects();
        let mut dropped = 0;
        for object in objects {
            if let Ok(mut turn) = object.turn.try_lock()
                && turn.as_ref().is_some_and(&pred)
            {
                *turn = None;
                dropped += 1;
            }
        }
        dropped
    }

    /// Loads every deployed object's compiled component in the background, one at a time (from
    /// the artifact cache after a restart), so first calls after a start do not pay for it.
    pub fn spawn_warm_up(&self) -> tokio::task::JoinHandle<()> {
        let station = self.clone();
        tokio::spawn(async move {
            let objects: Vec<Arc<LiveObject>> = station.live_objects();
            for object in objects {
                let slot = object.current();
                if let Err(e) = station.compiled(&object, &slot).await {
                    tracing::warn!(object = %object.id, "could not load at start-up: {e}");
                }
            }
        })
    }

    /// Runs the idle reaper until the returned task is aborted.
    pub fn spawn_idle_reaper(&self) -> tokio::task::JoinHandle<()> {
        let station = self.clone();
        let every = (self.inner.config.idle_timeout / 4)
            .clamp(Duration::from_millis(250), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let dropped = station.deactivate_idle();
                if dropped > 0 {
                    tracing::debug!(dropped, "deactivated idle objects");
                }
            }
        })
    }

    /// Waits for in-flight calls to finish, then flushes and closes the store.
    pub async fn shutdown(&self) {
        let objects: Vec<Arc<LiveObject>> = self.live_objects();
        for object in objects {
            let mut turn = object.turn.lock().await;
            *turn = None;
        }
        let store = self.inner.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.shutdown()).await;
    }
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))
}
