//! `GET /admin/objects/{id}/logs?follow=true` (and `?logs=true&follow=true`): an object's log as
//! Server-Sent Events — the newest `limit` lines matching the filters, then every new one as it
//! is appended, until the client leaves or the object is undeployed. Each line is one `log`
//! event whose data is the line as JSON (the fields of `?logs=true`).
//!
//! The stream subscribes to the log before it reads the files, and joins the two with
//! [`Delivered`]; a follower too slow to keep up is cut off its tap and reads what it missed from
//! the files, so no line is skipped and none repeated.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};

use super::error::ApiError;
use super::server::Draining;
use crate::store::{Delivered, LogQuery, LogRecord, LogStore, LogTap};

/// How often an idle stream sends a comment, so proxies and clients see it is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Most lines one catch-up from the files reads, and the most a follow request may ask for.
pub(super) const CATCH_UP_LIMIT: usize = 100_000;

/// Whether a request asks to follow the log (`follow=true`).
pub(super) fn wants_follow(query: &[(String, String)]) -> bool {
    query.iter().any(|(k, v)| k == "follow" && v == "true")
}

/// The SSE response following `id`'s log with `query`'s filters (its `limit` bounds the lines
/// sent from before the stream began).
pub(super) async fn follow(
    store: LogStore,
    id: String,
    query: LogQuery,
    draining: Draining,
) -> Result<Response, ApiError> {
    let mut follower = Follower {
        tap: store.follow(&id),
        store,
        id,
        query,
        delivered: Delivered::default(),
        pending: VecDeque::new(),
    };
    let backlog = follower
        .read_files(follower.query.since_ms, follower.query.limit)
        .await?;
    follower.pending = follower.delivered.fresh_from_files(backlog).into();
    let events = futures::stream::unfold(follower, |mut follower| async move {
        let record = follower.next_line().await?;
        let event = Event::default()
            .event("log")
            .json_data(&record)
            .unwrap_or_else(|_| Event::default().event("log"));
        Some((Ok::<_, Infallible>(event), follower))
    });
    Ok(sse(events, draining))
}

/// The stream as an SSE response that ends when the station begins to shut down.
fn sse(
    events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
    draining: Draining,
) -> Response {
    Sse::new(events.take_until(draining.begun()))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// One client's position in an object's log.
struct Follower {
    store: LogStore,
    id: String,
    query: LogQuery,
    tap: LogTap,
    delivered: Delivered,
    /// Lines read from the files, oldest first, not sent yet.
    pending: VecDeque<LogRecord>,
}

impl Follower {
    /// The next line to send; `None` when the stream ends (the object's logs were removed, or the
    /// station shuts down).
    async fn next_line(&mut self) -> Option<LogRecord> {
        loop {
            if let Some(record) = self.pending.pop_front() {
                return Some(record);
            }
            match self.tap.next().await {
                Some(record) => {
                    if self.query.matches(&record) && self.delivered.fresh_line(&record) {
                        return Some(record);
                    }
                }
                None if self.tap.lagged() => {
                    self.tap = self.store.follow(&self.id);
                    let since = self.delivered.catch_up_since().or(self.query.since_ms);
                    let read = self.read_files(since, CATCH_UP_LIMIT).await.ok()?;
                    self.pending = self.delivered.fresh_from_files(read).into();
                }
                None => return None,
            }
        }
    }

    /// The matching lines since `since_ms` in the files, oldest first, at most `limit` (the newest).
    async fn read_files(
        &self,
        since_ms: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LogRecord>, ApiError> {
        let wanted = LogQuery {
            since_ms,
            limit,
            ..self.query.clone()
        };
        let mut newest_first = query(self.store.clone(), self.id.clone(), wanted).await?;
        newest_first.reverse();
        Ok(newest_first)
    }
}

/// The object's lines matching `query`, newest first (`?logs=true`), read off the runtime.
pub(super) async fn query(
    store: LogStore,
    id: String,
    query: LogQuery,
) -> Result<Vec<LogRecord>, ApiError> {
    tokio::task::spawn_blocking(move || store.query(&id, &query))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                e.to_string(),
            )
        })?
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                e.to_string(),
            )
        })
}
