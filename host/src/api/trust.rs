//! The trust boundary of the API: which request headers the station honours, and which an
//! object may see.
//!
//! Headers named `x-op-*` steer the station (the hop count, the call chain, the deadline, the
//! forwarding station, the cluster secret). They are honoured only on requests that arrive from
//! another station: over a station link (marked [`FromStation`] by the link's receiving end,
//! which only a station holding the cluster secret can open) or on the secret-checked
//! `/cluster/internal/` routes. Everywhere else they are removed before any handler reads them.
//! An object never sees an `x-op-*` header, nor an `Authorization` header carrying the admin
//! token; an application's own `Authorization` header reaches it unchanged.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::ApiState;

/// Marks a request that arrived over a station link (see `api/link.rs`).
#[derive(Debug, Clone, Copy)]
pub(super) struct FromStation;

/// Prefix of the headers that steer the station.
const STATION_PREFIX: &str = "x-op-";

/// Equality that takes the same time wherever the inputs differ (tokens, secrets).
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Whether `name` is a header that steers the station.
fn steers_station(name: &HeaderName) -> bool {
    name.as_str().starts_with(STATION_PREFIX)
}

/// Removes the station-steering headers from every request that did not come from a station.
pub(super) async fn strip_station_headers(mut request: Request, next: Next) -> Response {
    let from_station = request.extensions().get::<FromStation>().is_some()
        || request.uri().path().starts_with("/cluster/internal/");
    if !from_station {
        remove_station_headers(request.headers_mut());
    }
    next.run(request).await
}

fn remove_station_headers(headers: &mut HeaderMap) {
    if !headers.keys().any(steers_station) {
        return;
    }
    let steering: Vec<HeaderName> = headers
        .keys()
        .filter(|name| steers_station(name))
        .cloned()
        .collect();
    for name in steering {
        headers.remove(name);
    }
}

/// The headers an object receives: all but the station-steering ones and an `Authorization`
/// header that carries the admin token.
pub(super) fn object_headers(api: &ApiState, headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !steers_station(name))
        .filter(|(name, value)| {
            **name != header::AUTHORIZATION
                || !api
                    .config
                    .admin_token
                    .as_deref()
                    .is_some_and(|token| carries_token(value.as_bytes(), token))
        })
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Whether an `Authorization` value is `Bearer <token>` (constant-time in the token).
pub(super) fn carries_token(value: &[u8], token: &str) -> bool {
    let presented = value.strip_prefix(b"Bearer ").unwrap_or(value);
    constant_time_eq(presented, token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_station_headers_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-op-chain", "a,b"),
            ("x-op-deadline-ms", "18446744073709551615"),
            ("x-op-hop", "1"),
            ("x-op-cluster-secret", "s3cret"),
            ("X-OP-Forwarded-By", "st-1"),
            ("authorization", "Bearer app-token"),
            ("x-request-id", "r-1"),
            ("x-opinion", "kept"),
        ] {
            headers.insert(
                HeaderName::try_from(name).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        remove_station_headers(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort();
        assert_eq!(left, ["authorization", "x-opinion", "x-request-id"]);
    }

    #[test]
    fn the_admin_token_is_recognised_only_whole() {
        assert!(carries_token(b"Bearer t0ken", "t0ken"));
        assert!(!carries_token(b"Bearer t0ke", "t0ken"));
        assert!(!carries_token(b"Bearer t0ken2", "t0ken"));
        assert!(!carries_token(b"Bearer app-token", "t0ken"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
