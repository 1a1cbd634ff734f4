//! Station-to-station routes under `/cluster/internal/` (replication, snapshots, versions,
//! migration hand-off), and the public `POST /cluster/migrate`. The directory's Raft routes are in
//! `raft.rs`.
//! Internal routes require the cluster secret when one is configured.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::{ApiState, query_pairs, read_body};
use crate::coordinator::migration::{MigratePayload, MigrationError, PrecopyPayload};
use crate::coordinator::replication::{ReplicateRequest, ReplicateResult, VERSION_HEADER};
use crate::station::ApplyOutcome;
use crate::station::validate_object_id;
use crate::store::{Role, Snapshot, VersionRecord};

/// Largest internal request body (a migration carries every version and the whole state).
const MAX_INTERNAL_BODY: usize = 1 << 30;

/// Refuses station-to-station requests without the configured cluster secret.
pub(super) async fn require_cluster_secret(
    State(api): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(secret) = api.cluster.secret() {
        let presented = request
            .headers()
            .get(crate::cluster::forward::SECRET_HEADER)
            .map(|v| v.as_bytes());
        if !presented.is_some_and(|v| super::trust::constant_time_eq(v, secret.as_bytes())) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "station-to-station routes need the cluster secret",
            )
            .into_response();
        }
    }
    next.run(request).await
}

async fn json_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = read_body(body, MAX_INTERNAL_BODY).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("bad_request", format!("invalid JSON body: {e}")))
}

fn checked(id: String) -> Result<String, ApiError> {
    validate_object_id(&id)
        .map_err(|e| ApiError::bad_request("invalid_object_id", e.to_string()))?;
    Ok(id)
}

/// Replicas accept batches and snapshots only from the home the directory names at its current
/// epoch: `Some(Fenced)` otherwise. A sender ahead of this station's copy of the directory waits
/// (bounded) for it to catch up.
async fn fence(api: &ApiState, id: &str, home: &str, epoch: u64) -> Option<ApplyOutcome> {
    let directory = api.cluster.directory();
    let current = |d: &crate::cluster::Directory| d.lookup(id).map(|e| (e.home, e.epoch));
    if current(directory).is_none_or(|(_, e)| e < epoch) {
        let mut changes = directory.subscribe();
        let caught_up = changes.wait_for(|a| a.directory.get(id).is_some_and(|e| e.epoch >= epoch));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), caught_up).await;
    }
    match current(directory) {
        Some((h, e)) if h == home && e == epoch => None,
        Some((_, e)) => Some(ApplyOutcome::Fenced { epoch: e }),
        None => Some(ApplyOutcome::Fenced { epoch: 0 }),
    }
}

/// `POST /cluster/internal/replicate`.
pub(super) async fn replicate(
    State(api): State<ApiState>,
    body: Body,
) -> Result<Json<Vec<ReplicateResult>>, ApiError> {
    let request: ReplicateRequest = json_body(body).await?;
    let mut results = Vec::with_capacity(request.items.len());
    for item in request.items {
        let id = checked(item.object)?;
        let outcome = match fence(&api, &id, &request.home, item.epoch).await {
            Some(fenced) => fenced,
            None => api
                .station
                .apply_replicated(&id, &request.home, item.epoch, &item.batches)
                .await
                .map_err(|e| ApiError::from(e).for_object(&id))?,
        };
        results.push(ReplicateResult {
            object: id,
            outcome,
        });
    }
    Ok(Json(results))
}

/// `POST /cluster/internal/objects/{id}/snapshot?home=&epoch=`.
pub(super) async fn snapshot(
    State(api): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let id = checked(id)?;
    let query = query_pairs(query.as_deref());
    let home = query
        .iter()
        .find(|(k, _)| k == "home")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let epoch: u64 = query
        .iter()
        .find(|(k, _)| k == "epoch")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1);
    let snapshot: Snapshot = json_body(body).await?;
    if let Some(fenced) = fence(&api, &id, &home, epoch).await {
        return Ok(Json(fenced).into_response());
    }
    let outcome = api
        .station
        .install_replica_snapshot(&id, &home, epoch, snapshot)
        .await
        .map_err(|e| ApiError::from(e).for_object(&id))?;
    Ok(Json(outcome).into_response())
}

/// `GET /cluster/internal/objects/{id}/snapshot`: the committed state this station holds of an
/// object, as home or replica (what a snapshot would carry), for checking that copies agree.
pub(super) async fn export_snapshot(
    State(api): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Snapshot>, ApiError> {
    let id = checked(id)?;
    let state = api
        .station
        .any_state(&id)
        .await
        .map_err(|e| ApiError::from(e).for_object(&id))?;
    Ok(Json(state.export_snapshot()))
}

/// `POST /cluster/internal/objects/{id}/versions` (metadata in a header, bytes in the body).
pub(super) async fn version(
    State(api): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = checked(id)?;
    let record: VersionRecord = headers
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| serde_json::from_str(v).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_request",
                format!("missing or invalid {VERSION_HEADER} header"),
            )
        })?;
    let bytes = read_body(body, MAX_INTERNAL_BODY).await?;
    api.station
        .install_replica_version(&id, record, bytes.to_vec())
        .await
        .map_err(|e| ApiError::from(e).for_object(&id))?;
    Ok(Json(json!({ "object_id": id, "installed": true })).into_response())
}

/// `GET /cluster/internal/objects/{id}/code`: the current version of a stateless object deployed
/// here, for a station that lacks it: the record in the `x-op-version` header, the bytes as body.
pub(super) async fn code(
    State(api): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = checked(id)?;
    let (record, bytes) = api
        .station
        .stateless_code(&id)
        .await
        .map_err(|e| ApiError::from(e).for_object(&id))?;
    let header = crate::coordinator::stateless::code_response_header(&record).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            e.to_string(),
        )
    })?;
    Ok((
        [
            (VERSION_HEADER, header),
            ("content-type", "application/wasm".to_string()),
        ],
        bytes,
    )
        .into_response())
}

/// Answer of `GET /cluster/internal/objects/{id}/position`: what this station holds of an object.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct Position {
    /// `home` or `replica` (absent: not held here).
    role: Option<Role>,
    /// The epoch it holds the object at.
    epoch: u64,
    /// The home it follows (itself when home).
    home: String,
    /// Its applied seq.
    applied_seq: u64,
}

/// `GET /cluster/internal/objects/{id}/position`.
pub(super) async fn position(
    State(api): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Position>, ApiError> {
    let id = checked(id)?;
    if let Some(epoch) = api.station.epoch_of(&id) {
        let applied_seq = api
            .station
            .state(&id)
            .await
            .map(|s| s.applied_seq())
            .unwrap_or(0);
        return Ok(Json(Position {
            role: Some(Role::Home),
            epoch,
            home: api.station.station_id().to_string(),
            applied_seq,
        }));
    }
    let found = api
        .station
        .replica_placements()
        .into_iter()
        .find(|(o, _, _)| o == &id);
    Ok(Json(match found {
        Some((_, placement, applied_seq)) => Position {
            role: Some(Role::Replica),
            epoch: placement.epoch,
            home: placement.home,
            applied_seq,
        },
        None => Position {
            role: None,
            epoch: 0,
            home: String::new(),
            applied_seq: 0,
        },
    }))
}

/// `POST /cluster/internal/migrate`: an object arriving from its old home.
pub(super) async fn receive_migration(
    State(api): State<ApiState>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let payload: MigratePayload = json_body(body).await?;
    let id = checked(payload.object_id.clone())?;
    api.coordinator
        .receive(payload)
        .await
        .map_err(|e| ApiError::from(e).for_object(&id))?;
    Ok(Json(json!({ "object_id": id, "installed": true })))
}

/// `POST /cluster/internal/objects/{id}/precopy`: a migration's versions and log, sent before the
/// object pauses.
pub(super) async fn precopy(
    State(api): State<ApiState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = checked(id)?;
    let payload: PrecopyPayload = json_body(body).await?;
    api.coordinator
        .receive_precopy(&id, payload)
        .await
        .map_err(|e| ApiError::from(e).for_object(&id))?;
    Ok(Json(json!({ "object_id": id, "received": true })))
}

/// `POST /cluster/migrate {object_id, target_station}`: run on the object's home.
pub(super) async fn migrate(
    State(api): State<ApiState>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    struct Migrate {
        object_id: String,
        target_station: String,
    }
    let (parts, body) = request.into_parts();
    let bytes = read_body(body, 64 << 10).await?;
    let migrate: Migrate = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            "bad_request",
            format!("expected {{\"object_id\": ..., \"target_station\": ...}}: {e}"),
        )
    })?;
    let id = checked(migrate.object_id)?;
    // A stateless object has no home to move (and its calls are routed by load, not to a home).
    let stateless = api.station.serves_stateless(&id) == Some(true)
        || api.cluster.stateless_target(&id).is_some();
    if stateless {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "stateless",
            MigrationError::Stateless(id.clone()).to_string(),
        )
        .for_object(&id));
    }
    if let super::forward::Route::Remote(home) =
        super::forward::route(&api, &id, &parts.headers).await?
    {
        return super::forward::forward(
            &api,
            home,
            parts.method,
            &parts.uri,
            parts.headers,
            bytes,
            &id,
        )
        .await;
    }
    let report = api
        .coordinator
        .migrate(&id, &migrate.target_station)
        .await
        .map_err(|e| match e {
            MigrationError::UnknownStation(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "station_not_found", e.to_string())
            }
            MigrationError::AlreadyThere(..) => {
                ApiError::new(StatusCode::CONFLICT, "already_home", e.to_string())
            }
            MigrationError::Stateless(_) => {
                ApiError::new(StatusCode::CONFLICT, "stateless", e.to_string())
            }
            MigrationError::Station(e) => ApiError::from(e),
            MigrationError::Transfer(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "migration_failed", e.to_string())
            }
        })
        .map_err(|e| e.for_object(&id))?;
    Ok(Json(report).into_response())
}
