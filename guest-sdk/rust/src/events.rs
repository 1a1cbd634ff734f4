//! Events pushed to the clients subscribed at `GET /objects/{id}/events` (Server-Sent
//! Events, optionally filtered with `?topic=`).
//!
//! Publishing is a write of the call: subscribers receive the event once the call's batch
//! is durable, in commit order; a call that panics (traps) or answers a status of 500 or
//! more publishes nothing.
//!
//! ```
//! use object_primitive::{events, json};
//!
//! events::publish("greeting", "hello");
//! events::publish_json("count", &json!({ "count": 3 }));
//! ```
//!
//! Natively the events are collected by the in-memory fake (`testing::published_events`).

use serde::Serialize;

use crate::sys;

/// Publishes `data` under `topic`.
///
/// The station traps the call (nothing commits) if `topic` is empty, longer than 128
/// bytes, holds a control character or starts with `op.` (reserved for the host's own
/// events), if `data` is larger than 64 KiB, or if the call publishes more than 1,000
/// events.
pub fn publish(topic: &str, data: &str) {
    sys::events_publish(topic, data)
}

/// Publishes `value` serialized as compact JSON under `topic` (see [`publish`]).
///
/// # Panics
/// If `value` cannot be serialized (for example a map with non-string keys); the panic
/// traps the call, so nothing it wrote or published commits.
pub fn publish_json<T: Serialize + ?Sized>(topic: &str, value: &T) {
    let json = serde_json::to_string(value).expect("event data serializes to JSON");
    publish(topic, &json)
}
