//! Object logs: `data/logs/{id}/log.tsv`, header `ts level request_id event message trace_id` (`ts` in
//! Unix ms; `trace_id` the W3C trace of the call, empty for none). Files written before `trace_id`
//! existed (five fields) are read as lines without a trace.
//!
//! [`LogStore::append`] only adds the record to a shared batch (a push under a mutex: no channel message,
//! no thread wake-up per line, which cost a quarter of a hello call's CPU). The log thread takes the batch
//! every [`LOG_BATCH_INTERVAL`] (sooner once [`LOG_BATCH_WAKE`] lines wait), encodes it, writes it through a
//! `BufWriter` (at most [`LOG_HANDLES`] files open, least recently used closed first) and flushes.
//! Logs are best effort: they are not fsynced. When `log.tsv` grows past `log_max_bytes` it is rotated
//! (`log.tsv` → `log.1.tsv` → … → `log.N.tsv`, older dropped) and a fresh `log.tsv` is started.
//!
//! [`LogStore::query`] first has the log thread flush that object, then reads newest first, going on to the
//! rotated files while it needs more lines. A torn final line (a crash mid-write) is skipped on read and cut
//! off the first time this process appends to the file.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{self, JoinHandle};

use super::error::{Error, IoContext};
use super::fsutil::{HandleCache, check_id};
use super::tsv;

/// The header row of `log.tsv`.
const LOG_HEADER: [&str; 6] = ["ts", "level", "request_id", "event", "message", "trace_id"];
/// The fields of a line written before lines carried a trace id.
const OLD_FIELDS: usize = 5;
/// Open log files the log thread keeps.
pub(crate) const LOG_HANDLES: usize = 256;
/// How long appended lines may wait before the log thread writes them.
pub(crate) const LOG_BATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);
/// Lines waiting at which an append wakes the log thread at once.
pub(crate) const LOG_BATCH_WAKE: usize = 8192;
/// Bytes waiting at which an append wakes the log thread at once.
const LOG_BATCH_WAKE_BYTES: usize = 1 << 20;
/// Most bytes of lines waiting for the log thread; past it lines are dropped (and counted in a
/// warning) rather than held, so a flood faster than the disk cannot grow the station's memory.
pub(crate) const MAX_QUEUED_LOG_BYTES: usize = 16 << 20;

/// The bytes waiting in the batch, and the lines dropped because it was full.
#[derive(Default)]
struct QueueMeter {
    bytes: std::sync::atomic::AtomicUsize,
    dropped: std::sync::atomic::AtomicU64,
}

/// Roughly what a record holds in memory.
fn record_bytes(object_id: &str, record: &LogRecord) -> usize {
    64 + object_id.len()
        + record.request_id.len()
        + record.event.len()
        + record.message.len()
        + record.trace_id.len()
}

/// A log level, ordered from least to most severe.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that was handled.
    Warn,
    /// A failure.
    Error,
}

impl Level {
    /// The lower-case name: `trace`, `debug`, `info`, `warn`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Level`] from a string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log level {0:?} (expected trace, debug, info, warn or error)")]
pub struct ParseLevelError(pub String);

impl FromStr for Level {
    type Err = ParseLevelError;

    /// Parses a level name, case-insensitively; `warning` is accepted for `warn`.
    fn from_str(s: &str) -> Result<Level, ParseLevelError> {
        match s.to_ascii_lowercase().as_str() {
            "trace" => Ok(Level::Trace),
            "debug" => Ok(Level::Debug),
            "info" => Ok(Level::Info),
            "warn" | "warning" => Ok(Level::Warn),
            "error" => Ok(Level::Error),
            _ => Err(ParseLevelError(s.to_string())),
        }
    }
}

impl serde::Serialize for Level {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Level {
    /// A level name, as [`Level::from_str`] parses it.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Level, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One log line.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogRecord {
    /// When (Unix ms).
    #[serde(rename = "ts")]
    pub ts_ms: u64,
    /// How severe.
    pub level: Level,
    /// The request it belongs to (empty if none).
    pub request_id: String,
    /// What kind of line: `call.start`, `call.end`, `call.trap`, `object`, `deploy`, …
    pub event: String,
    /// The text; any string (tabs and newlines are quoted in the file).
    pub message: String,
    /// The W3C trace id (32 hex digits) of the call it belongs to (empty if none).
    #[serde(default)]
    pub trace_id: String,
}

/// Which lines [`LogStore::query`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only lines at this level or above.
    pub min_level: Option<Level>,
    /// Only lines with `ts >= since_ms`.
    pub since_ms: Option<u64>,
    /// Only lines of this request.
    pub request_id: Option<String>,
    /// At most this many lines, the newest (0 = no limit).
    pub limit: usize,
}

impl LogQuery {
    /// Whether `r` passes the filters (level, since, request id; not the limit).
    pub fn matches(&self, r: &LogRecord) -> bool {
        self.min_level.is_none_or(|l| r.level >= l)
            && self.since_ms.is_none_or(|s| r.ts_ms >= s)
            && self
                .request_id
                .as_ref()
                .is_none_or(|id| *id == r.request_id)
    }
}

/// The object logs. Cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<LogShared>,
}

struct LogShared {
    /// `data/logs`.
    dir: PathBuf,
    keep_files: usize,
    tx: RwLock<Option<Sender<LogMsg>>>,
    /// Lines appended and not yet taken by the log thread, in order.
    batch: Arc<Mutex<Vec<(String, LogRecord)>>>,
    /// The batch's bytes (changed under the batch's lock).
    queued: Arc<QueueMeter>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Held for writing while files are renamed or removed, for reading while a query reads them.
    files: Arc<RwLock<()>>,
    /// Followers of objects' logs (`?follow=true`).
    taps: super::log_tap::Taps,
}

enum LogMsg {
    /// Lines are waiting in the batch: write them now.
    Wake,
    Flush {
        id: String,
        done: Sender<()>,
    },
    Purge {
        id: String,
        done: Sender<Result<(), Error>>,
    },
    Shutdown,
}

impl LogStore {
    /// Starts the log thread for the logs under `dir` (`data/logs`).
    pub(crate) fn open(dir: PathBuf, max_bytes: u64, keep_files: usize) -> Result<LogStore, Error> {
        let (tx, rx) = mpsc::channel();
        let files = Arc::new(RwLock::new(()));
        let batch = Arc::new(Mutex::new(Vec::new()));
        let queued = Arc::new(QueueMeter::default());
        let writer = LogWriter {
            batch: Arc::clone(&batch),
            queued: Arc::clone(&queued),
            taken: Vec::new(),
            dir: dir.clone(),
            max_bytes,
            keep_files,
            handles: HandleCache::new(LOG_HANDLES),
            checked: HashSet::new(),
            files: Arc::clone(&files),
            line: Vec::with_capacity(256),
        };
        let thread = thread::Builder::new()
            .name("store-logs".into())
            .spawn(move || writer.run(rx))
            .at(&dir)?;
        Ok(LogStore {
            inner: Arc::new(LogShared {
                dir,
                keep_files,
                tx: RwLock::new(Some(tx)),
                batch,
                queued,
                thread: Mutex::new(Some(thread)),
                files,
                taps: Default::default(),
            }),
        })
    }

    /// Queues a line for the object's log. Never blocks on I/O; dropped (with a warning) after shutdown.
    pub fn append(&self, object_id: &str, record: LogRecord) {
        if check_id(object_id).is_err() {
            tracing::warn!(object_id, "log line for an invalid object id dropped");
            return;
        }
        if self.is_closed() {
            tracing::debug!(object_id, "log line after shutdown dropped");
            return;
        }
        use std::sync::atomic::Ordering::Relaxed;
        let size = record_bytes(object_id, &record);
        let meter = &self.inner.queued;
        let (waiting, before) = {
            let mut batch = self.inner.batch.lock().unwrap_or_else(|e| e.into_inner());
            let before = meter.bytes.load(Relaxed);
            if before + size > MAX_QUEUED_LOG_BYTES {
                meter.dropped.fetch_add(1, Relaxed);
                return;
            }
            meter.bytes.store(before + size, Relaxed);
            self.inner.taps.offer(object_id, &record);
            batch.push((object_id.to_string(), record));
            (batch.len(), before)
        };
        if waiting == LOG_BATCH_WAKE
            || (before < LOG_BATCH_WAKE_BYTES && before + size >= LOG_BATCH_WAKE_BYTES)
        {
            self.send(LogMsg::Wake);
        }
    }

    /// The object's lines matching `q`, newest first, reading rotated files while more are needed. Lines still
    /// queued for this object are written first. An object without logs has none (not an error).
    pub fn query(&self, object_id: &str, q: &LogQuery) -> Result<Vec<LogRecord>, Error> {
        check_id(object_id)?;
        self.flush(object_id);
        let _files = self.inner.files.read().unwrap_or_else(|e| e.into_inner());
        let limit = if q.limit == 0 { usize::MAX } else { q.limit };
        let dir = self.inner.dir.join(object_id);
        let mut out = Vec::new();
        for k in 0..=self.inner.keep_files {
            let path = log_path(&dir, k);
            let records = match read_log(&path) {
                Ok(records) => records,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            let oldest = records.first().map(|r| r.ts_ms);
            out.extend(
                records
                    .into_iter()
                    .rev()
                    .filter(|r| q.matches(r))
                    .take(limit - out.len()),
            );
            let older_too_old = matches!((oldest, q.since_ms), (Some(o), Some(s)) if o < s);
            if out.len() >= limit || older_too_old {
                break;
            }
        }
        Ok(out)
    }

    /// Every line of the object's log, oldest first, across the rotated files (for a migration). Lines still
    /// queued for this object are written first. An object without logs has none.
    pub fn export(&self, object_id: &str) -> Result<Vec<LogRecord>, Error> {
        check_id(object_id)?;
        self.flush(object_id);
        let _files = self.inner.files.read().unwrap_or_else(|e| e.into_inner());
        let dir = self.inner.dir.join(object_id);
        let mut out = Vec::new();
        for k in (0..=self.inner.keep_files).rev() {
            let path = log_path(&dir, k);
            match read_log(&path) {
                Ok(records) => out.extend(records),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Ok(out)
    }

    /// Appends lines received from another station (a migrated object's log), in order, after the object's
    /// existing lines; rotation applies as for [`LogStore::append`]. Returns once they are written (not
    /// fsynced: logs are best effort). [`Error::Closed`] after shutdown.
    pub fn import(&self, object_id: &str, records: &[LogRecord]) -> Result<(), Error> {
        check_id(object_id)?;
        if self.is_closed() {
            return Err(Error::Closed);
        }
        self.inner
            .batch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(records.iter().map(|r| (object_id.to_string(), r.clone())));
        if !self.flush(object_id) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Follows the object's log: the lines appended from now on, as they are queued. Read what
    /// came before with [`LogStore::query`] after subscribing, and join the two with
    /// [`super::log_tap::Delivered`].
    pub fn follow(&self, object_id: &str) -> super::log_tap::LogTap {
        self.inner.taps.subscribe(object_id)
    }

    /// Followers open now, and followers cut off for falling behind since the store opened.
    pub fn follower_counts(&self) -> (u64, u64) {
        self.inner.taps.counts()
    }

    /// Has the log thread write what is queued for the object; false if the thread is gone.
    fn flush(&self, object_id: &str) -> bool {
        let (done, flushed) = mpsc::channel();
        self.send(LogMsg::Flush {
            id: object_id.to_string(),
            done,
        }) && flushed.recv().is_ok()
    }

    /// Removes the object's logs (`data/logs/{id}`), after writing what was queued before.
    pub fn purge(&self, object_id: &str) -> Result<(), Error> {
        check_id(object_id)?;
        self.inner.taps.end(object_id);
        let (done, result) = mpsc::channel();
        if self.send(LogMsg::Purge {
            id: object_id.to_string(),
            done,
        }) {
            return result.recv().unwrap_or(Ok(()));
        }
        let _files = self.inner.files.write().unwrap_or_else(|e| e.into_inner());
        remove_dir(&self.inner.dir.join(object_id))
    }

    /// Flushes queued lines and stops the log thread. Idempotent.
    pub(crate) fn shutdown(&self) {
        let tx = self
            .inner
            .tx
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(tx) = tx {
            let _ = tx.send(LogMsg::Shutdown);
        }
        self.inner.taps.end_all();
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the log thread panicked");
        }
    }

    /// Whether the log thread was shut down.
    fn is_closed(&self) -> bool {
        self.inner
            .tx
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    fn send(&self, msg: LogMsg) -> bool {
        let tx = self.inner.tx.read().unwrap_or_else(|e| e.into_inner());
        tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok())
    }
}

/// `log.tsv` for k = 0, else `log.{k}.tsv`.
fn log_path(dir: &Path, k: usize) -> PathBuf {
    if k == 0 {
        dir.join("log.tsv")
    } else {
        dir.join(format!("log.{k}.tsv"))
    }
}

fn remove_dir(dir: &Path) -> Result<(), Error> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(dir, e)),
        _ => Ok(()),
    }
}

/// Parses one record; `None` for the header, a torn line, or anything else that is not a log line.
fn parse_line(rec: &csv::ByteRecord) -> Option<LogRecord> {
    if rec.len() != LOG_HEADER.len() && rec.len() != OLD_FIELDS {
        return None;
    }
    let text = |i: usize| tsv::field_str(rec, i, "").ok();
    Some(LogRecord {
        ts_ms: tsv::field_u64(rec, 0, "ts").ok()?,
        level: text(1)?.parse().ok()?,
        request_id: text(2)?,
        event: text(3)?,
        message: text(4)?,
        trace_id: if rec.len() > OLD_FIELDS {
            text(5)?
        } else {
            String::new()
        },
    })
}

/// Every readable line of a log file, oldest first.
fn read_log(path: &Path) -> io::Result<Vec<LogRecord>> {
    Ok(scan(&fs::read(path)?).0)
}

/// The well-formed lines of a log file's bytes, and where the last of them (or the header) ends. A line counts
/// only if it has the six fields (five in files from before trace ids) and its terminator: a torn final line (even one cut inside a quoted field,
/// which the TSV parser would close at the end of the input) is skipped.
fn scan(bytes: &[u8]) -> (Vec<LogRecord>, u64) {
    let mut rdr = tsv::reader(bytes);
    let mut rec = csv::ByteRecord::new();
    let mut out = Vec::new();
    let mut end = 0;
    loop {
        let start = rdr.position().byte() as usize;
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {
                let at = rdr.position().byte();
                let raw = &bytes[start..at as usize];
                // Quotes come in pairs in a whole line; an odd count means it was cut inside a quoted field.
                if raw.last() != Some(&b'\n') || raw.iter().filter(|&&b| b == b'"').count() % 2 == 1
                {
                    continue;
                }
                if let Some(r) = parse_line(&rec) {
                    out.push(r);
                    end = at;
                } else if rec.iter().eq(LOG_HEADER.iter().map(|h| h.as_bytes()))
                    || rec
                        .iter()
                        .eq(LOG_HEADER[..OLD_FIELDS].iter().map(|h| h.as_bytes()))
                {
                    end = at;
                }
            }
            Ok(false) => return (out, end),
            Err(_) => {}
        }
    }
}

/// An open log file.
struct LogFile {
    w: BufWriter<File>,
    size: u64,
    dirty: bool,
}

/// The log thread's state.
struct LogWriter {
    dir: PathBuf,
    max_bytes: u64,
    keep_files: usize,
    handles: HandleCache<String, LogFile>,
    /// Objects whose `log.tsv` this process already checked for a torn tail.
    checked: HashSet<String>,
    files: Arc<RwLock<()>>,
    line: Vec<u8>,
    /// The shared batch appends go to.
    batch: Arc<Mutex<Vec<(String, LogRecord)>>>,
    /// The batch's bytes, reset when it is taken.
    queued: Arc<QueueMeter>,
    /// The batch taken out, kept to reuse its allocation.
    taken: Vec<(String, LogRecord)>,
}

impl LogWriter {
    fn run(mut self, rx: Receiver<LogMsg>) {
        loop {
            let first = match rx.recv_timeout(LOG_BATCH_INTERVAL) {
                Ok(msg) => Some(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            // Lines appended before a flush, purge or shutdown was asked for are written first.
            self.write_batch();
            let mut next = first;
            while let Some(msg) = next {
                match msg {
                    LogMsg::Wake => {}
                    LogMsg::Flush { id, done } => {
                        if let Some(f) = self.handles.get_mut(&id) {
                            flush(&id, f);
                        }
                        let _ = done.send(());
                    }
                    LogMsg::Purge { id, done } => {
                        self.handles.remove(&id);
                        self.checked.remove(&id);
                        let _files = self.files.write().unwrap_or_else(|e| e.into_inner());
                        let _ = done.send(remove_dir(&self.dir.join(&id)));
                    }
                    LogMsg::Shutdown => {
                        self.flush_all();
                        return;
                    }
                }
                next = rx.try_recv().ok();
                if next.is_some() {
                    self.write_batch();
                }
            }
            self.flush_all();
        }
        self.write_batch();
        self.flush_all();
    }

    /// Writes every line waiting in the shared batch.
    fn write_batch(&mut self) {
        {
            let mut batch = self.batch.lock().unwrap_or_else(|e| e.into_inner());
            if batch.is_empty() {
                return;
            }
            std::mem::swap(&mut *batch, &mut self.taken);
            self.queued
                .bytes
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
        let dropped = self
            .queued
            .dropped
            .swap(0, std::sync::atomic::Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "log lines dropped: {MAX_QUEUED_LOG_BYTES} bytes of lines were waiting for the disk"
            );
        }
        let mut taken = std::mem::take(&mut self.taken);
        for (id, record) in taken.drain(..) {
            self.append(id, &record);
        }
        self.taken = taken;
    }

    fn flush_all(&mut self) {
        for (id, f) in self.handles.values_mut() {
            flush(id, f);
        }
    }

    fn append(&mut self, id: String, r: &LogRecord) {
        self.line.clear();
        let ts = r.ts_ms.to_string();
        tsv::encode_record(
            &mut self.line,
            [
                &ts,
                r.level.as_str(),
                &r.request_id,
                &r.event,
                &r.message,
                &r.trace_id,
            ],
        );
        let result = (|| {
            let f = match self.handles.get_mut(&id) {
                Some(f) => f,
                None => {
                    let file = self.open(&id)?;
                    if let Some((old_id, mut old)) = self.handles.insert(id.clone(), file) {
                        flush(&old_id, &mut old);
                    }
                    self.handles.get_mut(&id).expect("just inserted")
                }
            };
            f.w.write_all(&self.line)?;
            f.size += self.line.len() as u64;
            f.dirty = true;
            io::Result::Ok(f.size > self.max_bytes)
        })();
        match result {
            Ok(true) => self.rotate(&id),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(object_id = %id, error = %e, "could not write a log line");
                self.handles.remove(&id);
            }
        }
    }

    /// Opens (creating with its header, or repairing a torn tail) an object's `log.tsv` for appending.
    fn open(&mut self, id: &str) -> io::Result<LogFile> {
        let dir = self.dir.join(id);
        fs::create_dir_all(&dir)?;
        let path = log_path(&dir, 0);
        let mut file = OpenOptions::new().append(true).create(true).open(&path)?;
        let mut size = file.metadata()?.len();
        if size > 0 && !self.checked.contains(id) {
            let (_, end) = scan(&fs::read(&path)?);
            if end < size {
                tracing::warn!(
                    object_id = id,
                    dropped_bytes = size - end,
                    "cutting a torn line off a log file"
                );
                file.set_len(end)?;
                size = end;
            }
        }
        self.checked.insert(id.to_string());
        if size == 0 {
            let header = tsv::header_line(&LOG_HEADER);
            file.write_all(&header)?;
            size = header.len() as u64;
        }
        Ok(LogFile {
            w: BufWriter::with_capacity(16 * 1024, file),
            size,
            dirty: false,
        })
    }

    /// `log.(k)` → `log.(k+1)`, `log.tsv` → `log.1.tsv`, drop beyond `keep_files`, start a fresh `log.tsv`.
    fn rotate(&mut self, id: &str) {
        if let Some(mut f) = self.handles.remove(&id.to_string()) {
            flush(id, &mut f);
        }
        let dir = self.dir.join(id);
        let _files = self.files.write().unwrap_or_else(|e| e.into_inner());
        let keep = self.keep_files;
        let remove = |k: usize| match fs::remove_file(log_path(&dir, k)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        let result = (|| {
            // Files beyond what is kept (left by a larger `keep_files`), then the oldest kept one.
            let mut k = keep + 1;
            while log_path(&dir, k).exists() {
                remove(k)?;
                k += 1;
            }
            if keep == 0 {
                return remove(0);
            }
            remove(keep)?;
            for k in (0..keep).rev() {
                match fs::rename(log_path(&dir, k), log_path(&dir, k + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(object_id = id, error = %e, "could not rotate a log file");
        }
        tracing::debug!(object_id = id, "rotated log file");
    }
}

fn flush(id: &str, f: &mut LogFile) {
    if f.dirty {
        f.dirty = false;
        if let Err(e) = f.w.flush() {
            tracing::warn!(object_id = id, error = %e, "could not flush a log file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, Store, StoreConfig};

    fn rec(ts_ms: u64, level: Level, request_id: &str, message: &str) -> LogRecord {
        LogRecord {
            ts_ms,
            level,
            request_id: request_id.into(),
            event: "object".into(),
            message: message.into(),
            trace_id: String::new(),
        }
    }

    fn open(dir: &Path, max_bytes: u64, keep: usize) -> Store {
        Store::open(StoreConfig {
            durability: Durability::None,
            log_max_bytes: max_bytes,
            log_keep_files: keep,
            ..StoreConfig::new(dir.join("data"))
        })
        .unwrap()
    }

    fn all() -> LogQuery {
        LogQuery::default()
    }

    #[test]
    fn levels_parse_and_print_lower_case() {
        for (s, l) in [
            ("trace", Level::Trace),
            ("DEBUG", Level::Debug),
            ("Info", Level::Info),
            ("warning", Level::Warn),
        ] {
            assert_eq!(s.parse::<Level>(), Ok(l));
        }
        assert_eq!("error".parse::<Level>().unwrap().to_string(), "error");
        assert!("loud".parse::<Level>().is_err());
        assert!(Level::Trace < Level::Debug && Level::Warn < Level::Error);
        let json = serde_json::to_value(rec(5, Level::Warn, "r1", "m")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"ts": 5, "level": "warn", "request_id": "r1", "event": "object", "message": "m", "trace_id": ""})
        );
    }

    #[test]
    fn query_filters_newest_first_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 20, 3);
        let logs = store.logs();
        let levels = [
            Level::Trace,
            Level::Debug,
            Level::Info,
            Level::Warn,
            Level::Error,
        ];
        for i in 0..50u64 {
            let msg = format!("line {i}\twith tab\nand newline \"quoted\" \\");
            logs.append(
                "obj",
                rec(
                    1000 + i,
                    levels[i as usize % 5],
                    &format!("req-{}", i % 2),
                    &msg,
                ),
            );
        }
        let got = logs.query("obj", &all()).unwrap();
        assert_eq!(got.len(), 50);
        assert_eq!(got[0].ts_ms, 1049);
        assert_eq!(
            got[49].message,
            "line 0\twith tab\nand newline \"quoted\" \\"
        );
        let warn = logs
            .query(
                "obj",
                &LogQuery {
                    min_level: Some(Level::Warn),
                    ..all()
                },
            )
            .unwrap();
        assert_eq!(warn.len(), 20);
        assert!(warn.iter().all(|r| r.level >= Level::Warn));
        let since = logs
            .query(
                "obj",
                &LogQuery {
                    since_ms: Some(1040),
                    limit: 3,
                    ..all()
                },
            )
            .unwrap();
        assert_eq!(
            since.iter().map(|r| r.ts_ms).collect::<Vec<_>>(),
            vec![1049, 1048, 1047]
        );
        let req = logs
            .query(
                "obj",
                &LogQuery {
                    request_id: Some("req-1".into()),
                    ..all()
                },
            )
            .unwrap();
        assert_eq!(req.len(), 25);
        assert!(req.iter().all(|r| r.ts_ms % 2 == 1));
        assert!(logs.query("nobody", &all()).unwrap().is_empty());

        store.shutdown();
        drop(store);
        let store = open(dir.path(), 1 << 20, 3);
        store
            .logs()
            .append("obj", rec(2000, Level::Info, "", "after restart"));
        let got = store
            .logs()
            .query("obj", &LogQuery { limit: 2, ..all() })
            .unwrap();
        assert_eq!(
            got.iter().map(|r| r.ts_ms).collect::<Vec<_>>(),
            vec![2000, 1049]
        );
        // Every line has exactly the header's six fields.
        let text = fs::read(dir.path().join("data/logs/obj/log.tsv")).unwrap();
        let mut rdr = csv::ReaderBuilder::new()
            .delimiter(b'\t')
            .from_reader(text.as_slice());
        assert_eq!(
            rdr.headers().unwrap(),
            vec!["ts", "level", "request_id", "event", "message", "trace_id"]
        );
        assert!(rdr.records().all(|r| r.unwrap().len() == 6));
    }

    #[test]
    fn rotation_keeps_n_files_and_query_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 2000, 2);
        let logs = store.logs();
        for i in 0..200u64 {
            logs.append(
                "rot",
                rec(
                    i,
                    Level::Info,
                    "",
                    &format!("message number {i:04} padded to some length"),
                ),
            );
        }
        let got = logs.query("rot", &all()).unwrap();
        let obj = dir.path().join("data/logs/rot");
        assert!(obj.join("log.1.tsv").exists() && obj.join("log.2.tsv").exists());
        assert!(!obj.join("log.3.tsv").exists());
        // Newest first, contiguous, and the oldest lines were dropped with the oldest file.
        assert_eq!(got[0].ts_ms, 199);
        assert!(got.windows(2).all(|w| w[0].ts_ms == w[1].ts_ms + 1));
        assert!(got.len() < 200 && got.len() > 40, "{}", got.len());
        for k in [0, 1, 2] {
            let text = fs::read_to_string(log_path(&obj, k)).unwrap();
            assert!(text.starts_with("ts\tlevel\trequest_id\tevent\tmessage\ttrace_id\n"));
            assert!(text.len() as u64 <= 2000 + 100, "{k}: {}", text.len());
        }
        // A limit stops before the rotated files; `since` before the oldest reads them all.
        let few = logs.query("rot", &LogQuery { limit: 5, ..all() }).unwrap();
        assert_eq!(
            few.iter().map(|r| r.ts_ms).collect::<Vec<_>>(),
            vec![199, 198, 197, 196, 195]
        );
        let recent = logs
            .query(
                "rot",
                &LogQuery {
                    since_ms: Some(190),
                    ..all()
                },
            )
            .unwrap();
        assert_eq!(recent.len(), 10);
    }

    #[test]
    fn torn_final_line_is_skipped_then_cut() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 20, 3);
        store.logs().append("t", rec(1, Level::Info, "", "one"));
        store
            .logs()
            .append("t", rec(2, Level::Info, "", "two\nlines"));
        store.shutdown();
        drop(store);
        let path = dir.path().join("data/logs/t/log.tsv");
        let whole = fs::read(&path).unwrap();
        for torn in [
            &b"3\tinfo\t\tobject\t\"three\nhalf"[..],
            b"3\tinfo\t\tobject\t\"three\n",
            b"3\tin",
            b"3",
        ] {
            let mut bytes = whole.clone();
            bytes.extend_from_slice(torn);
            fs::write(&path, &bytes).unwrap();
            let store = open(dir.path(), 1 << 20, 3);
            let got = store.logs().query("t", &all()).unwrap();
            assert_eq!(got.iter().map(|r| r.ts_ms).collect::<Vec<_>>(), vec![2, 1]);
            store.logs().append("t", rec(4, Level::Info, "", "four"));
            let got = store.logs().query("t", &all()).unwrap();
            assert_eq!(
                got.iter().map(|r| r.ts_ms).collect::<Vec<_>>(),
                vec![4, 2, 1]
            );
            store.shutdown();
            let mut expected = whole.clone();
            expected.extend_from_slice(b"4\tinfo\t\tobject\tfour\t\n");
            assert_eq!(fs::read(&path).unwrap(), expected);
        }
    }

    #[test]
    fn a_file_from_before_trace_ids_reads_and_takes_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let obj = dir.path().join("data/logs/t");
        fs::create_dir_all(&obj).unwrap();
        fs::write(
            obj.join("log.tsv"),
            b"ts\tlevel\trequest_id\tevent\tmessage\n1\tinfo\tr1\tobject\told\n",
        )
        .unwrap();
        let store = open(dir.path(), 1 << 20, 3);
        let mut new = rec(2, Level::Info, "r2", "new");
        new.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736".into();
        store.logs().append("t", new.clone());
        let got = store.logs().query("t", &all()).unwrap();
        assert_eq!(got, vec![new, rec(1, Level::Info, "r1", "old")]);
        store.shutdown();
    }

    #[test]
    fn purge_removes_logs_and_many_objects_stay_under_the_handle_cap() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 20, 3);
        let logs = store.logs();
        for i in 0..(LOG_HANDLES + 50) {
            logs.append(&format!("o{i}"), rec(i as u64, Level::Info, "", "hello"));
        }
        for i in [0, 1, LOG_HANDLES + 49] {
            let got = logs.query(&format!("o{i}"), &all()).unwrap();
            assert_eq!(got.len(), 1, "o{i}");
        }
        logs.purge("o0").unwrap();
        assert!(!dir.path().join("data/logs/o0").exists());
        assert!(logs.query("o0", &all()).unwrap().is_empty());
        logs.append("o0", rec(7, Level::Info, "", "again"));
        assert_eq!(logs.query("o0", &all()).unwrap().len(), 1);
        store.shutdown();
        // After shutdown appends are dropped and queries still read.
        store.logs().append("o1", rec(9, Level::Info, "", "late"));
        assert_eq!(store.logs().query("o1", &all()).unwrap().len(), 1);
    }

    #[test]
    fn export_reads_every_file_oldest_first_and_import_appends_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let src = open(&dir.path().join("src"), 1500, 3);
        for i in 0..60u64 {
            src.logs().append(
                "mig",
                rec(
                    i,
                    Level::Info,
                    &format!("r{i}"),
                    &format!("line {i}\twith\n\"hostile\" text"),
                ),
            );
        }
        let exported = src.logs().export("mig").unwrap();
        assert!(
            dir.path().join("src/data/logs/mig/log.2.tsv").exists(),
            "rotated"
        );
        assert!(!exported.is_empty());
        assert!(
            exported.windows(2).all(|w| w[1].ts_ms == w[0].ts_ms + 1),
            "oldest first, contiguous"
        );
        assert_eq!(exported.last().unwrap().ts_ms, 59);
        let newest_first = src.logs().query("mig", &all()).unwrap();
        assert_eq!(
            exported.iter().rev().cloned().collect::<Vec<_>>(),
            newest_first
        );
        assert!(src.logs().export("none").unwrap().is_empty());
        // Lines travel as JSON.
        let json = serde_json::to_string(&exported).unwrap();
        assert_eq!(
            serde_json::from_str::<Vec<LogRecord>>(&json).unwrap(),
            exported
        );

        let dst = open(&dir.path().join("dst"), 1 << 20, 3);
        dst.logs()
            .append("mig", rec(1000, Level::Warn, "", "already here"));
        dst.logs().import("mig", &exported).unwrap();
        let got = dst.logs().export("mig").unwrap();
        assert_eq!(got[0].message, "already here");
        assert_eq!(&got[1..], &exported[..]);
        dst.logs()
            .append("mig", rec(2000, Level::Info, "", "after"));
        assert_eq!(
            dst.logs()
                .query("mig", &LogQuery { limit: 1, ..all() })
                .unwrap()[0]
                .ts_ms,
            2000
        );
        dst.shutdown();
        assert!(matches!(
            dst.logs().import("mig", &exported),
            Err(Error::Closed)
        ));
        assert_eq!(dst.logs().export("mig").unwrap().len(), exported.len() + 2);
    }
}
