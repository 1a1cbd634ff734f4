//! Cluster routes: `GET /cluster/info` (what a joining station needs) and `GET /cluster/stations`.

use axum::Json;
use axum::extract::State;
use serde_json::json;

use super::ApiState;

/// `GET /cluster/info`: this station's id, HTTP address and gossip address.
pub(super) async fn info(State(api): State<ApiState>) -> Json<crate::cluster::ClusterInfo> {
    Json(api.cluster.info())
}

/// `GET /cluster/stations`: every known station with its state, load, its role in the directory
/// (leader, voter, learner), the objects it homes and the stateless objects whose code it holds.
pub(super) async fn stations(State(api): State<ApiState>) -> Json<serde_json::Value> {
    let view = api.cluster.view();
    let mut homes: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    for (object, home) in api.cluster.objects() {
        homes.entry(home.station).or_default().push(object);
    }
    let group = api.cluster.directory().group();
    let role = |id: &str| {
        if group.leader.as_deref() == Some(id) {
            "leader"
        } else if group.voters.iter().any(|v| v == id) {
            "voter"
        } else if group.learners.iter().any(|l| l == id) {
            "learner"
        } else {
            "none"
        }
    };
    let stations: Vec<_> = view
        .members
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "address": m.address,
                "state": m.state,
                "ready": m.ready,
                "load": m.load,
                "role": role(&m.id),
                "objects": homes.get(&m.id).cloned().unwrap_or_default(),
                "stateless": m
                    .code
                    .iter()
                    .filter(|(_, c)| c.sha256.is_some())
                    .map(|(id, _)| id.clone())
                    .collect::<Vec<_>>(),
                "self": m.id == api.cluster.station_id(),
            })
        })
        .collect();
    Json(json!({
        "station": api.cluster.station_id(),
        "stations": stations,
        "directory": group,
    }))
}
