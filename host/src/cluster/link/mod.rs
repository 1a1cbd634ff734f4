//! Station links: long-lived, multiplexed connections that carry forwarded calls between
//! stations at close to the cost of a local call.
//!
//! A forwarded call over HTTP/1.1 costs the sending station an HTTP client exchange and the home
//! an HTTP server parse, each with its own syscalls (measured: about 60 µs of CPU per call on
//! this project's 2-core machines, more than the call itself). A link is one TCP connection per
//! pair of stations, opened with an HTTP upgrade on the station's own port (`GET
//! /cluster/internal/link`, authenticated with the cluster secret like every internal route),
//! then carrying binary [`frame`]s: requests and responses matched by id, many in flight at
//! once. The task that sends a frame writes it itself when the connection takes it at once, and
//! frames queued while it does not go out together ([`outbox`]). The receiving station runs each request through its own router, so a call arrives
//! exactly as it would over HTTP, minus the parsing.
//!
//! A link that breaks fails the calls in flight on it (the caller answers 502, as for a broken
//! HTTP connection: the call may or may not have run) and is opened again by the next call.

pub mod frame;
mod outbox;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

pub use frame::{Frame, LinkRequest, LinkResponse};
use outbox::{LinkWriter, Outbox};

/// The path a link is opened on.
pub const LINK_PATH: &str = "/cluster/internal/link";
/// The protocol named in the upgrade.
pub const LINK_PROTOCOL: &str = "op-link/1";
/// Bound on opening a link (connect and upgrade).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a link fails the calls past their deadline: a call's timeout is honoured to
/// within this.
const SWEEP_EVERY: Duration = Duration::from_millis(20);

/// Why a request over a link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No answer within the request's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The link could not be opened, or broke before the answer came.
    #[error("{0}")]
    Unavailable(String),
}

/// The links of this station to the others, one per station address. Cheap to clone.
#[derive(Clone)]
pub struct Links {
    inner: Arc<LinksInner>,
}

struct LinksInner {
    /// Address connections leave from (the station's `--bind`).
    local: Option<IpAddr>,
    /// Sent in the upgrade request.
    secret: Option<String>,
    /// Trust for `https://` stations.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Station base URL → its link.
    peers: Mutex<HashMap<String, Peer>>,
}

/// This station's link to one other station.
#[derive(Default)]
struct Peer {
    /// The open link, if there is one (a closed one stays until it is replaced).
    open: Option<Arc<Conn>>,
    /// Held while a link to this station is being opened: one opening at a time.
    opening: Arc<tokio::sync::Mutex<()>>,
}

/// A call waiting for its answer on a link.
struct Waiter {
    answer: oneshot::Sender<Result<LinkResponse, LinkError>>,
    /// When the call gives up with [`LinkError::Timeout`].
    deadline: Instant,
    timeout: Duration,
    /// The link's frame count when the call was sent.
    received_before: u64,
}

/// One open link.
struct Conn {
    outbox: Arc<Outbox>,
    /// Calls in flight by request id. Their deadlines are checked by the link's sweeper every
    /// [`SWEEP_EVERY`] (one timer per link instead of one per call).
    pending: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
    closed: std::sync::atomic::AtomicBool,
    /// Frames received so far: a link that received none through a whole request timeout is
    /// taken for dead (a peer that vanished without closing its connections, a partition) and
    /// replaced.
    received: AtomicU64,
    /// Its reader, writer and sweeper tasks, stopped when it closes.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Conn {
    /// Closes the link: its tasks stop, its calls in flight fail, the next call opens another.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for task in self.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
        // Dropping the waiters fails the calls still in flight.
        self.pending.lock().expect("pending lock").clear();
    }

    fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    /// Fails the calls past their deadline with [`LinkError::Timeout`]; closes the link when one
    /// of them saw no frame at all arrive while it waited.
    fn expire(&self, now: Instant, peer: &str) {
        let expired: Vec<Waiter> = {
            let mut pending = self.pending.lock().expect("pending lock");
            let ids: Vec<u64> = pending
                .iter()
                .filter(|(_, waiter)| waiter.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| pending.remove(id)).collect()
        };
        let received = self.received.load(Ordering::Acquire);
        let mut silent = false;
        for waiter in expired {
            silent |= waiter.received_before == received;
            let _ = waiter.answer.send(Err(LinkError::Timeout(waiter.timeout)));
        }
        if silent {
            tracing::debug!(peer, "no frame through a whole timeout: replacing the link");
            self.close();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // A link nobody holds any more: its writer task ends.
        self.outbox.close();
    }
}

impl Links {
    /// Links that leave from `local` and authenticate with `secret`.
    pub fn new(
        local: Option<IpAddr>,
        secret: Option<String>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Links {
        Links {
            inner: Arc::new(LinksInner {
                local,
                secret,
                tls,
                peers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Sends `request` to the station at `base_url` (`http://host:port`) and waits for its
    /// answer, at most `timeout` (checked every [`SWEEP_EVERY`]).
    pub async fn send(
        &self,
        base_url: &str,
        request: LinkRequest,
        timeout: Duration,
    ) -> Result<LinkResponse, LinkError> {
        let conn = match self.open_conn(base_url) {
            Some(conn) => conn,
            None => tokio::time::timeout(timeout.min(CONNECT_TIMEOUT), self.connect(base_url))
                .await
                .map_err(|_| {
                    LinkError::Unavailable(format!("opening a link to {base_url} timed out"))
                })??,
        };
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, rx) = oneshot::channel();
        let waiter = Waiter {
            answer,
            deadline: Instant::now() + timeout,
            timeout,
            received_before: conn.received.load(Ordering::Acquire),
        };
        conn.pending
            .lock()
            .expect("pending lock")
            .insert(id, waiter);
        if conn
            .outbox
            .push(&Frame::Request(id, request))
            .await
            .is_err()
        {
            conn.pending.lock().expect("pending lock").remove(&id);
            return Err(LinkError::Unavailable(format!(
                "the link to {base_url} closed"
            )));
        }
        match rx.await {
            Ok(answer) => answer,
            Err(_) => Err(LinkError::Unavailable(format!(
                "the link to {base_url} broke before the answer"
            ))),
        }
    }

    /// The open link to `base_url`, if there is one.
    fn open_conn(&self, base_url: &str) -> Option<Arc<Conn>> {
        let peers = self.inner.peers.lock().expect("peers lock");
        peers.get(base_url)?.open.clone().filter(|c| c.is_open())
    }

    /// Opens a link to `base_url`, unless another call opened one meanwhile.
    async fn connect(&self, base_url: &str) -> Result<Arc<Conn>, LinkError> {
        let opening = self
            .inner
            .peers
            .lock()
            .expect("peers lock")
            .entry(base_url.to_string())
            .or_default()
            .opening
            .clone();
        let _opening = opening.lock().await;
        if let Some(conn) = self.open_conn(base_url) {
            return Ok(conn);
        }
        let (reader, writer, leftover) = open(
            base_url,
            self.inner.local,
            self.inner.secret.as_deref(),
            self.inner.tls.as_ref(),
        )
        .await
        .map_err(|e| LinkError::Unavailable(format!("cannot open a link to {base_url}: {e}")))?;
        let conn = start(base_url, reader, writer, leftover);
        if let Some(peer) = self
            .inner
            .peers
            .lock()
            .expect("peers lock")
            .get_mut(base_url)
        {
            peer.open = Some(conn.clone());
        }
        Ok(conn)
    }
}

/// Starts a link's reader, writer and sweeper tasks on an opened connection.
fn start(base_url: &str, reader: LinkReader, writer: LinkWriter, leftover: BytesMut) -> Arc<Conn> {
    let outbox = Outbox::new(writer);
    let conn = Arc::new(Conn {
        outbox: outbox.clone(),
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        closed: std::sync::atomic::AtomicBool::new(false),
        received: AtomicU64::new(0),
        tasks: Mutex::new(Vec::new()),
    });
    let url = base_url.to_string();
    let writing = Arc::downgrade(&conn);
    let write_task = tokio::spawn(async move {
        if let Err(e) = outbox.run().await {
            tracing::debug!(peer = %url, "link write failed: {e}");
        }
        if let Some(conn) = writing.upgrade() {
            conn.close();
        }
    });
    let reading = Arc::downgrade(&conn);
    let url = base_url.to_string();
    let read_task = tokio::spawn(async move {
        let result = read_responses(reader, leftover, &reading).await;
        if let Some(conn) = reading.upgrade() {
            conn.close();
        }
        if let Err(e) = result {
            tracing::debug!(peer = %url, "link closed: {e}");
        }
    });
    let sweeping = Arc::downgrade(&conn);
    let url = base_url.to_string();
    let sweep_task = tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match sweeping.upgrade() {
                Some(conn) => conn.expire(Instant::now(), &url),
                None => return,
            }
        }
    });
    conn.tasks
        .lock()
        .expect("tasks lock")
        .extend([write_task, read_task, sweep_task]);
    conn
}

/// The read half of a link's connection (plain TCP or TLS).
type LinkReader = Box<dyn AsyncRead + Send + Unpin>;

/// Connects to `base_url` (`http://` or, with `tls`, `https://`) and upgrades the connection to a
/// link; returns its two halves and any bytes read past the upgrade answer.
async fn open(
    base_url: &str,
    local: Option<IpAddr>,
    secret: Option<&str>,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> std::io::Result<(LinkReader, LinkWriter, BytesMut)> {
    let (secure, rest) = match base_url.strip_prefix("https://") {
        Some(rest) => (true, rest),
        None => (false, base_url.strip_prefix("http://").unwrap_or(base_url)),
    };
    let authority = rest.split('/').next().unwrap_or_default().to_string();
    let address: SocketAddr = tokio::net::lookup_host(&authority)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{authority} resolves to nothing")))?;
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(local) = local.filter(|l| l.is_ipv4() == address.is_ipv4()) {
        socket.bind(SocketAddr::new(local, 0))?;
    }
    let stream = socket.connect(address).await?;
    stream.set_nodelay(true)?;
    if !secure {
        return upgrade(stream, &authority, secret).await;
    }
    let tls = tls.ok_or_else(|| {
        std::io::Error::other(format!(
            "{base_url} needs TLS and this station has none set up"
        ))
    })?;
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let name = rustls_pki_types::ServerName::try_from(host)
        .map_err(|e| std::io::Error::other(format!("{authority}: {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, stream)
        .await?;
    upgrade(stream, &authority, secret).await
}

/// Asks for the upgrade on a connected stream and splits it once granted.
async fn upgrade<S>(
    mut stream: S,
    authority: &str,
    secret: Option<&str>,
) -> std::io::Result<(LinkReader, LinkWriter, BytesMut)>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut upgrade = format!(
        "GET {LINK_PATH} HTTP/1.1\r\nhost: {authority}\r\nconnection: upgrade\r\nupgrade: {LINK_PROTOCOL}\r\n"
    );
    if let Some(secret) = secret {
        upgrade.push_str(&format!(
            "{}: {secret}\r\n",
            crate::cluster::forward::SECRET_HEADER
        ));
    }
    upgrade.push_str("\r\n");
    stream.write_all(upgrade.as_bytes()).await?;
    stream.flush().await?;
    let mut buf = BytesMut::with_capacity(8192);
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > 16 * 1024 || stream.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::other("no upgrade answer"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status_line = head.lines().next().unwrap_or_default();
    if !status_line.starts_with("HTTP/1.1 101") {
        return Err(std::io::Error::other(format!(
            "the station refused the link: {status_line}"
        )));
    }
    let leftover = buf.split_off(head_end);
    let (reader, writer) = tokio::io::split(stream);
    Ok((Box::new(reader), Box::new(writer), leftover))
}

/// Reads response frames from a link and hands each to the call waiting for it (until the link
/// closes or is dropped).
async fn read_responses(
    mut reader: impl AsyncRead + Unpin,
    mut buf: BytesMut,
    conn: &std::sync::Weak<Conn>,
) -> std::io::Result<()> {
    let mut decoder = frame::Decoder::default();
    loop {
        while let Some(frame) = decoder.decode(&mut buf).map_err(std::io::Error::other)? {
            let Some(conn) = conn.upgrade() else {
                return Ok(());
            };
            conn.received.fetch_add(1, Ordering::Release);
            match frame {
                Frame::Response(id, response) => {
                    let waiter = conn.pending.lock().expect("pending lock").remove(&id);
                    if let Some(waiter) = waiter {
                        let _ = waiter.answer.send(Ok(response));
                    }
                }
                Frame::Request(..) => {
                    return Err(std::io::Error::other("a request frame on a client link"));
                }
            }
        }
        if reader.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Serves one link on the receiving station: runs every request frame through `handle`, many at
/// once, and sends each answer back as it completes. Returns when the other end closes the link
/// (requests still running finish; their answers are dropped with the link).
pub async fn serve<IO, H, F>(io: IO, handle: H)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    H: Fn(LinkRequest) -> F + Clone + Send + 'static,
    F: Future<Output = LinkResponse> + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(io);
    let outbox = Outbox::new(Box::new(writer));
    tokio::spawn({
        let outbox = outbox.clone();
        async move {
            if let Err(e) = outbox.run().await {
                tracing::debug!("link write failed: {e}");
            }
        }
    });
    // The outbox closes (its queued answers written, then the stream ended) once the reader
    // below and every request it started are done.
    let open = Arc::new(CloseOnDrop(outbox));
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut decoder = frame::Decoder::default();
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Frame::Request(id, request))) => {
                    let (open, handle) = (open.clone(), handle.clone());
                    tokio::spawn(async move {
                        let response = handle(request).await;
                        let _ = open.0.push(&Frame::Response(id, response)).await;
                    });
                }
                Ok(None) => break,
                Ok(Some(Frame::Response(..))) | Err(_) => {
                    tracing::warn!("closing a link that sent a frame this station cannot take");
                    return;
                }
            }
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Closes the outbox it holds when dropped.
struct CloseOnDrop(Arc<Outbox>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn get(path: &str) -> LinkRequest {
        LinkRequest {
            method: http::Method::GET,
            path_and_query: path.into(),
            headers: http::HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// A station-like server on loopback: answers the upgrade, then echoes each request's path
    /// in the body after a delay the path asks for (so answers come back out of order).
    async fn echo_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut head = BytesMut::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        if stream.read_buf(&mut head).await.unwrap() == 0 {
                            return;
                        }
                    }
                    let text = String::from_utf8_lossy(&head).to_lowercase();
                    if !text.contains("upgrade: op-link/1") {
                        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                        return;
                    }
                    stream
                        .write_all(
                            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: op-link/1\r\n\r\n",
                        )
                        .await
                        .unwrap();
                    serve(stream, |request: LinkRequest| async move {
                        let delay: u64 = request.path_and_query[1..].parse().unwrap_or(0);
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        LinkResponse {
                            status: http::StatusCode::OK,
                            headers: http::HeaderMap::new(),
                            body: Bytes::from(request.path_and_query),
                        }
                    })
                    .await;
                });
            }
        });
        format!("http://{address}")
    }

    /// Accepts one connection and answers its upgrade request with 101.
    async fn accept_link(listener: &tokio::net::TcpListener) -> tokio::net::TcpStream {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = BytesMut::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            stream.read_buf(&mut head).await.unwrap();
        }
        stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
            .await
            .unwrap();
        stream
    }

    /// Serves a link, answering each request with its path.
    async fn serve_echo(stream: tokio::net::TcpStream) {
        serve(stream, |r: LinkRequest| async move {
            LinkResponse {
                status: http::StatusCode::OK,
                headers: http::HeaderMap::new(),
                body: Bytes::from(r.path_and_query),
            }
        })
        .await;
    }

    #[tokio::test]
    async fn many_requests_share_one_link_and_each_gets_its_own_answer() {
        let url = echo_server().await;
        let links = Links::new(None, None, None);
        let mut calls = Vec::new();
        for n in 0..200u64 {
            let (links, url) = (links.clone(), url.clone());
            // Later requests answer sooner: answers arrive out of order.
            let delay = (200 - n) % 20;
            calls.push(tokio::spawn(async move {
                let path = format!("/{delay}?n={n}");
                let answer = links
                    .send(&url, get(&path), Duration::from_secs(10))
                    .await
                    .unwrap();
                (path, answer)
            }));
        }
        for call in calls {
            let (path, answer) = call.await.unwrap();
            assert_eq!(answer.status, http::StatusCode::OK);
            assert_eq!(answer.body, Bytes::from(path));
        }
        assert_eq!(links.inner.peers.lock().unwrap().len(), 1, "one link");
    }

    #[tokio::test]
    async fn a_slow_answer_times_out_and_the_link_keeps_serving() {
        let url = echo_server().await;
        let links = Links::new(None, None, None);
        let slow = links
            .send(&url, get("/2000"), Duration::from_millis(100))
            .await;
        assert!(matches!(slow, Err(LinkError::Timeout(_))), "{slow:?}");
        let quick = links
            .send(&url, get("/0"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(quick.body, Bytes::from("/0"));
    }

    #[tokio::test]
    async fn an_unreachable_or_refusing_station_is_unavailable() {
        let links = Links::new(None, None, None);
        // A port nobody listens on.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let refused = links.send(&url, get("/0"), Duration::from_secs(2)).await;
        assert!(
            matches!(refused, Err(LinkError::Unavailable(_))),
            "{refused:?}"
        );
        // A server that answers the upgrade with 400.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = BytesMut::new();
            let _ = stream.read_buf(&mut head).await;
            let _ = stream
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await;
        });
        match links.send(&url, get("/0"), Duration::from_secs(2)).await {
            Err(LinkError::Unavailable(message)) => assert!(message.contains("404"), "{message}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_link_silent_through_a_whole_timeout_is_replaced() {
        // The first connection is upgraded and then never answers nor closes (a peer cut off by
        // a partition); the second one serves.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (held_tx, held_rx) = oneshot::channel();
        let mut held_tx = Some(held_tx);
        tokio::spawn(async move {
            for round in 0..2 {
                let stream = accept_link(&listener).await;
                if round == 0 {
                    if let Some(tx) = held_tx.take() {
                        let _ = tx.send(stream);
                    }
                    continue;
                }
                serve_echo(stream).await;
            }
        });
        let links = Links::new(None, None, None);
        let silent = links
            .send(&url, get("/a"), Duration::from_millis(200))
            .await;
        assert!(matches!(silent, Err(LinkError::Timeout(_))), "{silent:?}");
        let _held = held_rx.await.unwrap();
        let again = links
            .send(&url, get("/b"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(again.body, Bytes::from("/b"));
    }

    #[tokio::test]
    async fn a_link_that_breaks_fails_its_calls_and_the_next_call_opens_a_new_one() {
        // A server that accepts the upgrade, reads one request, then hangs up; the second
        // connection serves normally.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            for round in 0..2 {
                let mut stream = accept_link(&listener).await;
                if round == 0 {
                    let mut buf = [0u8; 16];
                    let _ = stream.read(&mut buf).await;
                    drop(stream);
                } else {
                    serve_echo(stream).await;
                }
            }
        });
        let links = Links::new(None, None, None);
        let broken = links.send(&url, get("/a"), Duration::from_secs(5)).await;
        assert!(
            matches!(broken, Err(LinkError::Unavailable(_))),
            "{broken:?}"
        );
        let again = links
            .send(&url, get("/b"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(again.body, Bytes::from("/b"));
    }
}
