//! The `log` import, and the pipes that route a guest's WASI stdout and stderr into its log.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::activation::StoreData;
use super::object_primitive::object::log::Host;
use super::wit;

/// Longest log message kept from one `log` call or one output line; the rest is cut.
pub const MAX_LINE_BYTES: usize = 16 << 10;
/// Output kept per call from stdout or stderr; past it the guest's writes are dropped.
const MAX_OUTPUT_BYTES: usize = 256 << 10;

impl Host for StoreData {
    async fn log(&mut self, level: wit::Level, message: String) -> wasmtime::Result<()> {
        let call = self.active()?;
        let message = truncate(message);
        call.ctx.services.log(
            &call.ctx.object_id,
            &call.ctx.chain,
            level.into(),
            "object",
            &message,
        );
        Ok(())
    }
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_LINE_BYTES {
        let mut end = MAX_LINE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(" …(truncated)");
    }
    message
}

/// A WASI output stream that collects bytes in memory; the activation turns them into log lines
/// after each call.
#[derive(Clone, Default)]
pub(super) struct OutputPipe {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl OutputPipe {
    /// Takes everything written so far as lines (a trailing partial line counts as a line).
    pub(super) fn take_lines(&self) -> Vec<String> {
        let bytes = std::mem::take(&mut *self.buffer.lock().expect("output pipe lock"));
        if bytes.is_empty() {
            return Vec::new();
        }
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| truncate(line.to_string()))
            .collect()
    }
}

impl IsTerminal for OutputPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for OutputPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut buffer = self.buffer.lock().expect("output pipe lock");
        let room = MAX_OUTPUT_BYTES.saturating_sub(buffer.len());
        buffer.extend_from_slice(&buf[..buf.len().min(room)]);
        // Report everything as written: a chatty guest loses output past the cap, never blocks.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
