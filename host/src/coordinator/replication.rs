//! Replication (DESIGN §6): every committed batch of an object homed here streams to its replicas
//! in seq order, one HTTP request per replica station at a time carrying batches of many objects.
//!
//! A replica answers with the seq it has durably applied. Behind → the next batches are sent; a
//! gap older than the batches kept in memory, or a replica that diverged → a full snapshot. The
//! replica's answer also carries the highest version it holds, so component versions follow.
//! `--sync-replicas N` makes a commit's answer wait until every replica of the directory's
//! in-sync set has its batch durably, and refuses writes while that set has fewer than N members
//! (Kafka's ISR rule). A replica that falls behind for [`ISR_LAG`] is removed from the in-sync set
//! *through the directory* before any write is acknowledged without it, and is added back once it
//! has caught up: failover promotes only in-sync replicas, so an acknowledged write survives it.

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
use crate::store::{Batch, Store, VersionRecord, batch_cost};

/// Batches kept in memory per object for catching replicas up without a snapshot...
const RECENT_BATCHES: usize = 4096;
/// ...and their bytes at most, per object...
const RECENT_BYTES: usize = 16 << 20;
/// ...and over every object this station homes (past it, the stream just written to gives up its oldest
/// batches: a replica that far behind gets a snapshot).
const RECENT_BYTES_TOTAL: usize = 256 << 20;
/// Batches sent per object in one request.
const BATCHES_PER_REQUEST: usize = 512;
/// Bytes of batches in one request at most (its first batch always goes, however large).
const REQUEST_BYTES: usize = 8 << 20;
/// How often every stream is checked even without new commits (a replica that came back).
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How long an in-sync replica may leave a write waiting before it is removed from the set.
pub const ISR_LAG: Duration = Duration::from_millis(1500);
/// How often waiting writes are checked against [`ISR_LAG`].
const ISR_CHECK_EVERY: Duration = Duration::from_millis(250);

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

/// A write waiting for the in-sync set: its seq, since when, and who to tell.
type Waiter = (u64, std::time::Instant, oneshot::Sender<Result<(), String>>);

struct Stream {
    epoch: u64,
    /// The latest batches, with their cost ([`batch_cost`]), oldest first.
    recent: VecDeque<Arc<Batch>>,
    /// The summed cost of `recent`.
    recent_bytes: usize,
    last_seq: u64,
    /// Highest seq durable on this home: only batches up to it are shipped, so a power loss
    /// here can never leave a replica holding a batch the home lost.
    durable_seq: u64,
    /// The home's seq when it began homing the object at `epoch`. A replica first heard from in
    /// this epoch that is ahead of it holds writes of an earlier home that this one never had:
    /// it gets a snapshot, so every copy keeps one history.
    base_seq: u64,
    /// Replicas heard from in this epoch.
    contacted: HashSet<String>,
    /// Replica station → highest seq it has durably.
    acked: HashMap<String, u64>,
    /// Replica station → since when it lacks a committed batch (absent: it has them all).
    behind_since: HashMap<String, std::time::Instant>,
    /// Replica station → highest version it holds.
    versions: HashMap<String, u32>,
    /// Writes waiting for the in-sync set: seq, since when, and who to tell.
    waiters: Vec<Waiter>,
    /// A change of the in-sync set is being committed.
    isr_change: bool,
}

struct Peer {
    dirty: Mutex<HashSet<String>>,
    notify: Notify,
}

/// How far one replica of one homed object is behind.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaLag {
    /// Object id.
    pub object: String,
    /// Replica station id.
    pub replica: String,
    /// Committed batches it does not hold yet.
    pub seqs: u64,
    /// Seconds since it first lacked one of them (0 when it holds them all).
    pub seconds: f64,
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
    /// The summed `recent_bytes` of every stream (changed under the streams lock).
    recent_bytes: std::sync::atomic::AtomicUsize,
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
                recent_bytes: Default::default(),
                peers: Mutex::new(HashMap::new()),
                tasks: Mutex::new(Vec::new()),
            }),
        };
        let sweeper = replicator.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tick.tick().await;
                sweeper.sweep().await;
            }
        });
        let checker = replicator.clone();
        let isr = tokio::spawn(async move {
            let mut tick = tokio::time::interval(ISR_CHECK_EVERY);
            loop {
                tick.tick().await;
                checker.check_in_sync();
            }
        });
        replicator
            .inner
            .tasks
            .lock()
            .expect("tasks lock")
            .extend([task, isr]);
        replicator
    }

    /// The replicas the directory assigns to `object` while this station homes it.
    fn replicas(&self, object: &str) -> Vec<String> {
        match self.inner.cluster.home_of(object) {
            Some(home) if home.station == self.inner.cluster.station_id() => home.entry.replicas,
            _ => Vec::new(),
        }
    }

    /// Records a committed batch and wakes the shippers of its replicas.
    pub fn committed(
        &self,
        object: &str,
        epoch: u64,
        batch: Arc<Batch>,
    ) -> Option<BoxFuture<'static, Result<(), String>>> {
        let waiter = {
            let mut streams = self.inner.streams.lock().expect("streams lock");
            let stream = streams
                .entry(object.to_string())
                .or_insert_with(|| Stream::new(epoch));
            let freed = stream.begin_epoch(epoch, batch.seq.saturating_sub(1));
            self.freed_recent(freed);
            stream.last_seq = stream.last_seq.max(batch.seq);
            stream.mark_behind(std::time::Instant::now());
            let seq = batch.seq;
            self.keep_recent(stream, batch);
            stream.prune_waiters();
            let in_sync = self.in_sync(object);
            if self.inner.sync_replicas == 0 {
                None
            } else if in_sync.len() < self.inner.sync_replicas {
                return Some(
                    futures::future::ready(Err(format!(
                        "--sync-replicas {} needs that many in-sync replicas; the directory lists {} ({})",
                        self.inner.sync_replicas,
                        in_sync.len(),
                        in_sync.join(", ")
                    )))
                    .boxed(),
                );
            } else {
                let (tx, rx) = oneshot::channel();
                stream.waiters.push((seq, std::time::Instant::now(), tx));
                Some(rx)
            }
        };
        waiter.map(|rx| {
            async move {
                rx.await
                    .unwrap_or_else(|_| Err("replication stopped".into()))
            }
            .boxed()
        })
    }

    /// With `--sync-replicas`, a future that resolves once the in-sync replicas hold `object`'s
    /// batches up to `seq` (at once if they do already); `None` without.
    pub fn replicated(
        &self,
        object: &str,
        seq: u64,
    ) -> Option<BoxFuture<'static, Result<(), String>>> {
        if self.inner.sync_replicas == 0 || seq == 0 {
            return None;
        }
        let in_sync = self.in_sync(object);
        if in_sync.len() < self.inner.sync_replicas {
            return Some(
                futures::future::ready(Err(format!(
                    "--sync-replicas {} needs that many in-sync replicas; the directory lists {}",
                    self.inner.sync_replicas,
                    in_sync.len()
                )))
                .boxed(),
            );
        }
        let rx = {
            let mut streams = self.inner.streams.lock().expect("streams lock");
            let stream = streams.get_mut(object)?;
            let (tx, rx) = oneshot::channel();
            stream.waiters.push((seq, std::time::Instant::now(), tx));
            stream.waiters.sort_by_key(|(seq, ..)| *seq);
            stream.release_waiters(&in_sync, self.inner.sync_replicas);
            rx
        };
        Some(
            async move {
                rx.await
                    .unwrap_or_else(|_| Err("replication stopped".into()))
            }
            .boxed(),
        )
    }

    /// Keeps `batch` among the stream's recent ones, within [`RECENT_BATCHES`], [`RECENT_BYTES`] and,
    /// over all streams, [`RECENT_BYTES_TOTAL`].
    fn keep_recent(&self, stream: &mut Stream, batch: Arc<Batch>) {
        use std::sync::atomic::Ordering::Relaxed;
        let total = &self.inner.recent_bytes;
        let cost = batch_cost(&batch);
        stream.recent.push_back(batch);
        stream.recent_bytes += cost;
        total.fetch_add(cost, Relaxed);
        while stream.recent.len() > 1
            && (stream.recent.len() > RECENT_BATCHES
                || stream.recent_bytes > RECENT_BYTES
                || total.load(Relaxed) > RECENT_BYTES_TOTAL)
        {
            let dropped = stream.recent.pop_front().map_or(0, |b| batch_cost(&b));
            stream.recent_bytes -= dropped;
            total.fetch_sub(dropped, Relaxed);
        }
    }

    /// Counts `bytes` of recent batches a stream dropped.
    fn freed_recent(&self, bytes: usize) {
        self.inner
            .recent_bytes
            .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Empties a stream's recent batches (its object is no longer homed here).
    fn forget_recent(&self, stream: &mut Stream) {
        self.inner
            .recent_bytes
            .fetch_sub(stream.recent_bytes, std::sync::atomic::Ordering::Relaxed);
        stream.recent.clear();
        stream.recent_bytes = 0;
    }

    /// Batches of `object` up to `seq` are durable here: ship them.
    pub fn durable(&self, object: &str, seq: u64) {
        {
            let mut streams = self.inner.streams.lock().expect("streams lock");
            let Some(stream) = streams.get_mut(object) else {
                return;
            };
            stream.durable_seq = stream.durable_seq.max(seq);
        }
        for replica in self.replicas(object) {
            self.mark_dirty(&replica, object);
        }
    }

    /// The seq this station has applied for `object`, if its state is loaded (never does I/O).
    fn applied_if_loaded(&self, object: &str) -> Option<u64> {
        self.inner
            .store
            .cached_state(object)
            .map(|s| s.applied_seq())
    }

    /// The seq this station has applied for `object`, loading its state off the async workers if
    /// needed (0 if it cannot be read: the replicas then say where they are).
    async fn applied_here(&self, object: &str) -> u64 {
        match self.inner.store.state_async(object).await {
            Ok(state) => state.applied_seq(),
            Err(e) => {
                tracing::debug!(object, "reading the applied seq: {e}");
                0
            }
        }
    }

    /// The in-sync replicas the directory lists for `object` while this station homes it.
    fn in_sync(&self, object: &str) -> Vec<String> {
        match self.inner.cluster.home_of(object) {
            Some(home) if home.station == self.inner.cluster.station_id() => home.entry.in_sync,
            _ => Vec::new(),
        }
    }

    /// Releases the writes of `object` that every in-sync replica holds.
    fn release(&self, object: &str) {
        let in_sync = self.in_sync(object);
        let mut streams = self.inner.streams.lock().expect("streams lock");
        if let Some(stream) = streams.get_mut(object) {
            stream.release_waiters(&in_sync, self.inner.sync_replicas);
        }
    }

    /// Removes from the in-sync set, through the directory, the replicas that have left a write
    /// waiting for longer than [`ISR_LAG`] — unless that would leave fewer than
    /// `--sync-replicas`, in which case the writes keep waiting and fail at their deadline.
    fn check_in_sync(&self) {
        if self.inner.sync_replicas == 0 {
            return;
        }
        let mut shrink = Vec::new();
        {
            let mut streams = self.inner.streams.lock().expect("streams lock");
            for (object, stream) in streams.iter_mut() {
                stream.prune_waiters();
                let Some(&(oldest, since, _)) = stream.waiters.first() else {
                    continue;
                };
                if stream.isr_change || since.elapsed() < ISR_LAG {
                    continue;
                }
                let Some(home) = self.inner.cluster.home_of(object) else {
                    continue;
                };
                if home.station != self.inner.cluster.station_id() {
                    continue;
                }
                let lagging: Vec<String> = home
                    .entry
                    .in_sync
                    .iter()
                    .filter(|r| stream.acked.get(*r).is_none_or(|&a| a < oldest))
                    .cloned()
                    .collect();
                let keep: Vec<String> = home
                    .entry
                    .in_sync
                    .iter()
                    .filter(|r| !lagging.contains(r))
                    .cloned()
                    .collect();
                if lagging.is_empty() || keep.len() < self.inner.sync_replicas {
                    continue;
                }
                stream.isr_change = true;
                shrink.push((object.clone(), home.entry, keep, lagging));
            }
        }
        for (object, entry, keep, lagging) in shrink {
            tracing::warn!(object = %object, lagging = ?lagging, "replicas fell behind: removing them from the in-sync set");
            self.spawn_isr_change(object, entry, keep);
        }
    }

    /// Commits a new in-sync set for `object`, then re-checks its waiting writes.
    fn spawn_isr_change(
        &self,
        object: String,
        entry: crate::cluster::ObjectEntry,
        in_sync: Vec<String>,
    ) {
        let replicator = self.clone();
        tokio::spawn(async move {
            let command = crate::cluster::directory::Command::SetReplicas {
                object: object.clone(),
                epoch: entry.epoch,
                replicas: entry.replicas.clone(),
                in_sync,
            };
            if let Err(e) = replicator.inner.cluster.directory().propose(command).await {
                tracing::warn!(object = %object, "in-sync set not changed: {e}");
            }
            if let Some(stream) = replicator
                .inner
                .streams
                .lock()
                .expect("streams lock")
                .get_mut(&object)
            {
                stream.isr_change = false;
            }
            replicator.release(&object);
        });
    }

    /// Adds `replica` back to the in-sync set once it holds every batch.
    fn maybe_expand(&self, object: &str, replica: &str) {
        let Some(home) = self.inner.cluster.home_of(object) else {
            return;
        };
        if home.station != self.inner.cluster.station_id()
            || home.entry.in_sync.iter().any(|r| r == replica)
            || !home.entry.replicas.iter().any(|r| r == replica)
        {
            return;
        }
        {
            let mut streams = self.inner.streams.lock().expect("streams lock");
            let Some(stream) = streams.get_mut(object) else {
                return;
            };
            let caught_up = stream
                .acked
                .get(replica)
                .is_some_and(|&a| a >= stream.last_seq);
            if !caught_up || stream.isr_change {
                return;
            }
            stream.isr_change = true;
        }
        let mut in_sync = home.entry.in_sync.clone();
        in_sync.push(replica.to_string());
        tracing::info!(
            object,
            replica,
            "replica caught up: back in the in-sync set"
        );
        self.spawn_isr_change(object.to_string(), home.entry, in_sync);
    }

    /// A new version was deployed: make sure replicas get it.
    pub fn version_added(&self, object: &str, epoch: u64) {
        {
            let mut streams = self.inner.streams.lock().expect("streams lock");
            let stream = streams
                .entry(object.to_string())
                .or_insert_with(|| Stream::new(epoch));
            if epoch > stream.epoch || stream.last_seq == 0 {
                // Not loaded: the next sweep starts the epoch once it has read the seq.
                if let Some(base) = self.applied_if_loaded(object) {
                    let freed = stream.begin_epoch(epoch, base);
                    self.freed_recent(freed);
                }
            }
        }
        for replica in self.replicas(object) {
            self.mark_dirty(&replica, object);
        }
    }

    /// Marks every object this station homes as needing a check with each of its replicas, and
    /// drops the streams of objects it no longer homes.
    async fn sweep(&self) {
        let me = self.inner.cluster.station_id().to_string();
        let applied = self.inner.cluster.directory().applied();
        let homed: Vec<(String, crate::cluster::ObjectEntry)> = applied
            .directory
            .homed_at(&me)
            .map(|(object, entry)| (object.clone(), entry.clone()))
            .collect();
        for (object, entry) in &homed {
            let needs_base = {
                let streams = self.inner.streams.lock().expect("streams lock");
                streams
                    .get(object)
                    .is_none_or(|s| entry.epoch > s.epoch || s.last_seq == 0)
            };
            // Read before taking the lock: loading a state reads its file.
            let base = if needs_base {
                Some(self.applied_here(object).await)
            } else {
                None
            };
            let mut streams = self.inner.streams.lock().expect("streams lock");
            let stream = streams
                .entry(object.clone())
                .or_insert_with(|| Stream::new(entry.epoch));
            if let Some(base) = base
                && (entry.epoch > stream.epoch || stream.last_seq == 0)
            {
                let freed = stream.begin_epoch(entry.epoch, base);
                stream.last_seq = stream.last_seq.max(base);
                self.freed_recent(freed);
            }
            let stale: Vec<String> = entry
                .replicas
                .iter()
                .filter(|r| {
                    stream.acked.get(*r).is_none_or(|&a| a < stream.last_seq)
                        || stream.versions.get(*r).is_none_or(|&v| v < entry.version)
                })
                .cloned()
                .collect();
            drop(streams);
            for replica in stale {
                self.mark_dirty(&replica, object);
            }
        }
        let mut streams = self.inner.streams.lock().expect("streams lock");
        let gone: Vec<String> = streams
            .iter()
            .filter(|(object, stream)| {
                stream.waiters.is_empty() && !homed.iter().any(|(o, _)| o == *object)
            })
            .map(|(object, _)| object.clone())
            .collect();
        for object in gone {
            if let Some(mut stream) = streams.remove(&object) {
                self.forget_recent(&mut stream);
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
        let mut again = Vec::new();
        let items = {
            let streams = self.inner.streams.lock().expect("streams lock");
            request_items(&streams, replica, objects, &mut again)
        };
        if items.is_empty() {
            return Ok(again);
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
        let held = match &result.outcome {
            ApplyOutcome::Applied { applied_seq, .. } => Some(*applied_seq),
            ApplyOutcome::Gap { expected, .. } => Some(expected.saturating_sub(1)),
            _ => None,
        };
        if let Some(held) = held {
            let diverged = {
                let mut streams = self.inner.streams.lock().expect("streams lock");
                let Some(stream) = streams.get_mut(object) else {
                    return Ok(false);
                };
                stream.contacted.insert(replica.to_string()) && held > stream.base_seq
            };
            if diverged {
                tracing::warn!(object = %object, replica, held, "replica holds writes this home never had (an earlier home's, never acknowledged): replacing its copy");
                self.send_snapshot(replica, address, object).await?;
                return Ok(true);
            }
        }
        if let ApplyOutcome::Applied {
            applied_seq,
            head: Some(head),
            ..
        } = &result.outcome
        {
            let ours = self
                .inner
                .streams
                .lock()
                .expect("streams lock")
                .get(object)
                .and_then(|stream| stream.hash_at(*applied_seq));
            if ours.is_some_and(|ours| ours != *head) {
                tracing::warn!(object = %object, replica, seq = applied_seq, "replica's history differs from this home's at the same seq (chain hash mismatch): replacing its copy");
                self.send_snapshot(replica, address, object).await?;
                return Ok(true);
            }
        }
        match &result.outcome {
            ApplyOutcome::Applied {
                applied_seq,
                version,
                ..
            } => {
                self.ship_missing_versions(address, object, *version)
                    .await?;
                let mut streams = self.inner.streams.lock().expect("streams lock");
                let Some(stream) = streams.get_mut(object) else {
                    return Ok(false);
                };
                stream.record_ack(replica, *applied_seq);
                stream.versions.insert(
                    replica.to_string(),
                    (*version).max(stream.versions.get(replica).copied().unwrap_or(0)),
                );
                let again = *applied_seq < stream.last_seq;
                drop(streams);
                self.release(object);
                self.maybe_expand(object, replica);
                Ok(again)
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
            if let Some(stream) = self
                .inner
                .streams
                .lock()
                .expect("streams lock")
                .get_mut(object)
            {
                stream.record_ack(replica, applied_seq);
            }
            self.release(object);
            self.maybe_expand(object, replica);
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

    /// Replication lag of every homed object's replicas (those heard from), by object then
    /// replica.
    pub fn lag(&self) -> Vec<ReplicaLag> {
        let now = std::time::Instant::now();
        let streams = self.inner.streams.lock().expect("streams lock");
        let mut out = Vec::new();
        for (object, stream) in streams.iter() {
            for (replica, acked) in &stream.acked {
                out.push(ReplicaLag {
                    object: object.clone(),
                    replica: replica.clone(),
                    seqs: stream.last_seq.saturating_sub(*acked),
                    seconds: stream
                        .behind_since
                        .get(replica)
                        .map_or(0.0, |since| now.duration_since(*since).as_secs_f64()),
                });
            }
        }
        out.sort_by(|a, b| (&a.object, &a.replica).cmp(&(&b.object, &b.replica)));
        out
    }

    /// Stops shipping.
    pub fn shutdown(&self) {
        for task in self.inner.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
    }
}

/// The items of one request to `replica` for `objects`: from each object's stream, the durable
/// batches the replica lacks (none for a replica whose position is unknown: a probe), within
/// [`BATCHES_PER_REQUEST`] per object and [`REQUEST_BYTES`] in all. Objects left out for the byte
/// bound, or cut short by it, are added to `again`.
fn request_items(
    streams: &HashMap<String, Stream>,
    replica: &str,
    objects: &[String],
    again: &mut Vec<String>,
) -> Vec<ReplicateItem> {
    let mut budget = REQUEST_BYTES;
    let mut items = Vec::with_capacity(objects.len());
    for object in objects {
        let Some(stream) = streams.get(object) else {
            continue;
        };
        if budget == 0 {
            again.push(object.clone());
            continue;
        }
        let mut batches = Vec::new();
        if let Some(&acked) = stream.acked.get(replica) {
            let pending = stream
                .recent
                .iter()
                .filter(|b| b.seq > acked && b.seq <= stream.durable_seq)
                .take(BATCHES_PER_REQUEST);
            for batch in pending {
                let cost = batch_cost(batch);
                if cost > budget && !(batches.is_empty() && items.is_empty()) {
                    budget = 0;
                    again.push(object.clone());
                    break;
                }
                budget = budget.saturating_sub(cost);
                batches.push((**batch).clone());
            }
        }
        items.push(ReplicateItem {
            object: object.clone(),
            epoch: stream.epoch,
            batches,
        });
    }
    items
}

/// Header carrying a version's metadata (JSON) when its bytes are shipped.
pub const VERSION_HEADER: &str = "x-op-version";

impl Stream {
    /// Records that `replica` holds the batches up to `seq` durably.
    fn record_ack(&mut self, replica: &str, seq: u64) {
        self.acked.insert(replica.to_string(), seq);
        if seq >= self.last_seq {
            self.behind_since.remove(replica);
        }
    }

    /// After a commit: every replica that lacks it is behind from `now` (if not already).
    fn mark_behind(&mut self, now: std::time::Instant) {
        for (replica, &acked) in &self.acked {
            if acked < self.last_seq {
                self.behind_since.entry(replica.clone()).or_insert(now);
            }
        }
    }

    fn new(epoch: u64) -> Stream {
        Stream {
            epoch,
            recent: VecDeque::new(),
            last_seq: 0,
            acked: HashMap::new(),
            behind_since: HashMap::new(),
            versions: HashMap::new(),
            waiters: Vec::new(),
            recent_bytes: 0,
            isr_change: false,
            durable_seq: 0,
            base_seq: 0,
            contacted: HashSet::new(),
        }
    }

    /// Starts (or restarts) the stream at `epoch` from the home's seq `base`. Returns the bytes of
    /// recent batches it dropped.
    #[must_use]
    fn begin_epoch(&mut self, epoch: u64, base: u64) -> usize {
        let mut freed = 0;
        if epoch > self.epoch {
            // The batches kept belong to an earlier epoch: this station may have homed the object
            // before under another history, so they can no longer be shipped.
            self.recent.clear();
            freed = std::mem::take(&mut self.recent_bytes);
            self.last_seq = base;
        }
        if epoch > self.epoch || self.contacted.is_empty() && self.last_seq == 0 {
            self.epoch = epoch;
            self.base_seq = base;
            self.durable_seq = self.durable_seq.max(base);
            self.contacted.clear();
            self.acked.clear();
        }
        freed
    }

    /// Drops the waiters whose caller gave up (its deadline passed, its client went away).
    fn prune_waiters(&mut self) {
        self.waiters.retain(|(_, _, tx)| !tx.is_closed());
    }

    /// This home's chain hash at `seq`, if a batch kept in memory tells it.
    fn hash_at(&self, seq: u64) -> Option<String> {
        let first = self.recent.front()?.seq;
        if seq + 1 < first || seq > self.last_seq {
            return None;
        }
        if seq + 1 == first {
            return self.recent.front()?.prev.clone();
        }
        let batch = self.recent.get((seq - first) as usize)?;
        (batch.seq == seq).then(|| batch.chain_hash())
    }

    /// Resolves the waiters whose seq every in-sync replica has, while the in-sync set has at
    /// least `needed` members.
    fn release_waiters(&mut self, in_sync: &[String], needed: usize) {
        if self.waiters.is_empty() || in_sync.len() < needed {
            return;
        }
        let acked = &self.acked;
        let mut done = Vec::new();
        let mut keep = Vec::new();
        for (seq, since, tx) in std::mem::take(&mut self.waiters) {
            if in_sync
                .iter()
                .all(|r| acked.get(r).is_some_and(|&a| a >= seq))
            {
                done.push(tx);
            } else {
                keep.push((seq, since, tx));
            }
        }
        self.waiters = keep;
        for tx in done {
            let _ = tx.send(Ok(()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Record;

    fn chained(n: u64) -> Vec<Arc<Batch>> {
        let mut prev = None;
        (1..=n)
            .map(|seq| {
                let batch = Batch {
                    seq,
                    records: vec![Record {
                        key: format!("k{seq}"),
                        value: Some(seq.to_string()),
                        hlc: seq,
                    }],
                    prev: prev.take(),
                };
                prev = Some(batch.chain_hash());
                Arc::new(batch)
            })
            .collect()
    }

    #[test]
    fn the_home_knows_its_hash_at_every_seq_it_keeps_and_the_one_before() {
        let batches = chained(6);
        let mut stream = Stream::new(1);
        stream.recent.extend(batches[2..].iter().cloned());
        stream.last_seq = 6;
        assert_eq!(stream.hash_at(1), None, "older than what is kept");
        assert_eq!(
            stream.hash_at(2),
            Some(batches[1].chain_hash()),
            "from the first kept batch's prev"
        );
        for b in &batches[2..] {
            assert_eq!(stream.hash_at(b.seq), Some(b.chain_hash()));
        }
        assert_eq!(stream.hash_at(7), None, "beyond the last seq");
        assert_eq!(Stream::new(1).hash_at(0), None);
    }

    fn big(seq: u64, bytes: usize) -> Arc<Batch> {
        Arc::new(Batch {
            seq,
            records: vec![Record {
                key: "k".into(),
                value: Some("v".repeat(bytes)),
                hlc: seq,
            }],
            prev: None,
        })
    }

    fn stream_at(acked: u64, batches: impl IntoIterator<Item = Arc<Batch>>) -> Stream {
        let mut stream = Stream::new(1);
        stream.recent.extend(batches);
        stream.last_seq = stream.recent.back().map_or(0, |b| b.seq);
        stream.durable_seq = stream.last_seq;
        stream.acked.insert("r".into(), acked);
        stream
    }

    #[test]
    fn a_request_stays_within_its_byte_bound_and_names_what_it_left_for_the_next() {
        let mb = 1 << 20;
        let mut streams = HashMap::new();
        streams.insert(
            "a".to_string(),
            stream_at(0, (1..=6).map(|s| big(s, 3 * mb))),
        );
        streams.insert("b".to_string(), stream_at(0, [big(1, 10)]));
        let mut again = Vec::new();
        let objects = ["a".to_string(), "b".to_string()];
        let items = request_items(&streams, "r", &objects, &mut again);
        let bytes: usize = items.iter().flat_map(|i| &i.batches).map(batch_cost).sum();
        assert!(bytes <= REQUEST_BYTES, "{bytes} bytes in one request");
        assert_eq!(items.len(), 1, "b waits for the next request");
        assert_eq!(
            items[0].batches.iter().map(|b| b.seq).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(again, ["a", "b"]);
    }

    #[test]
    fn a_batch_larger_than_the_bound_still_goes_alone() {
        let mut streams = HashMap::new();
        streams.insert(
            "a".to_string(),
            stream_at(0, [big(1, REQUEST_BYTES * 2), big(2, 1)]),
        );
        let mut again = Vec::new();
        let items = request_items(&streams, "r", &["a".to_string()], &mut again);
        assert_eq!(items[0].batches.len(), 1);
        assert_eq!(again, ["a"]);
    }

    #[test]
    fn only_durable_batches_the_replica_lacks_are_sent_and_an_unknown_replica_is_probed() {
        let mut streams = HashMap::new();
        let mut stream = stream_at(2, (1..=5).map(|s| big(s, 1)));
        stream.durable_seq = 4;
        streams.insert("a".to_string(), stream);
        let mut again = Vec::new();
        let items = request_items(&streams, "r", &["a".to_string()], &mut again);
        assert_eq!(
            items[0].batches.iter().map(|b| b.seq).collect::<Vec<_>>(),
            [3, 4]
        );
        let probe = request_items(&streams, "other", &["a".to_string()], &mut again);
        assert!(probe[0].batches.is_empty());
        assert!(again.is_empty());
    }

    #[test]
    fn waiters_whose_caller_gave_up_are_pruned_and_the_rest_released_in_order() {
        let mut stream = Stream::new(1);
        let mut receivers = Vec::new();
        for seq in 1..=4 {
            let (tx, rx) = oneshot::channel();
            stream.waiters.push((seq, std::time::Instant::now(), tx));
            receivers.push(rx);
        }
        // The callers of seqs 1 and 3 gave up.
        drop(receivers.remove(2));
        drop(receivers.remove(0));
        stream.prune_waiters();
        assert_eq!(
            stream.waiters.iter().map(|w| w.0).collect::<Vec<_>>(),
            [2, 4]
        );
        stream.acked.insert("r".into(), 2);
        stream.release_waiters(&["r".to_string()], 1);
        assert_eq!(receivers[0].try_recv().unwrap(), Ok(()));
        assert!(
            receivers[1].try_recv().is_err(),
            "seq 4 is not replicated yet"
        );
        assert_eq!(stream.waiters.len(), 1);
    }
}
