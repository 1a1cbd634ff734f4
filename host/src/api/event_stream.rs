//! `GET /objects/{id}/events[?topic=T]`: an object's events as Server-Sent Events, through any
//! station (a station that is not the home proxies the stream to it).
//!
//! The object decides who may subscribe: the request first runs as a call of the object's GET
//! handler with the path `/events` (its query and headers, a token among them). A 2xx answer
//! opens the stream (the answer's body is not sent); any other answer goes back to the client as
//! it is, and nothing is streamed. An object whose GET answers everything (the counter) admits
//! every subscriber; the chat admits members of the room named by `topic` only.
//!
//! Each event is sent with its number as the SSE `id`, its topic as the SSE `event` and its data
//! as the SSE `data`. A client that reconnects with `Last-Event-ID: N` (browsers' `EventSource`
//! does it by itself; `?after=N` does the same) receives every event after `N` the object still
//! keeps, exactly once; without either it receives events published from now on. If it asks for
//! events older than the object keeps, it first gets one `op.missed` event with
//! `{"from":A,"to":B}`: the numbers it will not receive.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::ApiState;
use super::error::ApiError;
use crate::station::StreamItem;

/// The path (after `/objects/{id}`) of the stream.
pub(super) const EVENTS_PATH: &str = "/events";
/// How often an idle stream sends a comment, so proxies and clients see it is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What a subscriber asked for, checked before anything runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Subscription {
    /// Only events of this topic (`?topic=`), or all.
    topic: Option<String>,
    /// Start after this event number (`Last-Event-ID`, or `?after=`); `None`: from now on.
    after: Option<u64>,
}

impl Subscription {
    /// Reads `?topic=` and `Last-Event-ID` (or `?after=`); a bad one is a 400 naming it.
    pub(super) fn parse(
        headers: &HeaderMap,
        query: &[(String, String)],
    ) -> Result<Subscription, ApiError> {
        let topic = query
            .iter()
            .find(|(k, _)| k == "topic")
            .map(|(_, v)| v.clone());
        if let Some(topic) = &topic {
            crate::runtime::check_topic(topic)
                .map_err(|e| ApiError::bad_request("invalid_topic", e))?;
        }
        let given = match headers.get("last-event-id") {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| {
                        ApiError::bad_request(
                            "invalid_last_event_id",
                            "Last-Event-ID must be an event number (ASCII digits)",
                        )
                    })?
                    .to_string(),
            ),
            None => query
                .iter()
                .find(|(k, _)| k == "after")
                .map(|(_, v)| v.clone()),
        };
        let after = match given.filter(|v| !v.is_empty()) {
            None => None,
            Some(given) => Some(given.trim().parse().map_err(|_| {
                ApiError::bad_request(
                    "invalid_last_event_id",
                    format!("Last-Event-ID (or ?after=) must be an event number, not {given:?}"),
                )
            })?),
        };
        Ok(Subscription { topic, after })
    }
}

/// The SSE response streaming `id`'s events (the object is served here and admitted the
/// subscriber).
pub(super) async fn events(
    api: &ApiState,
    id: &str,
    subscription: Subscription,
) -> Result<Response, ApiError> {
    let Subscription { topic, after } = subscription;
    let stream = api
        .station
        .subscribe_events(id, topic, after)
        .await
        .map_err(|e| ApiError::from(e).for_object(id))?;
    let events = futures::stream::unfold(stream, |mut stream| async move {
        let event = match stream.next().await? {
            StreamItem::Event(event) => Event::default()
                .id(event.number.to_string())
                .event(event.topic)
                .data(event.data),
            StreamItem::Missed { from, to } => Event::default()
                .id(to.to_string())
                .event("op.missed")
                .data(format!("{{\"from\":{from},\"to\":{to}}}")),
        };
        Some((Ok::<_, Infallible>(event), stream))
    });
    Ok(
        Sse::new(events.take_until(api.config.draining.clone().begun()))
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
            .into_response(),
    )
}
