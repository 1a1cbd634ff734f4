//! Progress on the terminal for the CLI's long work — an upload, a compile on the station, a
//! migration, a Python build — with `indicatif`. Drawn on stderr only when it is a terminal, so
//! scripts and tests that read the CLI's output see exactly what they did before.

use std::time::Duration;

use futures::Stream;
use indicatif::{ProgressBar, ProgressStyle};

/// How often a spinner redraws.
const TICK: Duration = Duration::from_millis(100);
/// Bytes per chunk of an upload (the bar advances per chunk).
const UPLOAD_CHUNK: usize = 64 << 10;

/// A spinner with a message and the time elapsed; cleared when dropped.
pub struct Spinner(ProgressBar);

impl Spinner {
    /// Starts a spinner saying `message`.
    pub fn start(message: impl Into<String>) -> Spinner {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.into());
        bar.enable_steady_tick(TICK);
        Spinner(bar)
    }

    /// Changes what the spinner says.
    pub fn say(&self, message: impl Into<String>) {
        self.0.set_message(message.into());
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// An upload of `bytes` as a request body whose progress a bar shows; once every byte is sent,
/// the bar turns into a spinner saying `then` (the station's work on them).
pub fn upload(bytes: Vec<u8>, then: String) -> (reqwest::Body, ProgressBar) {
    let bar = ProgressBar::new(bytes.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} uploading {bytes}/{total_bytes} ({bytes_per_sec}) {wide_bar} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(TICK);
    let body = reqwest::Body::wrap_stream(chunks(bytes::Bytes::from(bytes), bar.clone(), then));
    (body, bar)
}

/// `bytes` in [`UPLOAD_CHUNK`]s, advancing `bar` as each is taken.
fn chunks(
    bytes: bytes::Bytes,
    bar: ProgressBar,
    then: String,
) -> impl Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    futures::stream::unfold((bytes, 0usize), move |(bytes, at)| {
        let bar = bar.clone();
        let then = then.clone();
        async move {
            if at >= bytes.len() {
                return None;
            }
            let end = (at + UPLOAD_CHUNK).min(bytes.len());
            bar.set_position(end as u64);
            if end == bytes.len() {
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(then);
            }
            Some((Ok(bytes.slice(at..end)), (bytes, end)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn an_upload_sends_every_byte_once_in_order() {
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let bar = ProgressBar::hidden();
        let sent: Vec<u8> = chunks(bytes::Bytes::from(bytes.clone()), bar.clone(), "x".into())
            .map(|chunk| chunk.unwrap().to_vec())
            .concat()
            .await;
        assert_eq!(sent, bytes);
        assert_eq!(bar.position(), 200_000);
    }
}
