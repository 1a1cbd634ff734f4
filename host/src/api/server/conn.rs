//! One client connection's I/O, watched: closed when idle past the keep-alive timeout, answered
//! 408 when a head takes longer than the header timeout, and answered 431 or 400 (JSON) when the
//! head is too large or malformed — before hyper sees the bytes. A connection upgraded to a
//! station link is passed through untouched.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::head::{HeadScan, MAX_HEAD_BYTES, MAX_HEADERS, Verdict};

/// How long an error answer written by the connection itself may take before it is dropped.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// What a connection's service and its I/O share.
#[derive(Default)]
pub(super) struct ConnState {
    /// Requests being handled: dispatched, and their response not yet sent.
    busy: AtomicUsize,
    /// Requests dispatched so far; a change tells the I/O that a head was accepted.
    dispatched: AtomicU64,
    /// The current request's body has not been read to its end: bytes arriving now are body,
    /// not the next head (a handler may answer without reading the body).
    body_open: AtomicBool,
    /// The connection was upgraded (a station link): HTTP limits no longer apply.
    upgraded: AtomicBool,
    /// The reader to wake when the connection becomes idle (its idle timer starts then).
    idle_waker: AtomicWaker,
}

impl ConnState {
    /// Marks a request as dispatched and in flight until the guard is dropped; `has_body` when
    /// body bytes are still to come.
    pub(super) fn begin_request(self: &Arc<Self>, has_body: bool) -> RequestGuard {
        self.body_open.store(has_body, Ordering::Release);
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.dispatched.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    /// The current request's body was read to its end.
    pub(super) fn body_ended(&self) {
        self.body_open.store(false, Ordering::Release);
    }

    /// Marks the connection as upgraded.
    pub(super) fn mark_upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }
}

/// A request in flight on its connection; dropped when its response is sent.
pub(super) struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_waker.wake();
        }
    }
}

/// The connection's timeouts.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// An idle connection (no request in flight, none begun) is closed after this.
    pub(super) keep_alive: Duration,
    /// A request head must be complete this long after its first byte (→ 408).
    pub(super) header: Duration,
}

/// Which timer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// No request in flight or begun: the keep-alive timeout.
    Idle,
    /// A head begun and not complete: the header timeout.
    Head,
}

/// An error answer the connection writes itself before closing.
struct Reply {
    bytes: Vec<u8>,
    written: usize,
    /// Why the connection closes, reported to hyper once the answer is written.
    reason: &'static str,
}

/// A client connection's I/O with the station's limits.
pub(super) struct GuardedIo<T> {
    inner: T,
    state: Arc<ConnState>,
    timeouts: Timeouts,
    head: HeadScan,
    /// `dispatched` as last seen: a new value means the head scan starts over.
    seen_dispatched: u64,
    /// When the first byte of the current head arrived.
    head_started: Option<Instant>,
    /// The last time bytes moved either way.
    last_activity: Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
    timer_deadline: Option<Instant>,
    reply: Option<Reply>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> GuardedIo<T> {
    /// Watches `inner`, sharing `state` with the connection's service.
    pub(super) fn new(inner: T, state: Arc<ConnState>, timeouts: Timeouts) -> GuardedIo<T> {
        let now = Instant::now();
        GuardedIo {
            inner,
            state,
            timeouts,
            head: HeadScan::default(),
            seen_dispatched: 0,
            head_started: None,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until((now + timeouts.keep_alive).into())),
            timer_deadline: Some(now + timeouts.keep_alive),
            reply: None,
        }
    }

    /// The timer that applies now, if any.
    fn waiting(&self) -> Option<(Wait, Instant)> {
        if self.state.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.head_started {
            Some(started) if !self.head.done() => {
                Some((Wait::Head, started + self.timeouts.header))
            }
            Some(_) => None,
            None => Some((Wait::Idle, self.last_activity + self.timeouts.keep_alive)),
        }
    }

    /// Polls the timer set to `deadline`; true when it has passed.
    fn timer_elapsed(&mut self, deadline: Instant, cx: &mut Context<'_>) -> bool {
        if self.timer_deadline != Some(deadline) {
            self.timer.as_mut().reset(deadline.into());
            self.timer_deadline = Some(deadline);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }

    /// Starts writing an error answer; the read then fails once it is written.
    fn answer(
        &mut self,
        cx: &mut Context<'_>,
        status: StatusCode,
        code: &'static str,
        message: &str,
        reason: &'static str,
    ) -> Poll<io::Result<()>> {
        self.reply = Some(Reply {
            bytes: super::error_reply(status, code, message, None),
            written: 0,
            reason,
        });
        let deadline = Instant::now() + REPLY_TIMEOUT;
        self.timer.as_mut().reset(deadline.into());
        self.timer_deadline = Some(deadline);
        self.poll_reply(cx)
    }

    /// Writes the pending error answer, then fails the read so hyper closes the connection.
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let reply = self.reply.as_mut().expect("a reply is pending");
        while reply.written < reply.bytes.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &reply.bytes[reply.written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                Poll::Ready(Ok(n)) => reply.written += n,
                Poll::Pending => {
                    if self.timer.as_mut().poll(cx).is_ready() {
                        break;
                    }
                    return Poll::Pending;
                }
            }
        }
        if reply.written == reply.bytes.len()
            && Pin::new(&mut self.inner).poll_flush(cx).is_pending()
            && self.timer.as_mut().poll(cx).is_pending()
        {
            return Poll::Pending;
        }
        let reason = reply.reason;
        Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, reason)))
    }

    /// Checks the bytes just read as part of a request head; `Some` when the connection answers
    /// and closes instead.
    fn check_head(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Option<Poll<io::Result<()>>> {
        self.head_started.get_or_insert(self.last_activity);
        match self.head.feed(bytes) {
            Verdict::Incomplete | Verdict::Complete => None,
            Verdict::TooLarge => Some(self.answer(
                cx,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                &format!("the request head is larger than {MAX_HEAD_BYTES} bytes"),
                "request head too large",
            )),
            Verdict::TooManyHeaders => Some(self.answer(
                cx,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                &format!("the request has more than {MAX_HEADERS} headers"),
                "too many request headers",
            )),
            Verdict::Malformed(why) => Some(self.answer(
                cx,
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("the request head is not HTTP/1.1: {why}"),
                "malformed request head",
            )),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.reply.is_some() {
            return this.poll_reply(cx);
        }
        if this.state.upgraded.load(Ordering::Acquire) {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let dispatched = this.state.dispatched.load(Ordering::Acquire);
        if dispatched != this.seen_dispatched {
            this.seen_dispatched = dispatched;
            this.head.reset();
            this.head_started = None;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                if read == 0 {
                    return Poll::Ready(Ok(()));
                }
                this.last_activity = Instant::now();
                if this.state.busy.load(Ordering::Acquire) == 0
                    && !this.state.body_open.load(Ordering::Acquire)
                    && !this.head.done()
                    && let Some(answer) = this.check_head(cx, &buf.filled()[before..])
                {
                    buf.set_filled(before);
                    return answer;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let mut waiting = this.waiting();
                if waiting.is_none() {
                    // Busy: wake when the last request in flight ends, so the idle timer starts.
                    this.state.idle_waker.register(cx.waker());
                    waiting = this.waiting();
                }
                let Some((wait, deadline)) = waiting else {
                    return Poll::Pending;
                };
                if !this.timer_elapsed(deadline, cx) {
                    return Poll::Pending;
                }
                match wait {
                    Wait::Idle => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "idle keep-alive connection closed",
                    ))),
                    Wait::Head => this.answer(
                        cx,
                        StatusCode::REQUEST_TIMEOUT,
                        "header_timeout",
                        &format!(
                            "the request head did not arrive within {} s",
                            this.timeouts.header.as_secs_f64()
                        ),
                        "request head timed out",
                    ),
                }
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, bytes);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.last_activity = Instant::now();
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.last_activity = Instant::now();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
