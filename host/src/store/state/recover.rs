//! Loading an object's `state.tsv`: parsing its records back into the index, and crash recovery (a torn tail
//! is cut off; damage before complete batches is corruption and leaves the file as it is).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
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
use crate::store::{Shared, tsv};

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
    Ok(ObjectState::new(shared, id, path, index, records))
}

/// What recovery read from a state file.
struct Recovered {
    /// The index of its complete batches.
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

/// Parses `state.tsv` and repairs a torn tail: everything after the last complete commit line is truncated
/// (and fsynced). A bad record followed by complete batches is corruption, not a torn write: that is an error
/// and the file is left as it is.
fn recover(path: &Path, file: &mut File, history: usize) -> Result<Recovered, Error> {
    let len = file.metadata().at(path)?.len();
    if header_only(path, file, len)? {
        return Ok(Recovered {
            index: Index::new(history),
            records: 0,
        });
    }

    let ends_with_newline = {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1))
            .and_then(|_| file.read_exact(&mut last))
            .at(path)?;
        last[0] == b'\n'
    };
    file.seek(SeekFrom::Start(0)).at(path)?;

    let Scan {
        index,
        records,
        good_end,
        missing_newline,
        problem,
    } = scan(path, file, len, ends_with_newline, history)?;
    if good_end < len {
        cut_torn_tail(path, file, len, good_end, problem, index.applied_seq)?;
    } else if missing_newline {
        file.seek(SeekFrom::End(0))
            .and_then(|_| file.write_all(b"\n"))
            .at(path)?;
        file.sync_all().at(path)?;
    }
    Ok(Recovered { index, records })
}

/// True if the file of `len` bytes holds only its header. An empty file, or one torn inside the header line,
/// gets the header (re)written and fsynced, and is then header-only too. Any other short file is left to
/// [`scan`], which reports it.
fn header_only(path: &Path, file: &mut File, len: u64) -> Result<bool, Error> {
    let header = tsv::header_line(&STATE_HEADER);
    if len > header.len() as u64 {
        return Ok(false);
    }
    let mut buf = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut buf))
        .at(path)?;
    if buf == header {
        return Ok(true);
    }
    if !header.starts_with(&buf) {
        return Ok(false);
    }
    if !buf.is_empty() {
        tracing::warn!(path = %path.display(), bytes = buf.len(), "rewriting a torn state file header");
    }
    file.set_len(0).at(path)?;
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(&header))
        .at(path)?;
    file.sync_all().at(path)?;
    Ok(true)
}

/// What [`scan`] read from `state.tsv`.
struct Scan {
    /// The index of the complete batches.
    index: Index,
    /// `set`/`del` records of those batches.
    records: u64,
    /// Where the last complete batch ends (where the header ends if there is none).
    good_end: u64,
    /// The last complete commit line ends the file but lacks its `\n`.
    missing_newline: bool,
    /// The line where reading stopped before the end of the file, and why, if it did.
    problem: Option<(u64, String)>,
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

/// Reads the header and then the records of `state.tsv` (`len` bytes) into an index of its complete batches,
/// stopping at the first record that is not valid where it is. A missing header, and a whole batch whose
/// content does not match the chain hash on its commit line, are corruption (errors).
fn scan(
    path: &Path,
    file: &File,
    len: u64,
    ends_with_newline: bool,
    history: usize,
) -> Result<Scan, Error> {
    let mut rdr = tsv::reader(file);
    let mut rec = csv::ByteRecord::new();
    read_header(path, &mut rdr, &mut rec)?;
    let mut scan = Scan {
        index: Index::new(history),
        records: 0,
        good_end: rdr.position().byte(),
        missing_newline: false,
        problem: None,
    };
    let mut pending = Pending::default();

    loop {
        let line = rdr.position().line();
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) if e.is_io_error() => return Err(Error::io(path, tsv::to_io(e))),
            Err(e) => {
                scan.problem = Some((line, e.to_string()));
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
            }) => pending.push(scan.index.applied_seq, line, seq, (key, value, hlc)),
            Ok(Line::Commit { seq, count, hash }) => match pending.end_mismatch(seq, count) {
                Some(reason) => Some(reason),
                None => {
                    if let Some(reason) =
                        chain_mismatch(scan.index.head.as_deref(), seq, &pending.records, &hash)
                    {
                        // A whole batch whose content does not hash to its line: damage, not a torn write.
                        return Err(Error::corrupt(path, pending.line, reason));
                    }
                    // The count matches, so the line is whole; at most its `\n` is missing (added by
                    // `recover`).
                    scan.missing_newline = end == len && !ends_with_newline;
                    scan.index.apply(seq, pending.records.drain(..));
                    scan.index.head = hash;
                    scan.records += count;
                    scan.good_end = end;
                    None
                }
            },
        };
        if let Some(reason) = bad {
            scan.problem = Some((line, reason));
            break;
        }
    }
    if scan.problem.is_none() && !pending.records.is_empty() {
        scan.problem = Some((
            pending.line,
            format!("batch {} has no commit line", pending.seq),
        ));
    }
    Ok(scan)
}

/// Reads the first line of `state.tsv` into `rec`; anything but [`STATE_HEADER`] is corruption.
fn read_header(
    path: &Path,
    rdr: &mut csv::Reader<&File>,
    rec: &mut csv::ByteRecord,
) -> Result<(), Error> {
    let header_ok = match rdr.read_byte_record(rec) {
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
    Ok(())
}

/// Cuts off the bytes after the last complete batch (which ends at `good_end`, seq `kept_seq`) of a file of
/// `len` bytes, a torn write, and fsyncs; `problem` is where and why reading stopped. If a complete commit
/// line follows, the bad record is not a torn write but corruption: an error, and the file is left as it is.
fn cut_torn_tail(
    path: &Path,
    file: &mut File,
    len: u64,
    good_end: u64,
    problem: Option<(u64, String)>,
    kept_seq: u64,
) -> Result<(), Error> {
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
        kept_seq,
        "state file ends with an incomplete batch (torn write): truncating it"
    );
    file.set_len(good_end).at(path)?;
    file.sync_all().at(path)?;
    Ok(())
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
}
