//! The state's public and wire types: the writes a call commits, the records and batches replicas receive, the
//! versions and snapshots readers get, and what a state holds ([`Usage`]) or may hold ([`StateLimits`]).

use crate::store::chain::chain_hash;

/// Keys starting with this belong to the host, not the object: idempotent answers, alarms and
/// events are kept there. The runtime refuses an object's writes to them and the station hides
/// them from its reads. A deleted host key keeps no tombstone: its history means nothing to
/// anyone, and alarms and events delete keys at the rate objects use them.
pub const RESERVED_PREFIX: &str = "\u{0}op/";

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
    /// The key and the new value (`None` for a delete).
    pub(super) fn into_parts(self) -> (String, Option<String>) {
        match self {
            Write::Set { key, value } => (key, Some(value)),
            Write::Delete { key } => (key, None),
        }
    }
}

/// One record of a batch as it travels between stations, with its own hybrid-logical-clock time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The key.
    pub key: String,
    /// The new value, or `None` for a delete (a tombstone).
    pub value: Option<String>,
    /// The NTP64 time of the hybrid-logical-clock timestamp that wrote it.
    pub hlc: u64,
}

/// A committed batch, as shipped to replicas: its seq, its records in order, and the chain hash of
/// the batch before it (see `chain.rs`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Batch {
    /// The object's seq of this batch.
    pub seq: u64,
    /// Its records (never empty), in the order they were written.
    pub records: Vec<Record>,
    /// The chain hash at `seq - 1` on the copy that committed it (`None` for the first batch, or a
    /// history older than chains). Set by the store when it commits; a replica checks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
}

impl Batch {
    /// This batch's chain hash: what the copy holding it has as its hash at `seq`.
    pub fn chain_hash(&self) -> String {
        chain_hash(self.prev.as_deref(), self.seq, &self.records)
    }
}

/// One version of a key, as returned by [`ObjectState::history`](super::ObjectState::history) and carried in
/// a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyVersion {
    /// The seq of the batch that wrote it.
    pub seq: u64,
    /// Wall-clock milliseconds since the Unix epoch, from the version's hybrid logical clock timestamp.
    pub at_ms: u64,
    /// The value, or `None` if this version deleted the key.
    pub value: Option<String>,
    /// The NTP64 time of the hybrid-logical-clock timestamp that wrote it (what last-writer-wins compares).
    pub hlc: u64,
}

/// Everything needed to rebuild an object's state on another station: see
/// [`ObjectState::export_snapshot`](super::ObjectState::export_snapshot).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// The applied seq the snapshot covers.
    pub seq: u64,
    /// The chain hash at `seq` (`None` for a history older than chains).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// Every key, deleted ones included (their latest version is a tombstone), sorted by key.
    pub keys: Vec<SnapshotKey>,
}

/// One key of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotKey {
    /// The key.
    pub key: String,
    /// Its kept versions, oldest first (never empty).
    pub versions: Vec<KeyVersion>,
}

/// How much an object's current state holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Keys with a value.
    pub keys: u64,
    /// Bytes of those keys and their values.
    pub bytes: u64,
}

/// The most an object's state may hold; a commit that would grow it past either is refused
/// with [`Error::QuotaExceeded`](crate::store::Error::QuotaExceeded) (one that shrinks it is always
/// accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLimits {
    /// Most live keys.
    pub keys: u64,
    /// Most bytes of live keys and values.
    pub bytes: u64,
}
