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

/// Checks the replicas held here every gossip interval and promotes where this station wins.
pub(super) async fn run(coordinator: Coordinator) {
    coordinator.cluster.wait_converged().await;
    let mut tick = tokio::time::interval(coordinator.cluster.gossip_interval());
    loop {
        tick.tick().await;
        for (id, placement, applied) in coordinator.station.replica_placements() {
            let view = coordinator.cluster.view();
            // Only a home the failure detector has declared dead counts; a station not yet
            // heard of is not a dead one.
            let home_dead = view
                .member(&placement.home)
                .is_some_and(|m| m.state == MemberState::Dead);
            if !home_dead {
                continue;
            }
            // Someone already took over.
            if let Some(home) = coordinator.cluster.home_of(&id)
                && home.claim.epoch > placement.epoch
            {
                continue;
            }
            let me = coordinator.cluster.station_id().to_string();
            let mut best = (applied, std::cmp::Reverse(me.clone()));
            let mut max_epoch = placement.epoch;
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
                max_epoch = max_epoch.max(position.epoch);
                if position.role == Some(Role::Replica) && position.home == placement.home {
                    best = best.max((position.applied_seq, std::cmp::Reverse(member.id.clone())));
                }
            }
            if best.1.0 == me {
                let epoch = max_epoch + 1;
                tracing::warn!(object = %id, dead_home = %placement.home, epoch, applied, "home declared dead: taking over");
                if let Err(e) = coordinator.station.promote(&id, epoch).await {
                    tracing::error!(object = %id, "promotion failed: {e}");
                }
            }
        }
    }
}
