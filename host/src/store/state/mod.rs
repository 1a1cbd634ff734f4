//! One object's key/value state: the in-memory index, the commit path, and crash recovery of `state.tsv`.
//!
//! `data/state/{id}/state.tsv` is append-only TSV with the header `seq hlc op key value`. A batch is its
//! `set`/`del` records, all carrying the batch's `seq` (a per-object counter from 1) and each its own `hlc` (the
//! NTP64 time of a hybrid-logical-clock timestamp, as a decimal u64), followed by one `commit` record with the
//! same seq, the greatest hlc of the batch's records, the batch's chain hash as key (see `chain.rs`; empty on
//! compacted lines but the last, and in files older than chains) and the record count as value. A batch exists
//! only once its commit line is complete, so a batch is all-or-nothing on disk; it is applied to the index as a
//! whole under the object's lock, so it is all-or-nothing in memory too.
//!
//! A batch committed here ([`ObjectState::commit`]) stamps all its records with one fresh timestamp of the
//! station's clock. A batch received from the object's home ([`ObjectState::apply_replicated`]) or produced by a
//! last-writer-wins merge ([`ObjectState::merge_lww`]) keeps the hlc each record came with, so its records may
//! differ; recovery and compaction keep every record's own hlc.
//!
//! [`ObjectState::commit`] applies the batch in memory at once and queues its encoded bytes for the writer thread
//! (`writer.rs`), which appends, fsyncs and then resolves the [`CommitTicket`]s. It never does I/O itself.
//! [`ObjectState::install_snapshot`] replaces the whole state: the writer thread writes the new file (temp file,
//! fsync, rename, directory fsync) after everything queued before it, and swaps the index.
//!
//! # Layout
//!
//! - `types.rs`: the public and wire types ([`Write`], [`Record`], [`Batch`], [`Snapshot`], [`Usage`], ...).
//! - `ticket.rs`: [`CommitTicket`] and the durable progress it waits for.
//! - `index.rs`: the in-memory index (keys, kept versions, applied seq, chain head, usage).
//! - `object.rs`: [`ObjectState`], the handle: reads, local commits, replicated batches; and its shared part.
//! - `install.rs`: snapshot export and install.
//! - `merge.rs`: the last-writer-wins merge of diverged histories.
//! - `encode.rs`: batches and compacted files as `state.tsv` bytes.
//! - `recover.rs`: loading `state.tsv` and crash recovery.
//! - `hlc.rs`: the hybrid-logical-clock helpers.

mod encode;
mod hlc;
mod index;
mod install;
mod merge;
mod object;
mod recover;
mod ticket;
mod types;

pub use object::ObjectState;
pub use ticket::CommitTicket;
pub use types::{
    Batch, KeyVersion, RESERVED_PREFIX, Record, Snapshot, SnapshotKey, StateLimits, Usage, Write,
};

pub(crate) use encode::write_compacted;
pub(crate) use hlc::observe_hlc;
pub(crate) use index::Row;
pub(crate) use install::Install;
pub(crate) use object::ObjInner;
pub(crate) use recover::{Salvage, load, salvage};

#[cfg(test)]
mod tests {
    //! Helpers the tests of every part share, and the tests that span several parts (a round trip through
    //! encoding and recovery, compaction under replication).

    use std::collections::BTreeMap;
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use super::*;
    use crate::store::tsv::tests::HOSTILE;
    use crate::store::{Durability, Store, StoreConfig};

    pub(super) fn config(dir: &Path) -> StoreConfig {
        StoreConfig {
            durability: Durability::None,
            ..StoreConfig::new(dir.join("data"))
        }
    }

    pub(super) fn set(key: &str, value: &str) -> Write {
        Write::Set {
            key: key.into(),
            value: value.into(),
        }
    }

    pub(super) fn del(key: &str) -> Write {
        Write::Delete { key: key.into() }
    }

    /// Commits, waits for durability, and returns the seq.
    pub(super) fn commit(state: &ObjectState, writes: Vec<Write>) -> u64 {
        let ticket = state.commit(writes).unwrap();
        let seq = ticket.seq;
        block_on(ticket.durable()).unwrap();
        seq
    }

    pub(super) fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    pub(super) fn reopen(dir: &Path, store: Store) -> Store {
        store.shutdown();
        drop(store);
        Store::open(config(dir)).unwrap()
    }

    pub(super) fn state_path(dir: &Path, id: &str) -> PathBuf {
        dir.join("data/state").join(id).join("state.tsv")
    }

    // ---- Replication, snapshots and last-writer-wins merges ----

    pub(super) fn rec(key: &str, value: Option<&str>, hlc: u64) -> Record {
        Record {
            key: key.into(),
            value: value.map(Into::into),
            hlc,
        }
    }

    pub(super) fn reopen_with_history(dir: &Path, store: Store, history: usize) -> Store {
        store.shutdown();
        drop(store);
        open_with_history(dir, history)
    }

    pub(super) fn open_with_history(dir: &Path, history: usize) -> Store {
        Store::open(StoreConfig {
            history_versions: history,
            ..config(dir)
        })
        .unwrap()
    }

    /// Everything the index holds (every key with every kept version's seq, hlc and value) plus what readers
    /// see, as one comparable value.
    pub(super) fn whole(
        st: &ObjectState,
    ) -> (Snapshot, BTreeMap<String, String>, Vec<String>, u64) {
        (
            st.export_snapshot(),
            st.snapshot(),
            st.keys(""),
            st.applied_seq(),
        )
    }

    /// A home with varied batches: multi-key, deletes, hostile strings, a key rewritten past the history
    /// depth, and a merged batch whose records carry different hlcs. Returns the batches it shipped.
    pub(super) fn home_with_batches(st: &ObjectState) -> Vec<Arc<Batch>> {
        let mut out = Vec::new();
        let mut push = |t: CommitTicket| {
            out.push(t.batch().expect("a non-empty commit has a batch"));
            block_on(t.durable()).unwrap();
        };
        push(st.commit(vec![set("a", "1"), set("b", "1")]).unwrap());
        for s in HOSTILE {
            push(
                st.commit(vec![set(&format!("h{s}"), s), set("a", s)])
                    .unwrap(),
            );
        }
        push(
            st.commit(vec![del("b"), set("c", "x"), set("c", "y")])
                .unwrap(),
        );
        let base = st.history("a", 1)[0].hlc;
        push(
            st.merge_lww(&[
                rec("m1", Some("old"), base / 2),
                rec("m2", None, base + 7),
                rec("a", Some("merged"), base + 5),
            ])
            .unwrap()
            .expect("winners"),
        );
        push(st.commit(vec![set("after", "merge")]).unwrap());
        out
    }

    #[test]
    fn exactly_the_hostile_strings_round_trip_through_a_reload() {
        // CR, LF, tab, quotes, backslash, empty string, unicode.
        let strings = [
            "a\rb",
            "a\nb",
            "a\tb",
            "\"a\" \"",
            "a\\b\\",
            "",
            "ünï 漢字 🦀",
        ];
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        let st = store.state("hostile").unwrap();
        for (i, s) in strings.iter().enumerate() {
            commit(&st, vec![set(s, s), set(&format!("v{i}"), s)]);
        }
        let store = reopen(dir.path(), store);
        let st = store.state("hostile").unwrap();
        for (i, s) in strings.iter().enumerate() {
            assert_eq!(st.get(s).as_deref(), Some(*s), "key {s:?}");
            assert_eq!(st.get(&format!("v{i}")).as_deref(), Some(*s));
        }
        // The file is real TSV: every record has the header's 5 fields when read back with the csv crate.
        let text = fs::read(state_path(dir.path(), "hostile")).unwrap();
        let mut rdr = csv::ReaderBuilder::new()
            .delimiter(b'\t')
            .from_reader(text.as_slice());
        assert_eq!(
            rdr.headers().unwrap(),
            vec!["seq", "hlc", "op", "key", "value"]
        );
        assert_eq!(
            rdr.records()
                .map(|r| r.unwrap().len())
                .filter(|&n| n == 5)
                .count(),
            3 * strings.len()
        );
    }

    #[test]
    fn more_hostile_strings_round_trip_and_history_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        let st = store.state("h2").unwrap();
        for s in HOSTILE {
            commit(&st, vec![set(&format!("k{s}"), s), set("same", s)]);
        }
        commit(&st, vec![del("same")]);
        let before = format!(
            "{:?}",
            (
                st.snapshot(),
                st.history("same", 0),
                st.keys(""),
                st.applied_seq()
            )
        );
        let store = reopen(dir.path(), store);
        let st = store.state("h2").unwrap();
        let after = format!(
            "{:?}",
            (
                st.snapshot(),
                st.history("same", 0),
                st.keys(""),
                st.applied_seq()
            )
        );
        assert_eq!(before, after);
        assert_eq!(st.get("same"), None);
        assert_eq!(st.history("same", 2)[0].value, None);
        assert_eq!(
            st.history("same", 2)[1].value.as_deref(),
            Some(*HOSTILE.last().unwrap())
        );
    }

    #[test]
    fn compaction_keeps_the_chain_hash_so_replication_continues_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let home_store = Store::open(config(&dir.path().join("home"))).unwrap();
        let home = home_store.state("obj").unwrap();
        let rdir = dir.path().join("replica");
        let store = Store::open(config(&rdir)).unwrap();
        let st = store.state("obj").unwrap();
        let mut last = None;
        for n in 0..5000 {
            let batch = home
                .commit(vec![set(&format!("k{}", n % 10), &n.to_string())])
                .unwrap()
                .batch()
                .unwrap();
            last = st.apply_replicated(&batch).unwrap();
        }
        block_on(last.unwrap().durable()).unwrap();
        let head = st.chain_head();
        assert_eq!(head, home.chain_head());
        // Shutting down lets the writer finish its round, and the compaction it starts past 4096 records.
        store.shutdown();
        assert!(
            store.stats().compactions > 0,
            "the replica's file was compacted"
        );
        let store = reopen(&rdir, store);
        let st = store.state("obj").unwrap();
        assert_eq!(
            st.chain_head(),
            head,
            "read back from the compacted file's last commit line"
        );
        let next = home
            .commit(vec![set("after", "1")])
            .unwrap()
            .batch()
            .unwrap();
        block_on(st.apply_replicated(&next).unwrap().unwrap().durable()).unwrap();
        assert_eq!(whole(&st), whole(&home));
    }
}
