//! Cluster routes: `GET /cluster/info` (what a joining station needs) and `GET /cluster/stations`.

use axum::Json;
use axum::extract::State;
use serde_json::json;

use super::ApiState;
use crate::cluster::placement;

/// `GET /cluster/info`: this station's id, HTTP address and gossip address.
pub(super) async fn info(State(api): State<ApiState>) -> Json<crate::cluster::ClusterInfo> {
    Json(api.cluster.info())
}

/// `GET /cluster/stations`: every known station with its state, load and the objects it homes.
pub(super) async fn stations(State(api): State<ApiState>) -> Json<serde_json::Value> {
    let view = api.cluster.view();
    let stations: Vec<_> = view
        .members
        .iter()
        .map(|m| {
            let homes: Vec<&String> = m
                .objects
                .keys()
                .filter(|o| placement::home_of(&view, o).is_some_and(|h| h.station == m.id))
                .collect();
            json!({
                "id": m.id,
                "address": m.address,
                "state": m.state,
                "ready": m.ready,
                "load": m.load,
                "objects": homes,
                "self": m.id == api.cluster.station_id(),
            })
        })
        .collect();
    Json(json!({ "station": api.cluster.station_id(), "stations": stations }))
}
