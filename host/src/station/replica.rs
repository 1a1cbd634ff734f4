//! The station's side of replication, migration and failover: objects it holds as a replica,
//! batches it applies from a home, the hand-off of an object to another station, and promotion.
//!
//! The protocol (who sends what to whom, over HTTP) lives in the cluster; this file offers the
//! operations on local objects it needs, with the same rule as calls: nothing happens to an object
//! outside its turn.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{Error, LiveObject, Station, blocking};
use crate::store::{self, Batch, LogRecord, ObjectState, Placement, Role, Snapshot, VersionRecord};

/// Where committed batches of homed objects go (the cluster's replicator).
pub trait ReplicationSink: Send + Sync + 'static {
    /// Called once per committed batch, in seq order per object. When the station must wait for
    /// replicas (`--sync-replicas`), returns a future that resolves once enough replicas have the
    /// batch durably, or fails with the reason.
    fn committed(
        &self,
        object: &str,
        epoch: u64,
        batch: Arc<Batch>,
    ) -> Option<BoxFuture<'static, Result<(), String>>>;
    /// A new version of a homed object was deployed and must reach its replicas.
    fn version_added(&self, object: &str, epoch: u64, record: &VersionRecord);
    /// The batches of `object` up to `seq` are durable on this station (only those are shipped).
    fn durable(&self, object: &str, seq: u64);
}

/// An object this station keeps a copy of for another station.
pub(super) struct ReplicaObject {
    pub(super) state: ObjectState,
    pub(super) placement: Placement,
    /// Set after a demotion: this copy diverged and must be replaced by a snapshot.
    pub(super) needs_snapshot: bool,
}

/// Everything that moves with an object in a migration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectExport {
    /// Object id.
    pub object_id: String,
    /// Placement epoch on the old home; the new home takes `epoch + 1`.
    pub epoch: u64,
    /// Every version, oldest first, with its bytes.
    pub versions: Vec<(VersionRecord, Vec<u8>)>,
    /// The state.
    pub snapshot: Snapshot,
    /// The log, oldest first: the lines after the first `logs_from`, which the target already
    /// has from the pre-copy.
    pub logs: Vec<LogRecord>,
    /// How many of the log's first lines the target already has (0: `logs` is the whole log).
    pub logs_from: usize,
}

/// What a migration copies to the target before pausing the object: every version and the log so
/// far. Only what changed after it travels during the pause.
pub struct Precopy {
    /// Every version, oldest first, with its bytes.
    pub versions: Vec<(VersionRecord, Vec<u8>)>,
    /// The log so far, oldest first.
    pub logs: Vec<LogRecord>,
}

/// What the target of a migration holds from the pre-copy, so the export during the pause can leave
/// it out.
#[derive(Debug, Default)]
pub struct Copied {
    /// Version numbers the target has.
    pub versions: std::collections::HashSet<u32>,
    /// Number of log lines the target has, and the last of them (to check the log was not rotated
    /// in between).
    pub logs: usize,
    /// The last pre-copied log line.
    pub last_log: Option<LogRecord>,
}

impl Copied {
    /// What the target holds after receiving `precopy`.
    pub fn of(precopy: &Precopy) -> Copied {
        Copied {
            versions: precopy.versions.iter().map(|(r, _)| r.version).collect(),
            logs: precopy.logs.len(),
            last_log: precopy.logs.last().cloned(),
        }
    }
}

/// The result of applying replicated batches to one object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum ApplyOutcome {
    /// All applied (or already present); the replica is at `applied_seq`.
    Applied {
        /// Highest seq applied.
        applied_seq: u64,
        /// Highest version number held.
        version: u32,
        /// The copy's chain hash at `applied_seq` (the home compares it with its own).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        head: Option<String>,
    },
    /// A batch is missing: send from `expected`.
    Gap {
        /// The next seq this replica needs.
        expected: u64,
        /// Highest version number held.
        version: u32,
    },
    /// The replica needs a full snapshot (it diverged, or it has nothing yet and the home's
    /// recent batches do not start at 1).
    NeedsSnapshot,
    /// The sender's epoch is older than the one this station knows: it is no longer the home.
    Fenced {
        /// The epoch known here.
        epoch: u64,
    },
}

/// A guard holding an object's turn: no call runs on it until the guard is dropped or the
/// object is handed off.
pub struct Paused {
    object: Arc<LiveObject>,
    guard: tokio::sync::OwnedMutexGuard<Option<crate::runtime::Activation>>,
    /// When the pause began.
    pub since: Instant,
}

impl Station {
    /// Sets where committed batches go. Set once, by the code that connects station and cluster.
    pub fn set_replication(&self, sink: Arc<dyn ReplicationSink>) {
        let _ = self.inner.replication.set(sink);
    }

    /// The placement epoch of a homed object.
    pub fn epoch_of(&self, id: &str) -> Option<u64> {
        let objects = self.inner.objects.lock().expect("objects lock");
        objects.get(id).map(|o| o.epoch.load(Ordering::Relaxed))
    }

    /// Every object homed here with its placement epoch.
    pub fn homed_epochs(&self) -> Vec<(String, u64)> {
        let objects = self.inner.objects.lock().expect("objects lock");
        objects
            .iter()
            .map(|(id, o)| (id.clone(), o.epoch.load(Ordering::Relaxed)))
            .collect()
    }

    /// Where an object that left this station went (its new home's address), if it did.
    pub fn moved_to(&self, id: &str) -> Option<String> {
        self.inner
            .moved
            .lock()
            .expect("moved lock")
            .get(id)
            .cloned()
    }

    /// The committed state of an object this station homes or replicates.
    pub async fn any_state(&self, id: &str) -> Result<ObjectState, Error> {
        if let Some(replica) = self.inner.replicas.lock().expect("replicas lock").get(id) {
            return Ok(replica.state.clone());
        }
        self.state(id).await
    }

    /// Objects held here as replicas, with their placement.
    pub fn replica_placements(&self) -> Vec<(String, Placement, u64)> {
        let replicas = self.inner.replicas.lock().expect("replicas lock");
        replicas
            .iter()
            .map(|(id, r)| (id.clone(), r.placement.clone(), r.state.applied_seq()))
            .collect()
    }

    /// Opens (or creates) the replica copy of `id` for a home at `epoch`.
    async fn replica(
        &self,
        id: &str,
        home: &str,
        epoch: u64,
    ) -> Result<Result<ObjectState, ApplyOutcome>, Error> {
        if let Some(replica) = self
            .inner
            .replicas
            .lock()
            .expect("replicas lock")
            .get_mut(id)
        {
            if epoch < replica.placement.epoch {
                return Ok(Err(ApplyOutcome::Fenced {
                    epoch: replica.placement.epoch,
                }));
            }
            if replica.needs_snapshot {
                return Ok(Err(ApplyOutcome::NeedsSnapshot));
            }
            if epoch > replica.placement.epoch || replica.placement.home != home {
                replica.placement = Placement {
                    epoch,
                    role: Role::Replica,
                    home: home.to_string(),
                };
                let (store, id, placement) = (
                    self.inner.store.clone(),
                    id.to_string(),
                    replica.placement.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    store.versions().set_placement(&id, &placement)
                });
            }
            return Ok(Ok(replica.state.clone()));
        }
        if let Some(epoch_here) = self.epoch_of(id) {
            // This station homes it: a batch from elsewhere is from a stale home, or we are.
            if epoch <= epoch_here {
                return Ok(Err(ApplyOutcome::Fenced { epoch: epoch_here }));
            }
        }
        let store = self.inner.store.clone();
        let (id_owned, home_owned) = (id.to_string(), home.to_string());
        let (state, placement) = blocking(move || -> Result<_, store::Error> {
            let placement = Placement {
                epoch,
                role: Role::Replica,
                home: home_owned,
            };
            store.versions().set_placement(&id_owned, &placement)?;
            Ok((store.state(&id_owned)?, placement))
        })
        .await??;
        self.inner.replicas.lock().expect("replicas lock").insert(
            id.to_string(),
            ReplicaObject {
                state: state.clone(),
                placement,
                needs_snapshot: false,
            },
        );
        Ok(Ok(state))
    }

    fn replica_version(&self, id: &str) -> u32 {
        self.inner
            .store
            .versions()
            .list(id)
            .ok()
            .and_then(|v| v.last().map(|r| r.version))
            .unwrap_or(0)
    }

    /// Applies batches sent by the home of `id` (at `epoch`), in order, and waits until they are
    /// durable here before answering.
    pub async fn apply_replicated(
        &self,
        id: &str,
        home: &str,
        epoch: u64,
        batches: &[Batch],
    ) -> Result<ApplyOutcome, Error> {
        let state = match self.replica(id, home, epoch).await? {
            Ok(state) => state,
            Err(outcome) => return Ok(outcome),
        };
        let mut last_ticket = None;
        for batch in batches {
            for record in &batch.records {
                self.inner.store.observe_hlc(record.hlc);
            }
            match state.apply_replicated(batch) {
                Ok(Some(ticket)) => last_ticket = Some(ticket),
                Ok(None) => {}
                Err(store::Error::Gap { expected, .. }) => {
                    if let Some(ticket) = last_ticket.take() {
                        ticket.durable().await?;
                    }
                    return Ok(ApplyOutcome::Gap {
                        expected,
                        version: self.replica_version(id),
                    });
                }
                Err(store::Error::Diverged { seq, .. }) => {
                    if let Some(ticket) = last_ticket.take() {
                        ticket.durable().await?;
                    }
                    tracing::warn!(
                        object = id,
                        home,
                        seq,
                        "this copy's history differs from the home's (chain hash mismatch): asking for a snapshot"
                    );
                    return Ok(ApplyOutcome::NeedsSnapshot);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(ticket) = last_ticket {
            ticket.durable().await?;
        }
        let (applied_seq, head) = state.chain_head();
        Ok(ApplyOutcome::Applied {
            applied_seq,
            version: self.replica_version(id),
            head,
        })
    }

    /// Replaces the replica copy of `id` with a snapshot from its home.
    pub async fn install_replica_snapshot(
        &self,
        id: &str,
        home: &str,
        epoch: u64,
        snapshot: Snapshot,
    ) -> Result<ApplyOutcome, Error> {
        if let Some(replica) = self
            .inner
            .replicas
            .lock()
            .expect("replicas lock")
            .get_mut(id)
        {
            if epoch < replica.placement.epoch {
                return Ok(ApplyOutcome::Fenced {
                    epoch: replica.placement.epoch,
                });
            }
            replica.needs_snapshot = false;
        }
        let state = match self.replica(id, home, epoch).await? {
            Ok(state) => state,
            Err(outcome) => return Ok(outcome),
        };
        let state_for_install = state.clone();
        blocking(move || state_for_install.install_snapshot(&snapshot)).await??;
        let (applied_seq, head) = state.chain_head();
        Ok(ApplyOutcome::Applied {
            applied_seq,
            version: self.replica_version(id),
            head,
        })
    }

    /// Stores a version of a replicated object, number and metadata unchanged.
    pub async fn install_replica_version(
        &self,
        id: &str,
        record: VersionRecord,
        bytes: Vec<u8>,
    ) -> Result<(), Error> {
        let store = self.inner.store.clone();
        let id = id.to_string();
        blocking(move || store.versions().install(&id, &record, &bytes)).await??;
        Ok(())
    }

    /// Every version of a homed object (records and bytes), oldest first.
    pub async fn version_bytes(&self, id: &str) -> Result<Vec<(VersionRecord, Vec<u8>)>, Error> {
        let store = self.inner.store.clone();
        let id = id.to_string();
        blocking(move || -> Result<_, store::Error> {
            let mut out = Vec::new();
            for record in store.versions().list(&id)? {
                let bytes = store.versions().read_bytes(&id, record.version)?;
                out.push((record, bytes));
            }
            Ok(out)
        })
        .await?
        .map_err(Error::from)
    }

    /// Takes the object's turn and keeps it: calls queue until the guard is dropped or handed off.
    pub async fn pause(&self, id: &str) -> Result<Paused, Error> {
        let object = self.object(id)?;
        let guard = object.turn.clone().lock_owned().await;
        Ok(Paused {
            object,
            guard,
            since: Instant::now(),
        })
    }

    /// Everything that moves with a paused object.
    pub async fn export(
        &self,
        paused: &mut Paused,
        copied: &Copied,
    ) -> Result<ObjectExport, Error> {
        let object = &paused.object;
        let state = self.state_of(object).await?;
        // Calls before the pause may still be waiting for their batch to be durable.
        state.commit(Vec::new())?.durable().await?;
        let store = self.inner.store.clone();
        let id = object.id.clone();
        let skip = copied.versions.clone();
        let (versions, mut logs) = blocking(move || -> Result<_, store::Error> {
            let mut versions = Vec::new();
            for record in store.versions().list(&id)? {
                if !skip.contains(&record.version) {
                    let bytes = store.versions().read_bytes(&id, record.version)?;
                    versions.push((record, bytes));
                }
            }
            Ok((versions, store.logs().export(&id)?))
        })
        .await??;
        // Ship only the lines after the pre-copied ones, unless the log rotated in between.
        let n = copied.logs;
        let logs_from =
            if n > 0 && logs.len() >= n && copied.last_log.as_ref() == Some(&logs[n - 1]) {
                logs.drain(..n);
                n
            } else {
                0
            };
        Ok(ObjectExport {
            object_id: object.id.clone(),
            epoch: object.epoch.load(Ordering::Relaxed),
            versions,
            snapshot: state.export_snapshot(),
            logs,
            logs_from,
        })
    }

    /// Reads what a migration copies before pausing: every version and the log so far (the object
    /// keeps serving).
    pub async fn precopy(&self, id: &str) -> Result<Precopy, Error> {
        let object = self.object(id)?;
        let versions = self.version_bytes(&object.id).await?;
        let store = self.inner.store.clone();
        let id = object.id.clone();
        let logs = blocking(move || store.logs().export(&id)).await??;
        Ok(Precopy { versions, logs })
    }

    /// Receives a migration's pre-copy: stores the versions (as a replica would) and replaces this
    /// station's log of the object with the copied one. Refused for an object homed here.
    pub async fn install_precopy(&self, id: &str, precopy: Precopy) -> Result<(), Error> {
        super::validate_object_id(id)?;
        if self.serves(id) {
            return Err(Error::HomedHere(id.to_string()));
        }
        let store = self.inner.store.clone();
        let id = id.to_string();
        blocking(move || -> Result<(), store::Error> {
            for (record, bytes) in &precopy.versions {
                store.versions().install(&id, record, bytes)?;
            }
            store.logs().purge(&id)?;
            store.logs().import(&id, &precopy.logs)
        })
        .await??;
        Ok(())
    }

    /// Completes a hand-off: the object now lives at `address` (epoch `epoch`). Calls queued on
    /// the turn, and later ones, are answered with [`Error::Moved`] and forwarded there.
    pub async fn hand_off(
        &self,
        mut paused: Paused,
        new_home: &str,
        address: &str,
        epoch: u64,
    ) -> Result<(), Error> {
        let id = paused.object.id.clone();
        *paused.object.moved_to.lock().expect("moved lock") = Some(address.to_string());
        self.inner
            .moved
            .lock()
            .expect("moved lock")
            .insert(id.clone(), address.to_string());
        self.inner.objects.lock().expect("objects lock").remove(&id);
        *paused.guard = None;
        drop(paused);
        let store = self.inner.store.clone();
        let placement = Placement {
            epoch,
            role: Role::Replica,
            home: new_home.to_string(),
        };
        let id_owned = id.clone();
        let state = blocking(move || -> Result<_, store::Error> {
            store.versions().set_placement(&id_owned, &placement)?;
            Ok((store.state(&id_owned)?, placement))
        })
        .await??;
        self.inner.replicas.lock().expect("replicas lock").insert(
            id.clone(),
            ReplicaObject {
                state: state.0,
                placement: state.1,
                needs_snapshot: true,
            },
        );
        Ok(())
    }

    /// Installs a migrated object and serves it as its home at `epoch`.
    pub async fn install_migrated(&self, export: ObjectExport, epoch: u64) -> Result<(), Error> {
        let id = export.object_id.clone();
        super::validate_object_id(&id)?;
        let store = self.inner.store.clone();
        let station_id = self.station_id().to_string();
        let snapshot = export.snapshot;
        let versions = export.versions;
        let logs = export.logs;
        let logs_from = export.logs_from;
        let id_owned = id.clone();
        let (state, current) = blocking(move || -> Result<_, store::Error> {
            for (record, bytes) in &versions {
                store.versions().install(&id_owned, record, bytes)?;
            }
            let state = store.state(&id_owned)?;
            state.install_snapshot(&snapshot)?;
            if logs_from == 0 {
                // The whole log came now: drop any older copy of it.
                store.logs().purge(&id_owned)?;
            }
            store.logs().import(&id_owned, &logs)?;
            store.versions().set_placement(
                &id_owned,
                &Placement {
                    epoch,
                    role: Role::Home,
                    home: station_id,
                },
            )?;
            let current = store.versions().current(&id_owned)?;
            Ok((state, current))
        })
        .await??;
        let Some(current) = current else {
            return Err(Error::ObjectNotFound(id));
        };
        self.inner
            .replicas
            .lock()
            .expect("replicas lock")
            .remove(&id);
        self.inner.moved.lock().expect("moved lock").remove(&id);
        let object = Arc::new(LiveObject::new(
            &id,
            current,
            None,
            false,
            &self.inner.config.quota,
        ));
        object.epoch.store(epoch, Ordering::Relaxed);
        let _ = object.state.set(state);
        self.inner
            .objects
            .lock()
            .expect("objects lock")
            .insert(id, object);
        Ok(())
    }

    /// Makes this station the home of a replicated object at `epoch` (failover).
    pub async fn promote(&self, id: &str, epoch: u64) -> Result<(), Error> {
        let Some(replica) = self
            .inner
            .replicas
            .lock()
            .expect("replicas lock")
            .remove(id)
        else {
            return Err(Error::ObjectNotFound(id.to_string()));
        };
        let store = self.inner.store.clone();
        let station_id = self.station_id().to_string();
        let id_owned = id.to_string();
        let current = blocking(move || -> Result<_, store::Error> {
            store.versions().set_placement(
                &id_owned,
                &Placement {
                    epoch,
                    role: Role::Home,
                    home: station_id,
                },
            )?;
            store.versions().current(&id_owned)
        })
        .await??;
        let Some(current) = current else {
            return Err(Error::ObjectNotFound(id.to_string()));
        };
        self.inner.moved.lock().expect("moved lock").remove(id);
        let object = Arc::new(LiveObject::new(
            id,
            current,
            None,
            false,
            &self.inner.config.quota,
        ));
        object.epoch.store(epoch, Ordering::Relaxed);
        let _ = object.state.set(replica.state);
        self.inner
            .objects
            .lock()
            .expect("objects lock")
            .insert(id.to_string(), object);
        tracing::info!(object = id, epoch, "promoted to home");
        Ok(())
    }

    /// Stops homing `id` because the directory names `new_home` its home at `epoch` (a station
    /// that returns after a failover, or lost a concurrent claim). Its copy becomes a replica that
    /// needs a snapshot: whatever it wrote that the new home does not have was never acknowledged
    /// under the directory's rules, and is replaced by the new home's history.
    pub async fn demote(
        &self,
        id: &str,
        new_home: &str,
        address: &str,
        epoch: u64,
    ) -> Result<(), Error> {
        let paused = self.pause(id).await?;
        self.hand_off(paused, new_home, address, epoch).await?;
        tracing::warn!(
            object = id,
            new_home,
            epoch,
            "demoted: the directory names another home; this copy will be replaced by its history"
        );
        Ok(())
    }

    /// Sets the epoch of an object homed here (the directory says it is home at `epoch`).
    pub fn set_epoch(&self, id: &str, epoch: u64) {
        if let Some(object) = self.inner.objects.lock().expect("objects lock").get(id) {
            object.epoch.store(epoch, Ordering::Relaxed);
        }
    }

    /// Whether this station holds a replica copy of `id`.
    pub fn holds_replica(&self, id: &str) -> bool {
        self.inner
            .replicas
            .lock()
            .expect("replicas lock")
            .contains_key(id)
    }
}

impl Paused {
    /// The paused object's id.
    pub fn object_id(&self) -> &str {
        &self.object.id
    }
}
