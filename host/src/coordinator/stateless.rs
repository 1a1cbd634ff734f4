//! Spreading stateless objects' code. A stateless object has no home and no state: every station
//! that holds its newest code serves it, and calls go to the least-loaded of those
//! ([`crate::cluster::placement::stateless_target`]). Each station gossips the version it holds
//! (`code:<id>`); this loop fetches code newer than its own from a station that holds it, and
//! undeploys what the cluster undeployed. A station that joins late catches up the same way.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use super::Coordinator;
use super::wire;
use crate::cluster::forward::SECRET_HEADER;
use crate::cluster::placement;
use crate::coordinator::replication::VERSION_HEADER;
use crate::store::VersionRecord;

/// Every two gossip rounds: brings this station's stateless code in step with the newest claims.
pub(super) async fn run(coordinator: Coordinator) {
    coordinator.cluster.wait_converged().await;
    let mut tick = tokio::time::interval(coordinator.cluster.gossip_interval() * 2);
    let mut reported: HashSet<String> = HashSet::new();
    loop {
        tick.tick().await;
        sync_once(&coordinator, &mut reported).await;
    }
}

async fn sync_once(coordinator: &Coordinator, reported: &mut HashSet<String>) {
    let view = coordinator.cluster.view();
    let me = coordinator.cluster.station_id().to_string();
    let ids: BTreeSet<String> = view.live().flat_map(|m| m.code.keys().cloned()).collect();
    for id in ids {
        let Some((holder, newest)) = placement::newest_code(&view, &id) else {
            continue;
        };
        let ours = view.member(&me).and_then(|m| m.code.get(&id));
        if ours.is_some_and(|o| o.precedence() >= newest.precedence()) {
            continue;
        }
        let local = coordinator.station.stateless(&id);
        let Some(sha) = &newest.sha256 else {
            // Undeployed in the cluster: undeploy here too, and carry the tombstone so it
            // outlives the station that undeployed.
            if let Err(e) = coordinator
                .station
                .remove_stateless(&id, newest.version)
                .await
            {
                tracing::warn!(object = %id, "could not undeploy stateless object: {e}");
                continue;
            }
            coordinator.cluster.claim_code(&id, newest).await;
            continue;
        };
        if local.as_ref().is_some_and(|(_, held)| held == sha) {
            continue;
        }
        if local.is_none() && coordinator.station.holds_with_state(&id) {
            if reported.insert(id.clone()) {
                tracing::warn!(
                    object = %id,
                    "another station deployed `{id}` stateless, but it keeps state here; not installing its code"
                );
            }
            continue;
        }
        let address = holder.address.clone();
        match fetch(coordinator, &address, &id).await {
            Ok((record, bytes)) if record.sha256 == *sha => {
                if let Err(e) = coordinator
                    .station
                    .install_stateless(&id, record, bytes)
                    .await
                    && reported.insert(id.clone())
                {
                    tracing::warn!(object = %id, "could not install stateless code: {e}");
                }
            }
            // The holder moved on to another version since the view was taken: next round.
            Ok(_) => {}
            Err(e) => tracing::debug!(object = %id, from = %address, "fetching code: {e:#}"),
        }
    }
}

/// Fetches a stateless object's current version and bytes from the station at `address`.
async fn fetch(
    coordinator: &Coordinator,
    address: &str,
    id: &str,
) -> anyhow::Result<(VersionRecord, Vec<u8>)> {
    let url = format!("{address}/cluster/internal/objects/{id}/code");
    let mut request = coordinator
        .cluster
        .http()
        .get(&url)
        .timeout(Duration::from_secs(60));
    if let Some(secret) = coordinator.cluster.secret() {
        request = request.header(SECRET_HEADER, secret);
    }
    let response = request.send().await?;
    if !response.status().is_success() {
        anyhow::bail!(
            "{url} answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let record: VersionRecord = response
        .headers()
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| serde_json::from_str(v).ok())
        .ok_or_else(|| anyhow::anyhow!("{url}: missing or invalid {VERSION_HEADER} header"))?;
    let bytes = response.bytes().await?.to_vec();
    Ok((record, bytes))
}

/// The answer of `GET /cluster/internal/objects/{id}/code`: the version record in a header (ASCII
/// JSON) and the component bytes as the body.
pub fn code_response_header(record: &VersionRecord) -> anyhow::Result<String> {
    wire::header_json(record)
}
