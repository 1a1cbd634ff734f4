//! Loading an object's `state.tsv`: parsing its records back into the index, and crash recovery.
//!
//! Recovery reads the file into memory and decides from what it finds and from what the write-ahead
//! log proves (`wal.rs`):
//!
//! - The log has batches past the file's last intact one: every byte past the file's last sync is
//!   covered by a logged batch that says where it went, so the file is cut back to the end of its last
//!   intact batch and the logged batches are appended from there — whatever write-back left behind it
//!   (zeros, a torn record, a later page without an earlier one). This is checked, not assumed: the
//!   first missing batch must have been logged at exactly that offset, the logged seqs must follow on
//!   without a gap, and the result must parse whole with its chain hashes.
//! - Otherwise a torn tail — an incomplete batch, no complete commit line after it — was never
//!   acknowledged and is cut off.
//! - Anything else (a bad record followed by complete batches, a whole batch that does not match its
//!   chain hash, a missing header) is damage a crash cannot explain: an error naming the file, the
//!   byte and `host repair`, and the file is left as it is.

use std::io::{Read, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use super::encode::STATE_HEADER;
use super::hlc::observe_hlc;
use super::index::Index;
use super::object::ObjectState;
use super::types::Record;
use crate::store::chain::{self, chain_hash};
use crate::store::error::{Error, IoContext};
use crate::store::fsutil::{create_dir_durable, fsync_dir};
use crate::store::vfs::{OpenMode, VFile};
use crate::store::wal::{Damage, LoggedBatch};
use crate::store::{Shared, tsv};

/// Loads an object's state from `data/state/{id}/state.tsv` (creating it with its header if absent), running
/// crash recovery with `logged`, the write-ahead log's batches of this object (see the module doc), and
/// returns the handle. The caller caches it: load each object once.
pub(crate) fn load(
    shared: &Arc<Shared>,
    id: &str,
    logged: &[LoggedBatch],
) -> Result<ObjectState, Error> {
    let fs = shared.fs();
    let dir = shared.config.data_dir.join("state").join(id);
    create_dir_durable(&**fs, &dir)?;
    let path = dir.join("state.tsv");
    let existed = fs.file_len(&path).at(&path)?.is_some();
    let mut file = fs.open(&path, OpenMode::ReadWriteCreate).at(&path)?;
    if !existed {
        fsync_dir(&**fs, &dir)?;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).at(&path)?;
    let recovered = recover(&bytes, logged, shared.config.history_versions).map_err(|damage| {
        Error::Damaged {
            path: path.clone(),
            offset: damage.offset,
            reason: damage.reason,
            data_dir: shared.config.data_dir.clone(),
        }
    })?;
    apply_fix(&path, &mut *file, &recovered.fix)?;
    if let Err(e) = observe_hlc(&shared.hlc, recovered.index.last_hlc) {
        tracing::warn!(object_id = id, error = %e, "state file's clock is ahead of this station's clock");
    }
    let sizes = (recovered.records, recovered.file_len);
    Ok(ObjectState::new(shared, id, path, recovered.index, sizes))
}

/// What recovery read from a state file, and what it changes in it.
#[derive(Debug)]
struct Recovered {
    /// The index of its complete batches.
    index: Index,
    /// `set`/`del` records in the (recovered) file.
    records: u64,
    /// The (recovered) file's length.
    file_len: u64,
    /// What to write.
    fix: Fix,
}

/// The change recovery makes to a state file.
#[derive(Debug, PartialEq, Eq)]
enum Fix {
    /// None: the file is whole.
    None,
    /// Cut it to this length (a torn tail).
    Truncate(u64),
    /// Cut it to `keep` bytes and append `append` (the header, and batches from the log).
    Replace { keep: u64, append: Vec<u8> },
}

/// Writes a fix and syncs the file.
fn apply_fix(path: &Path, file: &mut dyn VFile, fix: &Fix) -> Result<(), Error> {
    match fix {
        Fix::None => return Ok(()),
        Fix::Truncate(len) => file.set_len(*len).at(path)?,
        Fix::Replace { keep, append } => {
            file.set_len(*keep).at(path)?;
            file.seek(SeekFrom::Start(*keep)).at(path)?;
            file.write_all(append).at(path)?;
        }
    }
    file.sync_all().at(path)
}

/// Decides what a state file of `bytes` holds and how to repair it, with `logged` as the write-ahead
/// log's proof (see the module doc). Pure: `load` writes the fix.
fn recover(bytes: &[u8], logged: &[LoggedBatch], history: usize) -> Result<Recovered, Damage> {
    let header = tsv::header_line(&STATE_HEADER);
    // Empty, or a torn write of the header line (a prefix of it, maybe with zeros where write-back
    // did not reach): (re)write the header.
    let fresh =
        bytes.len() <= header.len() && bytes.iter().zip(&header).all(|(&b, &h)| b == h || b == 0);
    let content = if fresh { header.as_slice() } else { bytes };
    let scan = scan(content, history)?;
    let tail = proven_tail(&scan, logged)?;
    if !tail.is_empty() {
        return replay_tail(content, fresh, &scan, &tail, history);
    }
    let len = content.len() as u64;
    let mut fix = if fresh && bytes != header {
        if !bytes.is_empty() {
            tracing::warn!(bytes = bytes.len(), "rewriting a torn state file header");
        }
        Fix::Replace {
            keep: 0,
            append: header.clone(),
        }
    } else {
        Fix::None
    };
    let mut file_len = len;
    if scan.good_end < len {
        check_torn_tail(content, &scan)?;
        fix = Fix::Truncate(scan.good_end);
        file_len = scan.good_end;
    } else if scan.missing_newline {
        fix = Fix::Replace {
            keep: len,
            append: b"\n".to_vec(),
        };
        file_len += 1;
    }
    Ok(Recovered {
        index: scan.index,
        records: scan.records,
        file_len,
        fix,
    })
}

/// The logged batches past the file's last intact one, in seq order, once checked to continue it:
/// no gap in their seqs, and the first logged at the offset where the file's intact part ends.
fn proven_tail<'a>(scan: &Scan, logged: &'a [LoggedBatch]) -> Result<Vec<&'a LoggedBatch>, Damage> {
    let applied = scan.index.applied_seq;
    let mut tail: Vec<&LoggedBatch> = logged.iter().filter(|b| b.seq > applied).collect();
    tail.sort_by_key(|b| b.seq);
    let Some(first) = tail.first() else {
        return Ok(tail);
    };
    let damage = |reason: String| Damage {
        offset: scan.good_end,
        reason: match &scan.problem {
            Some(p) => format!("{reason} ({} at line {})", p.reason, p.line),
            None => reason,
        },
    };
    for (i, batch) in tail.iter().enumerate() {
        if batch.seq != applied + 1 + i as u64 {
            return Err(damage(format!(
                "the file's last intact batch is seq {applied} but the write-ahead log has seq {} and not seq {}",
                batch.seq,
                applied + 1 + i as u64
            )));
        }
    }
    if let Some(offset) = first.offset
        && offset != scan.good_end
    {
        return Err(damage(format!(
            "the file's intact part ends at byte {} but the write-ahead log put batch {} at byte {offset}",
            scan.good_end, first.seq
        )));
    }
    Ok(tail)
}

/// Cuts the file to its intact part, appends the proven logged `tail` and checks the result parses
/// whole.
fn replay_tail(
    content: &[u8],
    fresh: bool,
    scan: &Scan,
    tail: &[&LoggedBatch],
    history: usize,
) -> Result<Recovered, Damage> {
    let keep = scan.good_end as usize;
    let mut repaired = content[..keep].to_vec();
    for batch in tail {
        repaired.extend_from_slice(&batch.bytes);
    }
    let last = tail.last().map_or(0, |b| b.seq);
    let rescan = scan_whole(&repaired, history).filter(|r| r.index.applied_seq == last);
    let Some(rescan) = rescan else {
        return Err(Damage {
            offset: scan.good_end,
            reason: format!(
                "the write-ahead log's batches {}..={last} do not continue the file's history",
                tail[0].seq
            ),
        });
    };
    tracing::warn!(
        from_seq = tail[0].seq,
        through_seq = last,
        cut_bytes = content.len() - keep,
        "replaying batches from the write-ahead log"
    );
    let (keep, append) = if fresh {
        (0, repaired.clone())
    } else {
        (keep as u64, repaired[keep..].to_vec())
    };
    Ok(Recovered {
        file_len: repaired.len() as u64,
        index: rescan.index,
        records: rescan.records,
        fix: Fix::Replace { keep, append },
    })
}

/// What `host repair` makes of a state file: the content to keep, and what it cannot keep.
#[derive(Debug)]
pub(crate) struct Salvage {
    /// The repaired file's bytes.
    pub(crate) content: Vec<u8>,
    /// The last batch it holds.
    pub(crate) kept_seq: u64,
    /// The seqs found (in the file past the damage, or in the log) that it cannot keep, if any.
    pub(crate) lost: Option<(u64, u64)>,
    /// Why the file needed more than crash recovery, if it did.
    pub(crate) damage: Option<String>,
}

/// Repairs a state file of `bytes` with the log's batches `logged`: what crash recovery does where
/// it can; otherwise the intact batches before the damage, then the logged batches that continue
/// them (checked by their chain hashes), and a report of every seq found beyond.
pub(crate) fn salvage(bytes: &[u8], logged: &[LoggedBatch], history: usize) -> Salvage {
    let damage = match recover(bytes, logged, history) {
        Ok(recovered) => {
            let content = match recovered.fix {
                Fix::None => bytes.to_vec(),
                Fix::Truncate(len) => bytes[..len as usize].to_vec(),
                Fix::Replace { keep, append } => [&bytes[..keep as usize], &append].concat(),
            };
            return Salvage {
                content,
                kept_seq: recovered.index.applied_seq,
                lost: None,
                damage: None,
            };
        }
        Err(damage) => damage,
    };
    let header = tsv::header_line(&STATE_HEADER);
    let (mut content, mut kept_seq) = match scan(bytes, history) {
        Ok(scan) => (
            bytes[..scan.good_end as usize].to_vec(),
            scan.index.applied_seq,
        ),
        Err(_) => (header.clone(), 0),
    };
    let mut tail: Vec<&LoggedBatch> = logged.iter().filter(|b| b.seq > kept_seq).collect();
    tail.sort_by_key(|b| b.seq);
    for batch in tail {
        if batch.seq != kept_seq + 1 {
            break;
        }
        let candidate = [content.as_slice(), &batch.bytes].concat();
        if scan_whole(&candidate, history).is_none() {
            break;
        }
        content = candidate;
        kept_seq = batch.seq;
    }
    let seen_in_file = bytes
        .split(|&b| b == b'\n')
        .filter(|line| looks_like_commit_line(line))
        .filter_map(|line| {
            std::str::from_utf8(line.split(|&b| b == b'\t').next()?)
                .ok()?
                .parse::<u64>()
                .ok()
        });
    let seen = seen_in_file
        .chain(logged.iter().map(|b| b.seq))
        .max()
        .unwrap_or(0);
    Salvage {
        content,
        kept_seq,
        lost: (seen > kept_seq).then_some((kept_seq + 1, seen)),
        damage: Some(format!("byte {}: {}", damage.offset, damage.reason)),
    }
}

/// A scan of `bytes` that must read to the end without a problem.
fn scan_whole(bytes: &[u8], history: usize) -> Option<Scan> {
    scan(bytes, history)
        .ok()
        .filter(|s| s.problem.is_none() && s.good_end == bytes.len() as u64)
}

/// Checks that the bytes after the last complete batch are a torn write: no complete commit line follows the
/// bad record, and it is not a whole batch that fails its chain hash. Otherwise it is damage.
fn check_torn_tail(content: &[u8], scan: &Scan) -> Result<(), Damage> {
    let problem = scan.problem.clone().unwrap_or(Problem {
        line: 0,
        offset: scan.good_end,
        reason: "unparsed bytes".into(),
        whole_batch: false,
    });
    let tail = &content[scan.good_end as usize..];
    let mut lines: Vec<&[u8]> = tail.split(|&b| b == b'\n').collect();
    lines.pop(); // the last piece is not followed by `\n`: it is not a complete line
    if problem.whole_batch {
        return Err(Damage {
            offset: problem.offset,
            reason: format!("line {}: {}", problem.line, problem.reason),
        });
    }
    if lines.iter().any(|l| looks_like_commit_line(l)) {
        return Err(Damage {
            offset: problem.offset,
            reason: format!(
                "line {}: {}; complete batches follow it, so it is not a torn write",
                problem.line, problem.reason
            ),
        });
    }
    tracing::warn!(
        line = problem.line,
        reason = %problem.reason,
        dropped_bytes = content.len() as u64 - scan.good_end,
        kept_seq = scan.index.applied_seq,
        "state file ends with an incomplete batch (torn write): truncating it"
    );
    Ok(())
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

/// Parses one record of `state.tsv`, or says why it is not one.
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
pub(super) fn looks_like_commit_line(line: &[u8]) -> bool {
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

/// The batch being read: its `(key, value, hlc)` records so far. Records of a batch may carry different hlcs
/// (replicated or merged batches): only the seq ties them.
#[derive(Default)]
struct Pending {
    records: Vec<(String, Option<String>, u64)>,
    /// The batch's seq.
    seq: u64,
    /// The line of its first record.
    line: u64,
}

impl Pending {
    /// Adds a `set`/`del` record of `seq` read at `line` (the batch `applied` being the last complete one), or
    /// says why it does not belong there.
    fn push(
        &mut self,
        applied: u64,
        line: u64,
        seq: u64,
        record: (String, Option<String>, u64),
    ) -> Option<String> {
        if self.records.is_empty() {
            if seq <= applied {
                Some(format!("seq {seq} does not follow seq {applied}"))
            } else {
                (self.seq, self.line) = (seq, line);
                self.records.push(record);
                None
            }
        } else if seq != self.seq {
            Some(format!(
                "record of seq {seq} inside batch {}, which has no commit line",
                self.seq
            ))
        } else {
            self.records.push(record);
            None
        }
    }

    /// Why a commit line of `seq` counting `count` records does not end this batch, if it does not.
    fn end_mismatch(&self, seq: u64, count: u64) -> Option<String> {
        if self.records.is_empty() {
            Some(format!("commit line of seq {seq} without records"))
        } else if seq != self.seq {
            Some(format!("commit line of seq {seq} ends batch {}", self.seq))
        } else if count != self.records.len() as u64 {
            Some(format!(
                "commit line of seq {seq} counts {count} records, the batch has {}",
                self.records.len()
            ))
        } else {
            None
        }
    }
}

/// Where and why a scan stopped before the end of the file.
#[derive(Debug, Clone)]
struct Problem {
    /// The line of the bad record.
    line: u64,
    /// The byte where it starts.
    offset: u64,
    /// What is wrong.
    reason: String,
    /// A whole, well-formed batch that does not match its chain hash (damage, unless the log proves
    /// it unsynced).
    whole_batch: bool,
}

/// What [`scan`] read from `state.tsv`.
#[derive(Debug)]
struct Scan {
    /// The index of the complete batches.
    index: Index,
    /// `set`/`del` records of those batches.
    records: u64,
    /// Where the last complete batch ends (where the header ends if there is none).
    good_end: u64,
    /// The last complete commit line ends the file but lacks its `\n`.
    missing_newline: bool,
    /// Where and why reading stopped before the end of the file, if it did.
    problem: Option<Problem>,
}

/// Reads the header and then the records of `state.tsv` into an index of its complete batches, stopping at
/// the first record that is not valid where it is. A missing header is damage.
fn scan(bytes: &[u8], history: usize) -> Result<Scan, Damage> {
    let len = bytes.len() as u64;
    let ends_with_newline = bytes.last() == Some(&b'\n');
    let mut rdr = tsv::reader(bytes);
    let mut rec = csv::ByteRecord::new();
    let header_ok = matches!(rdr.read_byte_record(&mut rec), Ok(true))
        && rec.iter().eq(STATE_HEADER.iter().map(|h| h.as_bytes()));
    if !header_ok {
        return Err(Damage {
            offset: 0,
            reason: format!("line 1: missing header `{}`", STATE_HEADER.join("\\t")),
        });
    }
    let mut scan = Scan {
        index: Index::new(history),
        records: 0,
        good_end: rdr.position().byte(),
        missing_newline: false,
        problem: None,
    };
    let mut pending = Pending::default();
    let mut batch_start = scan.good_end;

    loop {
        let (line, offset) = (rdr.position().line(), rdr.position().byte());
        let stop = |reason: String, whole_batch: bool| Problem {
            line,
            offset,
            reason,
            whole_batch,
        };
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                scan.problem = Some(stop(e.to_string(), false));
                break;
            }
        }
        let end = rdr.position().byte();
        let bad = match parse_record(&rec) {
            Err(reason) => Some((reason, false)),
            Ok(Line::Write {
                seq,
                hlc,
                key,
                value,
            }) => {
                if pending.records.is_empty() {
                    batch_start = offset;
                }
                pending
                    .push(scan.index.applied_seq, line, seq, (key, value, hlc))
                    .map(|reason| (reason, false))
            }
            Ok(Line::Commit { seq, count, hash }) => match pending.end_mismatch(seq, count) {
                Some(reason) => Some((reason, false)),
                None => {
                    match chain_mismatch(scan.index.head.as_deref(), seq, &pending.records, &hash) {
                        // A whole batch whose content does not hash to its line.
                        Some(reason) => Some((reason, true)),
                        None => {
                            // The count matches, so the line is whole; at most its `\n` is missing.
                            scan.missing_newline = end == len && !ends_with_newline;
                            scan.index.apply(seq, pending.records.drain(..));
                            scan.index.head = hash;
                            scan.records += count;
                            scan.good_end = end;
                            None
                        }
                    }
                }
            },
        };
        if let Some((reason, whole_batch)) = bad {
            let mut problem = stop(reason, whole_batch);
            if whole_batch {
                (problem.line, problem.offset) = (pending.line, batch_start);
            }
            scan.problem = Some(problem);
            break;
        }
    }
    if scan.problem.is_none() && !pending.records.is_empty() {
        scan.problem = Some(Problem {
            line: pending.line,
            offset: batch_start,
            reason: format!("batch {} has no commit line", pending.seq),
            whole_batch: false,
        });
    }
    Ok(scan)
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

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use crate::store::{Error, Store};
    use std::fs;

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
    fn garbage_in_the_middle_is_damage_not_truncation() {
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
        let line_start = |text: &str, line: usize| -> u64 {
            text.split_inclusive('\n')
                .take(line - 1)
                .map(str::len)
                .sum::<usize>() as u64
        };
        match store.state("bad") {
            Err(Error::Damaged {
                path: p,
                offset,
                reason,
                ..
            }) => {
                assert_eq!(p, path);
                assert_eq!(offset, line_start(&broken, 4));
                assert!(reason.contains("line 4: expected 5 fields"), "{reason}");
            }
            other => panic!("expected Damaged, got {:?}", other.map(|s| s.applied_seq())),
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), broken, "left untouched");
        // An unterminated quote swallowing the rest is caught too.
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(3, "3\t1\tset\t\"open");
        fs::write(&path, lines.join("\n") + "\n").unwrap();
        drop(store);
        let store = Store::open(config(dir.path())).unwrap();
        assert!(matches!(
            store.state("bad"),
            Err(Error::Damaged { reason, .. }) if reason.starts_with("line 4:")
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
        drop(store);
        let store = Store::open(config(dir.path())).unwrap();
        assert!(matches!(
            store.state("bad"),
            Err(Error::Damaged { reason, .. }) if reason.starts_with("line 3:")
        ));
        // A whole batch whose content was damaged (a value changed, the line still well-formed) no longer
        // matches the chain hash on its commit line: corruption, even as the last batch.
        let damaged = text.replacen("set\ta\t2", "set\ta\t3", 1);
        assert_ne!(damaged, text);
        fs::write(&path, &damaged).unwrap();
        drop(store);
        let store = Store::open(config(dir.path())).unwrap();
        match store.state("bad") {
            Err(Error::Damaged { offset, reason, .. }) => {
                assert_eq!(offset, line_start(&damaged, 4));
                assert!(
                    reason.starts_with("line 4:") && reason.contains("chain hash"),
                    "{reason}"
                );
            }
            other => panic!("expected Damaged, got {:?}", other.map(|s| s.applied_seq())),
        }
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            damaged,
            "left untouched"
        );
    }
}
