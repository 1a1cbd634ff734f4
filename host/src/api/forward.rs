//! Routing a request to the station that homes its object, in one hop.

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;

use super::ApiState;
use super::error::ApiError;
use crate::cluster::{ForwardError, ForwardRequest, HOP_HEADER};

/// Where a request for an object should run.
pub(super) enum Route {
    /// On this station.
    Local,
    /// On the station at this base URL.
    Remote(String),
}

/// Decides where a request for `id` runs, from the directory: at the home it names (one hop),
/// here if that is this station. An id this station's copy of the directory does not list is
/// looked up at the leader (a linearizable read) before the station answers 404, so a deploy
/// acknowledged anywhere is routed everywhere. A request is forwarded at most `MAX_HOPS` times in
/// all: past that, a station that does not serve the object answers 503 `not_home` (placement is
/// changing), so a loop cannot happen.
///
/// A stateless object has no home: its calls run on the least-loaded station holding its newest
/// code, here unless another holder is clearly less loaded, and a forwarded call always runs where
/// it arrives.
pub(super) async fn route(
    api: &ApiState,
    id: &str,
    headers: &HeaderMap,
) -> Result<Route, ApiError> {
    let hops = crate::cluster::forward::hop_count(headers);
    let served_here = api.station.serves_stateless(id);
    let may_forward = hops < crate::cluster::forward::MAX_HOPS;
    if served_here == Some(true) {
        return Ok(stateless_route(api, id, hops, true).unwrap_or(Route::Local));
    }
    let directory = api.cluster.directory();
    if let Some(address) = api.station.moved_to(id).filter(|a| !a.is_empty())
        && may_forward
    {
        // The object left this station. Where the directory names its home now, go there by the
        // home's current address: the one recorded at the hand-off goes stale when that station
        // restarts on another port.
        let named = directory
            .lookup(id)
            .and_then(|entry| api.cluster.home_from(entry))
            .filter(|home| home.station != api.cluster.station_id() && !home.address.is_empty());
        return Ok(Route::Remote(named.map_or(address, |home| home.address)));
    }
    // The common case, decided without copying the entry: this station is the home.
    let homed_here = |entry: &crate::cluster::ObjectEntry| {
        entry.mode == crate::cluster::directory::Mode::Stateful
            && entry.home == api.cluster.station_id()
    };
    if directory.with_entry(id, homed_here) == Some(true) {
        return Ok(Route::Local);
    }
    let entry = match directory.lookup(id) {
        Some(entry) => Some(entry),
        // Homed here and not listed yet (a claim under way at start-up): the call checks.
        None if served_here == Some(false) => return Ok(Route::Local),
        None => {
            if let Some(route) = stateless_route(api, id, hops, false) {
                return Ok(route);
            }
            directory.lookup_linearizable(id).await.map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "directory_unavailable",
                    format!("cannot tell where `{id}` lives: {e}"),
                )
                .for_object(id)
            })?
        }
    };
    // A station that just received the object in a migration serves it at a newer epoch than
    // its copy of the directory knows yet: the call waits here for the directory to catch up.
    if let (Some(entry), Some(epoch_here)) = (&entry, api.station.epoch_of(id))
        && served_here == Some(false)
        && epoch_here > entry.epoch
    {
        return Ok(Route::Local);
    }
    let Some(home) = entry.and_then(|e| api.cluster.home_from(e)) else {
        // Not deployed anywhere (this station answers 404), or stateless and not held anywhere.
        return Ok(Route::Local);
    };
    if home.station == api.cluster.station_id() {
        return Ok(Route::Local);
    }
    let view = api.cluster.view();
    if view
        .member(&home.station)
        .is_some_and(|m| m.state == crate::cluster::MemberState::Dead)
    {
        // The home is down and the directory has not moved the object yet: a retryable 503.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "home_unavailable",
            format!(
                "the home station {} of `{id}` is down; a replica takes over within seconds, retry",
                home.station
            ),
        )
        .for_object(id));
    }
    if !may_forward || home.address.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_home",
            format!("this station does not home `{id}`; placement is changing, retry"),
        )
        .for_object(id));
    }
    Ok(Route::Remote(home.address))
}

/// Where a call to a stateless object runs; `None` if `id` is not a stateless object known here.
fn stateless_route(api: &ApiState, id: &str, hops: u32, held_here: bool) -> Option<Route> {
    if held_here && hops > 0 {
        return Some(Route::Local);
    }
    match api.cluster.stateless_target(id) {
        Some((station, _)) if station == api.cluster.station_id() => Some(Route::Local),
        Some((_, address)) if hops < crate::cluster::forward::MAX_HOPS => {
            Some(Route::Remote(address))
        }
        // The gossip has not caught up with a deploy here yet: serve it.
        _ if held_here => Some(Route::Local),
        _ => None,
    }
}

/// The path and query of `uri`, as the home station should see them.
fn path_and_query(uri: &Uri) -> String {
    uri.path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string())
}

/// Sends the request to `base_url` and returns its answer unchanged.
pub(super) async fn forward(
    api: &ApiState,
    base_url: String,
    method: Method,
    uri: &Uri,
    headers: HeaderMap,
    body: bytes::Bytes,
    id: &str,
) -> Result<Response, ApiError> {
    let request = ForwardRequest {
        base_url,
        method,
        path_and_query: path_and_query(uri),
        headers,
        body,
        timeout: std::time::Duration::from_secs(130),
    };
    let answer = api.cluster.forward(request).await.map_err(|e| match e {
        ForwardError::Timeout(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "station_timeout",
            e.to_string(),
        )
        .for_object(id),
        ForwardError::Unavailable { .. } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "station_unavailable",
            e.to_string(),
        )
        .for_object(id),
    })?;
    let mut response = Response::builder().status(answer.status);
    if let Some(headers) = response.headers_mut() {
        *headers = answer.headers;
    }
    response.body(Body::from(answer.body)).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "station_unavailable",
            e.to_string(),
        )
    })
}

/// Sends a streaming request (a log follow) to `base_url` and streams its answer back as it
/// arrives, on a connection of its own (a link answers whole responses only).
pub(super) async fn forward_stream(
    api: &ApiState,
    base_url: String,
    uri: &Uri,
    headers: &HeaderMap,
    id: &str,
) -> Result<Response, ApiError> {
    use crate::cluster::forward::{FORWARDED_BY_HEADER, SECRET_HEADER};
    let url = format!("{}{}", base_url.trim_end_matches('/'), path_and_query(uri));
    let mut request = api
        .cluster
        .http()
        .get(&url)
        .header(HOP_HEADER, crate::cluster::forward::hop_count(headers) + 1)
        .header(FORWARDED_BY_HEADER, api.cluster.station_id());
    for name in ["authorization", "accept", "last-event-id"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    if let Some(secret) = api.cluster.secret() {
        request = request.header(SECRET_HEADER, secret);
    }
    let answer = request.send().await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "station_unavailable",
            format!("station {base_url} is unavailable: {e}"),
        )
        .for_object(id)
    })?;
    let mut response = Response::builder().status(answer.status());
    for name in ["content-type", "cache-control", "x-op-station"] {
        if let Some(value) = answer.headers().get(name) {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from_stream(futures::StreamExt::take_until(
            answer.bytes_stream(),
            api.config.draining.clone().begun(),
        )))
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "station_unavailable",
                e.to_string(),
            )
        })
}

/// Middleware on `/admin/objects/{id}/...`: runs the request where the object is homed. A deploy
/// with `?place=auto` of an object no station has yet goes to the least-loaded station.
pub(super) async fn route_admin(
    axum::extract::State(api): axum::extract::State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::response::IntoResponse;
    let raw_id = request
        .uri()
        .path()
        .strip_prefix("/admin/objects/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    let Ok(id) = percent_encoding::percent_decode_str(raw_id)
        .decode_utf8()
        .map(|id| id.into_owned())
    else {
        return next.run(request).await;
    };
    if crate::station::validate_object_id(&id).is_err() {
        // The handler answers with the precise error.
        return next.run(request).await;
    }
    // A stateless object held here is administered here (each station keeps its own copy and
    // log; a deploy spreads through the cluster from here).
    let stateless_here = api.station.serves_stateless(&id) == Some(true);
    let routed = if stateless_here {
        Ok(Route::Local)
    } else {
        route(&api, &id, request.headers()).await
    };
    let mut target = match routed {
        Ok(Route::Remote(home)) => Some(home),
        Ok(Route::Local) => None,
        Err(e) => return e.into_response(),
    };
    let is_deploy = request.method() == Method::PUT
        && request.uri().path().trim_end_matches('/') == format!("/admin/objects/{raw_id}");
    let place_auto = super::query_pairs(request.uri().query())
        .iter()
        .any(|(k, v)| k == "place" && v == "auto");
    if target.is_none()
        && is_deploy
        && place_auto
        && !api.station.serves(&id)
        && !request.headers().contains_key(HOP_HEADER)
        && let Some(station) = api.cluster.least_loaded()
        && station.id != api.cluster.station_id()
    {
        target = Some(station.address);
    }
    let Some(base_url) = target else {
        return next.run(request).await;
    };
    if request.method() == Method::GET
        && super::log_stream::wants_follow(&super::query_pairs(request.uri().query()))
    {
        return forward_stream(&api, base_url, request.uri(), request.headers(), &id)
            .await
            .unwrap_or_else(|e| e.into_response());
    }
    let (parts, body) = request.into_parts();
    let body = match super::read_body(body, api.config.max_component_bytes).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    match forward(
        &api,
        base_url,
        parts.method,
        &parts.uri,
        parts.headers,
        body,
        &id,
    )
    .await
    {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}
