//! Operations that need both the station and the cluster: replication of committed batches,
//! migration, failover with fencing, and calls to objects on other stations.
//!
//! The station knows its objects and nothing of peers; the cluster knows peers and placement and
//! nothing of objects' contents. This module connects the two, and is the only one that does.

pub mod failover;
pub mod migration;
pub mod remote;
pub mod replication;
pub mod stateless;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::cluster::{Cluster, CodeClaim, ObjectClaim};
use crate::station::{ObjectEvent, ReplicationSink, Station};
use crate::store::{Batch, Store, VersionRecord};

pub use replication::Replicator;

/// The coordinator of one station. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    station: Station,
    cluster: Cluster,
    replicator: Replicator,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

struct Sink(Replicator);

impl ReplicationSink for Sink {
    fn committed(
        &self,
        object: &str,
        epoch: u64,
        batch: Arc<Batch>,
    ) -> Option<BoxFuture<'static, Result<(), String>>> {
        self.0.committed(object, epoch, batch)
    }

    fn version_added(&self, object: &str, epoch: u64, _record: &VersionRecord) {
        self.0.version_added(object, epoch);
    }
}

impl Coordinator {
    /// Connects the station to the cluster and starts the claim, fencing and failover loops.
    pub fn start(
        station: Station,
        cluster: Cluster,
        store: Store,
        sync_replicas: usize,
    ) -> Coordinator {
        let replicator = Replicator::new(cluster.clone(), store, sync_replicas);
        station.set_remote(Arc::new(remote::ClusterCalls {
            cluster: cluster.clone(),
        }));
        station.set_replication(Arc::new(Sink(replicator.clone())));
        let coordinator = Coordinator {
            station,
            cluster,
            replicator,
            tasks: Arc::new(std::sync::Mutex::new(Vec::new())),
        };
        let claims = tokio::spawn(coordinator.clone().claim_loop());
        let failover = tokio::spawn(failover::run(coordinator.clone()));
        let code = tokio::spawn(stateless::run(coordinator.clone()));
        coordinator
            .tasks
            .lock()
            .expect("tasks lock")
            .extend([claims, failover, code]);
        coordinator
    }

    /// The station.
    pub fn station(&self) -> &Station {
        &self.station
    }

    /// The cluster.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The replicator.
    pub fn replicator(&self) -> &Replicator {
        &self.replicator
    }

    /// Keeps the gossip in step with what this station homes. Before claiming an object it checks
    /// that no other station holds it at a higher epoch: a station returning after a failover
    /// finds its objects homed elsewhere, steps down to replica (fencing) and sends its diverged
    /// writes to the new home, which merges them by last-writer-wins.
    async fn claim_loop(self) {
        let mut events = self.station.subscribe();
        self.cluster.wait_converged().await;
        while let Some(event) = events.recv().await {
            match event {
                ObjectEvent::Homed {
                    id,
                    epoch,
                    version,
                    sha256,
                } => {
                    if let Some(home) = self.cluster.home_of(&id)
                        && home.station != self.cluster.station_id()
                        && home.claim.epoch > epoch
                    {
                        self.step_down(&id, &home.station, &home.address, home.claim.epoch)
                            .await;
                        continue;
                    }
                    self.cluster
                        .claim(
                            &id,
                            &ObjectClaim {
                                epoch,
                                version,
                                sha256,
                                moved_to: None,
                            },
                        )
                        .await;
                }
                ObjectEvent::Released { id } => self.cluster.release(&id).await,
                ObjectEvent::Code {
                    id,
                    version,
                    sha256,
                } => {
                    self.cluster
                        .claim_code(&id, &CodeClaim { version, sha256 })
                        .await
                }
                ObjectEvent::MovedTo {
                    id,
                    epoch,
                    station,
                    version,
                    sha256,
                } => {
                    let claim = ObjectClaim {
                        epoch,
                        version,
                        sha256,
                        moved_to: Some(station.clone()),
                    };
                    self.cluster.claim(&id, &claim).await;
                    tokio::spawn(self.clone().drop_forwarding_claim(id, station, epoch));
                }
            }
        }
    }

    /// Withdraws a forwarding claim once the new home's own claim is in the view (bounded wait;
    /// a later claim of ours, e.g. the object coming back, is left alone).
    async fn drop_forwarding_claim(self, id: String, station: String, epoch: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            let view = self.cluster.view();
            let direct = view
                .member(&station)
                .and_then(|m| m.objects.get(&id))
                .is_some_and(|c| c.moved_to.is_none() && c.epoch >= epoch);
            if direct {
                // Gossip it a little longer so every station has seen the new claim.
                tokio::time::sleep(self.cluster.gossip_interval() * 4).await;
                break;
            }
            tokio::time::sleep(self.cluster.gossip_interval()).await;
        }
        let ours = self
            .cluster
            .view()
            .member(self.cluster.station_id())
            .and_then(|m| m.objects.get(&id).cloned());
        if ours.is_some_and(|c| c.moved_to.as_deref() == Some(station.as_str())) {
            self.cluster.release(&id).await;
        }
    }

    pub(super) async fn step_down(&self, id: &str, new_home: &str, address: &str, epoch: u64) {
        match self.station.demote(id, new_home, address, epoch).await {
            Ok(records) => {
                let path = format!("/cluster/internal/objects/{id}/merge");
                if let Err(e) = wire::post_json::<_, serde_json::Value>(
                    &self.cluster,
                    address,
                    &path,
                    &records,
                    Duration::from_secs(30),
                )
                .await
                {
                    tracing::error!(
                        object = id,
                        new_home,
                        "could not send diverged writes for merging: {e:#}"
                    );
                }
            }
            Err(e) => tracing::error!(object = id, "could not step down: {e}"),
        }
    }

    /// Stops the loops.
    pub fn shutdown(&self) {
        for task in self.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
        self.replicator.shutdown();
    }
}
