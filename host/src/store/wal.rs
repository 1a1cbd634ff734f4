//! The station-wide write-ahead log, `data/state/wal.log`, used with `--durability fsync`.
//!
//! A group-commit round used to make its batches durable by syncing every object file it touched (one
//! `syncfs` for three or more): with many objects committing at once, that flushed the whole file system each
//! round. Now the writer appends every batch of the round to this one file and fdatasyncs it once; the object
//! files (`state/{id}/state.tsv`) get the same bytes without a sync. At a checkpoint (the log past
//! [`CHECKPOINT_BYTES`], a snapshot install, a purge, shutdown) the object files are synced and the log is
//! emptied. Opening the store replays the log first: every batch an object file lacks (after a crash) is
//! appended to it, so an acknowledged batch is never lost.
//!
//! Format: per batch a header line `{object_id}\t{seq}\t{length}\n`, then `length` bytes: the batch exactly as
//! appended to the object's file (records and its `commit` line). A torn last record (a crash mid-append) was
//! never acknowledged and is ignored.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::error::{Error, IoContext};
use super::fsutil::{fsync_dir, is_valid_id};

/// The log's file name, in `data/state`.
pub(crate) const WAL_FILE: &str = "wal.log";
/// Past this size the writer checkpoints (syncs the object files and empties the log).
pub(crate) const CHECKPOINT_BYTES: u64 = 64 << 20;

/// The open log, owned by the writer thread.
pub(crate) struct Wal {
    file: File,
    path: PathBuf,
    size: u64,
    buf: Vec<u8>,
}

impl Wal {
    /// Opens (creating) the log at `path` for appending.
    pub(crate) fn open(path: &Path) -> io::Result<Wal> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        if let Some(dir) = path.parent() {
            fsync_dir(dir).map_err(|e| io::Error::other(e.to_string()))?;
        }
        Ok(Wal {
            file,
            path: path.to_path_buf(),
            size,
            buf: Vec::new(),
        })
    }

    /// The log's file (to sync the file system it is on).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Bytes in the log since the last checkpoint.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Appends batches (object id, seq, encoded bytes) with one write, then fdatasyncs: once this returns Ok,
    /// every batch given is durable.
    pub(crate) fn append<'a>(
        &mut self,
        batches: impl Iterator<Item = (&'a str, u64, &'a [u8])>,
    ) -> io::Result<()> {
        self.buf.clear();
        for (id, seq, bytes) in batches {
            writeln!(self.buf, "{id}\t{seq}\t{}", bytes.len())?;
            self.buf.extend_from_slice(bytes);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.buf)?;
        self.size += self.buf.len() as u64;
        self.file.sync_data()
    }

    /// Empties the log (after the object files were synced).
    pub(crate) fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.size = 0;
        Ok(())
    }

    /// Where the log is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// One batch read back from the log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LoggedBatch {
    pub(crate) object_id: String,
    pub(crate) seq: u64,
    pub(crate) bytes: Vec<u8>,
}

/// Parses the log's bytes: every complete record, in order. A torn or garbled tail ends the list.
pub(crate) fn parse(bytes: &[u8]) -> Vec<LoggedBatch> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
        let Ok(header) = std::str::from_utf8(&rest[..newline]) else {
            break;
        };
        let mut fields = header.split('\t');
        let (Some(id), Some(seq), Some(len), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            break;
        };
        let (Ok(seq), Ok(len)) = (seq.parse::<u64>(), len.parse::<usize>()) else {
            break;
        };
        let body = &rest[newline + 1..];
        if !is_valid_id(id) || len == 0 || body.len() < len || body[len - 1] != b'\n' {
            break;
        }
        out.push(LoggedBatch {
            object_id: id.to_string(),
            seq,
            bytes: body[..len].to_vec(),
        });
        rest = &body[len..];
    }
    out
}

/// Replays the log at `path` into the object files, then removes it. `applied_seq(id)` opens an object's file
/// (repairing a torn tail) and says the last complete batch it holds, or `None` if the object's state was
/// purged (its directory is gone: its logged batches are dropped); each logged batch after it is appended, in
/// seq order, and the file synced. Batches an object file already has are skipped; a gap is corruption.
pub(crate) fn replay(
    path: &Path,
    mut applied_seq: impl FnMut(&str) -> Result<Option<(u64, PathBuf)>, Error>,
) -> Result<usize, Error> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut bytes).at(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(path, e)),
    };
    let batches = parse(&bytes);
    let mut by_object: HashMap<String, Vec<LoggedBatch>> = HashMap::new();
    for batch in batches {
        by_object
            .entry(batch.object_id.clone())
            .or_default()
            .push(batch);
    }
    let mut replayed = 0;
    for (id, batches) in by_object {
        let Some((mut applied, file_path)) = applied_seq(&id)? else {
            tracing::info!(object_id = %id, "dropping logged batches of a purged object");
            continue;
        };
        let mut file = OpenOptions::new()
            .append(true)
            .open(&file_path)
            .at(&file_path)?;
        let mut appended = false;
        for batch in batches {
            if batch.seq <= applied {
                continue;
            }
            if batch.seq != applied + 1 {
                return Err(Error::corrupt(
                    &file_path,
                    0,
                    format!(
                        "the write-ahead log has batch {} of `{id}` but the file ends at {applied}",
                        batch.seq
                    ),
                ));
            }
            file.write_all(&batch.bytes).at(&file_path)?;
            applied = batch.seq;
            appended = true;
            replayed += 1;
        }
        if appended {
            file.sync_data().at(&file_path)?;
            tracing::warn!(object_id = %id, through_seq = applied, "replayed batches from the write-ahead log");
        }
    }
    std::fs::remove_file(path).at(path)?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stops_at_a_torn_or_garbled_tail() {
        let mut bytes = b"a\t1\t4\nxyz\nb\t7\t2\nq\n".to_vec();
        let good = parse(&bytes);
        assert_eq!(
            good,
            vec![
                LoggedBatch {
                    object_id: "a".into(),
                    seq: 1,
                    bytes: b"xyz\n".to_vec()
                },
                LoggedBatch {
                    object_id: "b".into(),
                    seq: 7,
                    bytes: b"q\n".to_vec()
                },
            ]
        );
        bytes.extend_from_slice(b"a\t2\t10\nshort");
        assert_eq!(parse(&bytes).len(), 2, "a torn record is ignored");
        let zeros = [b"a\t1\t4\nxyz\n".as_slice(), &[0u8; 64]].concat();
        assert_eq!(
            parse(&zeros).len(),
            1,
            "zeros after the last record are ignored"
        );
        assert!(
            parse(b"../x\t1\t2\nq\n").is_empty(),
            "an invalid id ends the log"
        );
    }
}
