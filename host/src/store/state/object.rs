//! The handle on one object's state, [`ObjectState`]: its reads, its writes (a local commit and a batch
//! replicated from the object's home) and the shared part the writer thread holds, [`ObjInner`]. Snapshot
//! export and install are in `install.rs`, the last-writer-wins merge in `merge.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::encode::encode_batch;
use super::hlc::observe_hlc;
use super::index::{Index, Row, Version};
use super::ticket::{CommitTicket, Durable};
use super::types::{Batch, KeyVersion, Record, StateLimits, Usage, Write};
use crate::store::Shared;
use crate::store::error::Error;
use crate::store::queue::{WritePermit, batch_cost, write_cost};
use crate::store::writer::{Job, Msg};

/// A handle on one object's state. Cheap to clone; all clones share the same index.
#[derive(Clone)]
pub struct ObjectState {
    pub(super) inner: Arc<ObjInner>,
}

/// What the object's lock guards.
pub(super) struct Locked {
    /// The index readers see.
    pub(super) index: Index,
    /// Why the object failed, once it did.
    failed: Option<String>,
    /// A snapshot is being installed: writes are refused with [`Error::Busy`].
    pub(super) installing: bool,
}

/// The shared part of an [`ObjectState`]; the writer thread holds it through queued [`Job`]s.
pub(crate) struct ObjInner {
    /// The object's id.
    pub(crate) id: String,
    /// `data/state/{id}/state.tsv`.
    pub(crate) path: PathBuf,
    /// What all objects of the store share: config, clock, the writer's queue.
    pub(super) shared: Arc<Shared>,
    locked: Mutex<Locked>,
    /// What the writer has made durable, watched by the tickets.
    pub(super) durable: watch::Sender<Durable>,
    /// Set with `Locked::failed`, readable without the lock.
    failed: AtomicBool,
    /// `set`/`del` records in the file (maintained by the writer thread).
    pub(crate) file_records: AtomicU64,
    /// The file's length as the writer left it: where the next batch goes (logged with it).
    pub(crate) file_len: AtomicU64,
    /// Batches up to this seq are already in a compacted (or installed) file: the writer skips their queued
    /// bytes.
    pub(crate) compacted_through: AtomicU64,
}

impl ObjInner {
    /// Locks the object's state (taking over a poisoned lock).
    pub(super) fn lock(&self) -> MutexGuard<'_, Locked> {
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

    /// True when the file holds more than `max(compaction_min_records, 4 × kept)` records.
    pub(crate) fn needs_compaction(&self) -> bool {
        let kept = self.lock().index.kept as u64;
        let floor = self.shared.config.compaction_min_records;
        self.file_records.load(Ordering::Relaxed) > (4 * kept).max(floor)
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
}

impl ObjectState {
    /// A handle on a state just loaded from `path`: `index` as recovered, with `file_records` `set`/`del`
    /// records in the file of `file_len` bytes, all of it durable.
    pub(super) fn new(
        shared: &Arc<Shared>,
        id: &str,
        path: PathBuf,
        index: Index,
        (file_records, file_len): (u64, u64),
    ) -> ObjectState {
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
            file_records: AtomicU64::new(file_records),
            file_len: AtomicU64::new(file_len),
            compacted_through: AtomicU64::new(applied),
        };
        ObjectState {
            inner: Arc::new(inner),
        }
    }

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
        self.first_keys(prefix, usize::MAX)
    }

    /// The first `limit` existing keys starting with `prefix`, sorted.
    pub fn first_keys(&self, prefix: &str, limit: usize) -> Vec<String> {
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
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The first `limit` existing keys starting with `prefix` that sort at or after `start`.
    pub fn keys_from(&self, prefix: &str, start: &str, limit: usize) -> Vec<String> {
        let from = if start > prefix { start } else { prefix };
        let locked = self.inner.lock();
        locked
            .index
            .keys
            .range::<str, _>((std::ops::Bound::Included(from), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, v)| v.back().is_some_and(|v| v.value.is_some()))
            .take(limit)
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

    /// What the state holds now (what the state quota limits), the host's keys included.
    pub fn usage(&self) -> Usage {
        self.inner.lock().index.usage
    }

    /// What the object's own keys hold: [`ObjectState::usage`] without the host's keys
    /// (idempotent answers, alarms, events).
    pub fn object_usage(&self) -> Usage {
        let index = &self.inner.lock().index;
        Usage {
            keys: index.usage.keys - index.host_usage.keys,
            bytes: index.usage.bytes - index.host_usage.bytes,
        }
    }

    /// The shared part, for the store's cache and the writer.
    pub(crate) fn inner(&self) -> &Arc<ObjInner> {
        &self.inner
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
    ///
    /// Takes room in the writer's queue first, blocking the thread while it is full: async callers use
    /// [`ObjectState::reserve`] and [`ObjectState::commit_reserved`] instead.
    pub fn commit_within(
        &self,
        writes: Vec<Write>,
        limits: Option<StateLimits>,
    ) -> Result<CommitTicket, Error> {
        if writes.is_empty() {
            return self.barrier();
        }
        let permit = self
            .inner
            .shared
            .queue
            .reserve_blocking(write_cost(&writes))?;
        self.commit_reserved(writes, limits, permit)
    }

    /// A read barrier: a ticket that resolves once everything applied so far is durable (no disk
    /// write, no room in the writer's queue). Fails like [`ObjectState::commit`].
    pub fn barrier(&self) -> Result<CommitTicket, Error> {
        let locked = self.inner.lock();
        self.check_writable(&locked)?;
        Ok(self.ticket(locked.index.applied_seq, None))
    }

    /// Waits for room in the writer's queue for a batch of `cost` bytes ([`crate::store::write_cost`],
    /// [`crate::store::batch_cost`]): the backpressure that keeps commits from outrunning the disk.
    pub async fn reserve(&self, cost: usize) -> Result<WritePermit, Error> {
        self.inner.shared.queue.reserve(cost).await
    }

    /// [`ObjectState::commit_within`] with room already reserved; never blocks. The permit is held until
    /// the writer has written the batch (dropped at once for an empty batch or a refusal).
    pub fn commit_reserved(
        &self,
        writes: Vec<Write>,
        limits: Option<StateLimits>,
        permit: WritePermit,
    ) -> Result<CommitTicket, Error> {
        if writes.is_empty() {
            return self.barrier();
        }
        let inner = &self.inner;
        let mut locked = inner.lock();
        self.check_writable(&locked)?;
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
            permit,
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
    ///
    /// Blocks the thread while the writer's queue is full: async callers use
    /// [`ObjectState::apply_reserved`].
    pub fn apply_replicated(&self, batch: &Batch) -> Result<Option<CommitTicket>, Error> {
        let permit = self
            .inner
            .shared
            .queue
            .reserve_blocking(batch_cost(batch))?;
        self.apply_reserved(batch, permit)
    }

    /// [`ObjectState::apply_replicated`] with room in the writer's queue already reserved; never blocks.
    pub fn apply_reserved(
        &self,
        batch: &Batch,
        permit: WritePermit,
    ) -> Result<Option<CommitTicket>, Error> {
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
        let ticket = self.append_locked(&mut locked, batch.clone(), permit)?;
        drop(locked);
        self.observe(batch.records.iter().map(|r| r.hlc).max().unwrap_or(0));
        Ok(Some(ticket))
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

    /// Refuses a write while the object or the whole store is failed, or a snapshot is being installed.
    pub(super) fn check_writable(&self, locked: &Locked) -> Result<(), Error> {
        if let Some(msg) = &locked.failed {
            return Err(Error::Failed(msg.clone()));
        }
        if let Some(msg) = self.inner.shared.store_failure() {
            return Err(Error::Failed(msg));
        }
        if locked.installing {
            return Err(Error::Busy {
                object_id: self.inner.id.clone(),
            });
        }
        Ok(())
    }

    /// The error for a batch that does not continue this copy's history at `seq`.
    fn diverged(&self, seq: u64) -> Error {
        Error::Diverged {
            object_id: self.inner.id.clone(),
            seq,
        }
    }

    /// The error for a malformed batch or snapshot.
    pub(super) fn invalid(&self, reason: String) -> Error {
        Error::Invalid {
            object_id: self.inner.id.clone(),
            reason,
        }
    }

    /// A ticket for `seq`, watching this object's durable progress.
    fn ticket(&self, seq: u64, batch: Option<Arc<Batch>>) -> CommitTicket {
        CommitTicket::new(seq, batch, self.inner.durable.subscribe())
    }

    /// Queues a non-empty batch at `applied_seq + 1` for the writer and applies it to the index (the caller
    /// holds the object's lock and checked it is writable). Links it into the chain: its `prev` becomes this
    /// copy's chain hash, and its own hash the new one.
    pub(super) fn append_locked(
        &self,
        locked: &mut Locked,
        mut batch: Batch,
        permit: WritePermit,
    ) -> Result<CommitTicket, Error> {
        let inner = &self.inner;
        debug_assert_eq!(batch.seq, locked.index.applied_seq + 1);
        debug_assert!(!batch.records.is_empty());
        batch.prev = locked.index.head.clone();
        let head = batch.chain_hash();
        let bytes = encode_batch(&batch, &head);
        // Assign the seq and enqueue under the object's lock: the writer sees this object's batches in seq
        // order.
        inner.shared.send(Msg::Job(Job {
            obj: Arc::clone(inner),
            seq: batch.seq,
            bytes,
            records: batch.records.len() as u64,
            permit,
        }))?;
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

    /// Moves the station's clock past `hlc` (quietly: a clock too far ahead is only logged at debug level
    /// here, [`crate::store::Store::observe_hlc`] warns).
    pub(super) fn observe(&self, hlc: u64) {
        if let Err(e) = observe_hlc(&self.inner.shared.hlc, hlc) {
            tracing::debug!(object_id = %self.inner.id, error = %e, "not moving the clock to a remote timestamp");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::hlc::hlc_ms;
    use super::super::tests::*;
    use super::*;
    use crate::store::Store;
    use std::fs;

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
}
