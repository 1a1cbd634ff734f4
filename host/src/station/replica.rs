//! The station's side of replication: the objects it holds as a replica copy for another station's
//! home, the batches, snapshots and versions it applies from that home, and the epochs it fences
//! with. Migration (`migration.rs`) and failover (`failover.rs`) are beside it.
//!
//! The protocol (who sends what to whom, over HTTP) lives in the coordinator; this file offers the
//! operations on local objects it needs, with the same rule as calls: nothing happens to an object
//! outside its turn.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{Error, Station, blocking};
use crate::store::{self, Batch, ObjectState, Placement, Snapshot, VersionRecord};

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
    /// When the station must wait for replicas, a future that resolves once enough replicas
    /// hold the batches of `object` up to `seq` (already committed and handed to
    /// [`ReplicationSink::committed`]): a replayed answer waits for its batch as the first
    /// answer did.
    fn replicated(&self, object: &str, seq: u64) -> Option<BoxFuture<'static, Result<(), String>>>;
}

/// An object this station keeps a copy of for another station.
pub(super) struct ReplicaObject {
    pub(super) state: ObjectState,
    pub(super) placement: Placement,
    /// Set after a demotion: this copy diverged and must be replaced by a snapshot.
    pub(super) needs_snapshot: bool,
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
        let known = {
            let mut replicas = self.inner.replicas.lock().expect("replicas lock");
            match replicas.get_mut(id) {
                None => None,
                Some(replica) if epoch < replica.placement.epoch => {
                    return Ok(Err(ApplyOutcome::Fenced {
                        epoch: replica.placement.epoch,
                    }));
                }
                Some(replica) if replica.needs_snapshot => {
                    return Ok(Err(ApplyOutcome::NeedsSnapshot));
                }
                Some(replica) => {
                    let moved = epoch > replica.placement.epoch || replica.placement.home != home;
                    let placement = Placement::replica_of(home, epoch);
                    Some((replica.state.clone(), moved.then_some(placement)))
                }
            }
        };
        if let Some((state, moved)) = known {
            if let Some(placement) = moved {
                // The new home and epoch are on disk before this copy takes the home's batches (a
                // restart must fence the old home, not take it back), and in memory only once they
                // are: a failed write is retried by the home's next request.
                let (store, id_owned, on_disk) =
                    (self.inner.store.clone(), id.to_string(), placement.clone());
                blocking(move || store.versions().set_placement(&id_owned, &on_disk)).await??;
                if let Some(replica) = self
                    .inner
                    .replicas
                    .lock()
                    .expect("replicas lock")
                    .get_mut(id)
                    && placement.epoch >= replica.placement.epoch
                {
                    replica.placement = placement;
                }
            }
            return Ok(Ok(state));
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
            let placement = Placement::replica_of(home_owned, epoch);
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

    /// The highest version of `id` this station holds (0 if none or unreadable), read off the async
    /// workers.
    async fn replica_version(&self, id: &str) -> u32 {
        let (store, id) = (self.inner.store.clone(), id.to_string());
        blocking(move || store.versions().list(&id))
            .await
            .ok()
            .and_then(|listed| listed.ok())
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
            let permit = state.reserve(store::batch_cost(batch)).await?;
            match state.apply_reserved(batch, permit) {
                Ok(Some(ticket)) => last_ticket = Some(ticket),
                Ok(None) => {}
                Err(store::Error::Gap { expected, .. }) => {
                    if let Some(ticket) = last_ticket.take() {
                        ticket.durable().await?;
                    }
                    return Ok(ApplyOutcome::Gap {
                        expected,
                        version: self.replica_version(id).await,
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
            version: self.replica_version(id).await,
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
            version: self.replica_version(id).await,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::runtime::{Runtime, RuntimeConfig};
    use crate::station::{ApplyOutcome, Quota, Station, StationConfig};
    use crate::store::{Batch, Durability, Record, Store, StoreConfig};

    fn batch(seq: u64, prev: Option<String>) -> Batch {
        Batch {
            seq,
            records: vec![Record {
                key: "k".into(),
                value: Some(seq.to_string()),
                hlc: seq,
            }],
            prev,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_placement_that_cannot_be_written_fails_the_apply_and_is_written_by_the_retry() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = Store::open(StoreConfig {
            durability: Durability::None,
            ..StoreConfig::new(&data)
        })
        .unwrap();
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: dir.path().join("cache"),
            memory_limit_bytes: 16 << 20,
            max_instances: 2,
        })
        .unwrap();
        let station = Station::open(
            runtime,
            store.clone(),
            StationConfig {
                call_deadline: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
                quota: Quota::default(),
                idempotency_ttl: Duration::from_secs(86_400),
                tracer: crate::trace::Tracer::disabled(),
                event_retention: 1_000,
                alarm_retry_base: Duration::from_secs(1),
            },
        )
        .unwrap();
        let first = batch(1, None);
        let applied = station
            .apply_replicated("obj", "a", 1, std::slice::from_ref(&first))
            .await;
        assert!(
            matches!(applied, Ok(ApplyOutcome::Applied { applied_seq: 1, .. })),
            "{applied:?}"
        );
        // The placement's temp file cannot be created: the write of the new home fails.
        let blocker = data.join("objects/obj/placement.tsv.tmp");
        std::fs::create_dir(&blocker).unwrap();
        let second = batch(2, Some(first.chain_hash()));
        let refused = station
            .apply_replicated("obj", "b", 2, std::slice::from_ref(&second))
            .await;
        assert!(
            refused.is_err(),
            "a lost placement write was answered {refused:?}"
        );
        let on_disk = store.versions().placement("obj").unwrap().unwrap();
        assert_eq!((on_disk.epoch, on_disk.home.as_str()), (1, "a"));
        // Once the disk takes it again, the home's retry writes it before applying.
        std::fs::remove_dir(&blocker).unwrap();
        let retried = station.apply_replicated("obj", "b", 2, &[second]).await;
        assert!(
            matches!(retried, Ok(ApplyOutcome::Applied { applied_seq: 2, .. })),
            "{retried:?}"
        );
        let on_disk = store.versions().placement("obj").unwrap().unwrap();
        assert_eq!((on_disk.epoch, on_disk.home.as_str()), (2, "b"));
    }
}
