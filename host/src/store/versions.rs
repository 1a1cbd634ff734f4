//! Deployed versions: `data/objects/{id}/versions.tsv` (header `version sha256 size deployed_at deployed_by
//! note quota`; files written before the quota column have six columns and still read) and every version's bytes in `data/objects/{id}/v{N}.wasm`; and the object's placement as this
//! station last knew it, `data/objects/{id}/placement.tsv` (header `epoch role home`, one line, replaced
//! atomically).
//!
//! Versions are never rewritten: a rollback is a new version with old bytes (the caller reads them with
//! [`VersionStore::read_bytes`] and adds them), and undeploying writes an `undeployed` marker so numbering
//! continues on a later deploy. The bytes are written atomically before their line is appended, so a listed
//! version always has its bytes. Compiling, validating and the "unchanged" check belong to the caller.
//!
//! Versions received from another station ([`VersionStore::install`]) keep their number and metadata and may
//! arrive out of order, so lines of `versions.tsv` are not necessarily in number order: readers sort them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::error::{Error, IoContext};
use super::fsutil::{check_id, create_dir_durable, fsync_dir, is_valid_id, now_ms, write_atomic};
use super::tsv;
use super::vfs::RealFs;

/// The header row of `versions.tsv`.
const VERSIONS_HEADER: [&str; 7] = [
    "version",
    "sha256",
    "size",
    "deployed_at",
    "deployed_by",
    "note",
    "quota",
];
/// Columns of a `versions.tsv` written before the quota column (its lines have no quota).
const OLD_VERSIONS_COLUMNS: usize = 6;
/// The marker file of an undeployed object.
const UNDEPLOYED: &str = "undeployed";
/// The marker file of an object deployed stateless (no state; runs on any station holding its code).
const STATELESS: &str = "stateless";
/// The header row of `placement.tsv`.
const PLACEMENT_HEADER: [&str; 3] = ["epoch", "role", "home"];
/// The placement file's name.
const PLACEMENT: &str = "placement.tsv";

/// The placement of an object as this station last knew it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    /// The placement epoch (raised by each migration or failover).
    pub epoch: u64,
    /// Whether this station homes the object or holds a replica.
    pub role: Role,
    /// The id of the home station.
    pub home: String,
}

impl Placement {
    /// This station homes the object at `epoch` (`station` is this station's id).
    pub fn home(epoch: u64, station: impl Into<String>) -> Placement {
        Placement {
            epoch,
            role: Role::Home,
            home: station.into(),
        }
    }

    /// This station keeps a replica for `home` at `epoch`.
    pub fn replica_of(home: impl Into<String>, epoch: u64) -> Placement {
        Placement {
            epoch,
            role: Role::Replica,
            home: home.into(),
        }
    }
}

/// This station's role for an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// This station serves the object's calls and commits its writes.
    Home,
    /// This station applies batches replicated from the home.
    Replica,
}

impl Role {
    /// `home` or `replica`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Home => "home",
            Role::Replica => "replica",
        }
    }
}

/// One deployed version of an object.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VersionRecord {
    /// Its number, from 1.
    pub version: u32,
    /// SHA-256 of the component bytes, lower-case hex.
    pub sha256: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// When it was deployed (Unix ms).
    pub deployed_at: u64,
    /// Who deployed it (free text from the caller).
    pub deployed_by: String,
    /// A note from the caller (e.g. "rollback to 3").
    pub note: String,
    /// The object's quota overrides from this deploy on, in the station's quota syntax (empty:
    /// the station defaults). The store keeps the text; the station gives it meaning.
    #[serde(default)]
    pub quota: String,
}

/// The deployed versions of every object. Cheap to clone.
#[derive(Clone)]
pub struct VersionStore {
    /// `data/objects`.
    dir: PathBuf,
    /// Serialises `add` and `undeploy` (deploys are rare; numbering must not race).
    write: Arc<Mutex<()>>,
}

/// The parsed `versions.tsv`.
struct Parsed {
    records: Vec<VersionRecord>,
    /// End of the last valid line; a torn line after it is cut off by the next `add`.
    valid_end: u64,
    len: u64,
}

impl VersionStore {
    /// The versions kept under `dir` (`data/objects`).
    pub(crate) fn new(dir: PathBuf) -> VersionStore {
        VersionStore {
            dir,
            write: Arc::new(Mutex::new(())),
        }
    }

    /// Every version of the object, by number (oldest first); empty if it was never deployed.
    pub fn list(&self, object_id: &str) -> Result<Vec<VersionRecord>, Error> {
        check_id(object_id)?;
        Ok(self
            .parse(object_id)?
            .map(|p| p.records)
            .unwrap_or_default())
    }

    /// The current (highest-numbered) version; `None` if never deployed or undeployed.
    pub fn current(&self, object_id: &str) -> Result<Option<VersionRecord>, Error> {
        check_id(object_id)?;
        if self.object_dir(object_id).join(UNDEPLOYED).exists() {
            return Ok(None);
        }
        Ok(self.list(object_id)?.pop())
    }

    /// Records a new version: the next number, its bytes in `v{N}.wasm` (temp file, fsync, rename, directory
    /// fsync), then its line in `versions.tsv` (append, fsync). Clears an `undeployed` marker.
    pub fn add(
        &self,
        object_id: &str,
        bytes: &[u8],
        deployed_by: &str,
        note: &str,
    ) -> Result<VersionRecord, Error> {
        self.add_after(object_id, bytes, deployed_by, note, "", 0)
    }

    /// [`VersionStore::add`], numbering the new version above `after` as well as above every version held:
    /// a stateless object's versions continue the cluster's numbering, not only this station's.
    pub fn add_after(
        &self,
        object_id: &str,
        bytes: &[u8],
        deployed_by: &str,
        note: &str,
        quota: &str,
        after: u32,
    ) -> Result<VersionRecord, Error> {
        check_id(object_id)?;
        let _write = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.object_dir(object_id);
        create_dir_durable(&RealFs, &dir)?;
        let parsed = self.parse(object_id)?;
        let last = parsed
            .as_ref()
            .and_then(|p| p.records.last())
            .map_or(0, |r| r.version)
            .max(after);
        let record = VersionRecord {
            version: last + 1,
            sha256: hex::encode(Sha256::digest(bytes)),
            size: bytes.len() as u64,
            deployed_at: now_ms(),
            deployed_by: deployed_by.to_string(),
            note: note.to_string(),
            quota: quota.to_string(),
        };
        write_atomic(&RealFs, &self.wasm_path(object_id, record.version), bytes)?;
        self.append_record(&dir, parsed.as_ref(), &record)?;
        self.clear_undeployed(&dir)?;
        Ok(record)
    }

    /// Installs a version received from another station, with its number and metadata unchanged: its bytes in
    /// `v{N}.wasm` (atomically), then its line in `versions.tsv`. Versions may arrive in any order; a version
    /// numbered above every version held clears an `undeployed` marker (as a deploy does).
    ///
    /// Idempotent: if the number is already held with the same sha256, nothing changes (missing bytes are
    /// rewritten). [`Error::Conflict`] if it is held with another sha256; [`Error::Invalid`] if `bytes` do not
    /// match the record's sha256 and size, or the number is 0.
    pub fn install(
        &self,
        object_id: &str,
        record: &VersionRecord,
        bytes: &[u8],
    ) -> Result<(), Error> {
        check_id(object_id)?;
        let invalid = |reason: String| Error::Invalid {
            object_id: object_id.to_string(),
            reason,
        };
        if record.version == 0 {
            return Err(invalid("version 0 (versions start at 1)".into()));
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        if sha256 != record.sha256 || bytes.len() as u64 != record.size {
            return Err(invalid(format!(
                "version {} bytes have sha256 {sha256} and size {}, the record says {} and {}",
                record.version,
                bytes.len(),
                record.sha256,
                record.size
            )));
        }
        let _write = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.object_dir(object_id);
        create_dir_durable(&RealFs, &dir)?;
        let parsed = self.parse(object_id)?;
        let held = parsed.as_ref().map_or(&[][..], |p| &p.records[..]);
        let wasm = self.wasm_path(object_id, record.version);
        if let Some(existing) = held.iter().find(|r| r.version == record.version) {
            if existing.sha256 != record.sha256 {
                return Err(Error::Conflict {
                    object_id: object_id.to_string(),
                    version: record.version,
                });
            }
            if !wasm.exists() {
                tracing::warn!(
                    object_id,
                    version = record.version,
                    "rewriting the missing bytes of a version"
                );
                write_atomic(&RealFs, &wasm, bytes)?;
            }
            return Ok(());
        }
        let newest = held.last().is_none_or(|r| r.version < record.version);
        write_atomic(&RealFs, &wasm, bytes)?;
        self.append_record(&dir, parsed.as_ref(), record)?;
        if newest {
            self.clear_undeployed(&dir)?;
        }
        Ok(())
    }

    /// The object's placement as this station last knew it (`placement.tsv`); `None` if never set.
    pub fn placement(&self, object_id: &str) -> Result<Option<Placement>, Error> {
        check_id(object_id)?;
        let path = self.object_dir(object_id).join(PLACEMENT);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        parse_placement(&bytes)
            .map(Some)
            .map_err(|(line, reason)| Error::corrupt(&path, line, reason))
    }

    /// Persists the object's placement (temp file, fsync, rename, directory fsync), creating the object's
    /// directory if needed.
    pub fn set_placement(&self, object_id: &str, placement: &Placement) -> Result<(), Error> {
        check_id(object_id)?;
        let dir = self.object_dir(object_id);
        create_dir_durable(&RealFs, &dir)?;
        let mut bytes = tsv::header_line(&PLACEMENT_HEADER);
        tsv::encode_record(
            &mut bytes,
            [
                placement.epoch.to_string().as_str(),
                placement.role.as_str(),
                &placement.home,
            ],
        );
        // Serialised with deploys so two writers cannot share the temp file.
        let _write = self.write.lock().unwrap_or_else(|e| e.into_inner());
        write_atomic(&RealFs, &dir.join(PLACEMENT), &bytes)
    }

    /// The ids with any data under `objects/` (deployed, undeployed, or only a placement or replica versions),
    /// sorted.
    pub fn known_ids(&self) -> Result<Vec<String>, Error> {
        let mut ids = Vec::new();
        for (id, dir) in self.listed_ids()? {
            if !dir.is_dir() {
                continue;
            }
            let has_data = fs::read_dir(&dir)
                .at(&dir)?
                .any(|f| f.is_ok_and(|f| !f.file_name().to_string_lossy().ends_with(".tmp")));
            if has_data {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Appends a version's line to `versions.tsv` (and fsyncs it), writing the header if the file has none and
    /// cutting off a torn last line first.
    fn append_record(
        &self,
        dir: &Path,
        parsed: Option<&Parsed>,
        record: &VersionRecord,
    ) -> Result<(), Error> {
        let path = dir.join("versions.tsv");
        let new_file = parsed.is_none();
        // No complete header (a new file, or one torn before its header's end): write one.
        let mut line = if parsed.is_none_or(|p| p.valid_end == 0) {
            tsv::header_line(&VERSIONS_HEADER)
        } else {
            Vec::new()
        };
        tsv::encode_record(
            &mut line,
            [
                record.version.to_string().as_str(),
                &record.sha256,
                &record.size.to_string(),
                &record.deployed_at.to_string(),
                &record.deployed_by,
                &record.note,
                &record.quota,
            ],
        );
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .at(&path)?;
        if let Some(p) = parsed
            && p.valid_end < p.len
        {
            tracing::warn!(path = %path.display(), dropped_bytes = p.len - p.valid_end, "cutting a torn line off versions.tsv");
            file.set_len(p.valid_end).at(&path)?;
        }
        file.write_all(&line).at(&path)?;
        file.sync_data().at(&path)?;
        if new_file {
            fsync_dir(&RealFs, dir)?;
        }
        Ok(())
    }

    /// Whether the object is deployed stateless (its `stateless` marker exists).
    pub fn is_stateless(&self, object_id: &str) -> bool {
        is_valid_id(object_id) && self.object_dir(object_id).join(STATELESS).exists()
    }

    /// Marks the object stateless or stateful (writes or removes the `stateless` marker durably).
    pub fn set_stateless(&self, object_id: &str, stateless: bool) -> Result<(), Error> {
        check_id(object_id)?;
        let dir = self.object_dir(object_id);
        let marker = dir.join(STATELESS);
        match (stateless, marker.exists()) {
            (true, false) => {
                create_dir_durable(&RealFs, &dir)?;
                write_atomic(&RealFs, &marker, b"stateless\n")
            }
            (false, true) => {
                fs::remove_file(&marker).at(&marker)?;
                fsync_dir(&RealFs, &dir)
            }
            _ => Ok(()),
        }
    }

    /// The highest version number ever held for the object, deployed or not (0 if none).
    pub fn last_version(&self, object_id: &str) -> Result<u32, Error> {
        check_id(object_id)?;
        Ok(self
            .parse(object_id)?
            .and_then(|p| p.records.iter().map(|r| r.version).max())
            .unwrap_or(0))
    }

    /// Removes the `undeployed` marker, if any.
    fn clear_undeployed(&self, dir: &Path) -> Result<(), Error> {
        let marker = dir.join(UNDEPLOYED);
        if marker.exists() {
            fs::remove_file(&marker).at(&marker)?;
            fsync_dir(&RealFs, dir)?;
        }
        Ok(())
    }

    /// The bytes of one version; [`Error::VersionNotFound`] if the object has no such version (or no versions).
    pub fn read_bytes(&self, object_id: &str, version: u32) -> Result<Vec<u8>, Error> {
        check_id(object_id)?;
        let not_found = || Error::VersionNotFound {
            object_id: object_id.to_string(),
            version,
        };
        if !self.list(object_id)?.iter().any(|r| r.version == version) {
            return Err(not_found());
        }
        let path = self.wasm_path(object_id, version);
        fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                not_found()
            } else {
                Error::io(&path, e)
            }
        })
    }

    /// Where version `version`'s bytes are (`data/objects/{id}/v{N}.wasm`), whether or not it exists.
    pub fn wasm_path(&self, object_id: &str, version: u32) -> PathBuf {
        debug_assert!(
            is_valid_id(object_id),
            "object id {object_id:?} reached the store unvalidated"
        );
        self.object_dir(object_id).join(format!("v{version}.wasm"))
    }

    /// Every entry under `objects/` whose name is a valid object id, with its path (unsorted).
    fn listed_ids(&self) -> Result<Vec<(String, PathBuf)>, Error> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.at(&self.dir)?;
            if let Some(id) = entry.file_name().to_str().filter(|id| is_valid_id(id)) {
                ids.push((id.to_string(), entry.path()));
            }
        }
        Ok(ids)
    }

    /// The ids of the objects that have a current version and are not undeployed, sorted.
    pub fn deployed_ids(&self) -> Result<Vec<String>, Error> {
        let mut ids = Vec::new();
        for (id, dir) in self.listed_ids()? {
            if dir.join(UNDEPLOYED).exists() {
                continue;
            }
            if self.parse(&id)?.is_some_and(|p| !p.records.is_empty()) {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Undeploys the object: writes the `undeployed` marker (versions are kept so numbering continues), or with
    /// `purge` removes `data/objects/{id}` entirely. State and logs are the caller's to purge
    /// ([`super::Store::purge_state`], [`super::LogStore::purge`]).
    ///
    /// [`Error::NotFound`] if there is nothing to undeploy (never deployed, or already undeployed and not
    /// `purge`).
    pub fn undeploy(&self, object_id: &str, purge: bool) -> Result<(), Error> {
        check_id(object_id)?;
        let _write = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.object_dir(object_id);
        let not_found = || Error::NotFound {
            object_id: object_id.to_string(),
        };
        if !dir.is_dir() {
            return Err(not_found());
        }
        if purge {
            fs::remove_dir_all(&dir).at(&dir)?;
            return fsync_dir(&RealFs, &self.dir);
        }
        let marker = dir.join(UNDEPLOYED);
        if marker.exists() || self.parse(object_id)?.is_none_or(|p| p.records.is_empty()) {
            return Err(not_found());
        }
        write_atomic(&RealFs, &marker, format!("{}\n", now_ms()).as_bytes())
    }

    fn object_dir(&self, object_id: &str) -> PathBuf {
        self.dir.join(object_id)
    }

    /// Reads `versions.tsv`; `None` if it does not exist. A bad line followed by good ones is corruption; bad
    /// lines at the end are a torn append and are ignored.
    fn parse(&self, object_id: &str) -> Result<Option<Parsed>, Error> {
        let path = self.object_dir(object_id).join("versions.tsv");
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).at(&path)?;
        parse_versions(&path, &bytes).map(Some)
    }
}

fn parse_versions(path: &Path, bytes: &[u8]) -> Result<Parsed, Error> {
    let mut rdr = tsv::reader(bytes);
    let mut rec = csv::ByteRecord::new();
    let mut records = Vec::new();
    let mut valid_end = 0;
    let mut bad: Option<(u64, String)> = None;
    let mut first = true;
    loop {
        let line = rdr.position().line();
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                bad.get_or_insert((line, e.to_string()));
                continue;
            }
        }
        let complete = bytes.get(rdr.position().byte() as usize - 1) == Some(&b'\n');
        let parsed = if first {
            first = false;
            let columns = if rec.len() == OLD_VERSIONS_COLUMNS {
                &VERSIONS_HEADER[..OLD_VERSIONS_COLUMNS]
            } else {
                &VERSIONS_HEADER[..]
            };
            if rec.iter().eq(columns.iter().map(|h| h.as_bytes())) {
                Ok(None)
            } else {
                Err("missing header".to_string())
            }
        } else {
            parse_record(&rec).map(Some)
        };
        match parsed {
            Ok(r) if complete => {
                if let Some((line, reason)) = bad.take() {
                    return Err(Error::corrupt(
                        path,
                        line,
                        format!("{reason} (valid lines follow it)"),
                    ));
                }
                records.extend(r);
                valid_end = rdr.position().byte();
            }
            Ok(_) => {
                bad.get_or_insert((line, "line not terminated".into()));
            }
            Err(reason) => {
                bad.get_or_insert((line, reason));
            }
        }
    }
    if let Some((line, reason)) = &bad {
        tracing::warn!(path = %path.display(), line, reason = %reason, "ignoring a torn last line of versions.tsv");
    }
    // Installed versions may have been appended out of order.
    records.sort_by_key(|r| r.version);
    Ok(Parsed {
        records,
        valid_end,
        len: bytes.len() as u64,
    })
}

fn parse_record(rec: &csv::ByteRecord) -> Result<VersionRecord, String> {
    if rec.len() != VERSIONS_HEADER.len() && rec.len() != OLD_VERSIONS_COLUMNS {
        return Err(format!(
            "expected {} fields, found {}",
            VERSIONS_HEADER.len(),
            rec.len()
        ));
    }
    let version = tsv::field_u64(rec, 0, "version")?;
    Ok(VersionRecord {
        version: u32::try_from(version)
            .map_err(|_| format!("version {version} is out of range"))?,
        sha256: tsv::field_str(rec, 1, "sha256")?,
        size: tsv::field_u64(rec, 2, "size")?,
        deployed_at: tsv::field_u64(rec, 3, "deployed_at")?,
        deployed_by: tsv::field_str(rec, 4, "deployed_by")?,
        note: tsv::field_str(rec, 5, "note")?,
        quota: if rec.len() > OLD_VERSIONS_COLUMNS {
            tsv::field_str(rec, 6, "quota")?
        } else {
            String::new()
        },
    })
}

/// Parses `placement.tsv`: the header and one line. Errors are `(line, reason)`.
fn parse_placement(bytes: &[u8]) -> Result<Placement, (u64, String)> {
    let mut rdr = tsv::reader(bytes);
    let mut rec = csv::ByteRecord::new();
    let header_ok = matches!(rdr.read_byte_record(&mut rec), Ok(true))
        && rec.iter().eq(PLACEMENT_HEADER.iter().map(|h| h.as_bytes()));
    if !header_ok {
        return Err((
            1,
            format!("missing header `{}`", PLACEMENT_HEADER.join("\\t")),
        ));
    }
    match rdr.read_byte_record(&mut rec) {
        Ok(true) => {}
        Ok(false) => return Err((2, "no placement line".into())),
        Err(e) => return Err((2, e.to_string())),
    }
    if rec.len() != PLACEMENT_HEADER.len() {
        return Err((2, format!("expected 3 fields, found {}", rec.len())));
    }
    let role = match &rec[1] {
        b"home" => Role::Home,
        b"replica" => Role::Replica,
        other => {
            return Err((
                2,
                format!("unknown role {:?}", String::from_utf8_lossy(other)),
            ));
        }
    };
    Ok(Placement {
        epoch: tsv::field_u64(&rec, 0, "epoch").map_err(|r| (2, r))?,
        role,
        home: tsv::field_str(&rec, 2, "home").map_err(|r| (2, r))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, VersionStore) {
        let dir = tempfile::tempdir().unwrap();
        let vs = VersionStore::new(dir.path().join("objects"));
        (dir, vs)
    }

    #[test]
    fn add_list_read_current() {
        let (_dir, vs) = store();
        assert!(vs.list("app").unwrap().is_empty());
        assert_eq!(vs.current("app").unwrap(), None);
        let v1 = vs.add("app", b"first", "alice", "").unwrap();
        assert_eq!(v1.version, 1);
        assert_eq!(
            v1.sha256,
            "a7937b64b8caa58f03721bb6bacf5c78cb235febe0e70b1b84cd99541461a08e"
        );
        assert_eq!(v1.size, 5);
        let v2 = vs
            .add(
                "app",
                b"second",
                "bob",
                "tab\there, newline\nthere, \"quotes\"",
            )
            .unwrap();
        assert_eq!(v2.version, 2);
        assert_eq!(vs.list("app").unwrap(), vec![v1.clone(), v2.clone()]);
        assert_eq!(vs.current("app").unwrap(), Some(v2.clone()));
        assert_eq!(vs.read_bytes("app", 1).unwrap(), b"first");
        assert_eq!(vs.read_bytes("app", 2).unwrap(), b"second");
        assert!(matches!(
            vs.read_bytes("app", 3),
            Err(Error::VersionNotFound { version: 3, .. })
        ));
        assert!(matches!(
            vs.read_bytes("other", 1),
            Err(Error::VersionNotFound { .. })
        ));
        assert_eq!(fs::read(vs.wasm_path("app", 2)).unwrap(), b"second");
        // A rollback is a new version with old bytes.
        let v3 = vs
            .add(
                "app",
                &vs.read_bytes("app", 1).unwrap(),
                "carol",
                "rollback to 1",
            )
            .unwrap();
        assert_eq!((v3.version, v3.sha256.as_str()), (3, v1.sha256.as_str()));
        let text = fs::read_to_string(vs.dir.join("app/versions.tsv")).unwrap();
        assert!(
            text.starts_with("version\tsha256\tsize\tdeployed_at\tdeployed_by\tnote\tquota\n1\t")
        );
    }

    #[test]
    fn stateless_marker_and_numbering_after_the_cluster() {
        let (_tmp, vs) = store();
        assert!(!vs.is_stateless("web"));
        vs.set_stateless("web", true).unwrap();
        assert!(vs.is_stateless("web"));
        // Numbering continues above the cluster's newest version, and above what is held.
        assert_eq!(
            vs.add_after("web", b"one", "t", "", "", 4).unwrap().version,
            5
        );
        assert_eq!(
            vs.add_after("web", b"two", "t", "", "", 2).unwrap().version,
            6
        );
        assert_eq!(vs.last_version("web").unwrap(), 6);
        vs.undeploy("web", false).unwrap();
        assert_eq!(
            vs.last_version("web").unwrap(),
            6,
            "undeploy keeps numbering"
        );
        vs.set_stateless("web", false).unwrap();
        assert!(!vs.is_stateless("web"));
        assert!(!vs.is_stateless("../x"));
    }

    #[test]
    fn undeploy_keeps_numbering_and_purge_removes_everything() {
        let (_dir, vs) = store();
        vs.add("a", b"1", "", "").unwrap();
        vs.add("b", b"1", "", "").unwrap();
        vs.add("c", b"1", "", "").unwrap();
        assert_eq!(vs.deployed_ids().unwrap(), vec!["a", "b", "c"]);
        vs.undeploy("b", false).unwrap();
        assert_eq!(vs.current("b").unwrap(), None);
        assert_eq!(vs.list("b").unwrap().len(), 1);
        assert_eq!(vs.deployed_ids().unwrap(), vec!["a", "c"]);
        assert!(matches!(
            vs.undeploy("b", false),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            vs.undeploy("zzz", false),
            Err(Error::NotFound { .. })
        ));
        let again = vs.add("b", b"2", "", "").unwrap();
        assert_eq!(again.version, 2);
        assert_eq!(vs.current("b").unwrap(), Some(again));
        assert_eq!(vs.deployed_ids().unwrap(), vec!["a", "b", "c"]);
        vs.undeploy("c", true).unwrap();
        assert!(!vs.dir.join("c").exists());
        assert!(vs.list("c").unwrap().is_empty());
        assert_eq!(vs.add("c", b"x", "", "").unwrap().version, 1);
    }

    #[test]
    fn torn_last_line_is_ignored_then_cut_but_garbage_in_the_middle_is_corrupt() {
        let (_dir, vs) = store();
        vs.add("t", b"1", "", "").unwrap();
        vs.add("t", b"2", "", "").unwrap();
        let path = vs.dir.join("t/versions.tsv");
        let whole = fs::read(&path).unwrap();
        let mut torn = whole.clone();
        torn.extend_from_slice(b"3\tabc");
        fs::write(&path, &torn).unwrap();
        assert_eq!(vs.list("t").unwrap().len(), 2);
        assert_eq!(vs.add("t", b"3", "", "").unwrap().version, 3);
        let list = vs.list("t").unwrap();
        assert_eq!(
            list.iter().map(|r| r.version).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(fs::read(&path).unwrap().starts_with(&whole));

        let mut lines: Vec<String> = fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        lines.insert(2, "garbage".into());
        fs::write(&path, lines.join("\n") + "\n").unwrap();
        assert!(matches!(vs.list("t"), Err(Error::Corrupt { line: 3, .. })));
    }

    fn record_for(version: u32, bytes: &[u8]) -> VersionRecord {
        VersionRecord {
            version,
            sha256: hex::encode(Sha256::digest(bytes)),
            size: bytes.len() as u64,
            deployed_at: 1_700_000_000_000 + u64::from(version),
            deployed_by: format!("someone\t{version}"),
            note: "from the home".into(),
            quota: if version == 2 {
                "keys=5".into()
            } else {
                String::new()
            },
        }
    }

    #[test]
    fn a_file_from_before_the_quota_column_reads_and_takes_new_lines() {
        let (_dir, vs) = store();
        fs::create_dir_all(vs.dir.join("old")).unwrap();
        let sha = hex::encode(Sha256::digest(b"one"));
        fs::write(
            vs.dir.join("old/versions.tsv"),
            format!(
                "version\tsha256\tsize\tdeployed_at\tdeployed_by\tnote\n1\t{sha}\t3\t5\tcli\t\n"
            ),
        )
        .unwrap();
        fs::write(vs.dir.join("old/v1.wasm"), b"one").unwrap();
        let v1 = vs.current("old").unwrap().expect("v1");
        assert_eq!((v1.version, v1.quota.as_str()), (1, ""));
        let v2 = vs
            .add_after("old", b"two", "cli", "", "state-mb=1", 0)
            .unwrap();
        assert_eq!(v2.version, 2);
        let list = vs.list("old").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].quota, "state-mb=1");
    }

    #[test]
    fn install_keeps_numbers_is_idempotent_refuses_conflicts_and_accepts_any_order() {
        let (_dir, vs) = store();
        let (r1, r2, r3) = (
            record_for(1, b"one"),
            record_for(2, b"two"),
            record_for(3, b"three"),
        );
        vs.install("rep", &r3, b"three").unwrap();
        assert_eq!(vs.current("rep").unwrap(), Some(r3.clone()));
        vs.install("rep", &r1, b"one").unwrap();
        vs.install("rep", &r2, b"two").unwrap();
        vs.install("rep", &r2, b"two").unwrap();
        // Same number and bytes with other metadata: already there.
        vs.install(
            "rep",
            &VersionRecord {
                note: "again".into(),
                ..r1.clone()
            },
            b"one",
        )
        .unwrap();
        assert_eq!(
            vs.list("rep").unwrap(),
            vec![r1.clone(), r2.clone(), r3.clone()]
        );
        assert_eq!(vs.current("rep").unwrap(), Some(r3.clone()));
        assert_eq!(vs.read_bytes("rep", 1).unwrap(), b"one");
        assert_eq!(vs.read_bytes("rep", 3).unwrap(), b"three");
        // The same number with other bytes is a conflict and changes nothing.
        let other = record_for(2, b"not two");
        assert!(matches!(
            vs.install("rep", &other, b"not two"),
            Err(Error::Conflict { version: 2, .. })
        ));
        assert_eq!(vs.read_bytes("rep", 2).unwrap(), b"two");
        // Bytes that do not match their record are refused.
        assert!(matches!(
            vs.install("rep", &record_for(4, b"four"), b"f0ur"),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            vs.install("rep", &record_for(0, b"zero"), b"zero"),
            Err(Error::Invalid { .. })
        ));
        assert_eq!(vs.list("rep").unwrap().len(), 3);
        // A local deploy numbers after the highest.
        assert_eq!(vs.add("rep", b"local", "me", "").unwrap().version, 4);
        assert_eq!(vs.deployed_ids().unwrap(), vec!["rep"]);
        // Missing bytes of a held version are rewritten by a resend.
        fs::remove_file(vs.wasm_path("rep", 1)).unwrap();
        vs.install("rep", &r1, b"one").unwrap();
        assert_eq!(vs.read_bytes("rep", 1).unwrap(), b"one");
        // A newer version clears an undeployed marker; an older one does not.
        vs.undeploy("rep", false).unwrap();
        vs.install("rep", &record_for(5, b"x"), b"x").unwrap();
        assert_eq!(vs.current("rep").unwrap().map(|r| r.version), Some(5));
        let (_d2, vs2) = store();
        vs2.install("u", &r3, b"three").unwrap();
        vs2.undeploy("u", false).unwrap();
        vs2.install("u", &r1, b"one").unwrap();
        assert_eq!(vs2.current("u").unwrap(), None);
        // Records travel as JSON.
        let json = serde_json::to_string(&r3).unwrap();
        assert_eq!(serde_json::from_str::<VersionRecord>(&json).unwrap(), r3);
    }

    #[test]
    fn placement_round_trips_and_known_ids_lists_every_object_dir() {
        let (_dir, vs) = store();
        assert_eq!(vs.placement("p").unwrap(), None);
        assert_eq!(vs.known_ids().unwrap(), Vec::<String>::new());
        let home = Placement {
            epoch: 3,
            role: Role::Home,
            home: "st-0000abcd".into(),
        };
        vs.set_placement("p", &home).unwrap();
        assert_eq!(vs.placement("p").unwrap(), Some(home.clone()));
        assert_eq!(
            fs::read_to_string(vs.dir.join("p/placement.tsv")).unwrap(),
            "epoch\trole\thome\n3\thome\tst-0000abcd\n"
        );
        let replica = Placement {
            epoch: 4,
            role: Role::Replica,
            home: "st-with\ttab".into(),
        };
        vs.set_placement("p", &replica).unwrap();
        assert_eq!(vs.placement("p").unwrap(), Some(replica.clone()));
        assert!(!vs.dir.join("p/placement.tsv.tmp").exists());
        assert_eq!(
            serde_json::to_value(&replica).unwrap(),
            serde_json::json!({"epoch": 4, "role": "replica", "home": "st-with\ttab"})
        );
        // A placement alone is not a deployment, but a known object.
        assert!(vs.deployed_ids().unwrap().is_empty());
        vs.add("d", b"1", "", "").unwrap();
        vs.add("u", b"1", "", "").unwrap();
        vs.undeploy("u", false).unwrap();
        fs::create_dir_all(vs.dir.join("empty")).unwrap();
        fs::create_dir_all(vs.dir.join("Not-An-Id")).unwrap();
        fs::write(vs.dir.join("Not-An-Id/versions.tsv"), "x").unwrap();
        assert_eq!(vs.known_ids().unwrap(), vec!["d", "p", "u"]);
        // A damaged placement file is an error, not a missing placement.
        fs::write(
            vs.dir.join("p/placement.tsv"),
            "epoch\trole\thome\n4\tboss\tx\n",
        )
        .unwrap();
        assert!(matches!(
            vs.placement("p"),
            Err(Error::Corrupt { line: 2, .. })
        ));
        fs::write(vs.dir.join("p/placement.tsv"), "nonsense\n").unwrap();
        assert!(matches!(
            vs.placement("p"),
            Err(Error::Corrupt { line: 1, .. })
        ));
    }
}
