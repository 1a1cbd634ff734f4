//! The state writer: one background thread per store that makes committed batches durable.
//!
//! [`super::ObjectState::commit`] encodes a batch and sends it here as a [`Job`]. The thread takes everything
//! queued (a *round*) and makes it durable in one of three ways:
//!
//! - `--durability fsync` (the default): the round's batches go into the write-ahead log (`wal.rs`) with
//!   one write and one fdatasync, and are acknowledged; only then are they appended to their objects'
//!   `state.tsv` (handles kept open, in `O_APPEND` mode, at most [`FILE_CACHE`] of them), without a sync.
//!   So every byte of an object file past its last sync is covered by a durable log record that says where
//!   it goes. At a checkpoint — the log past `checkpoint_bytes`, a snapshot install, a purge, shutdown — one
//!   `syncfs` makes the object files durable and the log is emptied.
//! - `--durability none`: appended and acknowledged, never synced.
//!
//! Commits arriving while a round syncs form the next round, so concurrent commits — on one object or many —
//! share syncs (group commit).
//!
//! After a round, an object whose file holds more than `max(compaction_min_records, 4 × kept versions)`
//! records is compacted: the kept versions are written to `state.tsv.tmp`, fsynced and renamed over
//! `state.tsv`, and the directory is fsynced. The snapshot covers every batch applied in memory, so queued
//! bytes of batches it includes are skipped afterwards.
//!
//! An installed snapshot ([`super::ObjectState::install_snapshot`]) comes as a [`Msg::Install`]: the round
//! queued before it is finished and the log checkpointed first, then the snapshot's file replaces `state.tsv`
//! the same way.
//!
//! # Failures: fail-stop
//!
//! An error the writer cannot prove harmless stops writes instead of being retried. After a failed sync the
//! kernel may already have dropped the dirty pages and report success to the next sync ("fsyncgate"), so a
//! retry proves nothing. A failed append or sync of the log, a failed checkpoint, a failed object-file write
//! after its batches were acknowledged, or a failed directory sync after a rename fails the whole store
//! ([`super::Shared::fail_store`]): every later commit is refused with a message naming the file, the log is
//! never emptied, and the next start recovers from it. With `--durability none`, a failed write fails only
//! the object it concerns. A compaction whose temp file cannot be written, synced or renamed changes nothing and
//! is retried once the file has doubled.

use std::collections::HashMap;
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::thread::{self, JoinHandle};

use super::error::Error;
use super::fsutil::{HandleCache, fsync_dir, replace_file, tmp_path};
use super::queue::WritePermit;
use super::state::{Install, ObjInner, Row, write_compacted};
use super::vfs::{Fs, OpenMode, VFile};
use super::wal::{LogEntry, Wal};
use super::{Durability, Shared};

/// Open `state.tsv` handles the writer keeps.
pub(crate) const FILE_CACHE: usize = 512;
/// Objects in one round at most (bounds the handles open at once).
const MAX_ROUND_OBJECTS: usize = 256;
/// Bytes buffered in one round at most before it is written.
const MAX_ROUND_BYTES: usize = 32 << 20;

/// One committed batch on its way to disk.
pub(crate) struct Job {
    /// The object it belongs to.
    pub(crate) obj: Arc<ObjInner>,
    /// Its seq.
    pub(crate) seq: u64,
    /// Its encoded records and commit line.
    pub(crate) bytes: Vec<u8>,
    /// Its `set`/`del` record count.
    pub(crate) records: u64,
    /// Its room in the queue, released once it is written.
    pub(crate) permit: WritePermit,
}

/// Counters of the writer's work, read by [`super::Store::stats`].
#[derive(Debug)]
pub(crate) struct WriterStats {
    pub(crate) batches: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) rounds: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) compactions: AtomicU64,
    pub(crate) failures: AtomicU64,
    /// Time of each write-ahead-log append with its fdatasync, in ns.
    pub(crate) log_sync_ns: super::histogram::Histogram,
    /// Batches per group-commit round.
    pub(crate) round_batches: super::histogram::Histogram,
    /// Bytes appended to the write-ahead log.
    pub(crate) log_bytes: AtomicU64,
}

impl Default for WriterStats {
    fn default() -> WriterStats {
        WriterStats {
            batches: AtomicU64::default(),
            bytes: AtomicU64::default(),
            rounds: AtomicU64::default(),
            fsyncs: AtomicU64::default(),
            compactions: AtomicU64::default(),
            failures: AtomicU64::default(),
            // From 16 µs.
            log_sync_ns: super::histogram::Histogram::new(16_000),
            round_batches: super::histogram::Histogram::new(1),
            log_bytes: AtomicU64::default(),
        }
    }
}

/// What the writer thread receives.
pub(crate) enum Msg {
    /// Append a batch.
    Job(Job),
    /// Finish what is queued and checkpoint, then close the object's handle and answer (the object is
    /// being purged: none of its logged batches may outlive its directory).
    Forget {
        id: String,
        done: Sender<Result<(), Error>>,
    },
    /// Finish what is queued, then replace the object's file with a snapshot and swap its index.
    Install {
        obj: Arc<ObjInner>,
        install: Box<Install>,
        done: Sender<Result<(), Error>>,
    },
    /// Finish what is queued and stop.
    Shutdown,
    /// Finish what is queued, then answer (tests wait for the writer to be idle).
    #[cfg(test)]
    Barrier(Sender<()>),
}

/// How a round is made durable (see the module doc).
enum Durably {
    /// Through the write-ahead log.
    Log(Wal),
    /// Not at all.
    None,
}

/// Starts the writer thread.
///
/// With `--durability fsync`, rounds go to the write-ahead log at `wal_path` (created empty: the caller
/// replayed it); with `none`, a log left from an earlier run is removed (after the replay).
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    wal_path: &Path,
    rx: Receiver<Msg>,
    stats: Arc<WriterStats>,
) -> io::Result<JoinHandle<()>> {
    let fs = shared.fs().clone();
    let sync = match shared.config.durability {
        Durability::Fsync => Durably::Log(Wal::create(&fs, wal_path)?),
        Durability::None => {
            if fs.file_len(wal_path)?.is_some() {
                fs.remove_file(wal_path)?;
                fs.sync_dir(wal_path.parent().unwrap_or(Path::new(".")))?;
            }
            Durably::None
        }
    };
    let writer = Writer {
        shared: Arc::clone(shared),
        fs,
        stats,
        sync,
        files: HandleCache::new(FILE_CACHE),
        round: Vec::new(),
        slots: HashMap::new(),
        round_bytes: 0,
        in_flight: Vec::new(),
        retry_compaction_at: HashMap::new(),
    };
    thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || writer.run_guarded(rx))
}

/// One object's share of a round.
struct Entry {
    obj: Arc<ObjInner>,
    bytes: Vec<u8>,
    /// Each batch's seq and where its bytes end in `bytes` (for the write-ahead log).
    batches: Vec<(u64, usize)>,
    last_seq: u64,
    records: u64,
    /// Where `bytes` go in the object's file (its length before this round).
    offset: u64,
    /// Set once the bytes are written (or, with the log, logged): the entry is to be acknowledged.
    ok: bool,
    /// The queue room its batches hold, released when the round is done with them.
    permit: Option<WritePermit>,
}

struct Writer {
    shared: Arc<Shared>,
    fs: Fs,
    stats: Arc<WriterStats>,
    sync: Durably,
    files: HandleCache<String, Box<dyn VFile>>,
    round: Vec<Entry>,
    /// Object (by `Arc` address) → its entry in `round`.
    slots: HashMap<usize, usize>,
    round_bytes: usize,
    /// The objects of the round being written (failed if the thread panics meanwhile).
    in_flight: Vec<Arc<ObjInner>>,
    /// After a failed compaction, the file size (in records) at which to try again.
    retry_compaction_at: HashMap<String, u64>,
}

impl Writer {
    /// Runs the loop; should it panic, fails every object with a batch in flight or queued, so no ticket waits
    /// forever (later commits fail with `Closed` once the queue is gone).
    fn run_guarded(mut self, rx: Receiver<Msg>) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(&rx)));
        if result.is_err() {
            tracing::error!("the state writer thread panicked; failing the objects it was writing");
            let msg = || "the state writer thread panicked".to_string();
            self.shared.fail_store(msg());
            let in_flight = self
                .in_flight
                .drain(..)
                .chain(self.round.drain(..).map(|e| e.obj));
            for obj in in_flight.collect::<Vec<_>>() {
                obj.fail(msg());
            }
            for queued in rx.try_iter() {
                match queued {
                    Msg::Job(job) => job.obj.fail(msg()),
                    Msg::Forget { done, .. } | Msg::Install { done, .. } => {
                        drop(done.send(Err(Error::Failed(msg()))))
                    }
                    Msg::Shutdown => {}
                    #[cfg(test)]
                    Msg::Barrier(done) => drop(done.send(())),
                }
            }
        }
    }

    fn run(&mut self, rx: &Receiver<Msg>) {
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Job(job) => self.push(job),
                    Msg::Forget { id, done } => {
                        self.finish_round();
                        let result = self.checkpoint();
                        self.files.remove(&id);
                        self.retry_compaction_at.remove(&id);
                        let _ = done.send(result);
                    }
                    Msg::Install { obj, install, done } => {
                        self.finish_round();
                        // Logged batches of the history the snapshot replaces must not be replayed onto it.
                        let result = self.checkpoint().and_then(|()| {
                            self.in_flight.push(Arc::clone(&obj));
                            let result = self.install(&obj, *install);
                            self.in_flight.clear();
                            result
                        });
                        let _ = done.send(result);
                    }
                    Msg::Shutdown => {
                        self.finish_round();
                        // On failure the log stays and is replayed at the next start.
                        let _ = self.checkpoint();
                        return;
                    }
                    #[cfg(test)]
                    Msg::Barrier(done) => {
                        self.finish_round();
                        let _ = done.send(());
                    }
                }
                next = if self.round_bytes < MAX_ROUND_BYTES {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            self.finish_round();
        }
        self.finish_round();
    }

    /// Adds a job to the current round.
    fn push(&mut self, job: Job) {
        let obj = &job.obj;
        if let Some(why) = self.shared.store_failure() {
            obj.fail(why);
            return;
        }
        if obj.is_failed() || job.seq <= obj.compacted_through.load(Ordering::Acquire) {
            // Failed objects write nothing more; compacted batches are already in the file.
            return;
        }
        let key = Arc::as_ptr(obj) as usize;
        let i = match self.slots.get(&key) {
            Some(&i) => i,
            None => {
                if self.round.len() >= MAX_ROUND_OBJECTS {
                    self.finish_round();
                }
                self.round.push(Entry {
                    obj: Arc::clone(obj),
                    bytes: Vec::new(),
                    batches: Vec::new(),
                    last_seq: 0,
                    records: 0,
                    offset: 0,
                    ok: false,
                    permit: None,
                });
                self.slots.insert(key, self.round.len() - 1);
                self.round.len() - 1
            }
        };
        let entry = &mut self.round[i];
        self.round_bytes += job.bytes.len();
        if entry.bytes.is_empty() {
            entry.bytes = job.bytes;
        } else {
            entry.bytes.extend_from_slice(&job.bytes);
        }
        entry.batches.push((job.seq, entry.bytes.len()));
        entry.last_seq = job.seq;
        entry.records += job.records;
        match &mut entry.permit {
            Some(permit) => permit.merge(job.permit),
            None => entry.permit = Some(job.permit),
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// Makes the round durable (see the module doc), acknowledges it, then compacts what needs it and
    /// checkpoints when the log is full.
    fn finish_round(&mut self) {
        if self.round.is_empty() {
            return;
        }
        let mut round = std::mem::take(&mut self.round);
        self.in_flight
            .extend(round.iter().map(|e| Arc::clone(&e.obj)));
        self.slots.clear();
        self.stats.rounds.fetch_add(1, Ordering::Relaxed);
        let batches: usize = round.iter().map(|e| e.batches.len()).sum();
        self.stats.round_batches.observe(batches as u64);
        self.stats
            .bytes
            .fetch_add(self.round_bytes as u64, Ordering::Relaxed);
        self.round_bytes = 0;
        for entry in &mut round {
            entry.offset = entry.obj.file_len.load(Ordering::Acquire);
            entry.ok = !entry.obj.is_failed();
        }
        if let Some(why) = self.shared.store_failure() {
            for entry in &round {
                entry.obj.fail(why.clone());
            }
        } else if matches!(self.sync, Durably::Log(_)) {
            self.log_round(&mut round);
        } else {
            self.write_round(&mut round);
        }
        let mut written = Vec::with_capacity(round.len());
        for entry in round.into_iter().filter(|e| e.ok) {
            written.push(entry.obj);
        }
        for obj in written {
            let retry_at = self.retry_compaction_at.get(&obj.id).copied().unwrap_or(0);
            if obj.file_records.load(Ordering::Relaxed) >= retry_at && obj.needs_compaction() {
                self.compact(&obj);
            }
        }
        self.in_flight.clear();
        let full = match &self.sync {
            Durably::Log(log) => log.size() >= self.shared.config.checkpoint_bytes,
            _ => false,
        };
        if full {
            let _ = self.checkpoint();
        }
    }

    /// With the log: appends and syncs the round there, acknowledges it, then writes the object files.
    /// A failure of either step fails the store (see the module doc).
    fn log_round(&mut self, round: &mut [Entry]) {
        let Durably::Log(log) = &mut self.sync else {
            return;
        };
        let batches = round.iter().filter(|e| e.ok).flat_map(|e| {
            let mut start = 0;
            e.batches.iter().map(move |&(seq, end)| {
                let entry = LogEntry {
                    object_id: e.obj.id.as_str(),
                    seq,
                    offset: e.offset + start as u64,
                    bytes: &e.bytes[start..end],
                };
                start = end;
                entry
            })
        });
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        let log_bytes: usize = round.iter().filter(|e| e.ok).map(|e| e.bytes.len()).sum();
        let started = std::time::Instant::now();
        let appended = log.append(batches);
        self.stats
            .log_sync_ns
            .observe(started.elapsed().as_nanos() as u64);
        if appended.is_ok() {
            self.stats
                .log_bytes
                .fetch_add(log_bytes as u64, Ordering::Relaxed);
        }
        if let Err(e) = appended {
            let msg = format!(
                "appending to the write-ahead log {}: {e}",
                log.path().display()
            );
            self.fail_round(round, msg);
            return;
        }
        for entry in round.iter().filter(|e| e.ok) {
            entry.obj.mark_durable(entry.last_seq);
        }
        for i in 0..round.len() {
            if !round[i].ok {
                continue;
            }
            if let Err(e) = self.append_to_file(&round[i]) {
                // Acknowledged and safe in the log, but the file now lacks it: no checkpoint may empty
                // the log, so nothing more is written until a restart replays it.
                let msg = format!("writing {}: {e}", round[i].obj.path.display());
                self.fail_round(&mut round[i..], msg);
                return;
            }
        }
    }

    /// Without the log (`--durability none`): writes the object files and acknowledges. A failure fails the
    /// object it concerns.
    fn write_round(&mut self, round: &mut [Entry]) {
        for entry in round.iter_mut().filter(|e| e.ok) {
            if let Err(e) = self.append_to_file(entry) {
                fail(&self.stats, &entry.obj, "writing", &entry.obj.path, &e);
                entry.ok = false;
            }
        }
        for entry in round.iter().filter(|e| e.ok) {
            entry.obj.mark_durable(entry.last_seq);
        }
    }

    /// Appends an entry's bytes to its object's file (through the handle cache) and counts them.
    fn append_to_file(&mut self, entry: &Entry) -> io::Result<()> {
        let obj = &entry.obj;
        let mut file = match self.files.remove(&obj.id) {
            Some(f) => f,
            None => self.fs.open(&obj.path, OpenMode::Append)?,
        };
        file.write_all(&entry.bytes)?;
        obj.file_len
            .store(entry.offset + entry.bytes.len() as u64, Ordering::Release);
        obj.file_records.fetch_add(entry.records, Ordering::Relaxed);
        // Evicted handles need no sync (the log covers them, or their round synced them): dropping closes them.
        self.files.insert(obj.id.clone(), file);
        Ok(())
    }

    /// Fails the store and every object of `round` (their batches were not acknowledged, or the store can
    /// no longer prove what it writes).
    fn fail_round(&self, round: &mut [Entry], msg: String) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        self.shared.fail_store(msg.clone());
        for entry in round.iter_mut() {
            entry.obj.fail(msg.clone());
            entry.ok = false;
        }
    }

    /// Syncs the object files (one `syncfs` of their file system) and empties the write-ahead log. A
    /// failure fails the store: the log is kept, never emptied, and replayed at the next start.
    fn checkpoint(&mut self) -> Result<(), Error> {
        if let Some(why) = self.shared.store_failure() {
            return Err(Error::Failed(why));
        }
        let Durably::Log(log) = &mut self.sync else {
            return Ok(());
        };
        if log.is_empty() {
            return Ok(());
        }
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        let path = log.path().to_path_buf();
        let state_dir = path.parent().unwrap_or(Path::new("."));
        let result = self
            .fs
            .syncfs(state_dir)
            .map_err(|e| {
                format!(
                    "syncing the state files for a checkpoint (syncfs of {}): {e}",
                    state_dir.display()
                )
            })
            .and_then(|()| {
                log.reset()
                    .map_err(|e| format!("emptying the write-ahead log {}: {e}", path.display()))
            });
        result.map_err(|msg| {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            self.shared.fail_store(msg.clone());
            Error::Failed(msg)
        })
    }

    /// Replaces the object's file with an installed snapshot (temp file, fsync, rename, directory fsync) and
    /// swaps its index. A failed write leaves the old file and index; a failed directory fsync fails the
    /// store (the rename may or may not be durable).
    fn install(&mut self, obj: &Arc<ObjInner>, install: Install) -> Result<(), Error> {
        if let Some(msg) = obj.failure() {
            return Err(Error::Failed(msg));
        }
        let len = match replace_with_rows(
            &self.fs,
            &obj.path,
            &install.rows,
            install.head.as_deref(),
        ) {
            Ok(len) => len,
            Err((tmp, e)) => {
                tracing::warn!(object_id = %obj.id, path = %tmp.display(), error = %e, "writing an installed snapshot failed");
                return Err(Error::io(&tmp, e));
            }
        };
        // The old handle points at the replaced file; the next round opens the new one.
        self.files.remove(&obj.id);
        self.retry_compaction_at.remove(&obj.id);
        let dir = obj.path.parent().unwrap_or(Path::new("."));
        if let Err(e) = fsync_dir(&*self.fs, dir) {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            let msg = format!("installing a snapshot in {}: {e}", obj.path.display());
            self.shared.fail_store(msg.clone());
            obj.fail(msg.clone());
            return Err(Error::Failed(msg));
        }
        obj.file_len.store(len, Ordering::Release);
        obj.finish_install(install);
        Ok(())
    }

    /// Rewrites the object's file with only the versions its index keeps.
    fn compact(&mut self, obj: &Arc<ObjInner>) {
        let Some((seq, head, rows)) = obj.compaction_rows() else {
            return;
        };
        let before = obj.file_records.load(Ordering::Relaxed);
        let len = match replace_with_rows(&self.fs, &obj.path, &rows, head.as_deref()) {
            Ok(len) => len,
            Err((tmp, e)) => {
                // The original file is intact: keep appending to it and try again once it has doubled.
                tracing::warn!(object_id = %obj.id, path = %tmp.display(), error = %e, "state compaction failed");
                self.retry_compaction_at
                    .insert(obj.id.clone(), before.saturating_mul(2));
                return;
            }
        };
        // The old handle points at the replaced file; the next round opens the new one.
        self.files.remove(&obj.id);
        self.retry_compaction_at.remove(&obj.id);
        obj.compacted_through.store(seq, Ordering::Release);
        obj.file_records.store(rows.len() as u64, Ordering::Relaxed);
        obj.file_len.store(len, Ordering::Release);
        let dir = obj.path.parent().unwrap_or(Path::new("."));
        if let Err(e) = fsync_dir(&*self.fs, dir) {
            // Which file survives a crash is unknown now: later batches could be logged against the other.
            let msg = format!("compacting {}: {e}", obj.path.display());
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            self.shared.fail_store(msg.clone());
            obj.fail(msg);
            return;
        }
        obj.mark_durable(seq);
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(object_id = %obj.id, records_before = before, records_after = rows.len(), seq, "compacted state file");
    }
}

/// Replaces the state file at `path` with `rows`: written to `{path}.tmp`, fsynced, renamed over
/// `path` (the caller fsyncs the directory); returns the new file's length. On failure the temp file
/// is removed and `path` is untouched; the error comes with the temp file's path.
fn replace_with_rows(
    fs: &Fs,
    path: &Path,
    rows: &[Row],
    head: Option<&str>,
) -> Result<u64, (PathBuf, io::Error)> {
    let mut len = 0;
    replace_file(&**fs, path, |f| {
        let mut w = Counting {
            inner: BufWriter::with_capacity(256 * 1024, f),
            written: 0,
        };
        write_compacted(&mut w, rows, head)?;
        len = w.written;
        w.inner.into_inner().map_err(|e| e.into_error())?;
        Ok(())
    })
    .map_err(|(_, e)| (tmp_path(path), e))?;
    Ok(len)
}

/// A writer that counts the bytes written through it.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: io::Write> io::Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Marks the object failed after an I/O error and logs it.
fn fail(stats: &WriterStats, obj: &ObjInner, doing: &str, path: &Path, e: &io::Error) {
    stats.failures.fetch_add(1, Ordering::Relaxed);
    let msg = format!("{doing} {}: {e}", path.display());
    tracing::error!(object_id = %obj.id, error = %msg, "state write failed; the object refuses commits until restart");
    obj.fail(msg);
}

#[cfg(test)]
mod tests {
    use crate::store::{Durability, ObjectState, Store, StoreConfig, Write};
    use std::path::Path;

    fn open(dir: &Path, durability: Durability, history: usize) -> Store {
        Store::open(StoreConfig {
            durability,
            history_versions: history,
            ..StoreConfig::new(dir.join("data"))
        })
        .unwrap()
    }

    /// Everything a reader can observe of an object, as text.
    fn observe(st: &ObjectState, keys: &[String]) -> String {
        let mut out = format!(
            "seq={} snapshot={:?} keys={:?}\n",
            st.applied_seq(),
            st.snapshot(),
            st.keys("")
        );
        for k in keys {
            out += &format!("{k}: {:?} {:?}\n", st.get(k), st.history(k, 0));
        }
        out
    }

    fn records_in_file(dir: &Path, id: &str) -> usize {
        let text =
            std::fs::read_to_string(dir.join("data/state").join(id).join("state.tsv")).unwrap();
        text.lines()
            .skip(1)
            .filter(|l| !l.contains("\tcommit\t"))
            .count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn compaction_preserves_reads_and_history_across_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), Durability::Fsync, 4);
        let st = store.state("hot").unwrap();
        let keys: Vec<String> = (0..12)
            .map(|k| format!("k{k}"))
            .chain(["gone".into(), "tab\tkey\n".into()])
            .collect();
        // Four committers on one object, pipelining, with multi-key batches, deletes and hostile values.
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let st = st.clone();
                let keys = keys.clone();
                tokio::spawn(async move {
                    let mut last = None;
                    for i in 0..3000usize {
                        let k = &keys[(i * 7 + t) % 12];
                        let mut batch = vec![Write::Set {
                            key: k.clone(),
                            value: format!("{t}:{i}\t\"v\"\n"),
                        }];
                        if i % 5 == 0 {
                            batch.push(Write::Delete {
                                key: keys[(i + t) % 12].clone(),
                            });
                        }
                        if i % 97 == 0 {
                            batch.push(Write::Set {
                                key: "tab\tkey\n".into(),
                                value: String::new(),
                            });
                        }
                        last = Some(st.commit(batch).unwrap());
                        if i % 64 == 0 {
                            last.take().unwrap().durable().await.unwrap();
                        }
                    }
                    if let Some(t) = last {
                        t.durable().await.unwrap();
                    }
                })
            })
            .collect();
        st.commit(vec![Write::Set {
            key: "gone".into(),
            value: "x".into(),
        }])
        .unwrap();
        st.commit(vec![Write::Delete { key: "gone".into() }])
            .unwrap()
            .durable()
            .await
            .unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        let stats = store.stats();
        assert!(stats.compactions >= 2, "{stats:?}");
        assert_eq!(stats.failures, 0);
        let before = observe(&st, &keys);
        assert!(
            before.contains("gone: None [KeyVersion"),
            "tombstone kept:\n{before}"
        );
        let on_disk = records_in_file(dir.path(), "hot");
        assert!(on_disk <= 4096 + 4 * 3000, "{on_disk}");
        let s2 = store.clone();
        tokio::task::spawn_blocking(move || s2.shutdown())
            .await
            .unwrap();
        drop((st, store));

        let dir2 = dir.path().to_path_buf();
        let after = tokio::task::spawn_blocking(move || {
            let store = open(&dir2, Durability::Fsync, 4);
            observe(&store.state("hot").unwrap(), &keys)
        })
        .await
        .unwrap();
        assert_eq!(before, after);
        assert!(!dir.path().join("data/state/hot/state.tsv.tmp").exists());
    }

    #[test]
    fn compacted_file_keeps_only_kept_versions_in_seq_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), Durability::None, 2);
        let st = store.state("c").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut last = None;
        for i in 0..4200u32 {
            let key = if i % 2 == 0 { "even" } else { "odd" };
            last = Some(
                st.commit(vec![Write::Set {
                    key: key.into(),
                    value: i.to_string(),
                }])
                .unwrap(),
            );
        }
        rt.block_on(last.unwrap().durable()).unwrap();
        store.shutdown();
        assert_eq!(store.stats().compactions, 1);
        let text = std::fs::read_to_string(dir.path().join("data/state/c/state.tsv")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "seq\thlc\top\tkey\tvalue");
        // After compaction at seq S only the last 2 versions of each key were kept, then appends resumed.
        let first_seq: u64 = lines[1].split('\t').next().unwrap().parse().unwrap();
        assert!(first_seq > 4000, "{first_seq}");
        let seqs: Vec<u64> = lines[1..]
            .iter()
            .map(|l| l.split('\t').next().unwrap().parse().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*seqs.last().unwrap(), 4200);
        drop((st, store));
        let store = open(dir.path(), Durability::None, 2);
        let st = store.state("c").unwrap();
        assert_eq!(st.get("even").as_deref(), Some("4198"));
        assert_eq!(
            st.history("odd", 0)
                .iter()
                .map(|v| v.seq)
                .collect::<Vec<_>>(),
            vec![4200, 4198]
        );
    }

    #[test]
    fn compaction_keeps_each_records_own_hlc_from_replicated_and_merged_batches() {
        use crate::store::Record;
        let dir = tempfile::tempdir().unwrap();
        let home_store = open(&dir.path().join("home"), Durability::None, 2);
        let replica_store = open(&dir.path().join("replica"), Durability::None, 2);
        let home = home_store.state("r").unwrap();
        let replica = replica_store.state("r").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut last = None;
        for i in 0..4300u64 {
            let ticket = if i % 100 == 7 {
                // A merged batch: records with hlcs of their own, older and newer than the keys' latest.
                let base = home.history("k0", 1).first().map_or(1000, |v| v.hlc);
                home.merge_lww(&[
                    Record {
                        key: format!("k{}", i % 3),
                        value: Some(format!("merged {i}")),
                        hlc: base + 1 + i,
                    },
                    Record {
                        key: format!("old{i}"),
                        value: None,
                        hlc: i + 1,
                    },
                ])
                .unwrap()
                .unwrap()
            } else {
                home.commit(vec![Write::Set {
                    key: format!("k{}", i % 3),
                    value: i.to_string(),
                }])
                .unwrap()
            };
            last = replica.apply_replicated(&ticket.batch().unwrap()).unwrap();
        }
        rt.block_on(last.unwrap().durable()).unwrap();
        // Compaction runs after the round that made the last batch durable: shutdown waits for it.
        replica_store.shutdown();
        assert!(replica_store.stats().compactions >= 1);
        let expected = home.export_snapshot();
        assert_eq!(replica.export_snapshot(), expected);
        drop((replica, replica_store));
        let replica_store = open(&dir.path().join("replica"), Durability::None, 2);
        assert_eq!(
            replica_store.state("r").unwrap().export_snapshot(),
            expected
        );
    }
}
