//! Moving a whole state between stations: [`ObjectState::export_snapshot`] on one side,
//! [`ObjectState::install_snapshot`] on the other (checked first, then written by the writer thread, which swaps
//! the index in [`ObjInner::finish_install`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use super::index::{Index, Row, Version};
use super::object::{ObjInner, ObjectState};
use super::types::{Snapshot, SnapshotKey};
use crate::store::chain;
use crate::store::error::Error;
use crate::store::writer::Msg;

/// A snapshot ready to install: the rows of the new file and the index they load as.
pub(crate) struct Install {
    /// The snapshot's seq.
    seq: u64,
    /// The chain hash at `seq`, written on the new file's last commit line.
    pub(crate) head: Option<String>,
    /// The rows of the new file, in the order it holds them.
    pub(crate) rows: Vec<Row>,
    /// The index the rows load as.
    index: Index,
}

impl ObjInner {
    /// Called by the writer once an installed snapshot's file is durably in place: swaps the index and makes
    /// the snapshot's seq the durable seq (of a new generation, which resolves older tickets).
    pub(crate) fn finish_install(&self, install: Install) {
        let mut locked = self.lock();
        locked.index = install.index;
        self.compacted_through.store(install.seq, Ordering::Release);
        self.file_records
            .store(install.rows.len() as u64, Ordering::Relaxed);
        self.durable.send_modify(|d| {
            d.seq = install.seq;
            d.generation += 1;
        });
    }
}

impl ObjectState {
    /// Everything needed to rebuild this object's state elsewhere: the applied seq and every key (deleted ones
    /// too, their latest version a tombstone) with its kept versions, oldest first. It reflects what is applied
    /// in memory, which may be ahead of what is durable (wait for a read barrier first if that matters).
    pub fn export_snapshot(&self) -> Snapshot {
        let locked = self.inner.lock();
        Snapshot {
            seq: locked.index.applied_seq,
            chain: locked.index.head.clone(),
            keys: locked
                .index
                .keys
                .iter()
                .map(|(key, versions)| SnapshotKey {
                    key: key.clone(),
                    versions: versions.iter().map(Version::to_key_version).collect(),
                })
                .collect(),
        }
    }

    /// Replaces this object's state with a snapshot. Blocking: the writer thread first writes everything
    /// queued before (so pending tickets resolve), then writes the new `state.tsv` (temp file, fsync, rename,
    /// directory fsync) and swaps the index. Afterwards `applied_seq() == durable_seq() == snapshot.seq`, and
    /// tickets issued before resolve as durable. Keys keep at most this store's `history_versions` (the newest).
    ///
    /// While it runs, reads see the old state and writes fail with [`Error::Busy`]. A snapshot that breaks the
    /// index's rules (a key without versions or twice, versions out of seq order or beyond `seq`, no version at
    /// `seq`) fails with [`Error::Invalid`] and changes nothing; so does a failed write of the new file (as
    /// [`Error::Io`]). If the checkpoint before it or the directory fsync after the rename fails, the store fails
    /// ([`Error::Failed`]).
    pub fn install_snapshot(&self, snapshot: &Snapshot) -> Result<(), Error> {
        let install = self.prepare_install(snapshot)?;
        let max_hlc = install.index.last_hlc;
        let (done_tx, done_rx) = mpsc::channel();
        {
            let mut locked = self.inner.lock();
            self.check_writable(&locked)?;
            // Send under the object's lock: every batch queued before is ahead of it in the writer's queue,
            // and none can be queued after it until the install is done.
            self.inner.shared.send(Msg::Install {
                obj: Arc::clone(&self.inner),
                install: Box::new(install),
                done: done_tx,
            })?;
            locked.installing = true;
        }
        let result = done_rx.recv().unwrap_or(Err(Error::Closed));
        self.inner.lock().installing = false;
        if result.is_ok() {
            self.observe(max_hlc);
            tracing::debug!(object_id = %self.inner.id, seq = snapshot.seq, "installed a state snapshot");
        }
        result
    }

    /// Checks a snapshot and builds the file rows and index it installs as (trimmed to this store's history).
    fn prepare_install(&self, snapshot: &Snapshot) -> Result<Install, Error> {
        let history = self.inner.shared.config.history_versions.max(1);
        let mut seen = std::collections::HashSet::with_capacity(snapshot.keys.len());
        let mut rows = Vec::new();
        for k in &snapshot.keys {
            if !seen.insert(k.key.as_str()) {
                return Err(self.invalid(format!("snapshot holds key {:?} twice", k.key)));
            }
            if k.versions.is_empty() {
                return Err(self.invalid(format!("snapshot key {:?} has no versions", k.key)));
            }
            let mut prev = 0;
            for v in &k.versions {
                if v.seq == 0 || v.seq < prev || v.seq > snapshot.seq {
                    return Err(self.invalid(format!(
                        "snapshot key {:?} has version seq {} (after seq {prev}, snapshot seq {})",
                        k.key, v.seq, snapshot.seq
                    )));
                }
                prev = v.seq;
            }
            let skip = k.versions.len().saturating_sub(history);
            rows.extend(k.versions[skip..].iter().map(|v| Row {
                seq: v.seq,
                hlc: v.hlc,
                key: k.key.clone(),
                value: v.value.clone(),
            }));
        }
        // Key order within a seq, as compaction writes it (a reload then rebuilds exactly this index).
        rows.sort_by(|a, b| a.seq.cmp(&b.seq).then_with(|| a.key.cmp(&b.key)));
        let last = rows.last().map_or(0, |r| r.seq);
        if last != snapshot.seq {
            return Err(self.invalid(format!(
                "snapshot seq {} but its newest version has seq {last}",
                snapshot.seq
            )));
        }
        let mut index = Index::new(history);
        for group in rows.chunk_by(|a, b| a.seq == b.seq) {
            index.apply(
                group[0].seq,
                group
                    .iter()
                    .map(|r| (r.key.clone(), r.value.clone(), r.hlc)),
            );
        }
        if let Some(chain) = &snapshot.chain
            && !chain::is_hash(chain.as_bytes())
        {
            return Err(self.invalid(format!("snapshot chain hash {chain:?} is not a hash")));
        }
        index.head = snapshot.chain.clone();
        Ok(Install {
            seq: snapshot.seq,
            head: snapshot.chain.clone(),
            rows,
            index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::types::{Batch, KeyVersion};
    use super::*;
    use crate::store::Store;

    #[test]
    fn snapshot_install_matches_survives_reload_and_replication_continues() {
        let dir = tempfile::tempdir().unwrap();
        let home_store = open_with_history(&dir.path().join("home"), 4);
        let home = home_store.state("obj").unwrap();
        home_with_batches(&home);
        for i in 0..10 {
            commit(
                &home,
                vec![set("deep", &i.to_string()), set(&format!("k{i}"), "v")],
            );
        }
        commit(&home, vec![del("k3")]);
        let snap = home.export_snapshot();
        assert_eq!(snap.seq, home.applied_seq());
        assert_eq!(
            snap.keys
                .iter()
                .find(|k| k.key == "deep")
                .unwrap()
                .versions
                .len(),
            4
        );
        let tomb = snap.keys.iter().find(|k| k.key == "k3").unwrap();
        assert_eq!(
            tomb.versions.last().unwrap().value,
            None,
            "tombstones travel"
        );
        // It travels as JSON.
        let json = serde_json::to_string(&snap).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&json).unwrap(), snap);

        // The target has a state of its own, with tickets still pending.
        let tdir = dir.path().join("target");
        let store = open_with_history(&tdir, 4);
        let st = store.state("obj").unwrap();
        let old: Vec<_> = (0..200)
            .map(|i| st.commit(vec![set("mine", &i.to_string())]).unwrap())
            .collect();
        st.install_snapshot(&snap).unwrap();
        for t in old {
            assert!(t.is_durable());
            block_on(t.durable()).unwrap();
        }
        assert_eq!(whole(&st), whole(&home));
        assert_eq!(st.get("mine"), None);
        assert_eq!((st.applied_seq(), st.durable_seq()), (snap.seq, snap.seq));
        for k in ["deep", "a", "k3", "m2", "c"] {
            assert_eq!(st.history(k, 0), home.history(k, 0), "{k}");
        }
        // A ticket of a barrier before any new commit resolves at once.
        block_on(st.commit(vec![]).unwrap().durable()).unwrap();

        let store = reopen_with_history(&tdir, store, 4);
        let st = store.state("obj").unwrap();
        assert_eq!(whole(&st), whole(&home), "survives a reload");
        assert!(!tdir.join("data/state/obj/state.tsv.tmp").exists());

        // Replication continues from snapshot.seq + 1.
        let gap = Batch {
            seq: snap.seq + 2,
            records: vec![rec("x", None, 1)],
            prev: None,
        };
        assert!(
            matches!(st.apply_replicated(&gap), Err(Error::Gap { expected, .. }) if expected == snap.seq + 1)
        );
        let next = home
            .commit(vec![set("deep", "new"), del("a")])
            .unwrap()
            .batch()
            .unwrap();
        assert_eq!(next.seq, snap.seq + 1);
        block_on(st.apply_replicated(&next).unwrap().unwrap().durable()).unwrap();
        assert_eq!(whole(&st), whole(&home));
        let store = reopen_with_history(&tdir, store, 4);
        assert_eq!(whole(&store.state("obj").unwrap()), whole(&home));

        // A store keeping fewer versions keeps the newest; reloading gives the same index.
        let sdir = dir.path().join("small");
        let small = open_with_history(&sdir, 2);
        let st = small.state("obj").unwrap();
        st.install_snapshot(&snap).unwrap();
        let deep = &snap.keys.iter().find(|k| k.key == "deep").unwrap().versions;
        assert_eq!(
            st.history("deep", 0),
            vec![deep[3].clone(), deep[2].clone()]
        );
        let before = whole(&st);
        let small = reopen_with_history(&sdir, small, 2);
        assert_eq!(whole(&small.state("obj").unwrap()), before);

        // An empty snapshot empties the state; a new commit then starts at seq 1.
        let st = small.state("obj").unwrap();
        st.install_snapshot(&Snapshot {
            seq: 0,
            keys: vec![],
            chain: None,
        })
        .unwrap();
        assert_eq!(
            (st.applied_seq(), st.durable_seq(), st.keys("")),
            (0, 0, vec![])
        );
        assert_eq!(commit(&st, vec![set("k", "v")]), 1);
        let small = reopen_with_history(&sdir, small, 2);
        assert_eq!(small.state("obj").unwrap().get("k").as_deref(), Some("v"));
    }

    #[test]
    fn bad_snapshots_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        let st = store.state("bad").unwrap();
        commit(&st, vec![set("k", "v")]);
        let before = whole(&st);
        let v = |seq, value: Option<&str>| KeyVersion {
            seq,
            at_ms: 0,
            value: value.map(Into::into),
            hlc: seq * 10,
        };
        let key = |k: &str, versions| SnapshotKey {
            key: k.into(),
            versions,
        };
        for bad in [
            Snapshot {
                seq: 3,
                keys: vec![
                    key("a", vec![v(2, Some("x")), v(1, Some("y"))]),
                    key("b", vec![v(3, None)]),
                ],
                chain: None,
            },
            Snapshot {
                seq: 3,
                keys: vec![key("a", vec![v(4, Some("x"))])],
                chain: None,
            },
            Snapshot {
                seq: 3,
                keys: vec![key("a", vec![v(2, Some("x"))])],
                chain: None,
            },
            Snapshot {
                seq: 3,
                keys: vec![key("a", vec![]), key("b", vec![v(3, None)])],
                chain: None,
            },
            Snapshot {
                seq: 3,
                keys: vec![key("a", vec![v(3, None)]), key("a", vec![v(3, None)])],
                chain: None,
            },
            Snapshot {
                seq: 3,
                keys: vec![key("a", vec![v(0, None), v(3, None)])],
                chain: None,
            },
            Snapshot {
                seq: 1,
                keys: vec![],
                chain: None,
            },
        ] {
            assert!(
                matches!(st.install_snapshot(&bad), Err(Error::Invalid { .. })),
                "{bad:?}"
            );
            assert_eq!(whole(&st), before);
        }
        // Writes are refused while an install runs, and accepted after.
        st.inner.lock().installing = true;
        assert!(matches!(
            st.commit(vec![set("k", "w")]),
            Err(Error::Busy { .. })
        ));
        assert!(matches!(st.commit(vec![]), Err(Error::Busy { .. })));
        assert!(matches!(
            st.merge_lww(&[rec("k", None, u64::MAX)]),
            Err(Error::Busy { .. })
        ));
        assert!(matches!(
            st.apply_replicated(&Batch {
                seq: 2,
                records: vec![rec("k", None, 1)],
                prev: None,
            }),
            Err(Error::Busy { .. })
        ));
        st.inner.lock().installing = false;
        assert_eq!(whole(&st), before);
        assert_eq!(commit(&st, vec![set("k", "w")]), 2);
        store.shutdown();
        assert!(matches!(
            st.install_snapshot(&Snapshot {
                seq: 0,
                keys: vec![],
                chain: None,
            }),
            Err(Error::Closed)
        ));
    }
}
