//! Station and admin routes: health, the object list, deploy/rollback/undeploy and the read-only
//! views of an object (logs, versions, state, metadata).

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::{ApiState, query_pairs, read_body};
use crate::station::{DeployOptions, validate_object_id};
use crate::store::{Level, LogQuery};

/// Default and largest number of log lines one query returns.
const DEFAULT_LOG_LIMIT: usize = 100;
const MAX_LOG_LIMIT: usize = 10_000;

/// The id from the path, validated, with JSON errors for every failure.
fn object_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::bad_request("invalid_object_id", e.body_text()))?;
    validate_object_id(&id)
        .map_err(|e| ApiError::bad_request("invalid_object_id", e.to_string()))?;
    Ok(id)
}

/// `GET /health`: 200 when the station serves calls, 503 `not_ready` (with the reason) when it
/// waits for `--min-stations` or has no write lease from the cluster directory.
pub(super) async fn health(State(api): State<ApiState>) -> Response {
    let live = api.cluster.live_count();
    let ready = api.cluster.quorum().and_then(|()| {
        if api.cluster.directory().lease_valid() {
            Ok(())
        } else {
            Err(
                "not yet following the cluster directory with a write lease \
                 (joining, or no majority of its voters reachable)"
                    .to_string(),
            )
        }
    });
    let (status, code, reason) = match ready {
        Ok(()) => (StatusCode::OK, "ok", None),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready", Some(reason)),
    };
    let body = json!({
        "status": code,
        "ready": reason.is_none(),
        "reason": reason,
        "station": api.station.station_id(),
        "objects": api.station.object_count(),
        "live_stations": live,
    });
    (status, Json(body)).into_response()
}

/// `GET /objects`: every object of the cluster, with its home and replicas (from the directory)
/// or, for a stateless object, the stations holding its code (from gossip).
pub(super) async fn list_objects(State(api): State<ApiState>) -> Json<serde_json::Value> {
    let mut objects: std::collections::BTreeMap<String, serde_json::Value> = api
        .cluster
        .objects()
        .into_iter()
        .filter(|(_, home)| home.entry.version > 0)
        .map(|(id, home)| {
            let entry = json!({
                "id": id,
                "version": home.entry.version,
                "sha256": home.entry.sha256,
                "home": home.station,
                "epoch": home.entry.epoch,
                "replicas": home.entry.replicas,
                "in_sync": home.entry.in_sync,
            });
            (id, entry)
        })
        .collect();
    // Stateless objects have no home: every station holding the newest code serves them.
    for (id, (claim, stations)) in api.cluster.stateless_objects() {
        objects.entry(id.clone()).or_insert_with(|| {
            json!({
                "id": id,
                "version": claim.version,
                "sha256": claim.sha256,
                "stateless": true,
                "stations": stations,
            })
        });
    }
    // Stateless objects deployed here a moment ago may not be in the gossip view yet.
    for local in api.station.list().into_iter().filter(|o| o.stateless) {
        objects.entry(local.id.clone()).or_insert_with(|| {
            json!({
                "id": local.id,
                "version": local.version,
                "sha256": local.sha256,
                "stateless": true,
                "stations": [local.home],
            })
        });
    }
    Json(json!({ "objects": objects.into_values().collect::<Vec<_>>() }))
}

/// `PUT /admin/objects/{id}`: the body is the component.
pub(super) async fn deploy(
    State(api): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = object_id(path)?;
    let query = query_pairs(query.as_deref());
    let bytes = read_body(body, api.config.max_component_bytes).await?;
    // The body is read before the query is judged: answering a deploy before reading its body
    // would have the connection reset under a client still sending it, losing the answer.
    // `quota=state-mb=64,rate=10` sets the object's overrides, `quota=default` clears them;
    // without it the current version's carry over.
    let quota = match query.iter().find(|(k, _)| k == "quota") {
        None => None,
        Some((_, v)) if v == "default" => Some(crate::station::QuotaOverrides::default()),
        Some((_, v)) => Some(
            v.parse::<crate::station::QuotaOverrides>()
                .map_err(|e| ApiError::bad_request("bad_quota", e.to_string()))?,
        ),
    };
    let note = query
        .iter()
        .find(|(k, _)| k == "note")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let by = headers
        .get("x-deployed-by")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .unwrap_or("api");
    let stateless = match query.iter().find(|(k, _)| k == "stateless") {
        None => false,
        Some((_, v)) => match v.as_str() {
            "" | "true" | "1" => true,
            "false" | "0" => false,
            other => {
                return Err(ApiError::bad_request(
                    "bad_request",
                    format!("stateless must be true or false, not {other:?}"),
                ));
            }
        },
    };
    let options = DeployOptions {
        stateless,
        number_after: if stateless {
            api.cluster
                .newest_code(&id)
                .map_or(0, |(_, claim)| claim.version)
        } else {
            0
        },
        quota,
    };
    let outcome = match api
        .station
        .deploy(&id, bytes.to_vec(), by, note, options)
        .await
    {
        Ok(outcome) => outcome,
        // Another station claimed it first (a concurrent deploy): the deploy belongs there.
        Err(crate::station::Error::HomedElsewhere { home, .. })
            if crate::cluster::forward::hop_count(&headers) == 0 && !home.address.is_empty() =>
        {
            return super::forward::forward(
                &api,
                home.address,
                axum::http::Method::PUT,
                &uri,
                headers,
                bytes,
                &id,
            )
            .await;
        }
        Err(e) => return Err(ApiError::from(e).for_object(&id)),
    };
    let status = if outcome.unchanged {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(outcome)).into_response())
}

/// `POST /admin/objects/{id}/rollback` with `{"version": N}`.
pub(super) async fn rollback(
    State(api): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = object_id(path)?;
    let bytes = read_body(body, 64 << 10).await?;
    #[derive(serde::Deserialize)]
    struct Rollback {
        version: u32,
    }
    let request: Rollback = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            "bad_request",
            format!("expected a JSON body {{\"version\": N}}: {e}"),
        )
    })?;
    let outcome = api
        .station
        .rollback(&id, request.version, "rollback")
        .await
        .map_err(|e| ApiError::from(e).for_object(&id))?;
    let status = if outcome.unchanged {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(outcome)).into_response())
}

/// `DELETE /admin/objects/{id}[?purge=true]`.
pub(super) async fn undeploy(
    State(api): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = object_id(path)?;
    let purge = query_pairs(query.as_deref())
        .iter()
        .any(|(k, v)| k == "purge" && v == "true");
    api.station
        .undeploy(&id, purge)
        .await
        .map_err(|e| ApiError::from(e).for_object(&id))?;
    Ok(Json(
        json!({ "object_id": id, "undeployed": true, "purged": purge }),
    ))
}

/// `GET /admin/objects/{id}/logs`.
pub(super) async fn logs(
    State(api): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let id = object_id(path)?;
    view(&api, &id, "logs", &query_pairs(query.as_deref())).await
}

/// `GET /admin/objects/{id}/versions`.
pub(super) async fn versions(
    State(api): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = object_id(path)?;
    view(&api, &id, "versions", &[]).await
}

/// `GET /admin/objects/{id}/state[?key=K]`.
pub(super) async fn state(
    State(api): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let id = object_id(path)?;
    view(&api, &id, "state", &query_pairs(query.as_deref())).await
}

/// `GET /admin/objects/{id}/metadata`.
pub(super) async fn metadata(
    State(api): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = object_id(path)?;
    view(&api, &id, "metadata", &[]).await
}

/// `GET /admin/objects/{id}/alarms`: the object's pending alarms.
pub(super) async fn alarms(
    State(api): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = object_id(path)?;
    view(&api, &id, "alarms", &[]).await
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn parse_param<T: std::str::FromStr>(
    query: &[(String, String)],
    name: &str,
) -> Result<Option<T>, ApiError> {
    match param(query, name) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            ApiError::bad_request(
                "bad_request",
                format!("query parameter `{name}` has an invalid value {text:?}"),
            )
        }),
    }
}

/// One of the read-only views of an object, shared by `?logs=true` and `/admin/objects/{id}/logs`.
pub(super) async fn view(
    api: &ApiState,
    id: &str,
    view: &str,
    query: &[(String, String)],
) -> Result<Response, ApiError> {
    let station = &api.station;
    let body = match view {
        "logs" => {
            // The object must be deployed; its log is read even if it has no calls yet.
            station
                .metadata(id)
                .await
                .map_err(|e| ApiError::from(e).for_object(id))?;
            let min_level = match param(query, "level") {
                None | Some("") => None,
                Some(text) => Some(text.parse::<Level>().map_err(|_| {
                    ApiError::bad_request(
                        "bad_request",
                        format!("unknown level {text:?}: use trace, debug, info, warn or error"),
                    )
                })?),
            };
            // A follower catching up after a reconnection may ask for more than one page.
            let follow = super::log_stream::wants_follow(query);
            let log_query = LogQuery {
                min_level,
                since_ms: parse_param(query, "since")?,
                request_id: param(query, "request_id")
                    .filter(|r| !r.is_empty())
                    .map(str::to_string),
                limit: parse_param(query, "limit")?
                    .unwrap_or(DEFAULT_LOG_LIMIT)
                    .min(if follow {
                        super::log_stream::CATCH_UP_LIMIT
                    } else {
                        MAX_LOG_LIMIT
                    }),
            };
            if follow {
                let logs = station.store().logs().clone();
                let draining = api.config.draining.clone();
                return super::log_stream::follow(logs, id.to_string(), log_query, draining).await;
            }
            let logs = station.store().logs().clone();
            let records = super::log_stream::query(logs, id.to_string(), log_query).await?;
            json!({ "object_id": id, "logs": records })
        }
        "versions" => {
            let (current, versions) = station
                .versions(id)
                .await
                .map_err(|e| ApiError::from(e).for_object(id))?;
            json!({ "object_id": id, "current": current, "versions": versions })
        }
        "state" => {
            let state = station
                .state(id)
                .await
                .map_err(|e| ApiError::from(e).for_object(id))?;
            let mut snapshot = state.snapshot();
            // The host's own keys (idempotent answers) are not the object's state.
            snapshot.retain(|key, _| !crate::station::idempotency::is_reserved(key));
            let mut body =
                json!({ "object_id": id, "seq": state.applied_seq(), "state": snapshot });
            if let Some(key) = param(query, "key")
                && !crate::station::idempotency::is_reserved(key)
            {
                let limit = parse_param(query, "limit")?.unwrap_or(DEFAULT_LOG_LIMIT);
                let history: Vec<_> = state
                    .history(key, limit)
                    .into_iter()
                    .map(|v| json!({ "seq": v.seq, "at_ms": v.at_ms, "value": v.value }))
                    .collect();
                body["key"] = json!(key);
                body["value"] = json!(state.get(key));
                body["history"] = json!(history);
            }
            body
        }
        "alarms" => {
            let alarms = station
                .pending_alarms(id)
                .await
                .map_err(|e| ApiError::from(e).for_object(id))?;
            json!({ "object_id": id, "alarms": alarms })
        }
        "metadata" => json!(
            station
                .metadata(id)
                .await
                .map_err(|e| ApiError::from(e).for_object(id))?
        ),
        other => {
            return Err(ApiError::bad_request(
                "bad_request",
                format!("unknown view {other}"),
            ));
        }
    };
    Ok(Json(body).into_response())
}

/// Any route that does not exist.
pub(super) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}", uri.path()),
    )
}

/// A route that exists, with a method it does not answer.
pub(super) async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
