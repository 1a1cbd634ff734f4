//! Operations that need both the station and the cluster: ownership through the directory,
//! replication of committed batches, migration, and calls to objects on other stations.
//!
//! The station knows its objects and nothing of peers; the cluster knows peers and the directory
//! and nothing of objects' contents. This module connects the two, and is the only one that does.

pub mod migration;
pub mod ownership;
pub mod remote;
pub mod replication;
pub mod stateless;
pub mod wire;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::cluster::{Cluster, CodeClaim};
use crate::station::{ObjectEvent, ReplicationSink, Station};
use crate::store::{Batch, Store, VersionRecord};

pub use replication::Replicator;

/// The coordinator of one station. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    station: Station,
    cluster: Cluster,
    replicator: Replicator,
    /// Set once the station follows the directory (startup claims committed).
    ready: Arc<tokio::sync::watch::Sender<bool>>,
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

    fn durable(&self, object: &str, seq: u64) {
        self.0.durable(object, seq);
    }

    fn replicated(&self, object: &str, seq: u64) -> Option<BoxFuture<'static, Result<(), String>>> {
        self.0.replicated(object, seq)
    }
}

impl Coordinator {
    /// Connects the station to the cluster and starts following the directory and gossiping the
    /// stateless code held here.
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
        station.set_ownership(Arc::new(ownership::DirectoryOwnership {
            cluster: cluster.clone(),
        }));
        let coordinator = Coordinator {
            station,
            cluster,
            replicator,
            ready: Arc::new(tokio::sync::watch::channel(false).0),
            tasks: Arc::new(std::sync::Mutex::new(Vec::new())),
        };
        let follow = tokio::spawn(ownership::follow(coordinator.clone()));
        let claims = tokio::spawn(coordinator.clone().code_claim_loop());
        let code = tokio::spawn(stateless::run(coordinator.clone()));
        coordinator
            .tasks
            .lock()
            .expect("tasks lock")
            .extend([follow, claims, code]);
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

    /// Gossips the stateless code this station holds.
    async fn code_claim_loop(self) {
        let mut events = self.station.subscribe();
        self.cluster.wait_converged().await;
        while let Some(ObjectEvent::Code {
            id,
            version,
            sha256,
        }) = events.recv().await
        {
            self.cluster
                .claim_code(&id, &CodeClaim { version, sha256 })
                .await;
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
