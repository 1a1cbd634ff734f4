//! The state writer: one background thread per store that makes committed batches durable.
//!
//! [`super::ObjectState::commit`] encodes a batch and sends it here as a [`Job`]. The thread takes everything
//! queued (a *round*), appends each object's bytes with one write to its `state.tsv` (handles kept open, in
//! `O_APPEND` mode, at most [`FILE_CACHE`] of them), then fdatasyncs each touched file once and only then
//! marks the batches durable. Commits arriving while a round syncs form the next round, so concurrent commits
//! — on one object or many — share fsyncs (group commit).
//!
//! After a round, an object whose file holds more than `max(4096, 4 × kept versions)` records is compacted:
//! the kept versions are written to `state.tsv.tmp`, fsynced and renamed over `state.tsv`, and the directory
//! is fsynced. The snapshot covers every batch applied in memory, so queued bytes of batches it includes are
//! skipped afterwards.
//!
//! An installed snapshot ([`super::ObjectState::install_snapshot`]) comes as a [`Msg::Install`]: the round
//! queued before it is finished first, then the snapshot's file replaces `state.tsv` the same way.
//!
//! A failed write or fsync marks that object failed (see [`ObjInner::fail`]); other objects go on.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::thread::{self, JoinHandle};

use super::Durability;
use super::error::Error;
use super::fsutil::{
    HandleCache, fsync_dir, replace_file, same_file_system, same_file_system_all, tmp_path,
};
use super::state::{Install, ObjInner, Row, write_compacted};
use super::wal::{self, Wal};

/// Open `state.tsv` handles the writer keeps.
pub(crate) const FILE_CACHE: usize = 512;
/// Objects in one round at most (bounds the handles open at once).
const MAX_ROUND_OBJECTS: usize = 256;
/// A round touching at least this many files syncs them with one `syncfs` instead of one fdatasync each.
const SYNCFS_MIN_FILES: usize = 3;
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
}

/// Counters of the writer's work, read by [`super::Store::stats`].
#[derive(Debug, Default)]
pub(crate) struct WriterStats {
    pub(crate) batches: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) rounds: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) compactions: AtomicU64,
    pub(crate) failures: AtomicU64,
}

/// What the writer thread receives.
pub(crate) enum Msg {
    /// Append a batch.
    Job(Job),
    /// Finish what is queued, then close the object's handle and answer (the object is being purged).
    Forget { id: String, done: Sender<()> },
    /// Finish what is queued, then replace the object's file with a snapshot and swap its index.
    Install {
        obj: Arc<ObjInner>,
        install: Box<Install>,
        done: Sender<Result<(), Error>>,
    },
    /// Finish what is queued and stop.
    Shutdown,
}

/// Starts the writer thread.
///
/// With `--durability fsync`, rounds go to the write-ahead log at `wal_path` (see [`super::wal`]) when it is on
/// the file system of the object files; otherwise each round syncs the files it touched.
pub(crate) fn spawn(
    durability: Durability,
    wal_path: &Path,
    rx: Receiver<Msg>,
    stats: Arc<WriterStats>,
) -> io::Result<JoinHandle<()>> {
    let fsync = durability == Durability::Fsync;
    let wal = if fsync {
        let wal = Wal::open(wal_path)?;
        let state_dir = wal_path.parent().unwrap_or(Path::new("."));
        if same_file_system(wal_path, state_dir) {
            Some(wal)
        } else {
            drop(wal);
            let _ = fs::remove_file(wal_path);
            None
        }
    } else {
        None
    };
    let writer = Writer {
        stats,
        wal,
        fsync,
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
    file: Option<File>,
}

struct Writer {
    stats: Arc<WriterStats>,
    /// The write-ahead log, with `--durability fsync` (see [`super::wal`]).
    wal: Option<Wal>,
    fsync: bool,
    files: HandleCache<String, File>,
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
                    Msg::Forget { done, .. } => drop(done.send(())),
                    Msg::Install { done, .. } => drop(done.send(Err(Error::Failed(msg())))),
                    Msg::Shutdown => {}
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
                        // Best effort: should the checkpoint fail, replay skips objects whose directory
                        // is gone, so a purged object is not brought back either way.
                        let _ = self.checkpoint();
                        self.files.remove(&id);
                        self.retry_compaction_at.remove(&id);
                        let _ = done.send(());
                    }
                    Msg::Install { obj, install, done } => {
                        self.finish_round();
                        // Logged batches of the history the snapshot replaces must not be replayed onto it.
                        let result = match self.checkpoint() {
                            Err(e) => Err(Error::io(&obj.path, e)),
                            Ok(()) => {
                                self.in_flight.push(Arc::clone(&obj));
                                let result = self.install(&obj, *install);
                                self.in_flight.clear();
                                result
                            }
                        };
                        let _ = done.send(result);
                    }
                    Msg::Shutdown => {
                        self.finish_round();
                        // On failure the log stays and is replayed at the next start.
                        let _ = self.checkpoint();
                        return;
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
                    file: None,
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
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes the round, fsyncs each touched file once, marks the batches durable, then compacts what needs it.
    fn finish_round(&mut self) {
        if self.round.is_empty() {
            return;
        }
        let mut round = std::mem::take(&mut self.round);
        self.in_flight
            .extend(round.iter().map(|e| Arc::clone(&e.obj)));
        self.slots.clear();
        self.stats.rounds.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes
            .fetch_add(self.round_bytes as u64, Ordering::Relaxed);
        self.round_bytes = 0;

        for entry in &mut round {
            if entry.obj.is_failed() {
                continue;
            }
            let obj = &entry.obj;
            let file = match self.files.remove(&obj.id) {
                Some(f) => Ok(f),
                None => OpenOptions::new().append(true).open(&obj.path),
            };
            match file.and_then(|mut f| f.write_all(&entry.bytes).map(|()| f)) {
                Ok(f) => entry.file = Some(f),
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    fail(obj, "writing", &obj.path, &e);
                }
            }
        }
        if self.fsync {
            if self.wal.is_some() {
                self.log_round(&mut round);
            } else {
                self.sync(&mut round);
            }
        }
        let mut written = Vec::with_capacity(round.len());
        for entry in round {
            let Some(file) = entry.file else { continue };
            entry
                .obj
                .file_records
                .fetch_add(entry.records, Ordering::Relaxed);
            entry.obj.mark_durable(entry.last_seq);
            // Evicted handles were synced in an earlier round (or need no sync): dropping closes them.
            self.files.insert(entry.obj.id.clone(), file);
            written.push(entry.obj);
        }
        for obj in written {
            let retry_at = self.retry_compaction_at.get(&obj.id).copied().unwrap_or(0);
            if obj.file_records.load(Ordering::Relaxed) >= retry_at && obj.needs_compaction() {
                self.compact(&obj);
            }
        }
        self.in_flight.clear();
        if self
            .wal
            .as_ref()
            .is_some_and(|w| w.size() >= wal::CHECKPOINT_BYTES)
        {
            // On failure the log keeps growing and the next round tries again.
            let _ = self.checkpoint();
        }
    }

    /// Makes the round durable through the write-ahead log: every batch written to an object file is appended
    /// to the log, which is fdatasynced once. If that fails, every object of the round fails.
    fn log_round(&mut self, round: &mut [Entry]) {
        let Some(log) = self.wal.as_mut() else {
            return;
        };
        let batches = round.iter().filter(|e| e.file.is_some()).flat_map(|e| {
            let mut start = 0;
            e.batches.iter().map(move |&(seq, end)| {
                let bytes = &e.bytes[start..end];
                start = end;
                (e.obj.id.as_str(), seq, bytes)
            })
        });
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = log.append(batches) {
            let path = log.path().to_path_buf();
            for entry in round.iter_mut().filter(|e| e.file.is_some()) {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                fail(&entry.obj, "appending to the write-ahead log", &path, &e);
                entry.file = None;
            }
        }
    }

    /// Syncs the object files (one `syncfs` of their file system) and empties the write-ahead log. If the sync
    /// fails, the log is kept: it still holds every batch since the last checkpoint.
    fn checkpoint(&mut self) -> io::Result<()> {
        let Some(log) = self.wal.as_mut() else {
            return Ok(());
        };
        if log.size() == 0 {
            return Ok(());
        }
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        let result = syncfs(log.file()).and_then(|()| log.reset());
        if let Err(e) = &result {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "checkpoint failed; keeping the write-ahead log");
        }
        result
    }

    /// Makes the round's appends durable: one fdatasync per file, or, when the round touched several files of
    /// one file system, a single `syncfs` (each fdatasync costs a device cache flush of its own, so many
    /// objects committing at once would otherwise pay one flush each, one after the other).
    fn sync(&mut self, round: &mut [Entry]) {
        let files: Vec<&File> = round.iter().filter_map(|e| e.file.as_ref()).collect();
        if files.len() >= SYNCFS_MIN_FILES && same_file_system_all(&files) {
            self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = syncfs(files[0]) {
                for entry in round.iter_mut().filter(|e| e.file.is_some()) {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    fail(
                        &entry.obj,
                        "syncing the file system of",
                        &entry.obj.path,
                        &e,
                    );
                    entry.file = None;
                }
            }
            return;
        }
        for entry in round.iter_mut() {
            let Some(f) = &entry.file else { continue };
            self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = f.sync_data() {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                fail(&entry.obj, "fsyncing", &entry.obj.path, &e);
                entry.file = None;
            }
        }
    }

    /// Replaces the object's file with an installed snapshot (temp file, fsync, rename, directory fsync) and
    /// swaps its index. A failed write leaves the old file and index; a failed directory fsync fails the object.
    fn install(&mut self, obj: &Arc<ObjInner>, install: Install) -> Result<(), Error> {
        if let Some(msg) = obj.failure() {
            return Err(Error::Failed(msg));
        }
        if let Err((tmp, e)) = replace_with_rows(&obj.path, &install.rows, install.head.as_deref())
        {
            tracing::warn!(object_id = %obj.id, path = %tmp.display(), error = %e, "writing an installed snapshot failed");
            return Err(Error::io(&tmp, e));
        }
        // The old handle points at the replaced file; the next round opens the new one.
        self.files.remove(&obj.id);
        self.retry_compaction_at.remove(&obj.id);
        let dir = obj.path.parent().unwrap_or(Path::new("."));
        if let Err(e) = fsync_dir(dir) {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            let msg = format!("installing a snapshot in {}: {e}", obj.path.display());
            tracing::error!(object_id = %obj.id, error = %msg, "an installed snapshot could not be made durable");
            obj.fail(msg.clone());
            return Err(Error::Failed(msg));
        }
        obj.finish_install(install);
        Ok(())
    }

    /// Rewrites the object's file with only the versions its index keeps.
    fn compact(&mut self, obj: &Arc<ObjInner>) {
        let Some((seq, head, rows)) = obj.compaction_rows() else {
            return;
        };
        let before = obj.file_records.load(Ordering::Relaxed);
        if let Err((tmp, e)) = replace_with_rows(&obj.path, &rows, head.as_deref()) {
            // The original file is intact: keep appending to it and try again once it has doubled.
            tracing::warn!(object_id = %obj.id, path = %tmp.display(), error = %e, "state compaction failed");
            self.retry_compaction_at
                .insert(obj.id.clone(), before.saturating_mul(2));
            return;
        }
        // The old handle points at the replaced file; the next round opens the new one.
        self.files.remove(&obj.id);
        self.retry_compaction_at.remove(&obj.id);
        obj.compacted_through.store(seq, Ordering::Release);
        obj.file_records.store(rows.len() as u64, Ordering::Relaxed);
        let dir = obj.path.parent().unwrap_or(Path::new("."));
        if let Err(e) = fsync_dir(dir) {
            obj.fail(format!("compacting {}: {e}", obj.path.display()));
            tracing::error!(object_id = %obj.id, error = %e, "state compaction could not be made durable");
            return;
        }
        obj.mark_durable(seq);
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(object_id = %obj.id, records_before = before, records_after = rows.len(), seq, "compacted state file");
    }
}

/// Replaces the state file at `path` with `rows`: written to `{path}.tmp`, fsynced, renamed over
/// `path` (the caller fsyncs the directory). On failure the temp file is removed and `path` is
/// untouched; the error comes with the temp file's path.
fn replace_with_rows(
    path: &Path,
    rows: &[Row],
    head: Option<&str>,
) -> Result<(), (PathBuf, io::Error)> {
    replace_file(path, |f| {
        let mut w = BufWriter::with_capacity(256 * 1024, f);
        write_compacted(&mut w, rows, head)?;
        w.into_inner().map_err(|e| e.into_error())?;
        Ok(())
    })
    .map_err(|(_, e)| (tmp_path(path), e))
}

/// Writes back and flushes the whole file system holding `file` (Linux `syncfs(2)`; since Linux 5.8 it
/// reports write-back errors of that file system).
#[cfg(target_os = "linux")]
fn syncfs(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `file` keeps the descriptor open for the duration of the call, and syncfs only uses it to find
    // the file system.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn syncfs(_file: &File) -> io::Result<()> {
    unreachable!("same_file_system_all is false off Linux")
}

/// Marks the object failed after an I/O error and logs it.
fn fail(obj: &ObjInner, doing: &str, path: &Path, e: &io::Error) {
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
