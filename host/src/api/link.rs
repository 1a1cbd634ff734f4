//! `GET /cluster/internal/link`: the receiving end of a station link (`cluster/link/`). The
//! request is upgraded; every request frame on it then runs through this station's own router,
//! middleware and limits included, exactly as if it had arrived over HTTP.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

use super::ApiState;
use super::error::ApiError;
use crate::cluster::link::{self, LinkRequest, LinkResponse, frame::MAX_FRAME};

/// Upgrades the connection to a link and serves it.
pub(super) async fn open(State(api): State<ApiState>, mut request: Request) -> Response {
    let asks_for_link = request.headers().get(header::UPGRADE).is_some_and(|v| {
        v.as_bytes()
            .eq_ignore_ascii_case(link::LINK_PROTOCOL.as_bytes())
    });
    if !asks_for_link {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("this route upgrades to `{}` only", link::LINK_PROTOCOL),
        )
        .into_response();
    }
    let Some(router) = api.link_router.get().cloned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the station is starting",
        )
        .into_response();
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                link::serve(io, move |request| run(router.clone(), request)).await;
            }
            Err(e) => tracing::debug!("link upgrade failed: {e}"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(
        header::UPGRADE,
        HeaderValue::from_static(link::LINK_PROTOCOL),
    );
    response
}

/// Runs one request from a link through the router and collects its answer.
async fn run(router: axum::Router, request: LinkRequest) -> LinkResponse {
    let mut http_request = axum::http::Request::new(Body::from(request.body));
    *http_request.method_mut() = request.method;
    *http_request.headers_mut() = request.headers;
    // Only a station holding the cluster secret can open a link: its requests may steer.
    http_request
        .extensions_mut()
        .insert(super::trust::FromStation);
    match request.path_and_query.parse() {
        Ok(uri) => *http_request.uri_mut() = uri,
        Err(_) => {
            return answer(
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "invalid path")
                    .into_response(),
            )
            .await;
        }
    }
    let response = match router.oneshot(http_request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    answer(response).await
}

/// A response as a link frame (its body read whole).
async fn answer(response: Response) -> LinkResponse {
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, MAX_FRAME).await {
        Ok(body) => LinkResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        },
        Err(e) => {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let body = serde_json::json!({
                "error": "internal",
                "message": format!("the answer could not be read: {e}"),
            });
            LinkResponse {
                status: StatusCode::BAD_GATEWAY,
                headers,
                body: body.to_string().into(),
            }
        }
    }
}
