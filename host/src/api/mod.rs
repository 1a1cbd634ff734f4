//! The REST API of a station (DESIGN §5): routes, request parsing, JSON views.
//!
//! Handlers parse, call one [`Station`] method and map the result; errors become JSON with a
//! stable code only in [`error`]. This module knows nothing of TSV files or wasmtime internals.
//! `ui` serves the inspector page (`GET /ui`, files compiled in); `stats` the per-object figures
//! it shows (`GET /admin/stats`).

mod admin;
mod calls;
mod cluster;
pub mod error;
mod event_stream;
mod forward;
mod internal;
mod link;
mod log_stream;
mod metrics;
mod raft;
pub mod server;
mod stats;
mod trust;
mod ui;

use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get, post, put};

use crate::cluster::Cluster;
use crate::coordinator::Coordinator;
use crate::station::Station;

/// Limits the API enforces, from the command line.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Largest request body passed to an object.
    pub max_body_bytes: usize,
    /// Largest component accepted by a deploy.
    pub max_component_bytes: usize,
    /// When set, `/admin` routes require `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// The HTTP server's count of open client connections (for `GET /metrics`).
    pub open_connections: server::OpenConnections,
    /// Set when the station begins to shut down: streaming responses end then.
    pub draining: server::Draining,
}

/// What every handler receives: one shared [`ApiShared`] (every middleware layer and handler
/// takes a copy of the state, so a copy is one reference count).
#[derive(Clone)]
pub struct ApiState(Arc<ApiShared>);

impl std::ops::Deref for ApiState {
    type Target = ApiShared;

    fn deref(&self) -> &ApiShared {
        &self.0
    }
}

/// The station's parts the handlers use.
pub struct ApiShared {
    station: Station,
    cluster: Cluster,
    coordinator: Coordinator,
    config: Arc<ApiConfig>,
    /// This station's id as a header value, for `x-op-station` on every call answer.
    station_header: axum::http::HeaderValue,
    /// The router itself, set once built: requests arriving on a station link run through it.
    link_router: Arc<std::sync::OnceLock<Router>>,
}

/// Builds the router for a station.
pub fn router(coordinator: Coordinator, config: ApiConfig) -> Router {
    let station_header = axum::http::HeaderValue::try_from(coordinator.station().station_id())
        .unwrap_or_else(|_| axum::http::HeaderValue::from_static("invalid-station-id"));
    let state = ApiState(Arc::new(ApiShared {
        station_header,
        station: coordinator.station().clone(),
        cluster: coordinator.cluster().clone(),
        coordinator,
        config: Arc::new(config),
        link_router: Arc::new(std::sync::OnceLock::new()),
    }));
    let link_router = state.link_router.clone();
    let internal_routes = Router::new()
        .route("/cluster/internal/replicate", post(internal::replicate))
        .route(
            "/cluster/internal/migrate",
            post(internal::receive_migration),
        )
        .route(
            "/cluster/internal/objects/{id}/snapshot",
            post(internal::snapshot).get(internal::export_snapshot),
        )
        .route(
            "/cluster/internal/objects/{id}/versions",
            post(internal::version),
        )
        .route(
            "/cluster/internal/objects/{id}/position",
            get(internal::position),
        )
        .route("/cluster/internal/objects/{id}/code", get(internal::code))
        .route(
            "/cluster/internal/objects/{id}/precopy",
            post(internal::precopy),
        )
        .route("/cluster/internal/raft/append", post(raft::append))
        .route("/cluster/internal/raft/vote", post(raft::vote))
        .route("/cluster/internal/raft/snapshot", post(raft::snapshot))
        .route("/cluster/internal/raft/propose", post(raft::propose))
        .route("/cluster/internal/raft/lookup/{id}", get(raft::lookup))
        .route("/cluster/internal/raft/join", post(raft::join))
        .route("/cluster/internal/raft/lease", post(raft::lease))
        .route(crate::cluster::link::LINK_PATH, get(link::open))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            internal::require_cluster_secret,
        ));
    let migrate_route = Router::new()
        .route("/cluster/migrate", post(internal::migrate))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin_token,
        ));
    let stats_route = Router::new()
        .route("/admin/stats", get(stats::stats))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin_token,
        ));
    let admin_routes = Router::new()
        .route(
            "/admin/objects/{id}",
            put(admin::deploy).delete(admin::undeploy),
        )
        .route("/admin/objects/{id}/rollback", post(admin::rollback))
        .route("/admin/objects/{id}/logs", get(admin::logs))
        .route("/admin/objects/{id}/versions", get(admin::versions))
        .route("/admin/objects/{id}/state", get(admin::state))
        .route("/admin/objects/{id}/metadata", get(admin::metadata))
        .route("/admin/objects/{id}/alarms", get(admin::alarms))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forward::route_admin,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin_token,
        ));
    let router = Router::new()
        .route("/health", get(admin::health))
        .route("/metrics", get(metrics::metrics))
        .route("/cluster/info", get(cluster::info))
        .route("/cluster/stations", get(cluster::stations))
        .route("/objects", get(admin::list_objects))
        .route("/objects/{id}", any(calls::call_object))
        .route("/objects/{id}/", any(calls::call_object))
        .route("/objects/{id}/{*path}", any(calls::call_object))
        .merge(admin_routes)
        .merge(internal_routes)
        .merge(migrate_route)
        .merge(stats_route)
        .route("/ui", get(ui::index))
        .route("/ui/", get(ui::index))
        .route("/ui/{file}", get(ui::file))
        .fallback(admin::not_found)
        .method_not_allowed_fallback(admin::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(trust::strip_station_headers))
        .with_state(state);
    let _ = link_router.set(router.clone());
    router
}

/// Checks the bearer token on an admin request, when the station is configured with one.
fn check_admin_token(
    api: &ApiState,
    headers: &axum::http::HeaderMap,
) -> Result<(), error::ApiError> {
    let Some(token) = &api.config.admin_token else {
        return Ok(());
    };
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .filter(|v| v.starts_with(b"Bearer "));
    if presented.is_some_and(|v| trust::carries_token(v, token)) {
        Ok(())
    } else {
        Err(error::ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route needs `Authorization: Bearer <admin token>`",
        ))
    }
}

/// Whether a request may use an admin route or view: with `--admin-token`, only with the token;
/// without one, only from a loopback client or from another station (which applied this rule
/// where the client connected).
fn authorize_admin(
    api: &ApiState,
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
) -> Result<(), error::ApiError> {
    if api.config.admin_token.is_some() {
        return check_admin_token(api, headers);
    }
    if extensions.get::<trust::FromStation>().is_some() {
        return Ok(());
    }
    match extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        Some(axum::extract::ConnectInfo(peer)) if !peer.ip().is_loopback() => {
            Err(error::ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                "without --admin-token, admin routes and views answer loopback clients only",
            ))
        }
        _ => Ok(()),
    }
}

/// Refuses admin requests that [`authorize_admin`] does not allow.
async fn require_admin_token(
    axum::extract::State(api): axum::extract::State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match authorize_admin(&api, request.headers(), request.extensions()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Reads a body up to `limit` bytes; past it, a 413 with the stable code.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, error::ApiError> {
    use axum::body::HttpBody as _;
    // A declared length over the limit is refused before anything is read (a client that sends
    // the header and never the body gets its 413 at once instead of holding the connection).
    if body.size_hint().lower() > limit as u64 {
        return Err(error::ApiError::body_too_large(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // to_bytes reports a length-limit error, the body timeout, or an I/O error of the
        // connection.
        if let Some(timed_out) = find_source::<server::BodyTimedOut>(&e) {
            return error::ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                timed_out.to_string(),
            );
        }
        let text = e.to_string();
        if text.contains("length limit")
            || std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit"))
        {
            error::ApiError::body_too_large(limit)
        } else {
            error::ApiError::bad_request(
                "bad_body",
                format!("could not read the request body: {text}"),
            )
        }
    })
}

/// The first error of type `E` in `error`'s chain of sources.
fn find_source<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// Decodes a query string into ordered pairs.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}
