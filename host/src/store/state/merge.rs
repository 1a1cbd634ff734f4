//! Last-writer-wins reconciliation of two histories that diverged (after a failover or a partition): what one
//! side sends ([`ObjectState::latest_records`]), how the other merges it ([`ObjectState::merge_lww`]), and the
//! order both agree on.

use std::collections::BTreeMap;

use super::object::ObjectState;
use super::ticket::CommitTicket;
use super::types::{Batch, Record};
use crate::store::error::Error;
use crate::store::queue::batch_cost;

impl ObjectState {
    /// Last-writer-wins merge of records from a history that diverged (after a failover or a partition): each
    /// record whose hlc is greater than the hlc of its key's latest version here (a key never written here
    /// always loses to it; an equal hlc keeps the version here) wins. If a key comes several times, a later
    /// record must beat the earlier winner. The winners, one per key in key order, keeping their incoming hlc,
    /// commit as one new batch (the next seq), queued like [`ObjectState::commit`]; `Ok(None)` if nothing won.
    /// Deterministic: the same state and records give the same result on every station. Moves the station's
    /// clock past the winners' hlcs.
    ///
    /// Blocks the thread while the writer's queue is full.
    pub fn merge_lww(&self, records: &[Record]) -> Result<Option<CommitTicket>, Error> {
        let cost = batch_cost(&Batch {
            seq: 0,
            records: records.to_vec(),
            prev: None,
        });
        let permit = self.inner.shared.queue.reserve_blocking(cost)?;
        let mut locked = self.inner.lock();
        self.check_writable(&locked)?;
        let mut winners: BTreeMap<&str, &Record> = BTreeMap::new();
        for r in records {
            let beats = match winners.get(r.key.as_str()) {
                Some(w) => lww_beats(r.hlc, r.value.as_deref(), w.hlc, w.value.as_deref()),
                None => match locked.index.keys.get(&r.key).and_then(|v| v.back()) {
                    Some(v) => lww_beats(r.hlc, r.value.as_deref(), v.hlc, v.value.as_deref()),
                    None => true,
                },
            };
            if beats {
                winners.insert(&r.key, r);
            }
        }
        if winners.is_empty() {
            return Ok(None);
        }
        let batch = Batch {
            seq: locked.index.applied_seq + 1,
            records: winners.into_values().cloned().collect(),
            prev: None,
        };
        let max_hlc = batch.records.iter().map(|r| r.hlc).max().unwrap_or(0);
        let ticket = self.append_locked(&mut locked, batch, permit)?;
        drop(locked);
        self.observe(max_hlc);
        Ok(Some(ticket))
    }

    /// Every key (deleted ones included, as tombstones) with its latest version: what a diverged station sends
    /// for [`ObjectState::merge_lww`]. In key order.
    pub fn latest_records(&self) -> Vec<Record> {
        let locked = self.inner.lock();
        locked
            .index
            .keys
            .iter()
            .filter_map(|(key, versions)| {
                let v = versions.back()?;
                Some(Record {
                    key: key.clone(),
                    value: v.value.clone(),
                    hlc: v.hlc,
                })
            })
            .collect()
    }
}

/// Last-writer-wins between two versions of a key: the higher hybrid logical clock wins; on equal
/// clocks (two stations can stamp the same value) the greater value wins, a delete counting as the
/// least. A total order, so every station resolves a divergence the same way whichever side merges.
fn lww_beats(hlc: u64, value: Option<&str>, incumbent_hlc: u64, incumbent: Option<&str>) -> bool {
    (hlc, value) > (incumbent_hlc, incumbent)
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;
    use crate::store::Store;

    #[test]
    fn lww_is_a_total_order_so_both_sides_agree() {
        let versions = [
            (5, Some("b")),
            (5, Some("a")),
            (5, None),
            (4, Some("z")),
            (6, None),
        ];
        for (i, a) in versions.iter().enumerate() {
            for (j, b) in versions.iter().enumerate() {
                let ab = lww_beats(a.0, a.1, b.0, b.1);
                let ba = lww_beats(b.0, b.1, a.0, a.1);
                if i == j {
                    assert!(!ab && !ba);
                } else {
                    assert!(ab != ba, "{a:?} vs {b:?}: exactly one wins");
                }
            }
        }
        assert!(lww_beats(5, Some("b"), 5, Some("a")));
        assert!(
            lww_beats(5, Some(""), 5, None),
            "a delete is the least value"
        );
    }

    #[test]
    fn merge_lww_newer_wins_older_loses_a_tie_goes_to_the_greater_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        let st = store.state("m").unwrap();
        commit(
            &st,
            vec![
                set("newer", "local"),
                set("older", "local"),
                set("equal", "local"),
                set("del", "local"),
            ],
        );
        let h = st.history("newer", 1)[0].hlc;
        assert!(st.merge_lww(&[]).unwrap().is_none());
        assert!(
            st.merge_lww(&[
                rec("older", Some("remote"), h - 1),
                rec("equal", Some("aaa"), h),
                rec("equal", None, h)
            ])
            .unwrap()
            .is_none(),
            "nothing won (older, or equal clock and a lesser value): no batch"
        );
        assert_eq!(st.applied_seq(), 1);
        let (_, head_before) = st.chain_head();
        assert!(head_before.is_some());
        let t = st
            .merge_lww(&[
                rec("older", Some("remote"), h - 1),
                rec("newer", Some("remote"), h + 1),
                rec("equal", Some("remote"), h),
                rec("del", None, h + 2),
                rec("absent", Some("remote"), 5),
                rec("absent-tomb", None, 6),
                // A key twice: a later record must beat the earlier winner.
                rec("twice", Some("first"), 100),
                rec("twice", Some("lower"), 99),
                rec("twice", Some("higher"), 101),
            ])
            .unwrap()
            .unwrap();
        let batch = t.batch().unwrap();
        assert_eq!(t.seq, 2);
        assert_eq!(
            *batch,
            Batch {
                seq: 2,
                records: vec![
                    rec("absent", Some("remote"), 5),
                    rec("absent-tomb", None, 6),
                    rec("del", None, h + 2),
                    rec("equal", Some("remote"), h),
                    rec("newer", Some("remote"), h + 1),
                    rec("twice", Some("higher"), 101),
                ],
                prev: head_before,
            },
            "winners in key order, with their incoming hlc"
        );
        block_on(t.durable()).unwrap();
        assert_eq!(st.get("newer").as_deref(), Some("remote"));
        assert_eq!(st.get("older").as_deref(), Some("local"));
        assert_eq!(
            st.get("equal").as_deref(),
            Some("remote"),
            "on equal clocks the greater value wins (\"remote\" > \"local\"), whichever side merges"
        );
        assert_eq!(st.get("del"), None);
        assert_eq!(st.get("absent").as_deref(), Some("remote"));
        assert_eq!(
            st.keys(""),
            vec!["absent", "equal", "newer", "older", "twice"]
        );
        assert_eq!(
            st.history("del", 0)
                .iter()
                .map(|v| (v.seq, v.hlc))
                .collect::<Vec<_>>(),
            vec![(2, h + 2), (1, h)]
        );
        // The station's clock moved past the winners: a local write now beats them.
        let t3 = st.commit(vec![set("del", "back")]).unwrap();
        assert!(t3.batch().unwrap().records[0].hlc > h + 2);
        block_on(t3.durable()).unwrap();
        // Replaying the same merge changes nothing more.
        assert!(st.merge_lww(&batch.records).unwrap().is_none());

        let before = whole(&st);
        let store = reopen(dir.path(), store);
        let st = store.state("m").unwrap();
        assert_eq!(whole(&st), before, "per-record hlcs survive a reload");
    }

    #[test]
    fn diverged_stations_converge_whichever_merges_first() {
        let dir = tempfile::tempdir().unwrap();
        let a1 = Store::open(config(&dir.path().join("a1"))).unwrap();
        let b1 = Store::open(config(&dir.path().join("b1"))).unwrap();
        let (sa, sb) = (a1.state("o").unwrap(), b1.state("o").unwrap());
        // A common history, then each side writes on its own (interleaved in time), deletes included.
        for b in home_with_batches(&sa) {
            sb.apply_replicated(&b).unwrap();
        }
        for i in 0..20 {
            let k = format!("k{}", i % 7);
            if i % 3 == 0 {
                commit(
                    &sa,
                    vec![set(&k, &format!("a{i}")), del(&format!("k{}", (i + 1) % 7))],
                );
            } else {
                commit(&sb, vec![set(&k, &format!("b{i}"))]);
            }
            if i % 5 == 0 {
                commit(&sb, vec![del("a"), set(&format!("only-b{i}"), "b")]);
                commit(&sa, vec![set(&format!("only-a{i}"), "a")]);
            }
        }
        commit(&sa, vec![set("a", "a wins: written last")]);
        // Copies of both diverged states, to merge in the other order.
        let a2 = Store::open(config(&dir.path().join("a2"))).unwrap();
        let b2 = Store::open(config(&dir.path().join("b2"))).unwrap();
        let (sa2, sb2) = (a2.state("o").unwrap(), b2.state("o").unwrap());
        sa2.install_snapshot(&sa.export_snapshot()).unwrap();
        sb2.install_snapshot(&sb.export_snapshot()).unwrap();

        // Order 1: A merges B's records, then B merges A's (A's now include B's winners).
        sa.merge_lww(&sb.latest_records()).unwrap();
        sb.merge_lww(&sa.latest_records()).unwrap();
        // Order 2: B first.
        sb2.merge_lww(&sa2.latest_records()).unwrap();
        sa2.merge_lww(&sb2.latest_records()).unwrap();

        let result = sa.latest_records();
        assert!(result.len() > 20);
        for (name, st) in [("b1", &sb), ("a2", &sa2), ("b2", &sb2)] {
            assert_eq!(st.latest_records(), result, "{name}");
            assert_eq!(st.snapshot(), sa.snapshot(), "{name}");
        }
        assert_eq!(sa.get("a").as_deref(), Some("a wins: written last"));
        // A second round is a no-op everywhere.
        for (x, y) in [(&sa, &sb), (&sb, &sa), (&sa2, &sb2), (&sb2, &sa2)] {
            assert!(x.merge_lww(&y.latest_records()).unwrap().is_none());
        }
    }
}
