//! Failover: when an object's home is declared dead, the live replica with the highest applied
//! seq becomes home at epoch + 1 (ties: the smallest station id). Every replica runs the same
//! election from the same answers, so they agree on the winner.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Coordinator;
use super::wire;
use crate::cluster::MemberState;
use crate::store::Role;

/// Answer of `GET /cluster/internal/objects/{id}/position`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Position {
    /// Whether this station holds the object as home or replica (absent: not at all).
    pub role: Option<Role>,
    /// The epoch it knows.
    pub epoch: u64,
    /// The home it knows.
    pub home: String,
    /// Its applied seq.
    pub applied_seq: u64,
}

/// Every gossip interval: steps down from objects another station homes at a higher epoch, and
/// elects a new home for replicas whose home was declared dead.
pub(super) async fn run(coordinator: Coordinator) {
    coordinator.cluster.wait_converged().await;
    let mut tick = tokio::time::interval(coordinator.cluster.gossip_interval());
    loop {
        tick.tick().await;
        step_down_where_superseded(&coordinator).await;
        for (id, placement, applied) in coordinator.station.replica_placements() {
            elect(&coordinator, &id, &placement, applied).await;
        }
    }
}

/// Fencing at run time: if another live station claims an object we home, at a higher epoch,
/// we are a stale home (we missed a failover): step down and hand our writes over for merging.
async fn step_down_where_superseded(coordinator: &Coordinator) {
    for (id, epoch) in coordinator.station.homed_epochs() {
        if let Some(home) = coordinator.cluster.home_of(&id)
            && home.station != coordinator.cluster.station_id()
            && home.claim.epoch > epoch
        {
            coordinator
                .step_down(&id, &home.station, &home.address, home.claim.epoch)
                .await;
        }
    }
}

/// Elects a new home for `id` if its home is dead: the live replica with the highest applied seq
/// (ties: the smallest station id). Every replica computes the same answer; a station already
/// serving the object at a higher epoch ends the election.
async fn elect(
    coordinator: &Coordinator,
    id: &str,
    placement: &crate::store::Placement,
    applied: u64,
) {
    let view = coordinator.cluster.view();
    // Only a home the failure detector has declared dead counts; a station not yet heard of is
    // not a dead one.
    let home_dead = view
        .member(&placement.home)
        .is_some_and(|m| m.state == MemberState::Dead);
    if !home_dead {
        return;
    }
    if let Some(home) = coordinator.cluster.home_of(id)
        && home.claim.epoch > placement.epoch
    {
        return;
    }
    let me = coordinator.cluster.station_id().to_string();
    let mut best = (applied, std::cmp::Reverse(me.clone()));
    for member in view.live().filter(|m| m.id != me) {
        let path = format!("/cluster/internal/objects/{id}/position");
        let Ok(position) = wire::get_json::<Position>(
            &coordinator.cluster,
            &member.address,
            &path,
            Duration::from_secs(2),
        )
        .await
        else {
            continue;
        };
        match position.role {
            // Someone took over already (its claim may not have reached us yet).
            Some(Role::Home) if position.epoch > placement.epoch => return,
            Some(Role::Replica)
                if position.home == placement.home && position.epoch == placement.epoch =>
            {
                best = best.max((position.applied_seq, std::cmp::Reverse(member.id.clone())));
            }
            _ => {}
        }
    }
    if best.1.0 == me {
        let epoch = placement.epoch + 1;
        tracing::warn!(object = %id, dead_home = %placement.home, epoch, applied, "home declared dead: taking over");
        if let Err(e) = coordinator.station.promote(id, epoch).await {
            tracing::error!(object = %id, "promotion failed: {e}");
        }
    }
}
