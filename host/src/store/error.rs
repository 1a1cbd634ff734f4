//! `store::Error`: the cases a caller of the store acts on.
//!
//! The API layer maps these to HTTP statuses (in `api/error.rs`, not here); the variants carry the file, line or
//! object they concern so a log line names what failed.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation failed on `path`.
    #[error("I/O error on {}", path.display())]
    Io {
        /// The file or directory the operation was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A TSV file holds a record the store cannot accept (not a torn tail, which recovery truncates).
    /// The file is left untouched so an operator can inspect and repair it.
    #[error("corrupt record in {} at line {line}: {reason}", path.display())]
    Corrupt {
        /// The file holding the bad record.
        path: PathBuf,
        /// 1-based line where the bad record starts.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A file of the durable path holds damage that a crash cannot explain (a bad record before
    /// complete ones, a bad write-ahead log round before an intact one, a batch that does not match
    /// its chain hash where it was synced). Recovery leaves the file as it is: `host repair` keeps a
    /// copy of what it drops and reports what was lost.
    #[error(
        "{} is damaged at byte {offset}: {reason}. It was left as it is: stop the station and run `host repair --data {}`, which keeps a copy of what it removes and reports what was lost",
        path.display(),
        data_dir.display()
    )]
    Damaged {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: String,
        /// The data directory to repair.
        data_dir: PathBuf,
    },
    /// Another store (a running station) or a repair holds the data directory's lock.
    #[error(
        "the data directory {} is in use by another station or repair (its LOCK file is locked)",
        data_dir.display()
    )]
    InUse {
        /// The data directory.
        data_dir: PathBuf,
    },
    /// The object has no deployed code on this station (never deployed, or purged).
    #[error("object {object_id} not found")]
    NotFound {
        /// The object asked for.
        object_id: String,
    },
    /// The object exists but has no such version.
    #[error("object {object_id} has no version {version}")]
    VersionNotFound {
        /// The object asked for.
        object_id: String,
        /// The version asked for.
        version: u32,
    },
    /// The object's durable writes failed (a write or sync error the store cannot prove harmless); every
    /// pending and later commit of this object — or of every object, when the write-ahead log or a
    /// checkpoint failed — fails with this until the store is reopened, which recovers from disk. The
    /// message names the file.
    #[error("state writer failed: {0}")]
    Failed(String),
    /// The store was shut down; no more writes are accepted.
    #[error("the store is shut down")]
    Closed,
    /// A replicated batch does not follow the object's applied seq: batches `expected..got` are missing here
    /// (the sender should resend from `expected`, or send a snapshot).
    #[error("object {object_id}: replicated batch {got} does not follow, expected {expected}")]
    Gap {
        /// The object.
        object_id: String,
        /// The seq this station needs next (its applied seq + 1).
        expected: u64,
        /// The seq it was sent.
        got: u64,
    },
    /// A replicated batch does not continue this copy's history: its `prev` chain hash differs from this
    /// copy's hash at `seq` (the two copies hold different batches under the same seqs). Nothing was applied;
    /// the sender should send a snapshot.
    #[error(
        "object {object_id}: replicated batch does not continue this copy's history at seq {seq}"
    )]
    Diverged {
        /// The object.
        object_id: String,
        /// The seq at which the histories differ (at or before it).
        seq: u64,
    },
    /// A commit would grow the object's state past its limits; nothing was applied.
    #[error(
        "object {object_id}: the write would make its state {would_be} {what}, over its quota of {limit}"
    )]
    QuotaExceeded {
        /// The object.
        object_id: String,
        /// `keys` or `bytes`.
        what: &'static str,
        /// The limit.
        limit: u64,
        /// What the state would hold after the commit.
        would_be: u64,
    },
    /// A version arrived from another station with a number this station already holds with other bytes.
    #[error("object {object_id} already has a version {version} with other bytes")]
    Conflict {
        /// The object.
        object_id: String,
        /// The version number.
        version: u32,
    },
    /// Data received from another station breaks the store's rules (an empty replicated batch, a snapshot
    /// whose versions are out of order, version bytes that do not match their sha256, …). Nothing was applied.
    #[error("object {object_id}: rejected {reason}")]
    Invalid {
        /// The object.
        object_id: String,
        /// What is wrong.
        reason: String,
    },
    /// The object is installing a snapshot ([`super::ObjectState::install_snapshot`]); commits and
    /// replicated batches are refused until it is done. Nothing was applied: retry after the install.
    #[error("object {object_id} is installing a snapshot")]
    Busy {
        /// The object.
        object_id: String,
    },
    /// An object id that is not `[a-z0-9][a-z0-9_.-]{0,127}` or contains `..` (the caller validates ids first;
    /// this guard only keeps a bad id from reaching outside the data directory).
    #[error("invalid object id {0:?}")]
    InvalidId(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl AsRef<Path>, source: io::Error) -> Error {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A corrupt-record error.
    pub(crate) fn corrupt(path: impl AsRef<Path>, line: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            path: path.as_ref().to_path_buf(),
            line,
            reason: reason.into(),
        }
    }
}

/// Attaches a path to `io::Result`s.
pub(crate) trait IoContext<T> {
    /// Maps the error to [`Error::Io`] naming `path`.
    fn at(self, path: impl AsRef<Path>) -> Result<T, Error>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T, Error> {
        self.map_err(|e| Error::io(path, e))
    }
}
