//! The write side of a link: frames from many tasks, written in batches by whichever task is
//! in charge of writing — one of the callers, or the link's writer task when the connection is
//! backed up.
//!
//! Handing every frame to a writer task costs a task wake-up per frame, and on a loaded 2-core
//! station those wake-ups (a futex and a context switch each) were a large share of a forwarded
//! call's cost. Here a caller appends its frame to the queue. If no task is in charge of writing,
//! it takes charge: it yields once, so that the other tasks ready to run append theirs, then
//! writes the whole queue itself without waiting (`poll_write` with the writer task's waker). A
//! write the connection cannot take now leaves the rest to the writer task, woken when it can.
//! Callers never wait for the connection and never hold a lock across a system call another
//! caller needs.
//!
//! The queue is not bounded here: every frame in it belongs to a call in flight (a request whose
//! caller is waiting, or the answer to one), so the station's own limits on calls in flight and
//! on body sizes bound it.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;

use super::frame::{self, Frame};

/// The write half of a link's connection (plain TCP, TLS, or an upgraded HTTP connection).
pub type LinkWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// The link is closed: nothing more can be written on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the link is closed")]
pub struct Closed;

/// Frames waiting to go out on one connection, and the connection.
pub struct Outbox {
    /// Taken briefly, by every caller.
    queue: Mutex<Queue>,
    /// Taken only by the task in charge of writing (so never waited for).
    out: Mutex<Out>,
}

struct Queue {
    /// Encoded frames no task has taken for writing yet.
    buf: BytesMut,
    /// A task is in charge of writing: the frames appended now go out with its next write.
    in_charge: bool,
    /// The task in charge is the writer task (the connection refused bytes, or a caller in
    /// charge was cancelled).
    backed_up: bool,
    /// The writer task's waker, given to the connection by every write attempt.
    writer: Option<Waker>,
    /// No more frames: the link was closed, or a write failed.
    closed: bool,
    /// The write error that closed the link, for the writer task to report.
    error: Option<std::io::Error>,
}

struct Out {
    io: LinkWriter,
    /// Bytes taken from the queue and not yet written.
    bytes: BytesMut,
}

impl Outbox {
    /// An outbox over `io`. Run [`Outbox::run`] on a task of its own for as long as the link lives.
    pub fn new(io: LinkWriter) -> Arc<Outbox> {
        Arc::new(Outbox {
            queue: Mutex::new(Queue {
                buf: BytesMut::with_capacity(64 * 1024),
                in_charge: false,
                backed_up: false,
                writer: None,
                closed: false,
                error: None,
            }),
            out: Mutex::new(Out {
                io,
                bytes: BytesMut::with_capacity(64 * 1024),
            }),
        })
    }

    /// Queues `frame`, and writes the queue if no other task is doing so. Returns once the
    /// frame is queued or written: it never waits for the connection.
    pub async fn push(&self, frame: &Frame) -> Result<(), Closed> {
        {
            let mut queue = self.queue.lock().expect("outbox lock");
            if queue.closed {
                return Err(Closed);
            }
            frame::encode(frame, &mut queue.buf);
            if queue.in_charge {
                return Ok(());
            }
            queue.in_charge = true;
        }
        // In charge. If this task is cancelled before it writes, the writer task takes over.
        let handover = Handover(self);
        tokio::task::yield_now().await;
        std::mem::forget(handover);
        let waker = self.queue.lock().expect("outbox lock").writer.clone();
        let waker = waker.unwrap_or_else(|| Waker::noop().clone());
        match self.write_queue(&mut Context::from_waker(&waker)) {
            Poll::Ready(Err(_)) => Err(Closed),
            // Written; or left to the writer task, which the connection wakes.
            _ => Ok(()),
        }
    }

    /// Takes no more frames: the writer task writes those already queued, shuts the
    /// connection's write side and returns.
    pub fn close(&self) {
        let mut queue = self.queue.lock().expect("outbox lock");
        queue.closed = true;
        if let Some(writer) = queue.writer.take() {
            writer.wake();
        }
    }

    /// The writer task: writes whatever callers could not, until the outbox is closed and
    /// empty (`Ok`) or a write fails (that error; the outbox is closed then too).
    pub async fn run(self: Arc<Self>) -> std::io::Result<()> {
        poll_fn(|cx| {
            {
                let mut queue = self.queue.lock().expect("outbox lock");
                if let Some(e) = queue.error.take() {
                    return Poll::Ready(Err(e));
                }
                if !queue
                    .writer
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    queue.writer = Some(cx.waker().clone());
                }
                if !queue.backed_up {
                    if queue.closed && !queue.in_charge {
                        drop(queue);
                        let mut out = self.out.lock().expect("outbox lock");
                        return Pin::new(&mut out.io).poll_shutdown(cx);
                    }
                    return Poll::Pending;
                }
            }
            match self.write_queue(cx) {
                // Written: check again for closing.
                Poll::Ready(Ok(())) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            }
        })
        .await
    }

    /// Writes until the queue is empty (`Ready(Ok)`: no task is in charge any more), or until
    /// the connection refuses bytes (`Pending`: the writer task is in charge, and `cx`'s task is
    /// woken when the connection can take more). Called only by the task in charge.
    fn write_queue(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut out = self.out.lock().expect("outbox lock");
        let out = &mut *out;
        loop {
            if out.bytes.is_empty() {
                if let Err(e) = ready!(ready_or_backed_up(
                    self,
                    Pin::new(&mut out.io).poll_flush(cx)
                )) {
                    return self.fail(e);
                }
                let mut queue = self.queue.lock().expect("outbox lock");
                if queue.buf.is_empty() {
                    queue.in_charge = false;
                    queue.backed_up = false;
                    if queue.closed
                        && let Some(writer) = queue.writer.as_ref()
                    {
                        writer.wake_by_ref();
                    }
                    return Poll::Ready(Ok(()));
                }
                std::mem::swap(&mut out.bytes, &mut queue.buf);
            }
            match ready!(ready_or_backed_up(
                self,
                Pin::new(&mut out.io).poll_write(cx, &out.bytes)
            )) {
                Ok(0) => return self.fail(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    out.bytes.advance(n);
                    if out.bytes.is_empty() {
                        out.bytes.clear();
                    }
                }
                Err(e) => return self.fail(e),
            }
        }
    }

    /// Closes the outbox after a failed write and wakes the writer task to report it.
    fn fail<T>(&self, error: std::io::Error) -> Poll<std::io::Result<T>> {
        let mut queue = self.queue.lock().expect("outbox lock");
        queue.closed = true;
        queue.in_charge = false;
        queue.backed_up = false;
        let message = error.to_string();
        queue.error = Some(error);
        if let Some(writer) = queue.writer.as_ref() {
            writer.wake_by_ref();
        }
        Poll::Ready(Err(std::io::Error::other(message)))
    }
}

/// A `Pending` from the connection puts the writer task in charge. It is woken as well: a caller
/// that wrote before the writer task first ran gave the connection no waker of its.
fn ready_or_backed_up<T>(outbox: &Outbox, poll: Poll<T>) -> Poll<T> {
    if poll.is_pending() {
        let mut queue = outbox.queue.lock().expect("outbox lock");
        if !queue.backed_up {
            queue.backed_up = true;
            if let Some(writer) = queue.writer.as_ref() {
                writer.wake_by_ref();
            }
        }
    }
    poll
}

/// Held by a caller in charge of writing across its yield: dropped there (the caller was
/// cancelled), it puts the writer task in charge.
struct Handover<'a>(&'a Outbox);

impl Drop for Handover<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.queue.lock().expect("outbox lock");
        queue.backed_up = true;
        if let Some(writer) = queue.writer.as_ref() {
            writer.wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::link::frame::LinkResponse;
    use bytes::Bytes;
    use tokio::io::AsyncReadExt;

    fn response(id: u64, body: &'static [u8]) -> Frame {
        Frame::Response(
            id,
            LinkResponse {
                status: http::StatusCode::OK,
                headers: http::HeaderMap::new(),
                body: Bytes::from_static(body),
            },
        )
    }

    /// Reads frames from `reader` until `count` have arrived.
    async fn read_frames(reader: &mut (impl AsyncReadExt + Unpin), count: usize) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        while frames.len() < count {
            while let Some(frame) = frame::decode(&mut buf).unwrap() {
                frames.push(frame);
            }
            if frames.len() < count {
                assert_ne!(reader.read_buf(&mut buf).await.unwrap(), 0, "closed early");
            }
        }
        frames
    }

    #[tokio::test]
    async fn frames_pushed_while_the_connection_is_full_are_written_by_the_writer_task_in_order() {
        // A pipe far smaller than what is pushed: most pushes find it full.
        let (writer, mut reader) = tokio::io::duplex(256);
        let outbox = Outbox::new(Box::new(writer));
        let task = tokio::spawn(outbox.clone().run());
        let sent: Vec<Frame> = (0..500)
            .map(|id| response(id, b"0123456789abcdef"))
            .collect();
        for frame in &sent {
            outbox.push(frame).await.unwrap();
        }
        assert_eq!(read_frames(&mut reader, sent.len()).await, sent);
        outbox.close();
        task.await.unwrap().unwrap();
        assert_eq!(outbox.push(&response(1, b"late")).await, Err(Closed));
    }

    #[tokio::test]
    async fn closing_writes_what_is_queued_then_ends_the_stream() {
        let (writer, mut reader) = tokio::io::duplex(64);
        let outbox = Outbox::new(Box::new(writer));
        let task = tokio::spawn(outbox.clone().run());
        let sent: Vec<Frame> = (0..50).map(|id| response(id, b"queued")).collect();
        for frame in &sent {
            outbox.push(frame).await.unwrap();
        }
        outbox.close();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        let mut rest = BytesMut::from(&rest[..]);
        let mut received = Vec::new();
        while let Some(frame) = frame::decode(&mut rest).unwrap() {
            received.push(frame);
        }
        assert_eq!(received, sent, "every queued frame, then end of stream");
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_write_that_fails_closes_the_outbox_and_the_writer_reports_it() {
        let (writer, reader) = tokio::io::duplex(64);
        drop(reader);
        let outbox = Outbox::new(Box::new(writer));
        let task = tokio::spawn(outbox.clone().run());
        // The first push sees the broken pipe; later ones find the outbox closed.
        let _ = outbox.push(&response(1, b"lost")).await;
        assert!(
            task.await.unwrap().is_err(),
            "the writer reports the failure"
        );
        assert_eq!(outbox.push(&response(2, b"lost")).await, Err(Closed));
    }
}
