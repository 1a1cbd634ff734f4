//! `ANY /objects/{id}[/{*path}]`: pass a request to an object and its response back unchanged.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::forward::{Route, forward, route};
use super::{ApiState, admin, query_pairs, read_body};
use crate::cluster::forward::{CHAIN, DEADLINE};
use crate::runtime::{CallChain, ObjectRequest};
use crate::trace::{CallSpan, TRACEPARENT_NAME, TraceContext};

/// Query keys a GET may use to reach the station's views of an object instead of the object
/// (compatibility with the Python prototype).
const RESERVED_VIEWS: &[&str] = &["logs", "versions", "state", "metadata", "alarms"];

/// Headers the host sets itself; an object's values for them are dropped.
const HOP_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "x-request-id",
];

/// Splits `/objects/{id}/{rest}` into the decoded id and the raw rest (`/` when empty).
fn split_object_path(path: &str) -> Result<(String, String), ApiError> {
    let after = path.strip_prefix("/objects/").unwrap_or("");
    let (raw_id, rest) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, "/"),
    };
    let id = percent_encoding::percent_decode_str(raw_id)
        .decode_utf8()
        .map_err(|_| {
            ApiError::bad_request("invalid_object_id", "the object id is not valid UTF-8")
        })?
        .into_owned();
    crate::station::validate_object_id(&id)
        .map_err(|e| ApiError::bad_request("invalid_object_id", e.to_string()))?;
    Ok((id, rest.to_string()))
}

/// A request id from the client's `x-request-id` if it is sane, else a fresh one.
fn request_id(headers: &axum::http::HeaderMap) -> String {
    if let Some(value) = headers.get(&REQUEST_ID).and_then(|v| v.to_str().ok())
        && !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return value.to_string();
    }
    crate::trace::hex_id(&crate::trace::random_bytes::<8>())
}

/// The call chain of an object-to-object call forwarded from another station, if this is one
/// (the trust layer has removed these headers from every request that did not come from a
/// station). Its deadline is capped at this station's own `longest`.
fn incoming_chain(
    headers: &axum::http::HeaderMap,
    request_id: &str,
    longest: std::time::Duration,
    span: &CallSpan,
) -> Option<CallChain> {
    let objects = headers.get(&CHAIN)?.to_str().ok()?;
    let longest_ms = longest.as_millis() as u64;
    let remaining_ms: u64 = headers
        .get(&DEADLINE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(longest_ms)
        .min(longest_ms);
    Some(CallChain {
        request_id: request_id.to_string(),
        objects: objects
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect(),
        deadline: std::time::Instant::now() + std::time::Duration::from_millis(remaining_ms),
        trace: span.span,
    })
}

/// The handler for every object call.
pub(super) async fn call_object(
    State(api): State<ApiState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let (id, path) = split_object_path(parts.uri.path())?;
    let query = query_pairs(parts.uri.query());
    // An admin view (`?state=true`, ...) is for administrators, authorized where the client
    // connected. Another object's `call-object` never gets one: it arrives from a station with
    // a call chain, and the query goes to the object like any other.
    let from_object = parts
        .extensions
        .get::<super::trust::FromStation>()
        .is_some()
        && parts.headers.contains_key(&CHAIN);
    let view = query
        .iter()
        .find(|(k, v)| RESERVED_VIEWS.contains(&k.as_str()) && v == "true")
        .map(|(k, _)| k.clone())
        .filter(|_| parts.method == Method::GET && !from_object);
    if view.is_some() {
        super::authorize_admin(&api, &parts.headers, &parts.extensions)
            .map_err(|e| e.for_object(&id))?;
    }
    // `GET /objects/{id}/events` is the object's event stream. The object's own GET of
    // `/events` runs first, as an admission check: a 2xx answer opens the stream.
    let events = parts.method == Method::GET
        && path == super::event_stream::EVENTS_PATH
        && view.is_none()
        && !from_object;

    if let Route::Remote(home) = route(&api, &id, &parts.headers).await? {
        if events || view.as_deref() == Some("logs") && super::log_stream::wants_follow(&query) {
            return super::forward::forward_stream(&api, home, &parts.uri, &parts.headers, &id)
                .await;
        }
        let body = read_body(body, api.config.max_body_bytes)
            .await
            .map_err(|e| e.for_object(&id))?;
        return forward(
            &api,
            home,
            parts.method,
            &parts.uri,
            parts.headers,
            body,
            &id,
        )
        .await;
    }
    if let Err(reason) = api.cluster.quorum() {
        return Err(
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason).for_object(&id),
        );
    }

    if let Some(view) = view {
        return admin::view(&api, &id, &view, &query).await;
    }
    // A subscription's own parameters are checked before the object runs.
    let mut subscription = if events {
        Some(
            super::event_stream::Subscription::parse(&parts.headers, &query)
                .map_err(|e| e.for_object(&id))?,
        )
    } else {
        None
    };
    let method = match parts.method {
        Method::GET | Method::POST | Method::PUT | Method::DELETE | Method::PATCH => {
            parts.method.as_str().to_string()
        }
        // HEAD runs as GET; the HTTP server sends the headers of the answer without its body.
        Method::HEAD => "GET".to_string(),
        other => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("objects answer GET, HEAD, POST, PUT, DELETE and PATCH, not {other}"),
            )
            .for_object(&id));
        }
    };
    let body = read_body(body, api.config.max_body_bytes)
        .await
        .map_err(|e| e.for_object(&id))?;
    let headers = super::trust::object_headers(&api, &parts.headers);
    let request_id = request_id(&parts.headers);
    // The call's span: a child of the caller's (a client's or another station's `traceparent`).
    let span = api
        .station
        .tracer()
        .call_span(TraceContext::from_headers(&parts.headers).as_ref());
    let chain = incoming_chain(
        &parts.headers,
        &request_id,
        api.station.call_deadline(),
        &span,
    );
    if let Some(chain) = &chain
        && chain.objects.iter().any(|o| o == &id)
    {
        return Err(ApiError::new(
            StatusCode::LOOP_DETECTED,
            "loop_detected",
            format!(
                "`{id}` is already on the call chain {}",
                chain.objects.join(" -> ")
            ),
        )
        .for_object(&id));
    }
    let object_request = ObjectRequest {
        method,
        path,
        query,
        headers,
        body: body.to_vec(),
    };
    match api
        .station
        .call(&id, object_request, request_id.clone(), chain, span)
        .await
    {
        // The object admitted the subscriber (its GET of `/events` answered 2xx): stream.
        Ok(result) if subscription.is_some() && (200..300).contains(&result.response.status) => {
            let subscription = subscription.take().expect("checked by the guard");
            super::event_stream::events(&api, &id, subscription).await
        }
        Ok(result) => Ok(into_http(
            result.response,
            &result.request_id,
            &api.station_header,
            &span.span,
        )),
        Err(crate::station::Error::Moved { address, .. })
            if crate::cluster::forward::hop_count(&parts.headers)
                < crate::cluster::forward::MAX_HOPS =>
        {
            // The object moved while this call waited for its turn: run it at the new home.
            forward(
                &api,
                address,
                parts.method,
                &parts.uri,
                parts.headers,
                body,
                &id,
            )
            .await
        }
        Err(e) => {
            // Error answers carry the request id too, so a trap can be found in the log.
            let mut response = ApiError::from(e).for_object(&id).into_response();
            if let Ok(value) = HeaderValue::try_from(request_id.as_str()) {
                response.headers_mut().insert(REQUEST_ID.clone(), value);
            }
            if let Ok(value) = HeaderValue::try_from(span.span.header()) {
                response
                    .headers_mut()
                    .insert(TRACEPARENT_NAME.clone(), value);
            }
            response
                .headers_mut()
                .insert(STATION.clone(), api.station_header.clone());
            Ok(response)
        }
    }
}

/// Header naming the station that ran a call (forwarded answers keep the serving station's).
pub const STATION_HEADER: &str = "x-op-station";
/// [`STATION_HEADER`] as a header name (set on every answer).
static STATION: HeaderName = HeaderName::from_static(STATION_HEADER);
/// The request id's header (read and answered on every call).
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Builds the HTTP response from the object's, adding the request id, the serving station and
/// the call's `traceparent`.
fn into_http(
    response: crate::runtime::ObjectResponse,
    request_id: &str,
    station: &HeaderValue,
    span: &TraceContext,
) -> Response {
    // The station refused statuses outside 200–599 already (`station::Error::InvalidResponse`).
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut http = Response::builder().status(status);
    let headers = http.headers_mut().expect("a fresh builder has headers");
    for (name, value) in response.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) else {
            tracing::debug!(header = %name, "dropping an invalid response header from an object");
            continue;
        };
        if HOP_HEADERS.contains(&name.as_str()) {
            continue;
        }
        headers.append(name, value);
    }
    if let Ok(value) = HeaderValue::try_from(request_id) {
        headers.insert(REQUEST_ID.clone(), value);
    }
    headers.insert(STATION.clone(), station.clone());
    if let Ok(value) = HeaderValue::try_from(span.header()) {
        headers.insert(TRACEPARENT_NAME.clone(), value);
    }
    http.body(Body::from(response.body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_id_and_raw_rest() {
        assert_eq!(
            split_object_path("/objects/kv").unwrap(),
            ("kv".into(), "/".into())
        );
        assert_eq!(
            split_object_path("/objects/kv/").unwrap(),
            ("kv".into(), "/".into())
        );
        assert_eq!(
            split_object_path("/objects/kv/a%2Fb/c").unwrap(),
            ("kv".into(), "/a%2Fb/c".into())
        );
    }

    #[test]
    fn refuses_traversal_in_any_spelling() {
        for path in [
            "/objects/..",
            "/objects/%2e%2e",
            "/objects/..%2Fx",
            "/objects/%2E%2E/x",
            "/objects/",
            "/objects/A",
            "/objects/%ff",
        ] {
            let err = split_object_path(path).unwrap_err();
            assert_eq!(err.code, "invalid_object_id", "{path}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any path, percent-escapes included: no panic, and an accepted id is a valid one with
        /// the rest of the path passed on unchanged.
        #[test]
        fn any_object_path_splits_safely(tail in "(%[0-9a-fA-F]{2}|%|[a-zA-Z0-9./_~-]|\\PC){0,60}") {
            let path = format!("/objects/{tail}");
            if let Ok((id, rest)) = split_object_path(&path) {
                proptest::prop_assert!(crate::station::validate_object_id(&id).is_ok());
                proptest::prop_assert!(rest.starts_with('/'));
                proptest::prop_assert!(rest == "/" || path.ends_with(&rest));
            }
        }
    }
}
