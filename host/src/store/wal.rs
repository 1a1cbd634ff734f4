//! The station-wide write-ahead log, `data/state/wal.log`, used with `--durability fsync`.
//!
//! Each group-commit round of the writer appends every batch of the round to this one file and
//! fdatasyncs it once; only then are the batches acknowledged and written to their object files
//! (`state/{id}/state.tsv`), without a sync. So every byte an object file holds past its last sync
//! is covered by a durable record here, which says where in the object file it goes. At a
//! checkpoint (the log past its size limit, a snapshot install, a purge, shutdown) the object
//! files are synced and the log is emptied. Opening the store replays the log first (see
//! `state/recover.rs`): an object file is cut back to its last proven byte and the logged batches
//! it lacks are appended, so an acknowledged batch is never lost and reordered write-back of the
//! object files never blocks a start.
//!
//! # Format
//!
//! A 16-byte file header: the magic `OPWAL\x02\n\0` and a random 64-bit salt, new at every reset.
//! Then rounds, each a 16-byte header — its number (u64, from 1), its payload length (u32) and a
//! CRC-32 (u32) of the salt, the number, the length and the payload, all little-endian — and the
//! payload: per batch a line `{object_id}\t{seq}\t{offset}\t{length}\n` and `length` bytes, the
//! batch exactly as it goes into the object's file at `offset` (records and commit line).
//!
//! A round is written whole and synced before the next one starts, so only the last round can be
//! torn by a crash (or by a failed write, after which the store accepts no more writes). A round
//! that does not check out *followed by* a round that does is damage, not a tear: the store
//! refuses to open and names the offset (see `host repair`). The salt keeps bytes an object wrote
//! into its state, copied into the log, from passing for a round.
//!
//! Logs written before this format (no header; per batch `{object_id}\t{seq}\t{length}\n` and the
//! bytes) are still read: a torn or garbled tail ends them.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::fsutil::is_valid_id;
use super::vfs::{Fs, OpenMode, VFile};

/// The log's file name, in `data/state`.
pub(crate) const WAL_FILE: &str = "wal.log";
/// The log's default size limit: past it the writer checkpoints.
pub(crate) const CHECKPOINT_BYTES: u64 = 64 << 20;
/// The file header's magic.
const MAGIC: &[u8; 8] = b"OPWAL\x02\n\0";
/// File header: magic and salt.
const FILE_HEADER: usize = 16;
/// Round header: number, length, checksum.
const ROUND_HEADER: usize = 16;
/// A round's payload at most (a round is bounded far below this by the writer).
const MAX_ROUND: usize = u32::MAX as usize;

/// The open log, owned by the writer thread.
pub(crate) struct Wal {
    file: Box<dyn VFile>,
    path: PathBuf,
    salt: u64,
    /// The next round's number.
    next_round: u64,
    /// Bytes in the file.
    size: u64,
    buf: Vec<u8>,
    /// Set by a failed write or sync: the log's tail is unknown, nothing more is appended.
    broken: Option<String>,
}

/// One batch going into the log.
pub(crate) struct LogEntry<'a> {
    /// Its object.
    pub(crate) object_id: &'a str,
    /// Its seq.
    pub(crate) seq: u64,
    /// Where its bytes go in the object's file.
    pub(crate) offset: u64,
    /// The bytes.
    pub(crate) bytes: &'a [u8],
}

impl Wal {
    /// Creates the log at `path` empty (replacing what was there, which the caller replayed) and
    /// makes it durable.
    pub(crate) fn create(fs: &Fs, path: &Path) -> io::Result<Wal> {
        let file = fs.open(path, OpenMode::AppendCreate)?;
        let mut wal = Wal {
            file,
            path: path.to_path_buf(),
            salt: 0,
            next_round: 1,
            size: 0,
            buf: Vec::new(),
            broken: None,
        };
        wal.reset()?;
        if let Some(dir) = path.parent() {
            fs.sync_dir(dir)?;
        }
        Ok(wal)
    }

    /// Bytes in the log since the last checkpoint.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// True if the log holds no round (nothing to checkpoint).
    pub(crate) fn is_empty(&self) -> bool {
        self.size <= FILE_HEADER as u64
    }

    /// Where the log is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one round holding `batches` with one write, then fdatasyncs: once this returns
    /// Ok, every batch given is durable. After an error the log refuses every later append.
    pub(crate) fn append<'a>(
        &mut self,
        batches: impl Iterator<Item = LogEntry<'a>>,
    ) -> io::Result<()> {
        if let Some(why) = &self.broken {
            return Err(io::Error::other(why.clone()));
        }
        self.buf.clear();
        self.buf.resize(ROUND_HEADER, 0);
        for b in batches {
            writeln!(
                self.buf,
                "{}\t{}\t{}\t{}",
                b.object_id,
                b.seq,
                b.offset,
                b.bytes.len()
            )?;
            self.buf.extend_from_slice(b.bytes);
        }
        let payload = self.buf.len() - ROUND_HEADER;
        if payload == 0 {
            return Ok(());
        }
        if payload > MAX_ROUND {
            return Err(io::Error::other("a write-ahead log round over 4 GiB"));
        }
        let header = round_header(self.salt, self.next_round, &self.buf[ROUND_HEADER..]);
        self.buf[..ROUND_HEADER].copy_from_slice(&header);
        let written = self
            .file
            .write_all(&self.buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = &written {
            self.broken = Some(format!(
                "an earlier append to {} failed: {e}",
                self.path.display()
            ));
        } else {
            self.size += self.buf.len() as u64;
            self.next_round += 1;
        }
        written
    }

    /// Empties the log (after the object files were synced): a new header with a new salt.
    pub(crate) fn reset(&mut self) -> io::Result<()> {
        if let Some(why) = &self.broken {
            return Err(io::Error::other(why.clone()));
        }
        let salt: u64 = rand::random();
        let mut header = [0u8; FILE_HEADER];
        header[..8].copy_from_slice(MAGIC);
        header[8..].copy_from_slice(&salt.to_le_bytes());
        let done = self
            .file
            .set_len(0)
            .and_then(|()| self.file.write_all(&header))
            .and_then(|()| self.file.sync_data());
        match done {
            Ok(()) => {
                self.salt = salt;
                self.next_round = 1;
                self.size = FILE_HEADER as u64;
                Ok(())
            }
            Err(e) => {
                self.broken = Some(format!("emptying {} failed: {e}", self.path.display()));
                Err(e)
            }
        }
    }
}

/// A round's header: number, payload length, checksum.
fn round_header(salt: u64, number: u64, payload: &[u8]) -> [u8; ROUND_HEADER] {
    let len = payload.len() as u32;
    let mut header = [0u8; ROUND_HEADER];
    header[..8].copy_from_slice(&number.to_le_bytes());
    header[8..12].copy_from_slice(&len.to_le_bytes());
    header[12..].copy_from_slice(&checksum(salt, number, len, payload).to_le_bytes());
    header
}

fn checksum(salt: u64, number: u64, len: u32, payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&salt.to_le_bytes());
    crc.update(&number.to_le_bytes());
    crc.update(&len.to_le_bytes());
    crc.update(payload);
    crc.finalize()
}

/// One batch read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoggedBatch {
    /// Its object.
    pub(crate) object_id: String,
    /// Its seq.
    pub(crate) seq: u64,
    /// Where its bytes go in the object's file (`None` in logs older than offsets).
    pub(crate) offset: Option<u64>,
    /// The batch as in the object's file.
    pub(crate) bytes: Vec<u8>,
}

/// The log as read back.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Contents {
    /// Every batch of every intact round, in log order.
    pub(crate) batches: Vec<LoggedBatch>,
    /// Where a torn last round starts, if there is one (it was never acknowledged).
    pub(crate) torn_at: Option<u64>,
}

/// Damage in the log that a crash cannot explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Byte offset of the first bad round.
    pub(crate) offset: u64,
    /// What is wrong.
    pub(crate) reason: String,
}

/// Reads the log's bytes. A torn last round is reported in [`Contents::torn_at`] and ignored; a
/// bad round followed by a good one, or a good round whose payload does not parse, is [`Damage`].
pub(crate) fn read(bytes: &[u8]) -> Result<Contents, Damage> {
    if bytes.is_empty() || (bytes.len() < FILE_HEADER && MAGIC.starts_with(bytes)) {
        return Ok(Contents::default());
    }
    if !bytes.starts_with(MAGIC) {
        if bytes.len() < FILE_HEADER && bytes.iter().all(|&b| b == 0) {
            return Ok(Contents::default());
        }
        return Ok(read_legacy(bytes));
    }
    if bytes.len() < FILE_HEADER {
        return Ok(Contents::default());
    }
    let salt = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let mut contents = Contents::default();
    let mut at = FILE_HEADER;
    let mut number = 1;
    while at < bytes.len() {
        match round_at(bytes, at, salt, number) {
            Some(payload) => {
                parse_payload(payload, &mut contents.batches).map_err(|reason| Damage {
                    offset: at as u64,
                    reason: format!("round {number}: {reason}"),
                })?;
                at += ROUND_HEADER + payload.len();
                number += 1;
            }
            None => {
                if let Some(later) = later_round(bytes, at, salt, number) {
                    return Err(Damage {
                        offset: at as u64,
                        reason: format!(
                            "round {number} does not check out but an intact round follows at byte {later}"
                        ),
                    });
                }
                contents.torn_at = Some(at as u64);
                break;
            }
        }
    }
    Ok(contents)
}

/// Every batch of every round that checks out, wherever it is, and the byte ranges that do not:
/// what `host repair` salvages from a damaged log.
pub(crate) fn salvage(bytes: &[u8]) -> (Vec<LoggedBatch>, Vec<(u64, u64)>) {
    if !bytes.starts_with(MAGIC) || bytes.len() < FILE_HEADER {
        let contents = read_legacy(bytes);
        let bad = contents
            .torn_at
            .map(|at| vec![(at, bytes.len() as u64)])
            .unwrap_or_default();
        return (contents.batches, bad);
    }
    let salt = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let (mut batches, mut bad) = (Vec::new(), Vec::new());
    let (mut at, mut number) = (FILE_HEADER, 1);
    let mut bad_from: Option<usize> = None;
    while at < bytes.len() {
        let found = round_at(bytes, at, salt, number).or_else(|| {
            // After damage the next good round may have any later number.
            let later = later_round(bytes, at, salt, number)?;
            bad.push((at as u64, later as u64));
            at = later;
            number = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
            round_at(bytes, at, salt, number)
        });
        let Some(payload) = found else {
            bad_from = Some(at);
            break;
        };
        let mut round = Vec::new();
        if parse_payload(payload, &mut round).is_ok() {
            batches.extend(round);
        } else {
            bad.push((at as u64, (at + ROUND_HEADER + payload.len()) as u64));
        }
        at += ROUND_HEADER + payload.len();
        number += 1;
    }
    if let Some(from) = bad_from {
        bad.push((from as u64, bytes.len() as u64));
    }
    (batches, bad)
}

/// The payload of round `number` at `at`, if a whole round that checks out is there.
fn round_at(bytes: &[u8], at: usize, salt: u64, number: u64) -> Option<&[u8]> {
    let header = bytes.get(at..at + ROUND_HEADER)?;
    let found = u64::from_le_bytes(header[..8].try_into().ok()?);
    let len = u32::from_le_bytes(header[8..12].try_into().ok()?);
    let sum = u32::from_le_bytes(header[12..16].try_into().ok()?);
    if found != number || len == 0 {
        return None;
    }
    let payload = bytes.get(at + ROUND_HEADER..at + ROUND_HEADER + len as usize)?;
    (checksum(salt, number, len, payload) == sum).then_some(payload)
}

/// The offset of an intact round numbered after `number` somewhere past `at`, if there is one.
fn later_round(bytes: &[u8], at: usize, salt: u64, number: u64) -> Option<usize> {
    (at + 1..bytes.len().saturating_sub(ROUND_HEADER - 1)).find(|&p| {
        let found = u64::from_le_bytes(bytes[p..p + 8].try_into().expect("8 bytes"));
        // Cheap filters first: a plausible number and length.
        found > number && found < number + (1 << 32) && round_at(bytes, p, salt, found).is_some()
    })
}

/// Parses a round's payload into `out`.
fn parse_payload(mut rest: &[u8], out: &mut Vec<LoggedBatch>) -> Result<(), String> {
    while !rest.is_empty() {
        let newline = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("a batch header without its newline")?;
        let header = std::str::from_utf8(&rest[..newline])
            .map_err(|_| "a batch header that is not UTF-8")?;
        let fields: Vec<&str> = header.split('\t').collect();
        let [id, seq, offset, len] = fields[..] else {
            return Err(format!("a batch header with {} fields", fields.len()));
        };
        let (Ok(seq), Ok(offset), Ok(len)) = (
            seq.parse::<u64>(),
            offset.parse::<u64>(),
            len.parse::<usize>(),
        ) else {
            return Err(format!("a bad batch header {header:?}"));
        };
        let body = &rest[newline + 1..];
        if !is_valid_id(id) || seq == 0 || len == 0 || body.len() < len || body[len - 1] != b'\n' {
            return Err(format!("a bad batch {header:?}"));
        }
        out.push(LoggedBatch {
            object_id: id.to_string(),
            seq,
            offset: Some(offset),
            bytes: body[..len].to_vec(),
        });
        rest = &body[len..];
    }
    Ok(())
}

/// Reads a log of the format before rounds: every complete record, in order; a torn or garbled
/// tail ends it.
fn read_legacy(bytes: &[u8]) -> Contents {
    let mut contents = Contents::default();
    let mut rest = bytes;
    while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
        let Some(batch) = legacy_record(&rest[..newline], &rest[newline + 1..]) else {
            break;
        };
        rest = &rest[newline + 1 + batch.bytes.len()..];
        contents.batches.push(batch);
    }
    if !rest.is_empty() {
        contents.torn_at = Some((bytes.len() - rest.len()) as u64);
    }
    contents
}

fn legacy_record(header: &[u8], body: &[u8]) -> Option<LoggedBatch> {
    let header = std::str::from_utf8(header).ok()?;
    let mut fields = header.split('\t');
    let (Some(id), Some(seq), Some(len), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return None;
    };
    let (seq, len) = (seq.parse::<u64>().ok()?, len.parse::<usize>().ok()?);
    if !is_valid_id(id) || len == 0 || body.len() < len || body[len - 1] != b'\n' {
        return None;
    }
    Some(LoggedBatch {
        object_id: id.to_string(),
        seq,
        offset: None,
        bytes: body[..len].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::vfs::sim::SimFs;
    use std::sync::Arc;

    fn entry<'a>(id: &'a str, seq: u64, offset: u64, bytes: &'a [u8]) -> LogEntry<'a> {
        LogEntry {
            object_id: id,
            seq,
            offset,
            bytes,
        }
    }

    /// A log with three rounds, as bytes.
    fn three_rounds() -> Vec<u8> {
        let fs = Fs(Arc::new(SimFs::new()));
        fs.create_dir_all(Path::new("/s")).unwrap();
        let path = Path::new("/s/wal.log");
        let mut wal = Wal::create(&fs, path).unwrap();
        wal.append([entry("a", 1, 30, b"one\n"), entry("b", 1, 30, b"uno\n")].into_iter())
            .unwrap();
        wal.append([entry("a", 2, 34, b"two\n")].into_iter())
            .unwrap();
        wal.append([entry("a", 3, 38, b"three\n")].into_iter())
            .unwrap();
        fs.read(path).unwrap()
    }

    #[test]
    fn rounds_read_back_in_order_with_their_offsets() {
        let contents = read(&three_rounds()).unwrap();
        let got: Vec<(&str, u64, Option<u64>, &[u8])> = contents
            .batches
            .iter()
            .map(|b| (b.object_id.as_str(), b.seq, b.offset, b.bytes.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", 1, Some(30), b"one\n".as_slice()),
                ("b", 1, Some(30), b"uno\n".as_slice()),
                ("a", 2, Some(34), b"two\n".as_slice()),
                ("a", 3, Some(38), b"three\n".as_slice()),
            ]
        );
        assert_eq!(contents.torn_at, None);
    }

    #[test]
    fn a_torn_last_round_is_ignored_wherever_it_is_cut_or_zeroed() {
        let bytes = three_rounds();
        let full = read(&bytes).unwrap().batches;
        let last_start = {
            let mut cut = bytes.clone();
            cut.truncate(bytes.len() - 1);
            read(&cut).unwrap().torn_at.unwrap() as usize
        };
        for cut in last_start..bytes.len() {
            let contents = read(&bytes[..cut]).unwrap();
            assert_eq!(contents.batches, full[..3], "cut at {cut}");
            let mut zeroed = bytes.clone();
            zeroed[cut..].fill(0);
            assert_eq!(
                read(&zeroed).unwrap().batches,
                full[..3],
                "zeroed from {cut}"
            );
        }
    }

    #[test]
    fn a_bad_round_before_a_good_one_is_damage_not_a_tear() {
        let mut bytes = three_rounds();
        // Flip one byte of the second round's payload.
        let second = FILE_HEADER
            + ROUND_HEADER
            + u32::from_le_bytes(bytes[FILE_HEADER + 8..FILE_HEADER + 12].try_into().unwrap())
                as usize;
        bytes[second + ROUND_HEADER + 3] ^= 1;
        let damage = read(&bytes).unwrap_err();
        assert_eq!(damage.offset, second as u64);
        assert!(damage.reason.contains("round 2"), "{}", damage.reason);
        let (salvaged, bad) = salvage(&bytes);
        let seqs: Vec<(String, u64)> = salvaged.into_iter().map(|b| (b.object_id, b.seq)).collect();
        assert_eq!(
            seqs,
            vec![("a".into(), 1), ("b".into(), 1), ("a".into(), 3)]
        );
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, second as u64);
    }

    #[test]
    fn a_round_copied_into_a_value_does_not_pass_for_one() {
        // A batch whose bytes embed a well-formed round of another log (another salt).
        let foreign = three_rounds();
        let mut bytes = three_rounds();
        let salt = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
        let mut value = foreign[FILE_HEADER..].to_vec();
        value.push(b'\n');
        let mut payload = format!("a\t4\t44\t{}\n", value.len()).into_bytes();
        payload.extend_from_slice(&value);
        let header = round_header(salt, 4, &payload);
        // Torn: only the header and half the payload reach the disk.
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&payload[..payload.len() / 2]);
        let contents = read(&bytes).unwrap();
        assert_eq!(contents.batches.len(), 4);
        assert!(contents.torn_at.is_some());
    }

    #[test]
    fn logs_of_the_format_before_rounds_still_read() {
        let mut bytes = b"a\t1\t4\nxyz\nb\t7\t2\nq\n".to_vec();
        let contents = read(&bytes).unwrap();
        assert_eq!(contents.batches.len(), 2);
        assert_eq!(contents.batches[1].seq, 7);
        assert_eq!(contents.batches[1].offset, None);
        bytes.extend_from_slice(b"a\t2\t10\nshort");
        let contents = read(&bytes).unwrap();
        assert_eq!(contents.batches.len(), 2, "a torn record is ignored");
        assert!(contents.torn_at.is_some());
    }

    #[test]
    fn a_failed_append_breaks_the_log_for_good() {
        use crate::store::vfs::sim::{Fault, FaultOp};
        let sim = SimFs::new();
        let fs = Fs(Arc::new(sim.clone()));
        fs.create_dir_all(Path::new("/s")).unwrap();
        let mut wal = Wal::create(&fs, Path::new("/s/wal.log")).unwrap();
        sim.inject(Fault {
            op: FaultOp::Write { keep: 10 },
            path: "wal.log".into(),
            skip: 0,
            errno: libc::ENOSPC,
        });
        assert!(
            wal.append([entry("a", 1, 30, b"one\n")].into_iter())
                .is_err()
        );
        let later = wal.append([entry("a", 2, 34, b"two\n")].into_iter());
        assert!(later.unwrap_err().to_string().contains("earlier append"));
        assert!(wal.reset().is_err());
        let contents = read(&fs.read(Path::new("/s/wal.log")).unwrap()).unwrap();
        assert!(contents.batches.is_empty());
        assert_eq!(contents.torn_at, Some(FILE_HEADER as u64));
    }
}
