//! One object's key/value state: the in-memory index, the commit path, and crash recovery of `state.tsv`.
//!
//! `data/state/{id}/state.tsv` is append-only TSV with the header `seq hlc op key value`. A batch is its
//! `set`/`del` records, all carrying the batch's `seq` (a per-object counter from 1) and `hlc` (the NTP64 time of
//! one hybrid-logical-clock timestamp, as a decimal u64), followed by one `commit` record with the same seq and
//! hlc, an empty key and the record count as value. A batch exists only once its commit line is complete, so a
//! batch is all-or-nothing on disk; it is applied to the index as a whole under the object's lock, so it is
//! all-or-nothing in memory too.
//!
//! [`ObjectState::commit`] applies the batch in memory at once and queues its encoded bytes for the writer thread
//! (`writer.rs`), which appends, fsyncs and then resolves the [`CommitTicket`]s. It never does I/O itself.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use uhlc::{NTP64, Timestamp};

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

/// One version of a key, as returned by [`ObjectState::history`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyVersion {
    /// The seq of the batch that wrote it.
    pub seq: u64,
    /// Wall-clock milliseconds since the Unix epoch, from the batch's hybrid logical clock timestamp.
    pub at_ms: u64,
    /// The value, or `None` if this version deleted the key.
    pub value: Option<String>,
}

/// A handle on one object's state. Cheap to clone; all clones share the same index.
#[derive(Clone)]
pub struct ObjectState {
    inner: Arc<ObjInner>,
}

/// Resolves once a committed batch is durable. Returned by [`ObjectState::commit`].
#[derive(Debug)]
pub struct CommitTicket {
    /// The seq of the committed batch (for an empty batch, the applied seq it waits for).
    pub seq: u64,
    rx: watch::Receiver<Durable>,
}

impl CommitTicket {
    /// Waits until every batch of this object up to `seq` is on disk as the store's durability asks
    /// (written and fdatasynced for [`super::Durability::Fsync`], written for [`super::Durability::None`]).
    ///
    /// Returns [`Error::Failed`] if the object's writer failed before that, and [`Error::Closed`] if the store
    /// went away first.
    pub async fn durable(mut self) -> Result<(), Error> {
        let seq = self.seq;
        match self
            .rx
            .wait_for(|d| d.seq >= seq || d.failed.is_some())
            .await
        {
            Ok(d) if d.seq >= seq => Ok(()),
            Ok(d) => Err(Error::Failed(d.failed.clone().unwrap_or_default())),
            Err(_) => Err(Error::Closed),
        }
    }

    /// True if the batch is already durable (never blocks).
    pub fn is_durable(&self) -> bool {
        self.rx.borrow().seq >= self.seq
    }
}

/// What the writer has made durable for one object.
#[derive(Debug, Clone, Default)]
pub(crate) struct Durable {
    seq: u64,
    failed: Option<String>,
}

/// One version of a key in the index.
#[derive(Debug, Clone)]
struct Version {
    seq: u64,
    hlc: u64,
    value: Option<String>,
}

/// The in-memory index: every key with its last `history` versions, oldest first.
#[derive(Debug)]
struct Index {
    keys: BTreeMap<String, VecDeque<Version>>,
    applied_seq: u64,
    last_hlc: u64,
    /// Versions kept, over all keys.
    kept: usize,
    /// Versions kept per key (at least 1).
    history: usize,
}

impl Index {
    fn new(history: usize) -> Index {
        Index {
            keys: BTreeMap::new(),
            applied_seq: 0,
            last_hlc: 0,
            kept: 0,
            history: history.max(1),
        }
    }

    fn apply(
        &mut self,
        seq: u64,
        hlc: u64,
        writes: impl IntoIterator<Item = (String, Option<String>)>,
    ) {
        for (key, value) in writes {
            let versions = self.keys.entry(key).or_default();
            versions.push_back(Version { seq, hlc, value });
            self.kept += 1;
            while versions.len() > self.history {
                versions.pop_front();
                self.kept -= 1;
            }
        }
        self.applied_seq = seq;
        self.last_hlc = hlc;
    }

    fn current(&self, key: &str) -> Option<&String> {
        self.keys.get(key)?.back()?.value.as_ref()
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

struct Locked {
    index: Index,
    failed: Option<String>,
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
    /// Batches up to this seq are already in a compacted file: the writer skips their queued bytes.
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

    /// The versions compaction keeps and the applied seq they cover (None if the object failed). Rows are in
    /// seq order; rows of one key keep their order within a seq.
    pub(crate) fn compaction_rows(&self) -> Option<(u64, Vec<Row>)> {
        let (seq, mut rows) = {
            let locked = self.lock();
            if locked.failed.is_some() {
                return None;
            }
            let index = &locked.index;
            let mut rows = Vec::with_capacity(index.kept);
            for (key, versions) in &index.keys {
                for v in versions {
                    rows.push(Row {
                        seq: v.seq,
                        hlc: v.hlc,
                        key: key.clone(),
                        value: v.value.clone(),
                    });
                }
            }
            (index.applied_seq, rows)
        };
        rows.sort_by_key(|r| r.seq);
        Some((seq, rows))
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
            .map(|v| KeyVersion {
                seq: v.seq,
                at_ms: hlc_ms(v.hlc),
                value: v.value.clone(),
            })
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

    /// The seq up to which batches are durable.
    pub fn durable_seq(&self) -> u64 {
        self.inner.durable.borrow().seq
    }

    /// Applies the batch to the in-memory index at once (so the object's next call sees it) and queues
    /// it for the durable append. Empty batch = a read barrier at the current applied seq (no disk write).
    ///
    /// Fails with [`Error::Failed`] once the object's writer failed, and [`Error::Closed`] after shutdown; in
    /// both cases nothing is applied. Does no I/O and holds the object's lock only for in-memory work.
    pub fn commit(&self, writes: Vec<Write>) -> Result<CommitTicket, Error> {
        let inner = &self.inner;
        let mut locked = inner.lock();
        if let Some(msg) = &locked.failed {
            return Err(Error::Failed(msg.clone()));
        }
        if writes.is_empty() {
            return Ok(CommitTicket {
                seq: locked.index.applied_seq,
                rx: inner.durable.subscribe(),
            });
        }
        let seq = locked.index.applied_seq + 1;
        let hlc = inner.shared.hlc.new_timestamp().get_time().as_u64();
        let bytes = encode_batch(seq, hlc, &writes);
        let records = writes.len() as u64;
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
                seq,
                bytes,
                records,
            }))
            .map_err(|_| Error::Closed)?;
        }
        locked
            .index
            .apply(seq, hlc, writes.into_iter().map(Write::into_parts));
        Ok(CommitTicket {
            seq,
            rx: inner.durable.subscribe(),
        })
    }

    /// The shared part, for the store's cache and the writer.
    pub(crate) fn inner(&self) -> &Arc<ObjInner> {
        &self.inner
    }
}

/// Milliseconds since the Unix epoch of an NTP64 hybrid-logical-clock time.
fn hlc_ms(hlc: u64) -> u64 {
    NTP64(hlc).to_duration().as_millis() as u64
}

/// Encodes a batch: its records, then its commit line.
fn encode_batch(seq: u64, hlc: u64, writes: &[Write]) -> Vec<u8> {
    let seq = seq.to_string();
    let hlc = hlc.to_string();
    let mut out = Vec::with_capacity(64 * (writes.len() + 1));
    let mut w = tsv::writer(&mut out);
    let mut put = |fields: [&str; 5]| w.write_record(fields).map_err(tsv::to_io);
    let result = writes
        .iter()
        .try_for_each(|write| match write {
            Write::Set { key, value } => put([&seq, &hlc, "set", key, value]),
            Write::Delete { key } => put([&seq, &hlc, "del", key, ""]),
        })
        .and_then(|()| put([&seq, &hlc, "commit", "", &writes.len().to_string()]))
        .and_then(|()| w.flush());
    // Writing into a Vec cannot fail.
    result.expect("encoding a batch into memory");
    drop(w);
    out
}

/// Writes a compacted state file: the header, then each seq's kept rows followed by its commit line.
pub(crate) fn write_compacted(out: impl io::Write, rows: &[Row]) -> io::Result<()> {
    let mut w = tsv::writer(out);
    w.write_record(STATE_HEADER).map_err(tsv::to_io)?;
    let mut i = 0;
    while i < rows.len() {
        let (seq, hlc) = (rows[i].seq, rows[i].hlc);
        let (seq_s, hlc_s) = (seq.to_string(), hlc.to_string());
        let start = i;
        while i < rows.len() && rows[i].seq == seq {
            let r = &rows[i];
            match &r.value {
                Some(v) => w.write_record([&seq_s, &hlc_s, "set", &r.key, v]),
                None => w.write_record([&seq_s, &hlc_s, "del", &r.key, ""]),
            }
            .map_err(tsv::to_io)?;
            i += 1;
        }
        w.write_record([&seq_s, &hlc_s, "commit", "", &(i - start).to_string()])
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
    if index.last_hlc > 0 {
        let hlc = &shared.hlc;
        if let Err(e) =
            hlc.update_with_timestamp(&Timestamp::new(NTP64(index.last_hlc), *hlc.get_id()))
        {
            tracing::warn!(object_id = id, error = %e, "state file's clock is ahead of this station's clock");
        }
    }
    let applied = index.applied_seq;
    let inner = ObjInner {
        id: id.to_string(),
        path,
        shared: Arc::clone(shared),
        locked: Mutex::new(Locked {
            index,
            failed: None,
        }),
        durable: watch::Sender::new(Durable {
            seq: applied,
            failed: None,
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

/// One parsed record of `state.tsv`.
enum Record {
    Write {
        seq: u64,
        hlc: u64,
        key: String,
        value: Option<String>,
    },
    Commit {
        seq: u64,
        hlc: u64,
        count: u64,
    },
}

fn parse_record(rec: &csv::ByteRecord) -> Result<Record, String> {
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
        b"set" => Ok(Record::Write {
            seq,
            hlc,
            key,
            value: Some(tsv::field_str(rec, 4, "value")?),
        }),
        b"del" if rec[4].is_empty() => Ok(Record::Write {
            seq,
            hlc,
            key,
            value: None,
        }),
        b"del" => Err("del record with a value".into()),
        b"commit" if key.is_empty() => Ok(Record::Commit {
            seq,
            hlc,
            count: tsv::field_u64(rec, 4, "value")?,
        }),
        b"commit" => Err("commit record with a key".into()),
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
        && fields[3].is_empty()
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
    let mut pending: Vec<(String, Option<String>)> = Vec::new();
    let (mut pending_seq, mut pending_hlc, mut pending_line) = (0u64, 0u64, 0u64);
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
            Ok(Record::Write {
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
                        (pending_seq, pending_hlc, pending_line) = (seq, hlc, line);
                        pending.push((key, value));
                        None
                    }
                } else if (seq, hlc) != (pending_seq, pending_hlc) {
                    Some(format!(
                        "record of seq {seq} inside batch {pending_seq}, which has no commit line"
                    ))
                } else {
                    pending.push((key, value));
                    None
                }
            }
            Ok(Record::Commit { seq, hlc, count }) => {
                if pending.is_empty() {
                    Some(format!("commit line of seq {seq} without records"))
                } else if (seq, hlc) != (pending_seq, pending_hlc) {
                    Some(format!("commit line of seq {seq} ends batch {pending_seq}"))
                } else if count != pending.len() as u64 {
                    Some(format!(
                        "commit line of seq {seq} counts {count} records, the batch has {}",
                        pending.len()
                    ))
                } else {
                    // The count matches, so the line is whole; at most its `\n` is missing (added below).
                    missing_newline = end == len && !ends_with_newline;
                    index.apply(seq, hlc, pending.drain(..));
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
                value: None
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
                if *b == b'\n' && whole[..i].ends_with(b"commit\t\t2") {
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
        let wrong = text.replacen("commit\t\t1", "commit\t\t2", 1);
        fs::write(&path, wrong).unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        assert!(matches!(
            store.state("bad"),
            Err(Error::Corrupt { line: 3, .. })
        ));
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
        let bytes = encode_batch(7, 42, &[set("k", "v"), del("d")]);
        assert_eq!(
            bytes,
            b"7\t42\tset\tk\tv\n7\t42\tdel\td\t\n7\t42\tcommit\t\t2\n"
        );
        assert!(looks_like_commit_line(b"7\t42\tcommit\t\t2"));
        assert!(!looks_like_commit_line(b"7\t42\tcommit\tk\t2"));
        assert!(!looks_like_commit_line(b"7\t42\tset\t\t2"));
    }
}
