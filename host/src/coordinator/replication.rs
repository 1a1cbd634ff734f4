//! Replication (DESIGN §6): every committed batch of an object homed here streams to its replicas
//! in seq order, one HTTP request per replica station at a time carrying batches of many objects.
//!
//! A replica answers with the seq it has durably applied. Behind → the next batches are sent; a
//! gap older than the batches kept in memory, or a replica that diverged → a full snapshot. The
//! replica's answer also carries the highest version it holds, so component versions follow.
//! `--sync-replicas N` makes a commit's answer wait until N replicas have its batch durably.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

use crate::cluster::Cluster;
use crate::cluster::forward::SECRET_HEADER;
use crate::station::ApplyOutcome;
use crate::store::{Batch, Store, VersionRecord};

/// Batches kept in memory per object for catching replicas up without a snapshot.
const RECENT_BATCHES: usize = 4096;
/// Batches sent per object in one request.
const BATCHES_PER_REQUEST: usize = 512;
/// How often every stream is checked even without new commits (a replica that came back).
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// One object's batches for one replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicateItem {
    /// Object id.
    pub object: String,
    /// Placement epoch of the sender.
    pub epoch: u64,
    /// Batches in seq order (may be empty: a probe for the replica's position).
    pub batches: Vec<Batch>,
}

/// Body of `POST /cluster/internal/replicate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicateRequest {
    /// The home station sending.
    pub home: String,
    /// Per object.
    pub items: Vec<ReplicateItem>,
}

/// One object's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicateResult {
    /// Object id.
    pub object: String,
    /// What happened.
    pub outcome: ApplyOutcome,
}

struct Stream {
    epoch: u64,
    recent: VecDeque<Arc<Batch>>,
    last_seq: u64,
    /// Replica station → highest seq it has durably.
    acked: HashMap<String, u64>,
    /// Replica station → highest version it holds.
    versions: HashMap<String, u32>,
    waiters: Vec<(u64, oneshot::Sender<Result<(), String>>)>,
}

struct Peer {
    dirty: Mutex<HashSet<String>>,
    notify: Notify,
}

/// The replicator of this station's homed objects. Cheap to clone.
#[derive(Clone)]
pub struct Replicator {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: Cluster,
    store: Store,
    sync_replicas: usize,
    streams: Mutex<HashMap<String, Stream>>,
    peers: Mutex<HashMap<String, Arc<Peer>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Replicator {
    /// A replicator shipping to the replicas the cluster's placement names.
    pub fn new(cluster: Cluster, store: Store, sync_replicas: usize) -> Replicator {
        let replicator = Replicator {
            inner: Arc::new(Inner {
                cluster,
                store,
                sync_replicas,
                streams: Mutex::new(HashMap::new()),
                peers: Mutex::new(HashMap::new()),
                tasks: Mutex::new(Vec::new()),
            }),
        };
        let sweeper = replicator.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tick.tick().await;
                sweeper.sweep();
            }
        });
        replicator
            .inner
            .tasks
            .lock()
            .expect("tasks lock")
            .push(task);
        replicator
    }

    fn replicas(&self, object: &str) -> Vec<String> {
        self.inner
            .cluster
            .replicas_of(object, self.inner.cluster.station_id())
    }

    /// Records a committed batch and wakes the shippers of its replicas.
    pub fn committed(
        &self,
        object: &str,
        epoch: u64,
        batch: Arc<Batch>,
    ) -> Option<BoxFuture<'static, Result<(), String>>> {
        let replicas = self.replicas(object);
        let waiter = {
            let mut streams = self.inner.streams.lock().expect("streams lock");
            let stream = streams
                .entry(object.to_string())
                .or_insert_with(|| Stream::new(epoch));
            if epoch > stream.epoch {
                stream.epoch = epoch;
            }
            stream.last_seq = stream.last_seq.max(batch.seq);
            let seq = batch.seq;
            stream.recent.push_back(batch);
            while stream.recent.len() > RECENT_BATCHES {
                stream.recent.pop_front();
            }
            if self.inner.sync_replicas == 0 {
                None
            } else if replicas.len() < self.inner.sync_replicas {
                return Some(
                    futures::future::ready(Err(format!(
                        "--sync-replicas {} needs that many live replicas; {} available",
                        self.inner.sync_replicas,
                        replicas.len()
                    )))
                    .boxed(),
                );
            } else {
                let (tx, rx) = oneshot::channel();
                stream.waiters.push((seq, tx));
                Some(rx)
            }
        };
        for replica in replicas {
            self.mark_dirty(&replica, object);
        }
        waiter.map(|rx| {
            async move {
                rx.await
                    .unwrap_or_else(|_| Err("replication stopped".into()))
            }
            .boxed()
        })
    }

    /// A new version was deployed: make sure replicas get it.
    pub fn version_added(&self, object: &str, epoch: u64) {
        {
            let mut streams = self.inner.streams.lock().expect("streams lock");
            let stream = streams
                .entry(object.to_string())
                .or_insert_with(|| Stream::new(epoch));
            stream.epoch = stream.epoch.max(epoch);
        }
        for replica in self.replicas(object) {
            self.mark_dirty(&replica, object);
        }
    }

    /// Marks every object this station homes as needing a check with each of its replicas.
    fn sweep(&self) {
        let view = self.inner.cluster.view();
        let me = self.inner.cluster.station_id().to_string();
        let Some(myself) = view.member(&me) else {
            return;
        };
        for (object, claim) in &myself.objects {
            let replicas = self.replicas(object);
            let mut streams = self.inner.streams.lock().expect("streams lock");
            let stream = streams
                .entry(object.clone())
                .or_insert_with(|| Stream::new(claim.epoch));
            stream.epoch = stream.epoch.max(claim.epoch);
            let stale: Vec<String> = replicas
                .into_iter()
                .filter(|r| {
                    stream.acked.get(r).is_none_or(|&a| a < stream.last_seq)
                        || stream.versions.get(r).is_none_or(|&v| v < claim.version)
                })
                .collect();
            drop(streams);
            for replica in stale {
                self.mark_dirty(&replica, object);
            }
        }
    }

    fn mark_dirty(&self, replica: &str, object: &str) {
        let peer = {
            let mut peers = self.inner.peers.lock().expect("peers lock");
            match peers.get(replica) {
                Some(peer) => peer.clone(),
                None => {
                    let peer = Arc::new(Peer {
                        dirty: Mutex::new(HashSet::new()),
                        notify: Notify::new(),
                    });
                    peers.insert(replica.to_string(), peer.clone());
                    let task =
                        tokio::spawn(self.clone().ship_loop(replica.to_string(), peer.clone()));
                    self.inner.tasks.lock().expect("tasks lock").push(task);
                    peer
                }
            }
        };
        peer.dirty
            .lock()
            .expect("dirty lock")
            .insert(object.to_string());
        peer.notify.notify_one();
    }

    /// Ships dirty objects to one replica station, forever.
    async fn ship_loop(self, replica: String, peer: Arc<Peer>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            peer.notify.notified().await;
            loop {
                let objects: Vec<String> = peer.dirty.lock().expect("dirty lock").drain().collect();
                if objects.is_empty() {
                    break;
                }
                match self.ship(&replica, &objects).await {
                    Ok(again) => {
                        backoff = Duration::from_millis(100);
                        if !again.is_empty() {
                            peer.dirty.lock().expect("dirty lock").extend(again);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(replica = %replica, "replication failed, will retry: {e}");
                        peer.dirty.lock().expect("dirty lock").extend(objects);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
    }

    /// One round to one replica. Returns the objects that need another round.
    async fn ship(&self, replica: &str, objects: &[String]) -> anyhow::Result<Vec<String>> {
        let view = self.inner.cluster.view();
        let member = view
            .member(replica)
            .filter(|m| m.is_live())
            .ok_or_else(|| anyhow::anyhow!("replica {replica} is not live"))?;
        let address = member.address.clone();
        let items: Vec<ReplicateItem> = {
            let streams = self.inner.streams.lock().expect("streams lock");
            objects
                .iter()
                .filter_map(|object| {
                    let stream = streams.get(object)?;
                    let from = stream.acked.get(replica).map(|a| a + 1);
                    let batches = match from {
                        // Unknown position: a probe, the replica says where it is.
                        None => Vec::new(),
                        Some(from) => stream
                            .recent
                            .iter()
                            .filter(|b| b.seq >= from)
                            .take(BATCHES_PER_REQUEST)
                            .map(|b| (**b).clone())
                            .collect(),
                    };
                    Some(ReplicateItem {
                        object: object.clone(),
                        epoch: stream.epoch,
                        batches,
                    })
                })
                .collect()
        };
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let request = ReplicateRequest {
            home: self.inner.cluster.station_id().to_string(),
            items,
        };
        let results: Vec<ReplicateResult> = super::wire::post_json(
            &self.inner.cluster,
            &address,
            "/cluster/internal/replicate",
            &request,
            Duration::from_secs(30),
        )
        .await?;
        let mut again = Vec::new();
        for result in results {
            match self.handle_result(replica, &address, &result).await {
                Ok(true) => again.push(result.object),
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(object = %result.object, replica, "replication step failed: {e}");
                    again.push(result.object);
                }
            }
        }
        Ok(again)
    }

    /// Updates the stream from a replica's answer; returns whether the object needs another round.
    async fn handle_result(
        &self,
        replica: &str,
        address: &str,
        result: &ReplicateResult,
    ) -> anyhow::Result<bool> {
        let object = &result.object;
        match &result.outcome {
            ApplyOutcome::Applied {
                applied_seq,
                version,
            } => {
                self.ship_missing_versions(address, object, *version)
                    .await?;
                let mut streams = self.inner.streams.lock().expect("streams lock");
                let Some(stream) = streams.get_mut(object) else {
                    return Ok(false);
                };
                stream.acked.insert(replica.to_string(), *applied_seq);
                stream.versions.insert(
                    replica.to_string(),
                    (*version).max(stream.versions.get(replica).copied().unwrap_or(0)),
                );
                stream.release_waiters(self.inner.sync_replicas);
                Ok(*applied_seq < stream.last_seq)
            }
            ApplyOutcome::Gap { expected, version } => {
                self.ship_missing_versions(address, object, *version)
                    .await?;
                let from_memory = {
                    let mut streams = self.inner.streams.lock().expect("streams lock");
                    let Some(stream) = streams.get_mut(object) else {
                        return Ok(false);
                    };
                    let oldest = stream.recent.front().map(|b| b.seq);
                    let ok =
                        oldest.is_some_and(|o| o <= *expected) || (*expected > stream.last_seq);
                    if ok {
                        stream
                            .acked
                            .insert(replica.to_string(), expected.saturating_sub(1));
                    }
                    ok
                };
                if !from_memory {
                    self.send_snapshot(replica, address, object).await?;
                }
                Ok(true)
            }
            ApplyOutcome::NeedsSnapshot => {
                self.send_snapshot(replica, address, object).await?;
                Ok(true)
            }
            ApplyOutcome::Fenced { epoch } => {
                tracing::warn!(object = %object, replica, epoch, "replica refuses our batches: another station homes this object at a higher epoch");
                Ok(false)
            }
        }
    }

    async fn send_snapshot(
        &self,
        replica: &str,
        address: &str,
        object: &str,
    ) -> anyhow::Result<()> {
        let store = self.inner.store.clone();
        let id = object.to_string();
        let snapshot =
            tokio::task::spawn_blocking(move || store.state(&id).map(|s| s.export_snapshot()))
                .await??;
        let epoch = self
            .inner
            .streams
            .lock()
            .expect("streams lock")
            .get(object)
            .map(|s| s.epoch)
            .unwrap_or(1);
        let path = format!(
            "/cluster/internal/objects/{object}/snapshot?home={}&epoch={epoch}",
            self.inner.cluster.station_id()
        );
        let outcome: ApplyOutcome = super::wire::post_json(
            &self.inner.cluster,
            address,
            &path,
            &snapshot,
            Duration::from_secs(60),
        )
        .await?;
        if let ApplyOutcome::Applied { applied_seq, .. } = outcome {
            let mut streams = self.inner.streams.lock().expect("streams lock");
            if let Some(stream) = streams.get_mut(object) {
                stream.acked.insert(replica.to_string(), applied_seq);
                stream.release_waiters(self.inner.sync_replicas);
            }
        }
        Ok(())
    }

    async fn ship_missing_versions(
        &self,
        address: &str,
        object: &str,
        held: u32,
    ) -> anyhow::Result<()> {
        let store = self.inner.store.clone();
        let id = object.to_string();
        let missing = tokio::task::spawn_blocking(
            move || -> Result<Vec<(VersionRecord, Vec<u8>)>, crate::store::Error> {
                let mut out = Vec::new();
                for record in store
                    .versions()
                    .list(&id)?
                    .into_iter()
                    .filter(|r| r.version > held)
                {
                    let bytes = store.versions().read_bytes(&id, record.version)?;
                    out.push((record, bytes));
                }
                Ok(out)
            },
        )
        .await??;
        for (record, bytes) in missing {
            let url = format!("{address}/cluster/internal/objects/{object}/versions");
            let mut request = self
                .inner
                .cluster
                .http()
                .post(&url)
                .header(VERSION_HEADER, super::wire::header_json(&record)?)
                .body(bytes)
                .timeout(Duration::from_secs(60));
            if let Some(secret) = self.inner.cluster.secret() {
                request = request.header(SECRET_HEADER, secret);
            }
            let response = request.send().await?;
            if !response.status().is_success() {
                anyhow::bail!(
                    "version {} of {object} refused: {}",
                    record.version,
                    response.text().await.unwrap_or_default()
                );
            }
        }
        Ok(())
    }

    /// Replication lag: for each homed object with replicas, the seqs each replica still lacks.
    pub fn lag(&self) -> Vec<(String, String, u64)> {
        let streams = self.inner.streams.lock().expect("streams lock");
        let mut out = Vec::new();
        for (object, stream) in streams.iter() {
            for (replica, acked) in &stream.acked {
                out.push((
                    object.clone(),
                    replica.clone(),
                    stream.last_seq.saturating_sub(*acked),
                ));
            }
        }
        out
    }

    /// Stops shipping.
    pub fn shutdown(&self) {
        for task in self.inner.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
    }
}

/// Header carrying a version's metadata (JSON) when its bytes are shipped.
pub const VERSION_HEADER: &str = "x-op-version";

impl Stream {
    fn new(epoch: u64) -> Stream {
        Stream {
            epoch,
            recent: VecDeque::new(),
            last_seq: 0,
            acked: HashMap::new(),
            versions: HashMap::new(),
            waiters: Vec::new(),
        }
    }

    /// Resolves the waiters whose seq at least `needed` replicas have.
    fn release_waiters(&mut self, needed: usize) {
        if self.waiters.is_empty() {
            return;
        }
        let acked = &self.acked;
        let mut done = Vec::new();
        let mut keep = Vec::new();
        for (seq, tx) in std::mem::take(&mut self.waiters) {
            if acked.values().filter(|&&a| a >= seq).count() >= needed {
                done.push(tx);
            } else {
                keep.push((seq, tx));
            }
        }
        self.waiters = keep;
        for tx in done {
            let _ = tx.send(Ok(()));
        }
    }
}
