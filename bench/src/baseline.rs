//! The in-run baseline: a native axum handler doing what the hello object does.
//!
//! `GET /objects/hello[?name=X]` answers `{"message":"Hello, world!","object":"hello"}` with
//! `content-type: application/json` and an `x-request-id` of 16 hex digits, the same body and
//! header shape a station sends for the hello object. The JSON is built per request, as the
//! object builds it, so the comparison measures the host's overhead and not a cached string.

use std::future::Future;

use axum::Router;
use axum::extract::RawQuery;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;

/// The router: only `GET /objects/hello`; everything else is axum's 404/405.
pub fn router() -> Router {
    Router::new().route("/objects/hello", get(hello))
}

/// Serves [`router`] on `listener` until `shutdown` resolves, after printing
/// `listening on http://ADDR` as the first line on stdout (the host's convention).
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{address}")?;
        out.flush()?;
    }
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown)
        .await
}

async fn hello(RawQuery(query): RawQuery) -> impl IntoResponse {
    let name = query
        .as_deref()
        .and_then(|q| {
            form_pairs(q)
                .find(|(k, _)| *k == "name")
                .map(|(_, v)| v.to_string())
        })
        .unwrap_or_else(|| "world".to_string());
    let body = serde_json::to_vec(&serde_json::json!({
        "message": format!("Hello, {name}!"),
        "object": "hello",
    }))
    .expect("a JSON value serializes");
    let request_id = format!("{:016x}", rand::random::<u64>());
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (
            HeaderName::from_static("x-request-id"),
            HeaderValue::try_from(request_id).expect("hex digits are a valid header value"),
        ),
    ];
    (headers, body)
}

/// `a=1&b=2` as pairs, without percent-decoding (the benchmark never sends `name`).
fn form_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_like_the_hello_object() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let response = client
            .get(format!("http://{address}/objects/hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()["x-request-id"].len(), 16);
        assert_eq!(
            response.text().await.unwrap(),
            r#"{"message":"Hello, world!","object":"hello"}"#
        );
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
