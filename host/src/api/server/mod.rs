//! The HTTP/1.1 server under the router: accepts connections up to a limit, closes idle and slow
//! ones, bounds request heads and bodies, and answers what hyper would answer bare (a head too
//! large or malformed, a connection over the limit) with the station's JSON errors.
//!
//! HTTP/2 is not offered: clients speak HTTP/1.1, stations talk over links (`cluster/link`),
//! which are HTTP/1.1 upgrades.

mod body;
mod conn;
mod head;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

pub use body::BodyTimedOut;
pub use head::{MAX_HEAD_BYTES, MAX_HEADERS};

/// Connections refused at the limit that may still be answering at once; past it a new
/// connection is closed without an answer.
const MAX_REFUSING: usize = 64;

/// The server's limits, and its TLS when it serves HTTPS.
#[derive(Clone)]
pub struct ServerConfig {
    /// Serve HTTPS with this (`--tls-cert`, `--tls-key`); plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Most client connections open at once; past it a new one is answered 503
    /// `too_many_connections` and closed.
    pub max_connections: usize,
    /// An idle keep-alive connection is closed after this.
    pub keep_alive: Duration,
    /// A request head must arrive within this of its first byte (→ 408 `header_timeout`).
    pub header_timeout: Duration,
    /// A request body must arrive within this of its reader's first wait (→ 408 `body_timeout`).
    pub body_timeout: Duration,
    /// Counts the client connections open (for `GET /metrics`).
    pub open: OpenConnections,
}

/// The number of client connections open. Cheap to clone (one shared counter).
#[derive(Debug, Clone, Default)]
pub struct OpenConnections(Arc<std::sync::atomic::AtomicU64>);

impl OpenConnections {
    /// Connections open now.
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts one connection until the returned guard is dropped.
    fn enter(&self) -> OpenConnection {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenConnection(self.0.clone())
    }
}

/// One open connection, counted while it lives.
struct OpenConnection(Arc<std::sync::atomic::AtomicU64>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether the station has begun to shut down. Long-lived responses (log and event streams, and
/// the streams proxied from other stations) end then, so the graceful drain of connections does
/// not wait on them forever.
#[derive(Clone, Debug)]
pub struct Draining(tokio::sync::watch::Receiver<bool>);

/// Starts the drain of [`Draining`]; dropping it starts the drain too.
#[derive(Debug)]
pub struct DrainSignal(tokio::sync::watch::Sender<bool>);

impl Draining {
    /// A pair: the signal the shutdown sets, and the flag streams watch.
    pub fn new() -> (DrainSignal, Draining) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (DrainSignal(tx), Draining(rx))
    }

    /// Resolves once the drain has begun.
    pub async fn begun(mut self) {
        let _ = self.0.wait_for(|draining| *draining).await;
    }
}

impl DrainSignal {
    /// Begins the drain: every stream watching [`Draining::begun`] ends.
    pub fn begin(&self) {
        let _ = self.0.send(true);
    }
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets the
/// connections finish their requests, and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let open_connections = config.open.clone();
    let config = Limits::from(&config);
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors (or a connection reset before accept): wait a
                    // moment instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            // Over TLS a plain answer means nothing to the client: it is just closed.
            if tls.is_none()
                && let Ok(refusal) = refusing.clone().try_acquire_owned()
            {
                tokio::spawn(async move {
                    refuse(tcp, config.max_connections).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let open = open_connections.enter();
        let router = router.clone();
        let mut stopped = stopped.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(tcp, peer, router, config, &mut stopped).await,
                // The handshake is part of the head: it gets the header timeout.
                Some(tls) => {
                    match tokio::time::timeout(config.header_timeout, tls.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, router, config, &mut stopped).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(open);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit until it ends.
    let _all = connections
        .acquire_many(config.max_connections as u32)
        .await
        .expect("the semaphore is never closed");
    Ok(())
}

/// The limits each connection applies (the parts of [`ServerConfig`] a connection copies).
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_connections: usize,
    keep_alive: Duration,
    header_timeout: Duration,
    body_timeout: Duration,
}

impl From<&ServerConfig> for Limits {
    fn from(config: &ServerConfig) -> Limits {
        Limits {
            max_connections: config.max_connections,
            keep_alive: config.keep_alive,
            header_timeout: config.header_timeout,
            body_timeout: config.body_timeout,
        }
    }
}

/// Serves one connection until it closes, or until shutdown once its requests are answered.
async fn serve_connection<T>(
    io: T,
    peer: SocketAddr,
    router: Router,
    config: Limits,
    stopped: &mut tokio::sync::watch::Receiver<bool>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(conn::ConnState::default());
    let timeouts = conn::Timeouts {
        keep_alive: config.keep_alive,
        header: config.header_timeout,
    };
    let io = TokioIo::new(conn::GuardedIo::new(io, state.clone(), timeouts));
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let guard = state.begin_request(!request.body().is_end_stream());
        let state = state.clone();
        let router = router.clone();
        async move {
            let conn = state.clone();
            let mut request = request
                .map(|b| axum::body::Body::new(body::TimedBody::new(b, config.body_timeout, conn)));
            request.extensions_mut().insert(ConnectInfo(peer));
            let response = router.oneshot(request).await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                state.mark_upgraded();
            }
            Ok::<_, Infallible>(response.map(|inner| body::GuardedBody {
                inner,
                _guard: guard,
            }))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .max_headers(MAX_HEADERS + 1)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = async { stopped.wait_for(|stop| *stop).await.map(|_| ()) } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

/// Answers a connection over the limit with 503 and closes it.
async fn refuse(mut tcp: TcpStream, limit: usize) {
    let reply = error_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_connections",
        &format!("the station has {limit} connections open, its limit; retry shortly"),
        Some(1),
    );
    let answered = async {
        tcp.write_all(&reply).await?;
        tcp.shutdown().await?;
        // Read what the client sent until it closes, so the close does not reset the answer away.
        let mut sink = [0u8; 4096];
        while tokio::io::AsyncReadExt::read(&mut tcp, &mut sink).await? > 0 {}
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), answered).await;
}

/// A complete HTTP/1.1 error answer with the station's JSON body, for the places that answer
/// below the router; the connection closes after it.
fn error_reply(
    status: StatusCode,
    code: &'static str,
    message: &str,
    retry_after_secs: Option<u32>,
) -> Vec<u8> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n{}: {code}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        super::error::ERROR_HEADER,
    );
    if let Some(secs) = retry_after_secs {
        head.push_str(&format!("retry-after: {secs}\r\n"));
    }
    head.push_str("\r\n");
    let mut reply = head.into_bytes();
    reply.extend_from_slice(body.as_bytes());
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_reply_is_a_complete_json_answer() {
        let reply = error_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "x",
            Some(1),
        );
        let text = String::from_utf8(reply).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("retry-after: 1"), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "too_many_connections");
    }
}
