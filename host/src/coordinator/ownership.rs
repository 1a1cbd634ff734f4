//! Ownership through the directory: the station's [`Ownership`] hooks (claim before a first
//! deploy, commit each version, remove on undeploy, check the writer before every call and commit)
//! and the loop that keeps the station in step with the directory (promote where it names this
//! station home, demote where it names another).

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Coordinator;
use crate::cluster::Cluster;
use crate::cluster::directory::{Command, DirectoryState, Mode, ObjectEntry, Refusal};
use crate::station::{Elsewhere, Ownership, OwnershipError};

/// The station's ownership hooks, answered by the directory.
pub struct DirectoryOwnership {
    /// The cluster (directory, addresses, placement hints).
    pub cluster: Cluster,
}

fn elsewhere(cluster: &Cluster, entry: &ObjectEntry) -> OwnershipError {
    OwnershipError::Elsewhere(Elsewhere {
        station: entry.home.clone(),
        address: cluster.address_of(&entry.home).unwrap_or_default(),
    })
}

/// Commits `command` and maps a refusal to the station's terms.
async fn commit(
    cluster: &Cluster,
    command: Command,
) -> Result<Option<ObjectEntry>, OwnershipError> {
    let outcome = cluster
        .directory()
        .propose(command)
        .await
        .map_err(|e| OwnershipError::Unavailable(e.to_string()))?;
    match (outcome.refused, outcome.entry) {
        (None, entry) => Ok(entry),
        (Some(Refusal::HomedElsewhere), Some(entry)) => Err(elsewhere(cluster, &entry)),
        (Some(Refusal::ModeConflict), _) => Err(OwnershipError::ModeConflict),
        (Some(Refusal::StaleEpoch), Some(entry)) if entry.home != cluster.station_id() => {
            Err(elsewhere(cluster, &entry))
        }
        (Some(why), _) => Err(OwnershipError::Unavailable(format!(
            "the directory refused the change ({why:?}); retry"
        ))),
    }
}

impl Ownership for DirectoryOwnership {
    fn claim(&self, id: &str) -> BoxFuture<'static, Result<u64, OwnershipError>> {
        let cluster = self.cluster.clone();
        let id = id.to_string();
        async move {
            let me = cluster.station_id().to_string();
            let command = Command::Claim {
                replicas: cluster.choose_replicas(&id, &me),
                object: id,
                station: me,
                mode: Mode::Stateful,
            };
            Ok(commit(&cluster, command).await?.map_or(1, |e| e.epoch))
        }
        .boxed()
    }

    fn version_set(
        &self,
        id: &str,
        epoch: u64,
        version: u32,
        sha256: &str,
    ) -> BoxFuture<'static, Result<(), OwnershipError>> {
        let cluster = self.cluster.clone();
        let command = Command::SetVersion {
            object: id.to_string(),
            station: cluster.station_id().to_string(),
            epoch,
            version,
            sha256: sha256.to_string(),
        };
        async move { commit(&cluster, command).await.map(|_| ()) }.boxed()
    }

    fn removed(&self, id: &str, epoch: u64) -> BoxFuture<'static, Result<(), OwnershipError>> {
        let cluster = self.cluster.clone();
        let command = Command::Remove {
            object: id.to_string(),
            epoch,
        };
        async move {
            let outcome = cluster
                .directory()
                .propose(command)
                .await
                .map_err(|e| OwnershipError::Unavailable(e.to_string()))?;
            match (outcome.refused, outcome.entry) {
                // Removed now, or not listed at all: nothing more to do.
                (None, _) | (Some(Refusal::NotFound), _) => Ok(()),
                (_, Some(entry)) if entry.home != cluster.station_id() => {
                    Err(elsewhere(&cluster, &entry))
                }
                (why, _) => Err(OwnershipError::Unavailable(format!(
                    "the directory refused the removal ({why:?}); retry"
                ))),
            }
        }
        .boxed()
    }

    fn wait_writer(
        &self,
        id: &str,
        epoch: u64,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<(), String>> {
        let ownership = DirectoryOwnership {
            cluster: self.cluster.clone(),
        };
        let id = id.to_string();
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut changes = ownership.cluster.directory().subscribe();
            loop {
                let result = ownership.check_writer(&id, epoch);
                let settled_elsewhere =
                    ownership.cluster.directory().lookup(&id).is_some_and(|e| {
                        e.home != ownership.cluster.station_id() && e.epoch >= epoch
                    });
                if result.is_ok() || settled_elsewhere || tokio::time::Instant::now() >= deadline {
                    return result;
                }
                // A directory change, or a lease renewal (polled).
                let _ = tokio::time::timeout(Duration::from_millis(20), changes.changed()).await;
            }
        }
        .boxed()
    }

    fn check_writer(&self, id: &str, epoch: u64) -> Result<(), String> {
        let directory = self.cluster.directory();
        let me = self.cluster.station_id();
        let listed = directory.with_entry(id, |entry| {
            if entry.home != me {
                Err(format!("the directory names {} its home", entry.home))
            } else if entry.epoch != epoch {
                Err(format!(
                    "its home changed (epoch {} here, {} in the directory); retry",
                    epoch, entry.epoch
                ))
            } else {
                Ok(())
            }
        });
        match listed {
            None => Err("the directory does not list it yet; retry".into()),
            Some(Err(reason)) => Err(reason),
            Some(Ok(())) if !directory.lease_valid() => Err(
                "this station's write lease lapsed: it cannot reach a majority of the cluster \
                 directory"
                    .into(),
            ),
            Some(Ok(())) => Ok(()),
        }
    }
}

/// Keeps the station in step with the directory: first lists the objects homed here that the
/// directory does not know (data from before, or a claim interrupted by a crash), then on every
/// change promotes replicas the directory names home and demotes homes it does not.
pub(super) async fn follow(coordinator: Coordinator) {
    let directory = coordinator.cluster.directory().clone();
    let mut changes = directory.subscribe();
    coordinator.claim_unlisted().await;
    coordinator.ready.send_replace(true);
    loop {
        let applied = changes.borrow_and_update().clone();
        coordinator.reconcile(&applied.directory).await;
        if changes.changed().await.is_err() {
            return;
        }
    }
}

impl Coordinator {
    /// Waits (bounded) until this station follows the directory: its startup claims are committed
    /// and it holds a write lease, so its first calls are not refused.
    pub async fn wait_ready(&self, timeout: Duration) {
        let mut ready = self.ready.subscribe();
        let directory = self.cluster.directory().clone();
        let _ = tokio::time::timeout(timeout, async move {
            let _ = ready.wait_for(|r| *r).await;
            while !directory.lease_valid() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Claims, with their current version, the stateful objects homed here that the directory
    /// does not list; retries while the directory has no leader.
    async fn claim_unlisted(&self) {
        let ownership = DirectoryOwnership {
            cluster: self.cluster.clone(),
        };
        for object in self.station.list() {
            if object.stateless {
                continue;
            }
            for attempt in 0..100u32 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                if self.cluster.directory().lookup(&object.id).is_some() {
                    break;
                }
                let claimed = match ownership.claim(&object.id).await {
                    Ok(epoch) => {
                        self.station.set_epoch(&object.id, epoch);
                        ownership
                            .version_set(&object.id, epoch, object.version, &object.sha256)
                            .await
                    }
                    Err(e) => Err(e),
                };
                match claimed {
                    Ok(()) => break,
                    // Another station homes it: the reconcile demotes this copy.
                    Err(OwnershipError::Elsewhere(_)) | Err(OwnershipError::ModeConflict) => break,
                    Err(OwnershipError::Unavailable(e)) => {
                        tracing::debug!(object = %object.id, "claim not committed yet: {e}");
                    }
                }
            }
        }
    }

    /// Brings the station in line with one state of the directory.
    async fn reconcile(&self, directory: &DirectoryState) {
        let me = self.cluster.station_id().to_string();
        for (id, epoch) in self.station.homed_epochs() {
            if self.station.serves_stateless(&id) != Some(false) {
                continue;
            }
            match directory.get(&id) {
                Some(entry) if entry.mode == Mode::Stateful && entry.home == me => {
                    if entry.epoch != epoch {
                        self.station.set_epoch(&id, entry.epoch);
                    }
                    continue;
                }
                Some(entry) if entry.mode == Mode::Stateful => {
                    let address = self.cluster.address_of(&entry.home).unwrap_or_default();
                    if let Err(e) = self
                        .station
                        .demote(&id, &entry.home, &address, entry.epoch)
                        .await
                    {
                        tracing::error!(object = %id, "could not step down: {e}");
                    }
                }
                _ => {}
            }
        }
        for (id, entry) in directory.homed_at(&me) {
            if self.station.serves(id) {
                continue;
            }
            if self.station.holds_replica(id) {
                tracing::warn!(object = %id, epoch = entry.epoch, "the directory names this station home: serving");
                if let Err(e) = self.station.promote(id, entry.epoch).await {
                    tracing::error!(object = %id, "promotion failed: {e}");
                }
            }
        }
    }
}
