//! Forwarding a call to the object's home in one hop (over the station link, `link/`), with the
//! headers that carry the hop count, the call chain and the deadline; and the HTTP client every
//! other station-to-station request uses.

use std::time::Duration;

use bytes::Bytes;

/// Set on every forwarded request; a station never forwards a request that carries it.
pub const HOP_HEADER: &str = "x-op-hop";
/// The object ids already on the call chain, comma-separated (cycle detection across stations).
pub const CHAIN_HEADER: &str = "x-op-chain";
/// Milliseconds left before the caller's deadline.
pub const DEADLINE_HEADER: &str = "x-op-deadline-ms";
/// [`HOP_HEADER`], [`CHAIN_HEADER`] and [`DEADLINE_HEADER`] as header names: every call looks
/// them up, and a lookup by `&str` parses and lower-cases the name first.
pub static HOP: http::HeaderName = http::HeaderName::from_static(HOP_HEADER);
/// See [`HOP`].
pub static CHAIN: http::HeaderName = http::HeaderName::from_static(CHAIN_HEADER);
/// See [`HOP`].
pub static DEADLINE: http::HeaderName = http::HeaderName::from_static(DEADLINE_HEADER);
/// The station that forwarded the request.
pub const FORWARDED_BY_HEADER: &str = "x-op-forwarded-by";
/// The shared cluster secret on station-to-station routes.
pub const SECRET_HEADER: &str = "x-op-cluster-secret";
/// Set on every error a station itself produces (never on an object's own answer), so a station
/// receiving a forwarded answer can tell the two apart.
pub const ERROR_HEADER: &str = "x-op-error";

/// Headers that belong to one connection and are not forwarded (as names: removed from every
/// forwarded request and answer).
static HOP_BY_HOP: [http::HeaderName; 9] = [
    http::header::CONNECTION,
    http::HeaderName::from_static("keep-alive"),
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::HOST,
    http::header::CONTENT_LENGTH,
    http::header::TE,
    http::header::TRAILER,
    http::HeaderName::from_static("proxy-connection"),
];
/// [`FORWARDED_BY_HEADER`] and [`SECRET_HEADER`] as names (set on every forwarded request).
static FORWARDED_BY: http::HeaderName = http::HeaderName::from_static(FORWARDED_BY_HEADER);
/// See [`FORWARDED_BY`].
static SECRET: http::HeaderName = http::HeaderName::from_static(SECRET_HEADER);

/// A request to send to another station.
#[derive(Debug, Clone)]
pub struct ForwardRequest {
    /// Base URL of the target station.
    pub base_url: String,
    /// HTTP method.
    pub method: http::Method,
    /// Path and query, starting with `/`.
    pub path_and_query: String,
    /// Headers to pass on.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
    /// How long to wait for the answer.
    pub timeout: Duration,
}

/// The other station's answer, byte for byte.
#[derive(Debug)]
pub struct Forwarded {
    /// Status.
    pub status: http::StatusCode,
    /// Headers (hop-by-hop ones removed).
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// Why forwarding failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The station did not answer in time.
    #[error("station {0} did not answer in time")]
    Timeout(String),
    /// The station could not be reached or the connection broke mid-call.
    #[error("station {url} is unavailable: {message}")]
    Unavailable {
        /// Its URL.
        url: String,
        /// What happened.
        message: String,
    },
}

/// How many times a request has been forwarded already.
pub fn hop_count(headers: &http::HeaderMap) -> u32 {
    headers
        .get(&HOP)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Most hops a request may take (one to the home, one more if the object just moved).
pub const MAX_HOPS: u32 = 2;

/// The client used for every station-to-station request: keep-alive, no proxies.
///
/// Connections leave from `local` when given (the station's own `--bind` address), so a station
/// bound to 127.0.0.3 is 127.0.0.3 on both ends of everything it sends: firewall rules between
/// stations' addresses cut all of their traffic, not only gossip.
///
/// `tls` is the trust for `https://` stations.
pub fn client(
    local: Option<std::net::IpAddr>,
    tls: &rustls::ClientConfig,
) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .local_address(local)
        .build()?)
}

/// Sends one request over the link to its station, marking it as forwarded.
pub async fn send(
    links: &super::link::Links,
    station_id: &str,
    secret: Option<&str>,
    request: ForwardRequest,
) -> Result<Forwarded, ForwardError> {
    let base_url = request.base_url.trim_end_matches('/');
    let mut headers = request.headers;
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    // Count hops: a request forwarded to a station that then finds the object moved may take
    // one more hop (to the new home), never more.
    let hops = hop_count(&headers) + 1;
    headers.insert(HOP.clone(), http::HeaderValue::from(hops));
    if let Ok(value) = http::HeaderValue::from_str(station_id) {
        headers.insert(FORWARDED_BY.clone(), value);
    }
    if let Some(secret) = secret
        && let Ok(value) = http::HeaderValue::from_str(secret)
    {
        headers.insert(SECRET.clone(), value);
    }
    let link_request = super::link::LinkRequest {
        method: request.method,
        path_and_query: request.path_and_query,
        headers,
        body: request.body,
    };
    let response = links
        .send(base_url, link_request, request.timeout)
        .await
        .map_err(|e| match e {
            super::link::LinkError::Timeout(_) => ForwardError::Timeout(base_url.to_string()),
            super::link::LinkError::Unavailable(message) => ForwardError::Unavailable {
                url: base_url.to_string(),
                message,
            },
        })?;
    let mut headers = response.headers;
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    Ok(Forwarded {
        status: response.status,
        headers,
        body: response.body,
    })
}
