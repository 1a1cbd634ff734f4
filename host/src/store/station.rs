//! The station's identity: `data/station.tsv`, created once and read on every start.
//!
//! Header `station_id created_at`, one record. The id (`st-` and 8 random hex digits) names this station to
//! the cluster and seeds its hybrid logical clock's id, so it must stay the same across restarts.

use std::fs;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::Error;
use super::fsutil::{now_ms, write_atomic};
use super::tsv;
use super::vfs::RealFs;

/// The header row of `station.tsv`.
const STATION_HEADER: [&str; 2] = ["station_id", "created_at"];

/// This station's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Station {
    /// Stable station id, e.g. `st-1a2b3c4d`.
    pub(crate) id: String,
    /// When the data directory was first opened (Unix ms).
    pub(crate) created_at: u64,
}

/// Reads `data_dir/station.tsv`, creating it with a fresh random id if it does not exist.
pub(crate) fn load_or_create(data_dir: &Path) -> Result<Station, Error> {
    let path = data_dir.join("station.tsv");
    match fs::read(&path) {
        Ok(bytes) => parse(&path, &bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let station = Station {
                id: format!("st-{:08x}", rand::random::<u32>()),
                created_at: now_ms(),
            };
            let mut out = tsv::header_line(&STATION_HEADER);
            tsv::encode_record(
                &mut out,
                [station.id.as_str(), &station.created_at.to_string()],
            );
            write_atomic(&RealFs, &path, &out)?;
            tracing::info!(station_id = %station.id, path = %path.display(), "created a new station identity");
            Ok(station)
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Station, Error> {
    let mut rdr = tsv::reader(bytes);
    let mut rec = csv::ByteRecord::new();
    let mut next = |rec: &mut csv::ByteRecord| {
        rdr.read_byte_record(rec)
            .map_err(|e| Error::io(path, tsv::to_io(e)))
    };
    if !next(&mut rec)? || rec.len() < 2 || rec[0] != *b"station_id" || rec[1] != *b"created_at" {
        return Err(Error::corrupt(
            path,
            1,
            "missing header `station_id\\tcreated_at`",
        ));
    }
    if !next(&mut rec)? {
        return Err(Error::corrupt(path, 2, "no station record"));
    }
    let id = tsv::field_str(&rec, 0, "station_id").map_err(|r| Error::corrupt(path, 2, r))?;
    if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::corrupt(
            path,
            2,
            format!("unusable station id {id:?}"),
        ));
    }
    let created_at =
        tsv::field_u64(&rec, 1, "created_at").map_err(|r| Error::corrupt(path, 2, r))?;
    Ok(Station { id, created_at })
}

/// The hybrid-logical-clock id derived from a station id (the first 16 bytes of its SHA-256), so the clock's
/// tie-breaker is stable across restarts.
pub(crate) fn hlc_id(station_id: &str) -> uhlc::ID {
    let digest = Sha256::digest(station_id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uhlc::ID::try_from(bytes).unwrap_or_else(|_| uhlc::ID::rand())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn station_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        assert!(a.id.starts_with("st-") && a.id.len() == 11, "{}", a.id);
        assert!(a.id[3..].chars().all(|c| c.is_ascii_hexdigit()));
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a, b);
        let text = fs::read_to_string(dir.path().join("station.tsv")).unwrap();
        assert_eq!(
            text,
            format!("station_id\tcreated_at\n{}\t{}\n", a.id, a.created_at)
        );
        assert_eq!(hlc_id(&a.id), hlc_id(&b.id));
    }

    #[test]
    fn a_damaged_station_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("station.tsv"), "station_id\tcreated_at\n").unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(Error::Corrupt { line: 2, .. })
        ));
        fs::write(dir.path().join("station.tsv"), "").unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(Error::Corrupt { line: 1, .. })
        ));
    }
}
