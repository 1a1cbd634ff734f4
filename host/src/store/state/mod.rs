//! One object's key/value state: the in-memory index, the commit path, and crash recovery of `state.tsv`.
//!
//! `data/state/{id}/state.tsv` is append-only TSV with the header `seq hlc op key value`. A batch is its
//! `set`/`del` records, all carrying the batch's `seq` (a per-object counter from 1) and each its own `hlc` (the
//! NTP64 time of a hybrid-logical-clock timestamp, as a decimal u64), followed by one `commit` record with the
//! same seq, the greatest hlc of the batch's records, the batch's chain hash as key (see `chain.rs`; empty on
//! compacted lines but the last, and in files older than chains) and the record count as value. A batch exists
//! only once its commit line is complete, so a batch is all-or-nothing on disk; it is applied to the index as a
//! whole under the object's lock, so it is all-or-nothing in memory too.
//!
//! A batch committed here ([`ObjectState::commit`]) stamps all its records with one fresh timestamp of the
//! station's clock. A batch received from the object's home ([`ObjectState::apply_replicated`]) or produced by a
//! last-writer-wins merge ([`ObjectState::merge_lww`]) keeps the hlc each record came with, so its records may
//! differ; recovery and compaction keep every record's own hlc.
//!
//! [`ObjectState::commit`] applies the batch in memory at once and queues its encoded bytes for the writer thread
//! (`writer.rs`), which appends, fsyncs and then resolves the [`CommitTicket`]s. It never does I/O itself.
//! [`ObjectState::install_snapshot`] replaces the whole state: the writer thread writes the new file (temp file,
//! fsync, rename, directory fsync) after everything queued before it, and swaps the index.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};

use tokio::sync::watch;
use uhlc::{NTP64, Timestamp};

use super::chain::{self, chain_hash};
use super::error::{Error, IoContext};
use super::fsutil::{create_dir_durable, fsync_dir};
use super::writer::{Job, Msg};
use super::{Shared, tsv};

/// The header row of `state.tsv`.
pub(crate) const STATE_HEADER: [&str; 5] = ["seq", "hlc", "op", "key", "value"];

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Set `key` to `value`.
    Set {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Delete `key` (recorded as a tombstone, so it shows in `history`).
    Delete {
        /// The key.
        key: String,
    },
}

impl Write {
    fn into_parts(self) -> (String, Option<String>) {
        match self {
            Write::Set { key, value } => (key, Some(value)),
            Write::Delete { key } => (key, None),
        }
    }
}

/// One record of a batch as it travels between stations, with its own hybrid-logical-clock time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The key.
    pub key: String,
    /// The new value, or `None` for a delete (a tombstone).
    pub value: Option<String>,
    /// The NTP64 time of the hybrid-logical-clock timestamp that wrote it.
    pub hlc: u64,
}

/// A committed batch, as shipped to replicas: its seq, its records in order, and the chain hash of
/// the batch before it (see `chain.rs`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Batch {
    /// The object's seq of this batch.
    pub seq: u64,
    /// Its records (never empty), in the order they were written.
    pub records: Vec<Record>,
    /// The chain hash at `seq - 1` on the copy that committed it (`None` for the first batch, or a
    /// history older than chains). Set by the store when it commits; a replica checks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
}

impl Batch {
    /// This batch's chain hash: what the copy holding it has as its hash at `seq`.
    pub fn chain_hash(&self) -> String {
        chain_hash(self.prev.as_deref(), self.seq, &self.records)
    }
}

/// One version of a key, as returned by [`ObjectState::history`] and carried in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyVersion {
    /// The seq of the batch that wrote it.
    pub seq: u64,
    /// Wall-clock milliseconds since the Unix epoch, from the version's hybrid logical clock timestamp.
    pub at_ms: u64,
    /// The value, or `None` if this version deleted the key.
    pub value: Option<String>,
    /// The NTP64 time of the hybrid-logical-clock timestamp that wrote it (what last-writer-wins compares).
    pub hlc: u64,
}

/// Everything needed to rebuild an object's state on another station: see [`ObjectState::export_snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// The applied seq the snapshot covers.
    pub seq: u64,
    /// The chain hash at `seq` (`None` for a history older than chains).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// Every key, deleted ones included (their latest version is a tombstone), sorted by key.
    pub keys: Vec<SnapshotKey>,
}

/// One key of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotKey {
    /// The key.
    pub key: String,
    /// Its kept versions, oldest first (never empty).
    pub versions: Vec<KeyVersion>,
}

/// A handle on one object's state. Cheap to clone; all clones share the same index.
#[derive(Clone)]
pub struct ObjectState {
    inner: Arc<ObjInner>,
}

/// Resolves once a committed batch is durable. Returned by [`ObjectState::commit`] and the other writes.
#[derive(Debug)]
pub struct CommitTicket {
    /// The seq of the committed batch (for an empty batch, the applied seq it waits for).
    pub seq: u64,
    /// The install generation it was issued in: a snapshot installed since means its batch was made durable
    /// before the install replaced the file.
    generation: u64,
    batch: Option<Arc<Batch>>,
    rx: watch::Receiver<Durable>,
}

impl CommitTicket {
    /// Waits until every batch of this object up to `seq` is on disk as the store's durability asks
    /// (written and fdatasynced for [`super::Durability::Fsync`], written for [`super::Durability::None`]).
    ///
    /// Returns [`Error::Failed`] if the object's writer failed before that, and [`Error::Closed`] if the store
    /// went away first.
    pub async fn durable(mut self) -> Result<(), Error> {
        let (seq, generation) = (self.seq, self.generation);
        match self
            .rx
            .wait_for(|d| d.covers(seq, generation) || d.failed.is_some())
            .await
        {
            Ok(d) if d.covers(seq, generation) => Ok(()),
            Ok(d) => Err(Error::Failed(d.failed.clone().unwrap_or_default())),
            Err(_) => Err(Error::Closed),
        }
    }

    /// True if the batch is already durable (never blocks).
    pub fn is_durable(&self) -> bool {
        self.rx.borrow().covers(self.seq, self.generation)
    }

    /// The batch this commit wrote, as it is shipped to replicas (`None` for an empty read-barrier commit).
    pub fn batch(&self) -> Option<Arc<Batch>> {
        self.batch.clone()
    }
}

/// What the writer has made durable for one object.
#[derive(Debug, Clone, Default)]
pub(crate) struct Durable {
    seq: u64,
    failed: Option<String>,
    /// Bumped by each installed snapshot (which may move `seq` back).
    generation: u64,
}

impl Durable {
    fn covers(&self, seq: u64, generation: u64) -> bool {
        self.generation != generation || self.seq >= seq
    }
}

/// One version of a key in the index.
#[derive(Debug, Clone)]
struct Version {
    seq: u64,
    hlc: u64,
    value: Option<String>,
}

impl Version {
    fn to_key_version(&self) -> KeyVersion {
        KeyVersion {
            seq: self.seq,
            at_ms: hlc_ms(self.hlc),
            value: self.value.clone(),
            hlc: self.hlc,
        }
    }
}

/// The in-memory index: every key with its last `history` versions, oldest first.
#[derive(Debug)]
pub(crate) struct Index {
    keys: BTreeMap<String, VecDeque<Version>>,
    applied_seq: u64,
    /// The chain hash at `applied_seq` (`None` before the first batch, or for a history older than
    /// chains).
    head: Option<String>,
    /// The greatest hlc applied (to move the station's clock past it on load).
    last_hlc: u64,
    /// Versions kept, over all keys.
    kept: usize,
    /// Versions kept per key (at least 1).
    history: usize,
    /// What the current state holds: live keys and their bytes (key and value lengths).
    usage: Usage,
}

/// How much an object's current state holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Keys with a value.
    pub keys: u64,
    /// Bytes of those keys and their values.
    pub bytes: u64,
}

/// The most an object's state may hold; a commit that would grow it past either is refused
/// with [`Error::QuotaExceeded`] (one that shrinks it is always accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLimits {
    /// Most live keys.
    pub keys: u64,
    /// Most bytes of live keys and values.
    pub bytes: u64,
}

impl Usage {
    /// The usage after a key's value changes from `old` to `new`.
    fn with_change(mut self, key: &str, old: Option<usize>, new: Option<usize>) -> Usage {
        if let Some(old) = old {
            self.keys -= 1;
            self.bytes -= (key.len() + old) as u64;
        }
        if let Some(new) = new {
            self.keys += 1;
            self.bytes += (key.len() + new) as u64;
        }
        self
    }
}

impl Index {
    fn new(history: usize) -> Index {
        Index {
            keys: BTreeMap::new(),
            applied_seq: 0,
            head: None,
            last_hlc: 0,
            kept: 0,
            history: history.max(1),
            usage: Usage::default(),
        }
    }

    /// Applies one batch: `(key, value, hlc)` per record, in order.
    fn apply(&mut self, seq: u64, writes: impl IntoIterator<Item = (String, Option<String>, u64)>) {
        for (key, value, hlc) in writes {
            let old = self.current(&key).map(String::len);
            self.usage = self
                .usage
                .with_change(&key, old, value.as_ref().map(String::len));
            let versions = self.keys.entry(key).or_default();
            versions.push_back(Version { seq, hlc, value });
            self.kept += 1;
            while versions.len() > self.history {
                versions.pop_front();
                self.kept -= 1;
            }
            self.last_hlc = self.last_hlc.max(hlc);
        }
        self.applied_seq = seq;
    }

    fn current(&self, key: &str) -> Option<&String> {
        self.keys.get(key)?.back()?.value.as_ref()
    }

    /// Every kept version as a row, in seq order; rows of one seq are in key order, and rows of one key keep
    /// their order (what compaction and snapshots write).
    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::with_capacity(self.kept);
        for (key, versions) in &self.keys {
            for v in versions {
                rows.push(Row {
                    seq: v.seq,
                    hlc: v.hlc,
                    key: key.clone(),
                    value: v.value.clone(),
                });
            }
        }
        rows.sort_by_key(|r| r.seq);
        rows
    }
}

/// A record of `state.tsv` kept by compaction.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    seq: u64,
    hlc: u64,
    key: String,
    value: Option<String>,
}

/// A snapshot ready to install: the rows of the new file and the index they load as.
pub(crate) struct Install {
    seq: u64,
    /// The chain hash at `seq`, written on the new file's last commit line.
    pub(crate) head: Option<String>,
    pub(crate) rows: Vec<Row>,
    index: Index,
}

struct Locked {
    index: Index,
    failed: Option<String>,
    /// A snapshot is being installed: writes are refused with [`Error::Busy`].
    installing: bool,
}

/// The shared part of an [`ObjectState`]; the writer thread holds it through queued [`Job`]s.
pub(crate) struct ObjInner {
    pub(crate) id: String,
    /// `data/state/{id}/state.tsv`.
    pub(crate) path: PathBuf,
    shared: Arc<Shared>,
    locked: Mutex<Locked>,
    durable: watch::Sender<Durable>,
    failed: AtomicBool,
    /// `set`/`del` records in the file (maintained by the writer thread).
    pub(crate) file_records: AtomicU64,
    /// Batches up to this seq are already in a compacted (or installed) file: the writer skips their queued
    /// bytes.
    pub(crate) compacted_through: AtomicU64,
}

impl ObjInner {
    fn lock(&self) -> MutexGuard<'_, Locked> {
        self.locked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True once the object failed or was purged: its queued bytes must not be written.
    pub(crate) fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Why the object failed, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// Marks the object failed: pending and later tickets and later commits return [`Error::Failed`].
    pub(crate) fn fail(&self, msg: String) {
        let mut locked = self.lock();
        if locked.failed.is_some() {
            return;
        }
        locked.failed = Some(msg.clone());
        self.failed.store(true, Ordering::Release);
        self.durable.send_modify(|d| d.failed = Some(msg));
    }

    /// Records that every batch up to `seq` is durable and wakes the tickets waiting for it.
    pub(crate) fn mark_durable(&self, seq: u64) {
        self.durable.send_if_modified(|d| {
            let advance = seq > d.seq;
            if advance {
                d.seq = seq;
            }
            advance
        });
    }

    /// True when the file holds more than `max(4096, 4 × kept)` records.
    pub(crate) fn needs_compaction(&self) -> bool {
        let kept = self.lock().index.kept as u64;
        self.file_records.load(Ordering::Relaxed) > (4 * kept).max(4096)
    }

    /// The versions compaction keeps, the applied seq they cover and the chain hash there (None if the
    /// object failed). Rows are in seq order; rows of one key keep their order within a seq.
    pub(crate) fn compaction_rows(&self) -> Option<(u64, Option<String>, Vec<Row>)> {
        let locked = self.lock();
        if locked.failed.is_some() {
            return None;
        }
        Some((
            locked.index.applied_seq,
            locked.index.head.clone(),
            locked.index.rows(),
        ))
    }

    /// Called by the writer once an installed snapshot's file is durably in place: swaps the index and makes
    /// the snapshot's seq the durable seq (of a new generation, which resolves older tickets).
    pub(crate) fn finish_install(&self, install: Install) {
        let mut locked = self.lock();
        locked.index = install.index;
        self.compacted_through.store(install.seq, Ordering::Release);
        self.file_records
            .store(install.rows.len() as u64, Ordering::Relaxed);
        self.durable.send_modify(|d| {
            d.seq = install.seq;
            d.generation += 1;
        });
    }
}

impl ObjectState {
    /// The object this state belongs to.
    pub fn object_id(&self) -> &str {
        &self.inner.id
    }

    /// The current value of `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        self.inner.lock().index.current(key).cloned()
    }

    /// The existing (not deleted) keys starting with `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let locked = self.inner.lock();
        locked
            .index
            .keys
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, v)| v.back().is_some_and(|v| v.value.is_some()))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The kept versions of `key`, newest first, deletes included; at most `limit` (0 = all kept).
    pub fn history(&self, key: &str, limit: usize) -> Vec<KeyVersion> {
        let limit = if limit == 0 { usize::MAX } else { limit };
        let locked = self.inner.lock();
        let Some(versions) = locked.index.keys.get(key) else {
            return Vec::new();
        };
        versions
            .iter()
            .rev()
            .take(limit)
            .map(Version::to_key_version)
            .collect()
    }

    /// Every existing key with its current value.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        let locked = self.inner.lock();
        locked
            .index
            .keys
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.back()?.value.clone()?)))
            .collect()
    }

    /// The seq of the last batch applied in memory (0 if none).
    pub fn applied_seq(&self) -> u64 {
        self.inner.lock().index.applied_seq
    }

    /// The applied seq and this copy's chain hash there (`None` before the first batch, or for a history
    /// older than chains), read together.
    pub fn chain_head(&self) -> (u64, Option<String>) {
        let locked = self.inner.lock();
        (locked.index.applied_seq, locked.index.head.clone())
    }

    /// The seq up to which batches are durable.
    pub fn durable_seq(&self) -> u64 {
        self.inner.durable.borrow().seq
    }

    /// Applies the batch to the in-memory index at once (so the object's next call sees it) and queues
    /// it for the durable append. Empty batch = a read barrier at the current applied seq (no disk write).
    /// Every record of the batch carries one fresh timestamp of the station's clock.
    ///
    /// Fails with [`Error::Failed`] once the object's writer failed, [`Error::Closed`] after shutdown and
    /// [`Error::Busy`] while a snapshot is being installed; in these cases nothing is applied. Does no I/O and
    /// holds the object's lock only for in-memory work.
    pub fn commit(&self, writes: Vec<Write>) -> Result<CommitTicket, Error> {
        self.commit_within(writes, None)
    }

    /// [`ObjectState::commit`], refused with [`Error::QuotaExceeded`] (nothing applied) when the batch
    /// would grow the state past `limits`.
    pub fn commit_within(
        &self,
        writes: Vec<Write>,
        limits: Option<StateLimits>,
    ) -> Result<CommitTicket, Error> {
        let inner = &self.inner;
        let mut locked = inner.lock();
        self.check_writable(&locked)?;
        if writes.is_empty() {
            return Ok(self.ticket(locked.index.applied_seq, None));
        }
        if let Some(limits) = limits {
            self.check_limits(&locked.index, &writes, limits)?;
        }
        let seq = locked.index.applied_seq + 1;
        let hlc = inner.shared.hlc.new_timestamp().get_time().as_u64();
        let records = writes
            .into_iter()
            .map(|w| {
                let (key, value) = w.into_parts();
                Record { key, value, hlc }
            })
            .collect();
        self.append_locked(
            &mut locked,
            Batch {
                seq,
                records,
                prev: None,
            },
        )
    }

    /// Applies a batch received from the object's home, with its seq and every record's hlc unchanged, and
    /// queues its durable append like [`ObjectState::commit`] (no I/O; the index changes at once).
    ///
    /// Idempotent: a batch below the applied seq is already here (`Ok(None)`, nothing applied); one at the
    /// applied seq too, once its chain hash matches this copy's. A batch beyond the next seq fails with
    /// [`Error::Gap`] naming the seq needed; an empty batch with [`Error::Invalid`]. The next batch applies
    /// only if its `prev` is this copy's chain hash: otherwise the two copies hold different histories and it
    /// fails with [`Error::Diverged`] (the sender should send a snapshot). A copy without a hash (a history
    /// older than chains) takes the batch's. Also fails like `commit`. Moves the station's clock past the
    /// batch's hlcs.
    pub fn apply_replicated(&self, batch: &Batch) -> Result<Option<CommitTicket>, Error> {
        let mut locked = self.inner.lock();
        self.check_writable(&locked)?;
        let applied = locked.index.applied_seq;
        if batch.seq < applied {
            return Ok(None);
        }
        if batch.seq == applied {
            return match &locked.index.head {
                Some(head) if batch.prev.is_some() && *head != batch.chain_hash() => {
                    Err(self.diverged(batch.seq))
                }
                _ => Ok(None),
            };
        }
        if batch.seq > applied + 1 {
            return Err(Error::Gap {
                object_id: self.inner.id.clone(),
                expected: applied + 1,
                got: batch.seq,
            });
        }
        if batch.records.is_empty() {
            return Err(self.invalid(format!("replicated batch {} has no records", batch.seq)));
        }
        match (&locked.index.head, &batch.prev) {
            (Some(head), Some(prev)) if head != prev => return Err(self.diverged(applied)),
            (Some(_), None) if applied > 0 => return Err(self.diverged(applied)),
            (None, Some(prev)) => locked.index.head = Some(prev.clone()),
            _ => {}
        }
        let ticket = self.append_locked(&mut locked, batch.clone())?;
        drop(locked);
        self.observe(batch.records.iter().map(|r| r.hlc).max().unwrap_or(0));
        Ok(Some(ticket))
    }

    /// Everything needed to rebuild this object's state elsewhere: the applied seq and every key (deleted ones
    /// too, their latest version a tombstone) with its kept versions, oldest first. It reflects what is applied
    /// in memory, which may be ahead of what is durable (wait for a read barrier first if that matters).
    pub fn export_snapshot(&self) -> Snapshot {
        let locked = self.inner.lock();
        Snapshot {
            seq: locked.index.applied_seq,
            chain: locked.index.head.clone(),
            keys: locked
                .index
                .keys
                .iter()
                .map(|(key, versions)| SnapshotKey {
                    key: key.clone(),
                    versions: versions.iter().map(Version::to_key_version).collect(),
                })
                .collect(),
        }
    }

    /// Replaces this object's state with a snapshot. Blocking: the writer thread first writes everything
    /// queued before (so pending tickets resolve), then writes the new `state.tsv` (temp file, fsync, rename,
    /// directory fsync) and swaps the index. Afterwards `applied_seq() == durable_seq() == snapshot.seq`, and
    /// tickets issued before resolve as durable. Keys keep at most this store's `history_versions` (the newest).
    ///
    /// While it runs, reads see the old state and writes fail with [`Error::Busy`]. A snapshot that breaks the
    /// index's rules (a key without versions or twice, versions out of seq order or beyond `seq`, no version at
    /// `seq`) fails with [`Error::Invalid`] and changes nothing; so does a failed write of the new file (as
    /// [`Error::Io`]). If the directory fsync after the rename fails, the object fails ([`Error::Failed`]).
    pub fn install_snapshot(&self, snapshot: &Snapshot) -> Result<(), Error> {
        let install = self.prepare_install(snapshot)?;
        let max_hlc = install.index.last_hlc;
        let (done_tx, done_rx) = mpsc::channel();
        {
            let mut locked = self.inner.lock();
            self.check_writable(&locked)?;
            // Send under the object's lock: every batch queued before is ahead of it in the writer's queue,
            // and none can be queued after it until the install is done.
            let tx = self
                .inner
                .shared
                .writer_tx
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let tx = tx.as_ref().ok_or(Error::Closed)?;
            tx.send(Msg::Install {
                obj: Arc::clone(&self.inner),
                install: Box::new(install),
                done: done_tx,
            })
            .map_err(|_| Error::Closed)?;
            locked.installing = true;
        }
        let result = done_rx.recv().unwrap_or(Err(Error::Closed));
        self.inner.lock().installing = false;
        if result.is_ok() {
            self.observe(max_hlc);
            tracing::debug!(object_id = %self.inner.id, seq = snapshot.seq, "installed a state snapshot");
        }
        result
    }

    /// Last-writer-wins merge of records from a history that diverged (after a failover or a partition): each
    /// record whose hlc is greater than the hlc of its key's latest version here (a key never written here
    /// always loses to it; an equal hlc keeps the version here) wins. If a key comes several times, a later
    /// record must beat the earlier winner. The winners, one per key in key order, keeping their incoming hlc,
    /// commit as one new batch (the next seq), queued like [`ObjectState::commit`]; `Ok(None)` if nothing won.
    /// Deterministic: the same state and records give the same result on every station. Moves the station's
    /// clock past the winners' hlcs.
    pub fn merge_lww(&self, records: &[Record]) -> Result<Option<CommitTicket>, Error> {
        let mut locked = self.inner.lock();
        self.check_writable(&locked)?;
        let mut winners: BTreeMap<&str, &Record> = BTreeMap::new();
        for r in records {
            let beats = match winners.get(r.key.as_str()) {
                Some(w) => lww_beats(r.hlc, r.value.as_deref(), w.hlc, w.value.as_deref()),
                None => match locked.index.keys.get(&r.key).and_then(|v| v.back()) {
                    Some(v) => lww_beats(r.hlc, r.value.as_deref(), v.hlc, v.value.as_deref()),
                    None => true,
                },
            };
            if beats {
                winners.insert(&r.key, r);
            }
        }
        if winners.is_empty() {
            return Ok(None);
        }
        let batch = Batch {
            seq: locked.index.applied_seq + 1,
            records: winners.into_values().cloned().collect(),
            prev: None,
        };
        let max_hlc = batch.records.iter().map(|r| r.hlc).max().unwrap_or(0);
        let ticket = self.append_locked(&mut locked, batch)?;
        drop(locked);
        self.observe(max_hlc);
        Ok(Some(ticket))
    }

    /// Every key (deleted ones included, as tombstones) with its latest version: what a diverged station sends
    /// for [`ObjectState::merge_lww`]. In key order.
    pub fn latest_records(&self) -> Vec<Record> {
        let locked = self.inner.lock();
        locked
            .index
            .keys
            .iter()
            .filter_map(|(key, versions)| {
                let v = versions.back()?;
                Some(Record {
                    key: key.clone(),
                    value: v.value.clone(),
                    hlc: v.hlc,
                })
            })
            .collect()
    }

    /// The shared part, for the store's cache and the writer.
    pub(crate) fn inner(&self) -> &Arc<ObjInner> {
        &self.inner
    }

    /// What the state holds now.
    pub fn usage(&self) -> Usage {
        self.inner.lock().index.usage
    }

    /// Refuses `writes` if they would grow the state past `limits`.
    fn check_limits(
        &self,
        index: &Index,
        writes: &[Write],
        limits: StateLimits,
    ) -> Result<(), Error> {
        let before = index.usage;
        let mut after = before;
        let mut written: std::collections::HashMap<&str, Option<usize>> =
            std::collections::HashMap::with_capacity(writes.len());
        for write in writes {
            let (key, new) = match write {
                Write::Set { key, value } => (key.as_str(), Some(value.len())),
                Write::Delete { key } => (key.as_str(), None),
            };
            let old = match written.get(key) {
                Some(pending) => *pending,
                None => index.current(key).map(String::len),
            };
            after = after.with_change(key, old, new);
            written.insert(key, new);
        }
        let over = |what: &'static str, limit: u64, before: u64, after: u64| {
            (after > limit && after > before).then(|| Error::QuotaExceeded {
                object_id: self.inner.id.clone(),
                what,
                limit,
                would_be: after,
            })
        };
        match over("keys", limits.keys, before.keys, after.keys)
            .or_else(|| over("bytes", limits.bytes, before.bytes, after.bytes))
        {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn check_writable(&self, locked: &Locked) -> Result<(), Error> {
        if let Some(msg) = &locked.failed {
            return Err(Error::Failed(msg.clone()));
        }
        if locked.installing {
            return Err(Error::Busy {
                object_id: self.inner.id.clone(),
            });
        }
        Ok(())
    }

    fn diverged(&self, seq: u64) -> Error {
        Error::Diverged {
            object_id: self.inner.id.clone(),
            seq,
        }
    }

    fn invalid(&self, reason: String) -> Error {
        Error::Invalid {
            object_id: self.inner.id.clone(),
            reason,
        }
    }

    fn ticket(&self, seq: u64, batch: Option<Arc<Batch>>) -> CommitTicket {
        let rx = self.inner.durable.subscribe();
        let generation = rx.borrow().generation;
        CommitTicket {
            seq,
            generation,
            batch,
            rx,
        }
    }

    /// Queues a non-empty batch at `applied_seq + 1` for the writer and applies it to the index (the caller
    /// holds the object's lock and checked it is writable). Links it into the chain: its `prev` becomes this
    /// copy's chain hash, and its own hash the new one.
    fn append_locked(&self, locked: &mut Locked, mut batch: Batch) -> Result<CommitTicket, Error> {
        let inner = &self.inner;
        debug_assert_eq!(batch.seq, locked.index.applied_seq + 1);
        debug_assert!(!batch.records.is_empty());
        batch.prev = locked.index.head.clone();
        let head = batch.chain_hash();
        let bytes = encode_batch(&batch, &head);
        {
            // Assign the seq and enqueue under the object's lock: the writer sees this object's batches in
            // seq order.
            let tx = inner
                .shared
                .writer_tx
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let tx = tx.as_ref().ok_or(Error::Closed)?;
            tx.send(Msg::Job(Job {
                obj: Arc::clone(inner),
                seq: batch.seq,
                bytes,
                records: batch.records.len() as u64,
            }))
            .map_err(|_| Error::Closed)?;
        }
        locked.index.apply(
            batch.seq,
            batch
                .records
                .iter()
                .map(|r| (r.key.clone(), r.value.clone(), r.hlc)),
        );
        locked.index.head = Some(head);
        let seq = batch.seq;
        Ok(self.ticket(seq, Some(Arc::new(batch))))
    }

    /// Checks a snapshot and builds the file rows and index it installs as (trimmed to this store's history).
    fn prepare_install(&self, snapshot: &Snapshot) -> Result<Install, Error> {
        let history = self.inner.shared.config.history_versions.max(1);
        let mut seen = std::collections::HashSet::with_capacity(snapshot.keys.len());
        let mut rows = Vec::new();
        for k in &snapshot.keys {
            if !seen.insert(k.key.as_str()) {
                return Err(self.invalid(format!("snapshot holds key {:?} twice", k.key)));
            }
            if k.versions.is_empty() {
                return Err(self.invalid(format!("snapshot key {:?} has no versions", k.key)));
            }
            let mut prev = 0;
            for v in &k.versions {
                if v.seq == 0 || v.seq < prev || v.seq > snapshot.seq {
                    return Err(self.invalid(format!(
                        "snapshot key {:?} has version seq {} (after seq {prev}, snapshot seq {})",
                        k.key, v.seq, snapshot.seq
                    )));
                }
                prev = v.seq;
            }
            let skip = k.versions.len().saturating_sub(history);
            rows.extend(k.versions[skip..].iter().map(|v| Row {
                seq: v.seq,
                hlc: v.hlc,
                key: k.key.clone(),
                value: v.value.clone(),
            }));
        }
        // Key order within a seq, as compaction writes it (a reload then rebuilds exactly this index).
        rows.sort_by(|a, b| a.seq.cmp(&b.seq).then_with(|| a.key.cmp(&b.key)));
        let last = rows.last().map_or(0, |r| r.seq);
        if last != snapshot.seq {
            return Err(self.invalid(format!(
                "snapshot seq {} but its newest version has seq {last}",
                snapshot.seq
            )));
        }
        let mut index = Index::new(history);
        for group in rows.chunk_by(|a, b| a.seq == b.seq) {
            index.apply(
                group[0].seq,
                group
                    .iter()
                    .map(|r| (r.key.clone(), r.value.clone(), r.hlc)),
            );
        }
        if let Some(chain) = &snapshot.chain
            && !chain::is_hash(chain.as_bytes())
        {
            return Err(self.invalid(format!("snapshot chain hash {chain:?} is not a hash")));
        }
        index.head = snapshot.chain.clone();
        Ok(Install {
            seq: snapshot.seq,
            head: snapshot.chain.clone(),
            rows,
            index,
        })
    }

    /// Moves the station's clock past `hlc` (quietly: a clock too far ahead is only logged at debug level
    /// here, [`super::Store::observe_hlc`] warns).
    fn observe(&self, hlc: u64) {
        if let Err(e) = observe_hlc(&self.inner.shared.hlc, hlc) {
            tracing::debug!(object_id = %self.inner.id, error = %e, "not moving the clock to a remote timestamp");
        }
    }
}

/// Moves `clock` past `hlc` (a no-op for 0); fails if `hlc` is further ahead of the local time than the clock's
/// maximum delta.
pub(crate) fn observe_hlc(clock: &uhlc::HLC, hlc: u64) -> Result<(), uhlc::ExceedingDeltaError> {
    if hlc == 0 {
        return Ok(());
    }
    clock.update_with_timestamp(&Timestamp::new(NTP64(hlc), *clock.get_id()))
}

/// Milliseconds since the Unix epoch of an NTP64 hybrid-logical-clock time.
fn hlc_ms(hlc: u64) -> u64 {
    NTP64(hlc).to_duration().as_millis() as u64
}

/// Encodes a batch: its records, each with its own hlc, then its commit line (with the greatest hlc and the
/// batch's chain hash `head`).
fn encode_batch(batch: &Batch, head: &str) -> Vec<u8> {
    let seq = batch.seq.to_string();
    let mut out = Vec::with_capacity(64 * (batch.records.len() + 1));
    let mut w = tsv::writer(&mut out);
    // Records of a local commit share one hlc: format it once.
    let mut hlc_s = (u64::MAX, String::new());
    let mut put = |fields: [&str; 5]| w.write_record(fields).map_err(tsv::to_io);
    let mut max_hlc = 0;
    let result = batch
        .records
        .iter()
        .try_for_each(|r| {
            if hlc_s.0 != r.hlc {
                hlc_s = (r.hlc, r.hlc.to_string());
            }
            max_hlc = max_hlc.max(r.hlc);
            match &r.value {
                Some(value) => put([&seq, &hlc_s.1, "set", &r.key, value]),
                None => put([&seq, &hlc_s.1, "del", &r.key, ""]),
            }
        })
        .and_then(|()| {
            put([
                &seq,
                &max_hlc.to_string(),
                "commit",
                head,
                &batch.records.len().to_string(),
            ])
        })
        .and_then(|()| w.flush());
    // Writing into a Vec cannot fail.
    result.expect("encoding a batch into memory");
    drop(w);
    out
}

/// Writes a compacted state file: the header, then each seq's kept rows (each with its own hlc) followed by its
/// commit line (with the greatest hlc of those rows). Only the last commit line carries a chain hash, `head`
/// (the rows of earlier seqs are no longer whole batches, so their hashes could not be checked).
pub(crate) fn write_compacted(
    out: impl io::Write,
    rows: &[Row],
    head: Option<&str>,
) -> io::Result<()> {
    let mut w = tsv::writer(out);
    w.write_record(STATE_HEADER).map_err(tsv::to_io)?;
    let groups = rows.chunk_by(|a, b| a.seq == b.seq).count();
    for (n, group) in rows.chunk_by(|a, b| a.seq == b.seq).enumerate() {
        let seq_s = group[0].seq.to_string();
        let mut max_hlc = 0;
        for r in group {
            max_hlc = max_hlc.max(r.hlc);
            let hlc_s = r.hlc.to_string();
            match &r.value {
                Some(v) => w.write_record([&seq_s, &hlc_s, "set", &r.key, v]),
                None => w.write_record([&seq_s, &hlc_s, "del", &r.key, ""]),
            }
            .map_err(tsv::to_io)?;
        }
        let hash = if n + 1 == groups {
            head.unwrap_or("")
        } else {
            ""
        };
        w.write_record([
            &seq_s,
            &max_hlc.to_string(),
            "commit",
            hash,
            &group.len().to_string(),
        ])
        .map_err(tsv::to_io)?;
    }
    w.flush()?;
    Ok(())
}

/// Loads an object's state from `data/state/{id}/state.tsv` (creating it with its header if absent), running
/// crash recovery, and returns the handle. The caller caches it: load each object once.
pub(crate) fn load(shared: &Arc<Shared>, id: &str) -> Result<ObjectState, Error> {
    let dir = shared.config.data_dir.join("state").join(id);
    create_dir_durable(&dir)?;
    let path = dir.join("state.tsv");
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .at(&path)?;
    if !existed {
        fsync_dir(&dir)?;
    }
    let Recovered { index, records } = recover(&path, &mut file, shared.config.history_versions)?;
    if let Err(e) = observe_hlc(&shared.hlc, index.last_hlc) {
        tracing::warn!(object_id = id, error = %e, "state file's clock is ahead of this station's clock");
    }
    let applied = index.applied_seq;
    let inner = ObjInner {
        id: id.to_string(),
        path,
        shared: Arc::clone(shared),
        locked: Mutex::new(Locked {
            index,
            failed: None,
            installing: false,
        }),
        durable: watch::Sender::new(Durable {
            seq: applied,
            failed: None,
            generation: 0,
        }),
        failed: AtomicBool::new(false),
        file_records: AtomicU64::new(records),
        compacted_through: AtomicU64::new(applied),
    };
    Ok(ObjectState {
        inner: Arc::new(inner),
    })
}

struct Recovered {
    index: Index,
    /// `set`/`del` records in the (recovered) file.
    records: u64,
}

/// One parsed line of `state.tsv`.
enum Line {
    Write {
        seq: u64,
        hlc: u64,
        key: String,
        value: Option<String>,
    },
    /// (Its hlc is checked to be a number but not used: it is the greatest of the batch's records.)
    Commit {
        seq: u64,
        count: u64,
        /// The chain hash at `seq` (absent on compacted lines but the last, and in older files).
        hash: Option<String>,
    },
}

fn parse_record(rec: &csv::ByteRecord) -> Result<Line, String> {
    if rec.len() != STATE_HEADER.len() {
        return Err(format!(
            "expected {} fields, found {}",
            STATE_HEADER.len(),
            rec.len()
        ));
    }
    let seq = tsv::field_u64(rec, 0, "seq")?;
    let hlc = tsv::field_u64(rec, 1, "hlc")?;
    if seq == 0 {
        return Err("seq 0 (seqs start at 1)".into());
    }
    let key = tsv::field_str(rec, 3, "key")?;
    match &rec[2] {
        b"set" => Ok(Line::Write {
            seq,
            hlc,
            key,
            value: Some(tsv::field_str(rec, 4, "value")?),
        }),
        b"del" if rec[4].is_empty() => Ok(Line::Write {
            seq,
            hlc,
            key,
            value: None,
        }),
        b"del" => Err("del record with a value".into()),
        b"commit" if key.is_empty() || chain::is_hash(key.as_bytes()) => Ok(Line::Commit {
            seq,
            count: tsv::field_u64(rec, 4, "value")?,
            hash: (!key.is_empty()).then_some(key),
        }),
        b"commit" => Err("commit record whose key is not a chain hash".into()),
        op => Err(format!("unknown op {:?}", String::from_utf8_lossy(op))),
    }
}

/// True if `line` (without its `\n`) is a complete commit record. Commit lines are never quoted, so this raw
/// check works even where the TSV parser lost track (an unterminated quote in a torn record).
fn looks_like_commit_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let fields: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
    let digits = |f: &[u8]| !f.is_empty() && f.iter().all(u8::is_ascii_digit);
    fields.len() == 5
        && digits(fields[0])
        && digits(fields[1])
        && fields[2] == b"commit"
        && (fields[3].is_empty() || chain::is_hash(fields[3]))
        && digits(fields[4])
}

/// Parses `state.tsv` and repairs a torn tail: everything after the last complete commit line is truncated
/// (and fsynced). A bad record followed by complete batches is corruption, not a torn write: that is an error
/// and the file is left as it is.
fn recover(path: &Path, file: &mut File, history: usize) -> Result<Recovered, Error> {
    let header = tsv::header_line(&STATE_HEADER);
    let len = file.metadata().at(path)?.len();
    let empty = || Recovered {
        index: Index::new(history),
        records: 0,
    };

    // Empty, or torn inside the header line: (re)write the header.
    if len <= header.len() as u64 {
        let mut buf = Vec::new();
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_end(&mut buf))
            .at(path)?;
        if buf == header {
            return Ok(empty());
        }
        if header.starts_with(&buf) {
            if !buf.is_empty() {
                tracing::warn!(path = %path.display(), bytes = buf.len(), "rewriting a torn state file header");
            }
            file.set_len(0).at(path)?;
            file.seek(SeekFrom::Start(0))
                .and_then(|_| file.write_all(&header))
                .at(path)?;
            file.sync_all().at(path)?;
            return Ok(empty());
        }
    }

    let ends_with_newline = {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1))
            .and_then(|_| file.read_exact(&mut last))
            .at(path)?;
        last[0] == b'\n'
    };
    file.seek(SeekFrom::Start(0)).at(path)?;

    let mut index = Index::new(history);
    let mut records = 0u64;
    let mut rdr = tsv::reader(&*file);
    let mut rec = csv::ByteRecord::new();
    let header_ok = match rdr.read_byte_record(&mut rec) {
        Ok(true) => rec.iter().eq(STATE_HEADER.iter().map(|h| h.as_bytes())),
        Ok(false) => false,
        Err(e) if e.is_io_error() => return Err(Error::io(path, tsv::to_io(e))),
        Err(_) => false,
    };
    if !header_ok {
        return Err(Error::corrupt(
            path,
            1,
            format!("missing header `{}`", STATE_HEADER.join("\\t")),
        ));
    }
    let mut good_end = rdr.position().byte();
    let mut missing_newline = false;
    // Records of a batch may carry different hlcs (replicated or merged batches): only the seq ties them.
    let mut pending: Vec<(String, Option<String>, u64)> = Vec::new();
    let (mut pending_seq, mut pending_line) = (0u64, 0u64);
    let mut problem: Option<(u64, String)> = None;

    loop {
        let line = rdr.position().line();
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) if e.is_io_error() => return Err(Error::io(path, tsv::to_io(e))),
            Err(e) => {
                problem = Some((line, e.to_string()));
                break;
            }
        }
        let end = rdr.position().byte();
        let bad = match parse_record(&rec) {
            Err(reason) => Some(reason),
            Ok(Line::Write {
                seq,
                hlc,
                key,
                value,
            }) => {
                if pending.is_empty() {
                    if seq <= index.applied_seq {
                        Some(format!(
                            "seq {seq} does not follow seq {}",
                            index.applied_seq
                        ))
                    } else {
                        (pending_seq, pending_line) = (seq, line);
                        pending.push((key, value, hlc));
                        None
                    }
                } else if seq != pending_seq {
                    Some(format!(
                        "record of seq {seq} inside batch {pending_seq}, which has no commit line"
                    ))
                } else {
                    pending.push((key, value, hlc));
                    None
                }
            }
            Ok(Line::Commit { seq, count, hash }) => {
                if pending.is_empty() {
                    Some(format!("commit line of seq {seq} without records"))
                } else if seq != pending_seq {
                    Some(format!("commit line of seq {seq} ends batch {pending_seq}"))
                } else if count != pending.len() as u64 {
                    Some(format!(
                        "commit line of seq {seq} counts {count} records, the batch has {}",
                        pending.len()
                    ))
                } else if let Some(reason) =
                    chain_mismatch(index.head.as_deref(), seq, &pending, &hash)
                {
                    // A whole batch whose content does not hash to its line: damage, not a torn write.
                    return Err(Error::corrupt(path, pending_line, reason));
                } else {
                    // The count matches, so the line is whole; at most its `\n` is missing (added below).
                    missing_newline = end == len && !ends_with_newline;
                    index.apply(seq, pending.drain(..));
                    index.head = hash;
                    records += count;
                    good_end = end;
                    None
                }
            }
        };
        if let Some(reason) = bad {
            problem = Some((line, reason));
            break;
        }
    }
    drop(rdr);
    if problem.is_none() && !pending.is_empty() {
        problem = Some((
            pending_line,
            format!("batch {pending_seq} has no commit line"),
        ));
    }

    if good_end < len {
        let (line, reason) = problem.unwrap_or_else(|| (0, "unparsed bytes".into()));
        let mut tail = Vec::new();
        file.seek(SeekFrom::Start(good_end))
            .and_then(|_| file.read_to_end(&mut tail))
            .at(path)?;
        let mut lines: Vec<&[u8]> = tail.split(|&b| b == b'\n').collect();
        lines.pop(); // the last piece is not followed by `\n`: it is not a complete line
        if lines.iter().any(|l| looks_like_commit_line(l)) {
            return Err(Error::corrupt(
                path,
                line,
                format!(
                    "{reason}; complete batches follow it, so it is not a torn write (file left as is)"
                ),
            ));
        }
        tracing::warn!(
            path = %path.display(),
            line,
            reason = %reason,
            dropped_bytes = len - good_end,
            kept_seq = index.applied_seq,
            "state file ends with an incomplete batch (torn write): truncating it"
        );
        file.set_len(good_end).at(path)?;
        file.sync_all().at(path)?;
    } else if missing_newline {
        file.seek(SeekFrom::End(0))
            .and_then(|_| file.write_all(b"\n"))
            .at(path)?;
        file.sync_all().at(path)?;
    }
    Ok(Recovered { index, records })
}

/// Why a batch read back from `state.tsv` does not match the chain hash on its commit line, if it does not.
/// Checked only where the hash before it is known (not after a compacted line, whose rows are no longer the
/// whole batch).
fn chain_mismatch(
    prev: Option<&str>,
    seq: u64,
    pending: &[(String, Option<String>, u64)],
    hash: &Option<String>,
) -> Option<String> {
    let (Some(prev), Some(hash)) = (prev, hash) else {
        return None;
    };
    let records: Vec<Record> = pending
        .iter()
        .map(|(key, value, hlc)| Record {
            key: key.clone(),
            value: value.clone(),
            hlc: *hlc,
        })
        .collect();
    let computed = chain_hash(Some(prev), seq, &records);
    (computed != *hash).then(|| {
        format!("batch {seq} does not match the chain hash on its commit line (damaged content)")
    })
}

/// Last-writer-wins between two versions of a key: the higher hybrid logical clock wins; on equal
/// clocks (two stations can stamp the same value) the greater value wins, a delete counting as the
/// least. A total order, so every station resolves a divergence the same way whichever side merges.
fn lww_beats(hlc: u64, value: Option<&str>, incumbent_hlc: u64, incumbent: Option<&str>) -> bool {
    (hlc, value) > (incumbent_hlc, incumbent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tsv::tests::HOSTILE;
    use crate::store::{Durability, Store, StoreConfig};
    use std::fs;

    fn config(dir: &Path) -> StoreConfig {
        StoreConfig {
            durability: Durability::None,
            ..StoreConfig::new(dir.join("data"))
        }
    }

    fn set(key: &str, value: &str) -> Write {
        Write::Set {
            key: key.into(),
            value: value.into(),
        }
    }

    fn del(key: &str) -> Write {
        Write::Delete { key: key.into() }
    }

    /// Commits, waits for durability, and returns the seq.
    fn commit(state: &ObjectState, writes: Vec<Write>) -> u64 {
        let ticket = state.commit(writes).unwrap();
        let seq = ticket.seq;
        block_on(ticket.durable()).unwrap();
        seq
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn reopen(dir: &Path, store: Store) -> Store {
        store.shutdown();
        drop(store);
        Store::open(config(dir)).unwrap()
    }

    fn state_path(dir: &Path, id: &str) -> PathBuf {
        dir.join("data/state").join(id).join("state.tsv")
    }

    #[test]
    fn usage_is_kept_through_commits_and_a_reload_and_limits_refuse_growth_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        let st = store.state("quota").unwrap();
        commit(&st, vec![set("a", "12345"), set("bb", "1")]);
        commit(&st, vec![set("a", "1"), del("bb"), set("c", "")]);
        assert_eq!(st.usage(), Usage { keys: 2, bytes: 3 });
        let store = reopen(dir.path(), store);
        let st = store.state("quota").unwrap();
        assert_eq!(st.usage(), Usage { keys: 2, bytes: 3 });

        let limits = StateLimits { keys: 2, bytes: 10 };
        // A third key: refused, nothing applied.
        let refused = st.commit_within(vec![set("a", "2"), set("d", "x")], Some(limits));
        assert!(
            matches!(
                refused,
                Err(Error::QuotaExceeded {
                    what: "keys",
                    limit: 2,
                    would_be: 3,
                    ..
                })
            ),
            "{refused:?}"
        );
        assert_eq!(st.get("a").as_deref(), Some("1"));
        // Too many bytes, counting a key written twice in one batch once.
        let refused = st.commit_within(
            vec![set("a", "123456789"), set("a", "1234567890")],
            Some(limits),
        );
        assert!(
            matches!(refused, Err(Error::QuotaExceeded { what: "bytes", .. })),
            "{refused:?}"
        );
        // Within the limits, and a batch that shrinks an over-quota state, are accepted.
        st.commit_within(vec![set("a", "123")], Some(limits))
            .unwrap();
        let tight = StateLimits { keys: 1, bytes: 1 };
        st.commit_within(vec![set("a", "12")], Some(tight)).unwrap();
        assert_eq!(st.usage(), Usage { keys: 2, bytes: 4 });
    }

    #[test]
    fn exactly_the_hostile_strings_round_trip_through_a_reload() {
        // CR, LF, tab, quotes, backslash, empty string, unicode.
        let strings = [
            "a\rb",
            "a\nb",
            "a\tb",
            "\"a\" \"",
            "a\\b\\",
            "",
            "ünï 漢字 🦀",
        ];
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        let st = store.state("hostile").unwrap();
        for (i, s) in strings.iter().enumerate() {
            commit(&st, vec![set(s, s), set(&format!("v{i}"), s)]);
        }
        let store = reopen(dir.path(), store);
        let st = store.state("hostile").unwrap();
        for (i, s) in strings.iter().enumerate() {
            assert_eq!(st.get(s).as_deref(), Some(*s), "key {s:?}");
            assert_eq!(st.get(&format!("v{i}")).as_deref(), Some(*s));
        }
        // The file is real TSV: every record has the header's 5 fields when read back with the csv crate.
        let text = fs::read(state_path(dir.path(), "hostile")).unwrap();
        let mut rdr = csv::ReaderBuilder::new()
            .delimiter(b'\t')
            .from_reader(text.as_slice());
        assert_eq!(
            rdr.headers().unwrap(),
            vec!["seq", "hlc", "op", "key", "value"]
        );
        assert_eq!(
            rdr.records()
                .map(|r| r.unwrap().len())
                .filter(|&n| n == 5)
                .count(),
            3 * strings.len()
        );
    }

    #[test]
    fn more_hostile_strings_round_trip_and_history_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        let st = store.state("h2").unwrap();
        for s in HOSTILE {
            commit(&st, vec![set(&format!("k{s}"), s), set("same", s)]);
        }
        commit(&st, vec![del("same")]);
        let before = format!(
            "{:?}",
            (
                st.snapshot(),
                st.history("same", 0),
                st.keys(""),
                st.applied_seq()
            )
        );
        let store = reopen(dir.path(), store);
        let st = store.state("h2").unwrap();
        let after = format!(
            "{:?}",
            (
                st.snapshot(),
                st.history("same", 0),
                st.keys(""),
                st.applied_seq()
            )
        );
        assert_eq!(before, after);
        assert_eq!(st.get("same"), None);
        assert_eq!(st.history("same", 2)[0].value, None);
        assert_eq!(
            st.history("same", 2)[1].value.as_deref(),
            Some(*HOSTILE.last().unwrap())
        );
    }

    #[test]
    fn reads_see_commits_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        let st = store.state("c").unwrap();
        assert_eq!(st.applied_seq(), 0);
        let t = st
            .commit(vec![set("a/1", "x"), set("a/2", "y"), set("b", "z")])
            .unwrap();
        assert_eq!(t.seq, 1);
        assert_eq!(st.get("a/1").as_deref(), Some("x"));
        assert_eq!(st.keys("a/"), vec!["a/1", "a/2"]);
        let t2 = st.commit(vec![del("a/1"), set("b", "w")]).unwrap();
        assert_eq!(t2.seq, 2);
        assert_eq!(st.keys("a/"), vec!["a/2"]);
        assert_eq!(st.keys(""), vec!["a/2", "b"]);
        let h = st.history("b", 10);
        assert_eq!(h.iter().map(|v| v.seq).collect::<Vec<_>>(), vec![2, 1]);
        assert!(h[0].at_ms >= h[1].at_ms && h[0].at_ms > 1_600_000_000_000);
        assert_eq!(
            st.history("a/1", 1),
            vec![KeyVersion {
                seq: 2,
                at_ms: h[0].at_ms,
                value: None,
                hlc: h[0].hlc,
            }]
        );
        // An empty batch is a read barrier at the applied seq.
        let barrier = st.commit(vec![]).unwrap();
        assert_eq!(barrier.seq, 2);
        block_on(barrier.durable()).unwrap();
        assert_eq!(st.durable_seq(), 2);
        assert_eq!(
            st.snapshot().into_iter().collect::<Vec<_>>(),
            vec![("a/2".into(), "y".into()), ("b".into(), "w".into())]
        );
    }

    #[test]
    fn torn_partial_batch_at_the_tail_is_dropped_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        let st = store.state("torn").unwrap();
        commit(&st, vec![set("a", "1"), set("b", "1")]);
        commit(&st, vec![set("a", "2"), set("b", "2")]);
        commit(&st, vec![set("a", "3"), set("b", "3\nmultiline\tvalue")]);
        store.shutdown();
        drop((st, store));
        let path = state_path(dir.path(), "torn");
        let whole = fs::read(&path).unwrap();
        // Every cut inside the third batch (including mid-line, mid-quoted-field, and right before the commit
        // line's newline... which keeps it) leaves batches 1 and 2.
        let third_start = {
            let mut at = 0;
            let mut commits = 0;
            for (i, b) in whole.iter().enumerate() {
                let line_start = whole[..i]
                    .iter()
                    .rposition(|&c| c == b'\n')
                    .map_or(0, |p| p + 1);
                let line = &whole[line_start..i];
                if *b == b'\n'
                    && line.windows(8).any(|w| w == b"\tcommit\t")
                    && line.ends_with(b"\t2")
                {
                    commits += 1;
                    if commits == 2 {
                        at = i + 1;
                    }
                }
            }
            at
        };
        assert!(third_start > 0);
        for cut in third_start..whole.len() - 1 {
            fs::write(&path, &whole[..cut]).unwrap();
            let store = Store::open(config(dir.path())).unwrap();
            let st = store.state("torn").unwrap();
            assert_eq!(st.applied_seq(), 2, "cut at {cut}");
            assert_eq!(st.get("a").as_deref(), Some("2"));
            assert_eq!(st.get("b").as_deref(), Some("2"));
            assert_eq!(
                fs::read(&path).unwrap(),
                &whole[..third_start],
                "truncated to the last commit line"
            );
            // And appending after recovery works.
            commit(&st, vec![set("a", "4")]);
            assert_eq!(st.applied_seq(), 3);
            store.shutdown();
            drop((st, store));
            let store = Store::open(config(dir.path())).unwrap();
            assert_eq!(store.state("torn").unwrap().get("a").as_deref(), Some("4"));
        }
        // A cut that only loses the final newline keeps the batch and repairs the line.
        fs::write(&path, &whole[..whole.len() - 1]).unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        let st = store.state("torn").unwrap();
        assert_eq!(st.applied_seq(), 3);
        assert_eq!(fs::read(&path).unwrap(), whole);
        assert_eq!(st.get("b").as_deref(), Some("3\nmultiline\tvalue"));
    }

    #[test]
    fn torn_or_missing_header_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path(), "hdr");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        for content in [&b""[..], b"se", b"seq\thlc\top\tkey\tvalue"] {
            fs::write(&path, content).unwrap();
            let store = Store::open(config(dir.path())).unwrap();
            let st = store.state("hdr").unwrap();
            assert_eq!(st.applied_seq(), 0);
            commit(&st, vec![set("k", "v")]);
            store.shutdown();
            let text = fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with("seq\thlc\top\tkey\tvalue\n1\t"),
                "{text:?}"
            );
        }
    }

    #[test]
    fn garbage_in_the_middle_is_corruption_not_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        let st = store.state("bad").unwrap();
        commit(&st, vec![set("a", "1")]);
        commit(&st, vec![set("a", "2")]);
        store.shutdown();
        drop((st, store));
        let path = state_path(dir.path(), "bad");
        let text = fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(3, "this is\tnot a record");
        let broken = lines.join("\n") + "\n";
        fs::write(&path, &broken).unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        match store.state("bad") {
            Err(Error::Corrupt {
                path: p,
                line,
                reason,
            }) => {
                assert_eq!(p, path);
                assert_eq!(line, 4);
                assert!(reason.contains("expected 5 fields"), "{reason}");
            }
            other => panic!("expected Corrupt, got {:?}", other.map(|s| s.applied_seq())),
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), broken, "left untouched");
        // An unterminated quote swallowing the rest is caught too.
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(3, "3\t1\tset\t\"open");
        fs::write(&path, lines.join("\n") + "\n").unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        assert!(matches!(
            store.state("bad"),
            Err(Error::Corrupt { line: 4, .. })
        ));
        // A wrong count on a complete commit line is corruption as well.
        let first_commit_end = {
            let at = text.find("\tcommit\t").unwrap();
            at + text[at..].find('\n').unwrap()
        };
        assert_eq!(&text[first_commit_end - 2..first_commit_end], "\t1");
        let wrong = format!(
            "{}2{}",
            &text[..first_commit_end - 1],
            &text[first_commit_end..]
        );
        fs::write(&path, wrong).unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        assert!(matches!(
            store.state("bad"),
            Err(Error::Corrupt { line: 3, .. })
        ));
        // A whole batch whose content was damaged (a value changed, the line still well-formed) no longer
        // matches the chain hash on its commit line: corruption, even as the last batch.
        let damaged = text.replacen("set\ta\t2", "set\ta\t3", 1);
        assert_ne!(damaged, text);
        fs::write(&path, &damaged).unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        match store.state("bad") {
            Err(Error::Corrupt { line, reason, .. }) => {
                assert_eq!(line, 4);
                assert!(reason.contains("chain hash"), "{reason}");
            }
            other => panic!("expected Corrupt, got {:?}", other.map(|s| s.applied_seq())),
        }
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            damaged,
            "left untouched"
        );
    }

    #[test]
    fn history_is_bounded_and_deletes_are_versions() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            history_versions: 3,
            ..config(dir.path())
        };
        let store = Store::open(cfg).unwrap();
        let st = store.state("hist").unwrap();
        for i in 1..=5 {
            commit(&st, vec![set("k", &i.to_string())]);
        }
        commit(&st, vec![del("k")]);
        let h = st.history("k", 0);
        assert_eq!(
            h.iter()
                .map(|v| (v.seq, v.value.clone()))
                .collect::<Vec<_>>(),
            vec![(6, None), (5, Some("5".into())), (4, Some("4".into()))]
        );
        assert!(st.keys("").is_empty());
        assert_eq!(st.history("missing", 3), vec![]);
    }

    #[test]
    fn encode_batch_shape() {
        let rec = |key: &str, value: Option<&str>, hlc| Record {
            key: key.into(),
            value: value.map(Into::into),
            hlc,
        };
        let batch = Batch {
            seq: 7,
            records: vec![rec("k", Some("v"), 42), rec("d", None, 42)],
            prev: None,
        };
        let head = batch.chain_hash();
        let bytes = encode_batch(&batch, &head);
        assert_eq!(
            bytes,
            format!("7\t42\tset\tk\tv\n7\t42\tdel\td\t\n7\t42\tcommit\t{head}\t2\n").as_bytes()
        );
        // Records of a replicated or merged batch keep their own hlc; the commit line has the greatest.
        let batch = Batch {
            seq: 8,
            records: vec![
                rec("a", Some("1"), 50),
                rec("b", None, 9),
                rec("c", Some(""), 50),
            ],
            prev: Some(head.clone()),
        };
        let next = batch.chain_hash();
        assert_ne!(next, head);
        let bytes = encode_batch(&batch, &next);
        assert_eq!(
            bytes,
            format!(
                "8\t50\tset\ta\t1\n8\t9\tdel\tb\t\n8\t50\tset\tc\t\n8\t50\tcommit\t{next}\t3\n"
            )
            .as_bytes()
        );
        assert!(looks_like_commit_line(b"7\t42\tcommit\t\t2"));
        assert!(looks_like_commit_line(
            format!("7\t42\tcommit\t{head}\t2").as_bytes()
        ));
        assert!(!looks_like_commit_line(b"7\t42\tcommit\tk\t2"));
        assert!(!looks_like_commit_line(b"7\t42\tset\t\t2"));
    }

    // ---- Replication, snapshots and last-writer-wins merges ----

    fn rec(key: &str, value: Option<&str>, hlc: u64) -> Record {
        Record {
            key: key.into(),
            value: value.map(Into::into),
            hlc,
        }
    }

    fn reopen_with_history(dir: &Path, store: Store, history: usize) -> Store {
        store.shutdown();
        drop(store);
        open_with_history(dir, history)
    }

    fn open_with_history(dir: &Path, history: usize) -> Store {
        Store::open(StoreConfig {
            history_versions: history,
            ..config(dir)
        })
        .unwrap()
    }

    /// Everything the index holds (every key with every kept version's seq, hlc and value) plus what readers
    /// see, as one comparable value.
    fn whole(st: &ObjectState) -> (Snapshot, BTreeMap<String, String>, Vec<String>, u64) {
        (
            st.export_snapshot(),
            st.snapshot(),
            st.keys(""),
            st.applied_seq(),
        )
    }

    /// A home with varied batches: multi-key, deletes, hostile strings, a key rewritten past the history
    /// depth, and a merged batch whose records carry different hlcs. Returns the batches it shipped.
    fn home_with_batches(st: &ObjectState) -> Vec<Arc<Batch>> {
        let mut out = Vec::new();
        let mut push = |t: CommitTicket| {
            out.push(t.batch().expect("a non-empty commit has a batch"));
            block_on(t.durable()).unwrap();
        };
        push(st.commit(vec![set("a", "1"), set("b", "1")]).unwrap());
        for s in HOSTILE {
            push(
                st.commit(vec![set(&format!("h{s}"), s), set("a", s)])
                    .unwrap(),
            );
        }
        push(
            st.commit(vec![del("b"), set("c", "x"), set("c", "y")])
                .unwrap(),
        );
        let base = st.history("a", 1)[0].hlc;
        push(
            st.merge_lww(&[
                rec("m1", Some("old"), base / 2),
                rec("m2", None, base + 7),
                rec("a", Some("merged"), base + 5),
            ])
            .unwrap()
            .expect("winners"),
        );
        push(st.commit(vec![set("after", "merge")]).unwrap());
        out
    }

    #[test]
    fn commit_ticket_carries_the_batch_with_one_hlc() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        let st = store.state("tb").unwrap();
        let t = st.commit(vec![set("k", "v"), del("gone")]).unwrap();
        let batch = t.batch().unwrap();
        let hlc = st.history("k", 1)[0].hlc;
        assert!(hlc > 0);
        assert_eq!(
            *batch,
            Batch {
                seq: 1,
                records: vec![rec("k", Some("v"), hlc), rec("gone", None, hlc)],
                prev: None,
            }
        );
        assert_eq!(st.history("gone", 1)[0].hlc, hlc);
        assert_eq!(st.history("k", 1)[0].at_ms, hlc_ms(hlc));
        assert!(st.commit(vec![]).unwrap().batch().is_none(), "a barrier");
        let t2 = st.commit(vec![set("k", "w")]).unwrap();
        assert!(t2.batch().unwrap().records[0].hlc > hlc);
        let t2_batch = t2.batch().unwrap();
        block_on(t2.durable()).unwrap();
        assert_eq!(st.chain_head(), (2, Some(t2_batch.chain_hash())));
        // On disk every record has its hlc.
        let text = fs::read_to_string(state_path(dir.path(), "tb")).unwrap();
        let h1 = batch.chain_hash();
        assert!(text.contains(&format!(
            "1\t{hlc}\tset\tk\tv\n1\t{hlc}\tdel\tgone\t\n1\t{hlc}\tcommit\t{h1}\t2\n"
        )));
        assert_eq!(t2_batch.prev.as_deref(), Some(h1.as_str()), "chained");
    }

    #[test]
    fn apply_replicated_in_order_idempotent_gap_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let home_store = Store::open(config(&dir.path().join("home"))).unwrap();
        let home = home_store.state("obj").unwrap();
        let batches = home_with_batches(&home);
        let n = batches.len() as u64;
        assert_eq!(batches.last().unwrap().seq, n);

        let rdir = dir.path().join("replica");
        let store = Store::open(config(&rdir)).unwrap();
        let st = store.state("obj").unwrap();
        let t1 = st.apply_replicated(&batches[0]).unwrap().unwrap();
        assert_eq!(t1.seq, 1);
        assert_eq!(t1.batch().as_deref(), Some(&*batches[0]));
        assert!(
            st.apply_replicated(&batches[0]).unwrap().is_none(),
            "duplicate"
        );
        match st.apply_replicated(&batches[2]) {
            Err(Error::Gap {
                object_id,
                expected,
                got,
            }) => assert_eq!((object_id.as_str(), expected, got), ("obj", 2, 3)),
            other => panic!("expected a gap, got {other:?}"),
        }
        assert_eq!(st.applied_seq(), 1, "a gap applies nothing");
        let mut last = None;
        for b in &batches[1..] {
            last = st.apply_replicated(b).unwrap();
            assert!(st.apply_replicated(b).unwrap().is_none());
        }
        block_on(last.unwrap().durable()).unwrap();
        for b in &batches {
            assert!(
                st.apply_replicated(b).unwrap().is_none(),
                "a resend of everything is harmless"
            );
        }
        assert_eq!((st.applied_seq(), st.durable_seq()), (n, n));
        assert_eq!(whole(&st), whole(&home));
        // The merged batch kept its records' own hlcs here too.
        let merged = batches
            .iter()
            .find(|b| b.records.iter().any(|r| r.key == "m1"))
            .unwrap();
        assert_eq!(
            st.history("m1", 1)[0].hlc,
            merged.records.iter().find(|r| r.key == "m1").unwrap().hlc
        );
        assert!(matches!(
            st.apply_replicated(&Batch {
                seq: n + 1,
                records: vec![],
                prev: None,
            }),
            Err(Error::Invalid { .. })
        ));
        // The replica's clock moved past everything it applied.
        let max_hlc = batches
            .iter()
            .flat_map(|b| &b.records)
            .map(|r| r.hlc)
            .max()
            .unwrap();
        assert!(store.hlc().new_timestamp().get_time().as_u64() > max_hlc);

        let before = whole(&st);
        let store = reopen(&rdir, store);
        let st = store.state("obj").unwrap();
        assert_eq!(whole(&st), before, "the reloaded index is the same");
        assert_eq!(st.durable_seq(), n);
        // And replication continues after the reload.
        let next = home
            .commit(vec![set("later", "1")])
            .unwrap()
            .batch()
            .unwrap();
        block_on(st.apply_replicated(&next).unwrap().unwrap().durable()).unwrap();
        assert_eq!(whole(&st), whole(&home));
    }

    #[test]
    fn a_batch_from_another_history_is_refused_as_diverged_before_and_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let home_a = Store::open(config(&dir.path().join("a"))).unwrap();
        let home_b = Store::open(config(&dir.path().join("b"))).unwrap();
        let (a, b) = (home_a.state("obj").unwrap(), home_b.state("obj").unwrap());
        let mut batches_a = Vec::new();
        let mut batches_b = Vec::new();
        for n in 0..3 {
            let t = a.commit(vec![set("k", &format!("a{n}"))]).unwrap();
            batches_a.push(t.batch().unwrap());
            // The same seqs, the same key, another value: another history.
            let t = b.commit(vec![set("k", &format!("b{n}"))]).unwrap();
            batches_b.push(t.batch().unwrap());
        }
        assert_eq!(batches_a[1].seq, batches_b[1].seq);
        assert_ne!(batches_a[1].chain_hash(), batches_b[1].chain_hash());

        let rdir = dir.path().join("replica");
        let store = Store::open(config(&rdir)).unwrap();
        let st = store.state("obj").unwrap();
        st.apply_replicated(&batches_a[0]).unwrap().unwrap();
        let t = st.apply_replicated(&batches_a[1]).unwrap().unwrap();
        block_on(t.durable()).unwrap();
        let before = whole(&st);
        // The next seq from the other history: its prev is not this copy's hash.
        assert!(matches!(
            st.apply_replicated(&batches_b[2]),
            Err(Error::Diverged { seq: 2, .. })
        ));
        // The same seq as this copy's last with other content.
        assert!(matches!(
            st.apply_replicated(&batches_b[1]),
            Err(Error::Diverged { seq: 2, .. })
        ));
        // Its own history's copy of that seq is a harmless duplicate.
        assert!(st.apply_replicated(&batches_a[1]).unwrap().is_none());
        assert_eq!(whole(&st), before, "nothing of the other history applied");
        assert_eq!(st.chain_head(), (2, Some(batches_a[1].chain_hash())));

        let store = reopen(&rdir, store);
        let st = store.state("obj").unwrap();
        assert_eq!(
            st.chain_head(),
            (2, Some(batches_a[1].chain_hash())),
            "the hash survives a reload"
        );
        assert!(matches!(
            st.apply_replicated(&batches_b[2]),
            Err(Error::Diverged { .. })
        ));
        block_on(
            st.apply_replicated(&batches_a[2])
                .unwrap()
                .unwrap()
                .durable(),
        )
        .unwrap();
        assert_eq!(whole(&st), whole(&a));
        // A snapshot of the other history replaces this one, hash included; its batches then follow.
        st.install_snapshot(&b.export_snapshot()).unwrap();
        assert_eq!(st.chain_head(), b.chain_head());
        let next = b.commit(vec![set("k", "b3")]).unwrap().batch().unwrap();
        block_on(st.apply_replicated(&next).unwrap().unwrap().durable()).unwrap();
        let store = reopen(&rdir, store);
        let st = store.state("obj").unwrap();
        assert_eq!(whole(&st), whole(&b));
        assert_eq!(st.chain_head(), b.chain_head());
    }

    #[test]
    fn compaction_keeps_the_chain_hash_so_replication_continues_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let home_store = Store::open(config(&dir.path().join("home"))).unwrap();
        let home = home_store.state("obj").unwrap();
        let rdir = dir.path().join("replica");
        let store = Store::open(config(&rdir)).unwrap();
        let st = store.state("obj").unwrap();
        let mut last = None;
        for n in 0..5000 {
            let batch = home
                .commit(vec![set(&format!("k{}", n % 10), &n.to_string())])
                .unwrap()
                .batch()
                .unwrap();
            last = st.apply_replicated(&batch).unwrap();
        }
        block_on(last.unwrap().durable()).unwrap();
        let head = st.chain_head();
        assert_eq!(head, home.chain_head());
        // Shutting down lets the writer finish its round, and the compaction it starts past 4096 records.
        store.shutdown();
        assert!(
            store.stats().compactions > 0,
            "the replica's file was compacted"
        );
        let store = reopen(&rdir, store);
        let st = store.state("obj").unwrap();
        assert_eq!(
            st.chain_head(),
            head,
            "read back from the compacted file's last commit line"
        );
        let next = home
            .commit(vec![set("after", "1")])
            .unwrap()
            .batch()
            .unwrap();
        block_on(st.apply_replicated(&next).unwrap().unwrap().durable()).unwrap();
        assert_eq!(whole(&st), whole(&home));
    }

    #[test]
    fn snapshot_install_matches_survives_reload_and_replication_continues() {
        let dir = tempfile::tempdir().unwrap();
        let home_store = open_with_history(&dir.path().join("home"), 4);
        let home = home_store.state("obj").unwrap();
        home_with_batches(&home);
        for i in 0..10 {
            commit(
                &home,
                vec![set("deep", &i.to_string()), set(&format!("k{i}"), "v")],
            );
        }
        commit(&home, vec![del("k3")]);
        let snap = home.export_snapshot();
        assert_eq!(snap.seq, home.applied_seq());
        assert_eq!(
            snap.keys
                .iter()
                .find(|k| k.key == "deep")
                .unwrap()
                .versions
                .len(),
            4
        );
        let tomb = snap.keys.iter().find(|k| k.key == "k3").unwrap();
        assert_eq!(
            tomb.versions.last().unwrap().value,
            None,
            "tombstones travel"
        );
        // It travels as JSON.
        let json = serde_json::to_string(&snap).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&json).unwrap(), snap);

        // The target has a state of its own, with tickets still pending.
        let tdir = dir.path().join("target");
        let store = open_with_history(&tdir, 4);
        let st = store.state("obj").unwrap();
        let old: Vec<_> = (0..200)
            .map(|i| st.commit(vec![set("mine", &i.to_string())]).unwrap())
            .collect();
        st.install_snapshot(&snap).unwrap();
        for t in old {
            assert!(t.is_durable());
            block_on(t.durable()).unwrap();
        }
        assert_eq!(whole(&st), whole(&home));
        assert_eq!(st.get("mine"), None);
        assert_eq!((st.applied_seq(), st.durable_seq()), (snap.seq, snap.seq));
        for k in ["deep", "a", "k3", "m2", "c"] {
            assert_eq!(st.history(k, 0), home.history(k, 0), "{k}");
        }
        // A ticket of a barrier before any new commit resolves at once.
        block_on(st.commit(vec![]).unwrap().durable()).unwrap();

        let store = reopen_with_history(&tdir, store, 4);
        let st = store.state("obj").unwrap();
        assert_eq!(whole(&st), whole(&home), "survives a reload");
        assert!(!tdir.join("data/state/obj/state.tsv.tmp").exists());

        // Replication continues from snapshot.seq + 1.
        let gap = Batch {
            seq: snap.seq + 2,
            records: vec![rec("x", None, 1)],
            prev: None,
        };
        assert!(
            matches!(st.apply_replicated(&gap), Err(Error::Gap { expected, .. }) if expected == snap.seq + 1)
        );
        let next = home
            .commit(vec![set("deep", "new"), del("a")])
            .unwrap()
            .batch()
            .unwrap();
        assert_eq!(next.seq, snap.seq + 1);
        block_on(st.apply_replicated(&next).unwrap().unwrap().durable()).unwrap();
        assert_eq!(whole(&st), whole(&home));
        let store = reopen_with_history(&tdir, store, 4);
        assert_eq!(whole(&store.state("obj").unwrap()), whole(&home));

        // A store keeping fewer versions keeps the newest; reloading gives the same index.
        let sdir = dir.path().join("small");
        let small = open_with_history(&sdir, 2);
        let st = small.state("obj").unwrap();
        st.install_snapshot(&snap).unwrap();
        let deep = &snap.keys.iter().find(|k| k.key == "deep").unwrap().versions;
        assert_eq!(
            st.history("deep", 0),
            vec![deep[3].clone(), deep[2].clone()]
        );
        let before = whole(&st);
        let small = reopen_with_history(&sdir, small, 2);
        assert_eq!(whole(&small.state("obj").unwrap()), before);

        // An empty snapshot empties the state; a new commit then starts at seq 1.
        let st = small.state("obj").unwrap();
        st.install_snapshot(&Snapshot {
            seq: 0,
            keys: vec![],
            chain: None,
        })
        .unwrap();
        assert_eq!(
            (st.applied_seq(), st.durable_seq(), st.keys("")),
            (0, 0, vec![])
        );
        assert_eq!(commit(&st, vec![set("k", "v")]), 1);
        let small = reopen_with_history(&sdir, small, 2);
        assert_eq!(small.state("obj").unwrap().get("k").as_deref(), Some("v"));
    }

    #[test]
    fn bad_snapshots_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        let st = store.state("bad").unwrap();
        commit(&st, vec![set("k", "v")]);
        let before = whole(&st);
        let v = |seq, value: Option<&str>| KeyVersion {
            seq,
            at_ms: 0,
            value: value.map(Into::into),
            hlc: seq * 10,
        };
        let key = |k: &str, versions| SnapshotKey {
            key: k.into(),
            versions,
        };
        for bad in [
            Snapshot {
                seq: 3,
                keys: vec![
                    key("a", vec![v(2, Some("x")), v(1, Some("y"))]),
                    key("b", vec![v(3, None)]),
                ],
                chain: None,
            },
            Snapshot {
                seq: 3,
                keys: vec![key("a", vec![v(4, Some("x"))])],
                chain: None,
            },
            Snapshot {
                seq: 3,
                keys: vec![key("a", vec![v(2, Some("x"))])],
                chain: None,
            },
            Snapshot {
                seq: 3,
                keys: vec![key("a", vec![]), key("b", vec![v(3, None)])],
                chain: None,
            },
            Snapshot {
                seq: 3,
                keys: vec![key("a", vec![v(3, None)]), key("a", vec![v(3, None)])],
                chain: None,
            },
            Snapshot {
                seq: 3,
                keys: vec![key("a", vec![v(0, None), v(3, None)])],
                chain: None,
            },
            Snapshot {
                seq: 1,
                keys: vec![],
                chain: None,
            },
        ] {
            assert!(
                matches!(st.install_snapshot(&bad), Err(Error::Invalid { .. })),
                "{bad:?}"
            );
            assert_eq!(whole(&st), before);
        }
        // Writes are refused while an install runs, and accepted after.
        st.inner.lock().installing = true;
        assert!(matches!(
            st.commit(vec![set("k", "w")]),
            Err(Error::Busy { .. })
        ));
        assert!(matches!(st.commit(vec![]), Err(Error::Busy { .. })));
        assert!(matches!(
            st.merge_lww(&[rec("k", None, u64::MAX)]),
            Err(Error::Busy { .. })
        ));
        assert!(matches!(
            st.apply_replicated(&Batch {
                seq: 2,
                records: vec![rec("k", None, 1)],
                prev: None,
            }),
            Err(Error::Busy { .. })
        ));
        st.inner.lock().installing = false;
        assert_eq!(whole(&st), before);
        assert_eq!(commit(&st, vec![set("k", "w")]), 2);
        store.shutdown();
        assert!(matches!(
            st.install_snapshot(&Snapshot {
                seq: 0,
                keys: vec![],
                chain: None,
            }),
            Err(Error::Closed)
        ));
    }

    #[test]
    fn lww_is_a_total_order_so_both_sides_agree() {
        let versions = [
            (5, Some("b")),
            (5, Some("a")),
            (5, None),
            (4, Some("z")),
            (6, None),
        ];
        for (i, a) in versions.iter().enumerate() {
            for (j, b) in versions.iter().enumerate() {
                let ab = lww_beats(a.0, a.1, b.0, b.1);
                let ba = lww_beats(b.0, b.1, a.0, a.1);
                if i == j {
                    assert!(!ab && !ba);
                } else {
                    assert!(ab != ba, "{a:?} vs {b:?}: exactly one wins");
                }
            }
        }
        assert!(lww_beats(5, Some("b"), 5, Some("a")));
        assert!(
            lww_beats(5, Some(""), 5, None),
            "a delete is the least value"
        );
    }

    #[test]
    fn merge_lww_newer_wins_older_loses_a_tie_goes_to_the_greater_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        let st = store.state("m").unwrap();
        commit(
            &st,
            vec![
                set("newer", "local"),
                set("older", "local"),
                set("equal", "local"),
                set("del", "local"),
            ],
        );
        let h = st.history("newer", 1)[0].hlc;
        assert!(st.merge_lww(&[]).unwrap().is_none());
        assert!(
            st.merge_lww(&[
                rec("older", Some("remote"), h - 1),
                rec("equal", Some("aaa"), h),
                rec("equal", None, h)
            ])
            .unwrap()
            .is_none(),
            "nothing won (older, or equal clock and a lesser value): no batch"
        );
        assert_eq!(st.applied_seq(), 1);
        let (_, head_before) = st.chain_head();
        assert!(head_before.is_some());
        let t = st
            .merge_lww(&[
                rec("older", Some("remote"), h - 1),
                rec("newer", Some("remote"), h + 1),
                rec("equal", Some("remote"), h),
                rec("del", None, h + 2),
                rec("absent", Some("remote"), 5),
                rec("absent-tomb", None, 6),
                // A key twice: a later record must beat the earlier winner.
                rec("twice", Some("first"), 100),
                rec("twice", Some("lower"), 99),
                rec("twice", Some("higher"), 101),
            ])
            .unwrap()
            .unwrap();
        let batch = t.batch().unwrap();
        assert_eq!(t.seq, 2);
        assert_eq!(
            *batch,
            Batch {
                seq: 2,
                records: vec![
                    rec("absent", Some("remote"), 5),
                    rec("absent-tomb", None, 6),
                    rec("del", None, h + 2),
                    rec("equal", Some("remote"), h),
                    rec("newer", Some("remote"), h + 1),
                    rec("twice", Some("higher"), 101),
                ],
                prev: head_before,
            },
            "winners in key order, with their incoming hlc"
        );
        block_on(t.durable()).unwrap();
        assert_eq!(st.get("newer").as_deref(), Some("remote"));
        assert_eq!(st.get("older").as_deref(), Some("local"));
        assert_eq!(
            st.get("equal").as_deref(),
            Some("remote"),
            "on equal clocks the greater value wins (\"remote\" > \"local\"), whichever side merges"
        );
        assert_eq!(st.get("del"), None);
        assert_eq!(st.get("absent").as_deref(), Some("remote"));
        assert_eq!(
            st.keys(""),
            vec!["absent", "equal", "newer", "older", "twice"]
        );
        assert_eq!(
            st.history("del", 0)
                .iter()
                .map(|v| (v.seq, v.hlc))
                .collect::<Vec<_>>(),
            vec![(2, h + 2), (1, h)]
        );
        // The station's clock moved past the winners: a local write now beats them.
        let t3 = st.commit(vec![set("del", "back")]).unwrap();
        assert!(t3.batch().unwrap().records[0].hlc > h + 2);
        block_on(t3.durable()).unwrap();
        // Replaying the same merge changes nothing more.
        assert!(st.merge_lww(&batch.records).unwrap().is_none());

        let before = whole(&st);
        let store = reopen(dir.path(), store);
        let st = store.state("m").unwrap();
        assert_eq!(whole(&st), before, "per-record hlcs survive a reload");
    }

    #[test]
    fn diverged_stations_converge_whichever_merges_first() {
        let dir = tempfile::tempdir().unwrap();
        let a1 = Store::open(config(&dir.path().join("a1"))).unwrap();
        let b1 = Store::open(config(&dir.path().join("b1"))).unwrap();
        let (sa, sb) = (a1.state("o").unwrap(), b1.state("o").unwrap());
        // A common history, then each side writes on its own (interleaved in time), deletes included.
        for b in home_with_batches(&sa) {
            sb.apply_replicated(&b).unwrap();
        }
        for i in 0..20 {
            let k = format!("k{}", i % 7);
            if i % 3 == 0 {
                commit(
                    &sa,
                    vec![set(&k, &format!("a{i}")), del(&format!("k{}", (i + 1) % 7))],
                );
            } else {
                commit(&sb, vec![set(&k, &format!("b{i}"))]);
            }
            if i % 5 == 0 {
                commit(&sb, vec![del("a"), set(&format!("only-b{i}"), "b")]);
                commit(&sa, vec![set(&format!("only-a{i}"), "a")]);
            }
        }
        commit(&sa, vec![set("a", "a wins: written last")]);
        // Copies of both diverged states, to merge in the other order.
        let a2 = Store::open(config(&dir.path().join("a2"))).unwrap();
        let b2 = Store::open(config(&dir.path().join("b2"))).unwrap();
        let (sa2, sb2) = (a2.state("o").unwrap(), b2.state("o").unwrap());
        sa2.install_snapshot(&sa.export_snapshot()).unwrap();
        sb2.install_snapshot(&sb.export_snapshot()).unwrap();

        // Order 1: A merges B's records, then B merges A's (A's now include B's winners).
        sa.merge_lww(&sb.latest_records()).unwrap();
        sb.merge_lww(&sa.latest_records()).unwrap();
        // Order 2: B first.
        sb2.merge_lww(&sa2.latest_records()).unwrap();
        sa2.merge_lww(&sb2.latest_records()).unwrap();

        let result = sa.latest_records();
        assert!(result.len() > 20);
        for (name, st) in [("b1", &sb), ("a2", &sa2), ("b2", &sb2)] {
            assert_eq!(st.latest_records(), result, "{name}");
            assert_eq!(st.snapshot(), sa.snapshot(), "{name}");
        }
        assert_eq!(sa.get("a").as_deref(), Some("a wins: written last"));
        // A second round is a no-op everywhere.
        for (x, y) in [(&sa, &sb), (&sb, &sa), (&sa2, &sb2), (&sb2, &sa2)] {
            assert!(x.merge_lww(&y.latest_records()).unwrap().is_none());
        }
    }
}
