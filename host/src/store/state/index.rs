//! The in-memory index of one object's state: every key with its kept versions, the applied seq and chain head,
//! and what the current state holds. The rows compaction and snapshot installs write are read out of it.

use std::collections::{BTreeMap, VecDeque};

use super::hlc::hlc_ms;
use super::types::{KeyVersion, Usage};

/// One version of a key in the index.
#[derive(Debug, Clone)]
pub(super) struct Version {
    seq: u64,
    /// The hlc of the record that wrote it.
    pub(super) hlc: u64,
    /// The value, or `None` for a delete.
    pub(super) value: Option<String>,
}

impl Version {
    /// This version as readers and snapshots see it.
    pub(super) fn to_key_version(&self) -> KeyVersion {
        KeyVersion {
            seq: self.seq,
            at_ms: hlc_ms(self.hlc),
            value: self.value.clone(),
            hlc: self.hlc,
        }
    }
}

/// The in-memory index: every key with its last `history` versions, oldest first.
#[derive(Debug)]
pub(super) struct Index {
    /// Every key ever written (deleted ones too), with its kept versions.
    pub(super) keys: BTreeMap<String, VecDeque<Version>>,
    /// The seq of the last batch applied.
    pub(super) applied_seq: u64,
    /// The chain hash at `applied_seq` (`None` before the first batch, or for a history older than
    /// chains).
    pub(super) head: Option<String>,
    /// The greatest hlc applied (to move the station's clock past it on load).
    pub(super) last_hlc: u64,
    /// Versions kept, over all keys.
    pub(super) kept: usize,
    /// Versions kept per key (at least 1).
    history: usize,
    /// What the current state holds: live keys and their bytes (key and value lengths).
    pub(super) usage: Usage,
    /// The part of `usage` in the host's keys (`RESERVED_PREFIX`: idempotent answers, alarms,
    /// events).
    pub(super) host_usage: Usage,
}

impl Index {
    /// An empty index keeping `history` versions per key (at least 1).
    pub(super) fn new(history: usize) -> Index {
        Index {
            keys: BTreeMap::new(),
            applied_seq: 0,
            head: None,
            last_hlc: 0,
            kept: 0,
            history: history.max(1),
            usage: Usage::default(),
            host_usage: Usage::default(),
        }
    }

    /// Applies one batch: `(key, value, hlc)` per record, in order.
    pub(super) fn apply(
        &mut self,
        seq: u64,
        writes: impl IntoIterator<Item = (String, Option<String>, u64)>,
    ) {
        for (key, value, hlc) in writes {
            let old = self.current(&key).map(String::len);
            let new = value.as_ref().map(String::len);
            self.usage = self.usage.with_change(&key, old, new);
            if key.starts_with(super::types::RESERVED_PREFIX) {
                self.host_usage = self.host_usage.with_change(&key, old, new);
            }
            self.last_hlc = self.last_hlc.max(hlc);
            if value.is_none() && key.starts_with(super::types::RESERVED_PREFIX) {
                // A host key keeps no tombstone (see `RESERVED_PREFIX`).
                if let Some(versions) = self.keys.remove(&key) {
                    self.kept -= versions.len();
                }
                continue;
            }
            let versions = self.keys.entry(key).or_default();
            versions.push_back(Version { seq, hlc, value });
            self.kept += 1;
            while versions.len() > self.history {
                versions.pop_front();
                self.kept -= 1;
            }
        }
        self.applied_seq = seq;
    }

    /// The current value of `key` (`None` if it was never written or is deleted).
    pub(super) fn current(&self, key: &str) -> Option<&String> {
        self.keys.get(key)?.back()?.value.as_ref()
    }

    /// Every kept version as a row, in seq order; rows of one seq are in key order, and rows of one key keep
    /// their order (what compaction and snapshots write).
    pub(super) fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::with_capacity(self.kept);
        for (key, versions) in &self.keys {
            for v in versions {
                rows.push(Row {
                    seq: v.seq,
                    hlc: v.hlc,
                    key: key.clone(),
                    value: v.value.clone(),
                });
            }
        }
        rows.sort_by_key(|r| r.seq);
        rows
    }
}

impl Usage {
    /// The usage after a key's value changes from `old` to `new`.
    pub(super) fn with_change(
        mut self,
        key: &str,
        old: Option<usize>,
        new: Option<usize>,
    ) -> Usage {
        if let Some(old) = old {
            self.keys -= 1;
            self.bytes -= (key.len() + old) as u64;
        }
        if let Some(new) = new {
            self.keys += 1;
            self.bytes += (key.len() + new) as u64;
        }
        self
    }
}

/// A record of `state.tsv` kept by compaction.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// The seq of the batch that wrote it.
    pub(super) seq: u64,
    /// The hlc of the record.
    pub(super) hlc: u64,
    /// The key.
    pub(super) key: String,
    /// The value, or `None` for a delete.
    pub(super) value: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use crate::store::{Store, StoreConfig};

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
    fn deleted_host_keys_leave_no_tombstone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        let st = store.state("host-keys").unwrap();
        let key = format!("{}alarm/x", crate::store::RESERVED_PREFIX);
        commit(&st, vec![set(&key, "1"), set("user", "1")]);
        commit(&st, vec![del(&key), del("user")]);
        assert_eq!(st.history(&key, 0), vec![]);
        assert_eq!(st.history("user", 0).len(), 2, "object keys keep theirs");
        drop(st);
        drop(store);
        // Recovered from the file, the same.
        let store = Store::open(config(dir.path())).unwrap();
        let st = store.state("host-keys").unwrap();
        assert_eq!(st.history(&key, 0), vec![]);
        assert_eq!(st.applied_seq(), 2);
    }
}
