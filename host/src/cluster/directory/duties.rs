//! What the leader decides on its own, every [`EVERY`]: failover of objects whose home lost its
//! lease, and the voter set (learners promoted while the group has fewer voters than
//! `--voters`, a voter that has been silent for [`VOTER_GONE_AFTER`] replaced by a live learner).
//!
//! The decisions are pure functions of the directory and of who renewed a lease; the loop only
//! proposes them. A decision made twice (a retry, a new leader) is harmless: a `Move` carries the
//! epoch it was decided from and the state machine applies it once.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::ChangeMembers;

use super::state::{Command, DirectoryState, Mode};
use super::{Directory, NodeId};

/// How often the leader looks.
pub const EVERY: Duration = Duration::from_millis(200);
/// How long a voter may be silent before a live learner takes its vote.
pub const VOTER_GONE_AFTER: Duration = Duration::from_secs(10);

/// The moves that fail over every stateful object whose home may no longer hold a lease
/// (`may_hold` false) to its first in-sync replica that is up (`up` true). An object with no such
/// replica stays where it is (unavailable) until its home or a replica returns.
pub fn failovers(
    directory: &DirectoryState,
    may_hold: impl Fn(&str) -> bool,
    up: impl Fn(&str) -> bool,
) -> Vec<Command> {
    let mut moves = Vec::new();
    for (object, entry) in &directory.objects {
        if entry.mode != Mode::Stateful || may_hold(&entry.home) {
            continue;
        }
        let Some(target) = entry.in_sync.iter().find(|s| up(s)) else {
            continue;
        };
        // The old home stays a replica: when it returns it catches up from the new home.
        let (replicas, in_sync) = entry.after_move(target);
        moves.push(Command::Move {
            object: object.clone(),
            epoch: entry.epoch,
            to: target.clone(),
            replicas,
            in_sync,
        });
    }
    moves
}

/// The replica changes that keep every stateful object at `want` replicas: a replica silent for
/// longer than [`VOTER_GONE_AFTER`] (`gone`) is dropped when a live station can take its place,
/// and live stations (`live`, best first for each object by `rank`) fill the missing places. A new
/// replica is not in sync until it has caught up (its home adds it).
pub fn replica_repairs(
    directory: &DirectoryState,
    want: usize,
    live: &[String],
    gone: impl Fn(&str) -> bool,
    rank: impl Fn(&str, &str) -> u64,
) -> Vec<Command> {
    let mut changes = Vec::new();
    for (object, entry) in &directory.objects {
        if entry.mode != Mode::Stateful {
            continue;
        }
        let mut candidates: Vec<&String> = live
            .iter()
            .filter(|s| **s != entry.home && !entry.replicas.contains(s))
            .collect();
        candidates.sort_by_key(|s| std::cmp::Reverse(rank(s, object)));
        let mut replicas = entry.replicas.clone();
        let mut spare = candidates.into_iter();
        // Replace gone replicas while a live station is spare.
        for slot in replicas.iter_mut() {
            if gone(slot)
                && let Some(next) = spare.next()
            {
                *slot = next.clone();
            }
        }
        while replicas.len() < want {
            match spare.next() {
                Some(next) => replicas.push(next.clone()),
                None => break,
            }
        }
        if replicas != entry.replicas {
            let in_sync = entry
                .in_sync
                .iter()
                .filter(|s| replicas.contains(s))
                .cloned()
                .collect();
            changes.push(Command::SetReplicas {
                object: object.clone(),
                epoch: entry.epoch,
                replicas,
                in_sync,
            });
        }
    }
    changes
}

/// The leader's loop.
pub(super) async fn run(directory: Directory) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds: u64 = 0;
    loop {
        tick.tick().await;
        if !directory.is_leader() {
            continue;
        }
        rounds += 1;
        let applied = directory.applied();
        let moves = failovers(
            &applied.directory,
            |s| s == directory.station_id() || directory.may_hold_lease(s),
            |s| directory.renewed_recently(s),
        );
        for command in moves {
            let Command::Move { object, to, .. } = &command else {
                continue;
            };
            let old_home = applied
                .directory
                .get(object)
                .map(|entry| entry.home.clone())
                .unwrap_or_default();
            tracing::warn!(object = %object, new_home = %to, "home lost its lease: failing over");
            match directory.commit_here(command).await {
                Ok(proposed) if proposed.outcome.refused.is_none() => {
                    if let Some(silent) = directory.silent_since(&old_home) {
                        directory.move_metrics().failed_over(silent);
                    }
                }
                // Decided from a stale view (the object moved meanwhile): nothing happened.
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("failover not committed: {e}");
                    break;
                }
            }
        }
        if rounds.is_multiple_of(5) {
            fill_voters(&directory).await;
            repair_replicas(&directory, &applied.directory).await;
        }
    }
}

/// Proposes [`replica_repairs`] over the stations that renewed their lease recently.
async fn repair_replicas(directory: &Directory, state: &DirectoryState) {
    let membership = directory.applied().membership.membership().clone();
    let live: Vec<String> = membership
        .nodes()
        .map(|(_, n)| n.station.clone())
        .filter(|s| directory.renewed_recently(s))
        .collect();
    let changes = replica_repairs(
        state,
        directory.inner.config.replicas,
        &live,
        |s| directory.silent_for(s, VOTER_GONE_AFTER),
        crate::cluster::placement::rendezvous,
    );
    for command in changes {
        if let Err(e) = directory.commit_here(command).await {
            tracing::debug!("replica change not committed: {e}");
            break;
        }
    }
}

/// Promotes live learners while the group has fewer voters than configured, and replaces one
/// voter silent for longer than [`VOTER_GONE_AFTER`] by a live learner.
pub(super) async fn fill_voters(directory: &Directory) {
    if !directory.is_leader() {
        return;
    }
    let metrics = directory.raft().metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    if membership.get_joint_config().len() > 1 {
        return; // a change is under way
    }
    let station = |id: &NodeId| membership.get_node(id).map(|n| n.station.clone());
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let live_learners: Vec<NodeId> = membership
        .learner_ids()
        .filter(|id| station(id).is_some_and(|s| directory.renewed_recently(&s)))
        .collect();
    let want = directory.inner.config.voters.max(1);
    let change = if voters.len() < want && !live_learners.is_empty() {
        let add: BTreeSet<NodeId> = live_learners
            .iter()
            .take(want - voters.len())
            .copied()
            .collect();
        Some(ChangeMembers::AddVoterIds(add))
    } else {
        let gone = voters
            .iter()
            .find(|id| station(id).is_some_and(|s| directory.silent_for(&s, VOTER_GONE_AFTER)));
        match (gone, live_learners.first()) {
            (Some(gone), Some(learner)) => {
                let mut next = voters.clone();
                next.remove(gone);
                next.insert(*learner);
                tracing::warn!(
                    gone = ?station(gone),
                    promoted = ?station(learner),
                    "a voter is gone: a learner takes its vote"
                );
                Some(ChangeMembers::ReplaceAllVoters(next))
            }
            _ => None,
        }
    };
    if let Some(change) = change
        && let Err(e) = directory.raft().change_membership(change, true).await
    {
        tracing::debug!("voter change not committed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> DirectoryState {
        let mut dir = DirectoryState::default();
        for (object, home) in [("x", "a"), ("y", "b")] {
            dir.apply(&Command::Claim {
                object: object.into(),
                station: home.into(),
                mode: Mode::Stateful,
                replicas: vec!["c".into(), "d".into(), "a".into(), "b".into()],
            });
        }
        dir
    }

    #[test]
    fn only_objects_whose_home_lost_its_lease_move_to_their_first_live_in_sync_replica() {
        let dir = state();
        let moves = failovers(&dir, |s| s != "a", |s| s != "c");
        assert_eq!(
            moves,
            vec![Command::Move {
                object: "x".into(),
                epoch: 1,
                to: "d".into(),
                replicas: vec!["c".into(), "b".into(), "a".into()],
                in_sync: vec!["c".into(), "b".into()],
            }]
        );
    }

    #[test]
    fn replicas_are_filled_up_and_a_gone_one_replaced_by_a_live_station() {
        let mut dir = DirectoryState::default();
        dir.apply(&Command::Claim {
            object: "x".into(),
            station: "a".into(),
            mode: Mode::Stateful,
            replicas: vec!["b".into()],
        });
        let live: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let rank = |s: &str, _: &str| if s == "c" { 2 } else { 1 };
        let changes = replica_repairs(&dir, 2, &live, |_| false, rank);
        assert_eq!(
            changes,
            vec![Command::SetReplicas {
                object: "x".into(),
                epoch: 1,
                replicas: vec!["b".into(), "c".into()],
                in_sync: vec!["b".into()],
            }]
        );
        dir.apply(&changes[0]);
        let replaced = replica_repairs(&dir, 2, &live, |s| s == "b", rank);
        let Command::SetReplicas {
            replicas, in_sync, ..
        } = &replaced[0]
        else {
            panic!("{replaced:?}")
        };
        assert_eq!(replicas, &vec!["d".to_string(), "c".to_string()]);
        assert!(
            in_sync.is_empty(),
            "neither new replica has caught up: {in_sync:?}"
        );
        assert!(replica_repairs(&dir, 1, &live, |_| false, rank).is_empty());
    }

    #[test]
    fn no_live_in_sync_replica_means_no_move() {
        let dir = state();
        assert!(failovers(&dir, |_| false, |_| false).is_empty());
        assert!(failovers(&dir, |_| true, |_| true).is_empty());
    }
}
