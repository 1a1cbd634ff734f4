//! The directory's routes under `/cluster/internal/raft/` (cluster secret required): Raft's own
//! messages (append, vote, snapshot), and what stations ask the leader: commit a command, read an
//! entry linearizably, join the group, renew a write lease.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::ApiError;
use crate::cluster::directory::{self, Command, JoinRequest, LeaseRequest, TypeConfig};

/// Largest Raft message (a snapshot of a large directory travels in one).
const MAX_RAFT_BODY: usize = 256 << 20;

async fn json_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = super::read_body(body, MAX_RAFT_BODY).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("bad_request", format!("invalid JSON body: {e}")))
}

/// Maps a directory error: no leader is a retryable 503.
fn directory_error(e: directory::Error) -> ApiError {
    match e {
        directory::Error::NoLeader(m) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", m)
        }
        directory::Error::Raft(m) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "directory_error", m)
        }
    }
}

/// `POST .../raft/append`: openraft's AppendEntries; the answer is openraft's `Result`.
pub(super) async fn append(State(api): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    let request: openraft::raft::AppendEntriesRequest<TypeConfig> = json_body(body).await?;
    let result = api.cluster.directory().raft().append_entries(request).await;
    Ok(Json(result).into_response())
}

/// `POST .../raft/vote`.
pub(super) async fn vote(State(api): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    if !api.cluster.directory().may_vote() {
        // Just started: it cannot tell how recently it heard from a leader (the lease rule in
        // `cluster/directory/lease.rs`). The candidate sees an unreachable voter and retries.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "this station started a moment ago and does not vote yet",
        ));
    }
    let request: openraft::raft::VoteRequest<directory::NodeId> = json_body(body).await?;
    let result = api.cluster.directory().raft().vote(request).await;
    Ok(Json(result).into_response())
}

/// `POST .../raft/snapshot`.
pub(super) async fn snapshot(
    State(api): State<ApiState>,
    body: Body,
) -> Result<Response, ApiError> {
    let request: openraft::raft::InstallSnapshotRequest<TypeConfig> = json_body(body).await?;
    let result = api
        .cluster
        .directory()
        .raft()
        .install_snapshot(request)
        .await;
    Ok(Json(result).into_response())
}

/// `POST .../raft/propose`: commits a command; this station must lead (503 `no_leader` if not).
pub(super) async fn propose(State(api): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    let command: Command = json_body(body).await?;
    let proposed = api
        .cluster
        .directory()
        .commit_here(command)
        .await
        .map_err(directory_error)?;
    Ok(Json(proposed).into_response())
}

/// `GET .../raft/lookup/{id}`: the entry of an object, read linearizably at the leader.
pub(super) async fn lookup(
    State(api): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let entry = api
        .cluster
        .directory()
        .lookup_here(&id)
        .await
        .map_err(directory_error)?;
    Ok(Json(entry).into_response())
}

/// `POST .../raft/join`: adds a station to the group (passed on to the leader).
pub(super) async fn join(State(api): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    let request: JoinRequest = json_body(body).await?;
    api.cluster
        .directory()
        .join(&request)
        .await
        .map_err(directory_error)?;
    Ok(Json(serde_json::json!({ "joined": request.station })).into_response())
}

/// `POST .../raft/lease`: renews a station's write lease; this station must lead.
pub(super) async fn lease(State(api): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    let request: LeaseRequest = json_body(body).await?;
    let grant = api
        .cluster
        .directory()
        .grant_lease(&request.station)
        .await
        .map_err(directory_error)?;
    Ok(Json(grant).into_response())
}
