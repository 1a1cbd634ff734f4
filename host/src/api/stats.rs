//! `GET /admin/stats`: per-object figures as JSON for the inspector (`/ui`): calls by status,
//! timeouts, traps, a p50/p99 estimate from the call-duration histogram, queue depth and state
//! size — what `GET /metrics` exposes for the same objects, read from the same counters
//! ([`crate::metrics::CallMetrics`], [`crate::station::ObjectGauges`]). `?scope=cluster` adds
//! the answer of every other live station, asked over the station links, so the page on any
//! station shows every object. One entry per object deployed on a station: the size is bounded
//! by the objects, never by requests or keys.

use std::time::Duration;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use serde::Serialize;
use serde_json::json;

use super::error::ApiError;
use super::{ApiState, query_pairs};
use crate::cluster::ForwardRequest;

/// How long a station asked for its figures may take to answer.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(2);

/// The figures of one object on one station.
#[derive(Debug, Serialize, PartialEq)]
pub(super) struct ObjectStats {
    id: String,
    version: u32,
    /// Finished calls since the station started.
    calls: u64,
    /// Those calls by status class (`2xx` … `5xx`, `error`: a station error).
    by_status: serde_json::Map<String, serde_json::Value>,
    timeouts: u64,
    /// Calls that trapped or ran out of time.
    traps: u64,
    /// Estimates from the duration histogram, in milliseconds (`null` without calls).
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    mean_ms: Option<f64>,
    /// Calls running or waiting for the turn.
    queued: u32,
    live_instance: bool,
    /// `null` while the object's state is not open.
    state_keys: Option<u64>,
    state_bytes: Option<u64>,
}

/// Milliseconds, rounded to the microsecond.
fn millis(seconds: f64) -> f64 {
    (seconds * 1e6).round() / 1e3
}

/// Joins an object's gauges and its call counts into its figures.
fn object_stats(
    gauges: crate::station::ObjectGauges,
    calls: crate::metrics::ObjectCalls,
) -> ObjectStats {
    let durations = &calls.durations;
    let mean = (durations.count > 0).then(|| durations.sum_seconds / durations.count as f64);
    ObjectStats {
        calls: durations.count,
        by_status: calls
            .by_status
            .iter()
            .map(|(status, n)| (status.to_string(), json!(n)))
            .collect(),
        timeouts: calls.timeouts,
        traps: gauges.traps,
        p50_ms: durations.quantile(0.5).map(millis),
        p99_ms: durations.quantile(0.99).map(millis),
        mean_ms: mean.map(millis),
        queued: gauges.queued,
        live_instance: gauges.live_instance,
        state_keys: gauges.state_keys,
        state_bytes: gauges.state_bytes,
        version: gauges.version,
        id: gauges.id,
    }
}

/// This station's figures: `{"station", "at_ms", "objects": [...]}`.
fn local_stats(api: &ApiState) -> serde_json::Value {
    let metrics = api.station.call_metrics();
    let objects: Vec<ObjectStats> = api
        .station
        .object_gauges()
        .into_iter()
        .map(|gauges| {
            let calls = metrics.object(&gauges.id);
            object_stats(gauges, calls)
        })
        .collect();
    json!({
        "station": api.cluster.station_id(),
        "at_ms": crate::store::now_ms(),
        "objects": objects,
    })
}

/// Asks the station at `address` for its own figures, with the caller's credentials.
async fn remote_stats(
    api: &ApiState,
    station: String,
    address: String,
    authorization: Option<axum::http::HeaderValue>,
) -> Result<serde_json::Value, serde_json::Value> {
    let mut headers = HeaderMap::new();
    if let Some(value) = authorization {
        headers.insert(axum::http::header::AUTHORIZATION, value);
    }
    let request = ForwardRequest {
        base_url: address,
        method: Method::GET,
        path_and_query: "/admin/stats".to_string(),
        headers,
        body: bytes::Bytes::new(),
        timeout: REMOTE_TIMEOUT,
    };
    let failed = |message: String| json!({ "station": station, "message": message });
    let answer = api
        .cluster
        .forward(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    if answer.status != StatusCode::OK {
        let text = String::from_utf8_lossy(&answer.body);
        return Err(failed(format!("answered {}: {text}", answer.status)));
    }
    serde_json::from_slice(&answer.body).map_err(|e| failed(format!("unreadable answer: {e}")))
}

/// `GET /admin/stats[?scope=cluster]`: this station's figures, or with `scope=cluster`
/// `{"station", "at_ms", "stations": [<each live station's figures>], "unreachable":
/// [{"station", "message"}]}`.
pub(super) async fn stats(
    State(api): State<ApiState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let scope = query_pairs(query.as_deref())
        .into_iter()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v);
    match scope.as_deref() {
        None | Some("") | Some("station") => return Ok(Json(local_stats(&api))),
        Some("cluster") => {}
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad_request",
                format!("scope must be station or cluster, not {other:?}"),
            ));
        }
    }
    let view = api.cluster.view();
    let authorization = headers.get(axum::http::header::AUTHORIZATION).cloned();
    let asks = view
        .live()
        .filter(|m| m.id != api.cluster.station_id() && !m.address.is_empty())
        .map(|m| remote_stats(&api, m.id.clone(), m.address.clone(), authorization.clone()));
    let answers = futures::future::join_all(asks).await;
    let mut stations = vec![local_stats(&api)];
    let mut unreachable = Vec::new();
    for answer in answers {
        match answer {
            Ok(figures) => stations.push(figures),
            Err(failure) => unreachable.push(failure),
        }
    }
    Ok(Json(json!({
        "station": api.cluster.station_id(),
        "at_ms": crate::store::now_ms(),
        "stations": stations,
        "unreachable": unreachable,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_join_the_gauges_and_the_call_counts() {
        let metrics = crate::metrics::CallMetrics::default();
        for _ in 0..99 {
            metrics.call("c", "POST", "2xx", Duration::from_millis(1));
        }
        metrics.call("c", "GET", "error", Duration::from_millis(100));
        let gauges = crate::station::ObjectGauges {
            id: "c".into(),
            version: 2,
            queued: 0,
            live_instance: true,
            traps: 1,
            state_keys: Some(3),
            state_bytes: Some(40),
        };
        let stats = object_stats(gauges, metrics.object("c"));
        assert_eq!(stats.calls, 100);
        assert_eq!(stats.by_status["2xx"], 99);
        assert_eq!(stats.by_status["error"], 1);
        assert_eq!(stats.traps, 1);
        assert_eq!(stats.state_bytes, Some(40));
        // Rank 99 of 100 is the last of the 1 ms calls: the top of their 0.8–1.6 ms bucket.
        assert_eq!(stats.p99_ms, Some(1.6));
        assert_eq!(stats.mean_ms, Some(1.99));
        let text = serde_json::to_value(&stats).unwrap();
        assert_eq!(text["p50_ms"], json!(stats.p50_ms.unwrap()));
        assert_eq!(text["by_status"].as_object().unwrap().len(), 5);
    }
}
