//! Events: what objects publish (`events.publish`), pushed to the clients subscribed at
//! `GET /objects/{id}/events`.
//!
//! A published event is a write of the call: it is numbered and kept in the object's own state
//! under reserved keys ([`EVENT_PREFIX`] + number → [`StoredEvent`], and the next number under
//! [`NEXT_KEY`]), in the call's batch. So an event exists only if its call committed, numbers
//! follow commit order, and the kept events travel with replication, migration and failover.
//! Each publishing call also removes the events older than the newest `retention`.
//!
//! Delivery waits for durability: when a call's batch is durable the station raises the object's
//! durable mark in the [`EventHub`] (a `watch` per object with subscribers), and every subscriber
//! reads the events up to the mark from state. A subscriber never holds a queue of its own, so
//! 10,000 of them cost 10,000 watch receivers, and a slow one cannot be overrun: it reads what it
//! missed from state, as a client reconnecting with `Last-Event-ID` does.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::runtime::PublishedEvent;
use crate::store::{ObjectState, Write};

/// The number the next event gets (absent: 1).
const NEXT_KEY: &str = "\u{0}op/ev/next";
/// Kept events: `EVENT_PREFIX + number (20 digits)` → the JSON of [`StoredEvent`].
const EVENT_PREFIX: &str = "\u{0}op/ev/e/";
/// Events older than the retention one call removes at most beyond its own count.
const TRIM_PER_CALL: usize = 16;

/// One kept event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Its number: increasing per object, in commit order (the SSE `id`).
    #[serde(skip)]
    pub number: u64,
    /// The topic it was published under.
    pub topic: String,
    /// The data.
    pub data: String,
    /// When its call ran (station wall clock, ms since the epoch).
    pub at_ms: u64,
}

fn event_key(number: u64) -> String {
    format!("{EVENT_PREFIX}{number:020}")
}

fn parse_event_key(key: &str) -> Option<u64> {
    key.strip_prefix(EVENT_PREFIX)?.parse().ok()
}

/// The number of the newest event committed (0: none yet).
pub(super) fn last_number(state: &ObjectState) -> u64 {
    state
        .get(NEXT_KEY)
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(0, |next| next.saturating_sub(1))
}

/// The number of the oldest event kept, if any.
pub(super) fn oldest_number(state: &ObjectState) -> Option<u64> {
    parse_event_key(&state.first_keys(EVENT_PREFIX, 1).pop()?)
}

/// The writes that keep a call's `events` (numbered on from the state's) and remove those older
/// than the newest `retention`, and the number of the last one. Nothing for no events.
pub(super) fn event_writes(
    state: &ObjectState,
    events: &[PublishedEvent],
    retention: u64,
    now_ms: u64,
) -> (Vec<Write>, Option<u64>) {
    if events.is_empty() {
        return (Vec::new(), None);
    }
    let first = last_number(state) + 1;
    let mut writes = Vec::with_capacity(events.len() + 2);
    for (number, event) in (first..).zip(events) {
        let stored = StoredEvent {
            number,
            topic: event.topic.clone(),
            data: event.data.clone(),
            at_ms: now_ms,
        };
        writes.push(Write::Set {
            key: event_key(number),
            value: serde_json::to_string(&stored).expect("an event serializes"),
        });
    }
    let last = first + events.len() as u64 - 1;
    writes.push(Write::Set {
        key: NEXT_KEY.to_string(),
        value: (last + 1).to_string(),
    });
    let keep_from = last.saturating_sub(retention.max(1)) + 1;
    for key in state.first_keys(EVENT_PREFIX, events.len() + TRIM_PER_CALL) {
        match parse_event_key(&key) {
            Some(number) if number < keep_from => writes.push(Write::Delete { key }),
            _ => break,
        }
    }
    (writes, Some(last))
}

/// The kept events after number `after`, oldest first, up to `upto` and at most `limit`.
pub(super) fn events_after(
    state: &ObjectState,
    after: u64,
    upto: u64,
    limit: usize,
) -> Vec<StoredEvent> {
    state
        .keys_from(EVENT_PREFIX, &event_key(after.saturating_add(1)), limit)
        .into_iter()
        .filter_map(|key| {
            let number = parse_event_key(&key)?;
            if number > upto {
                return None;
            }
            let mut event: StoredEvent = serde_json::from_str(&state.get(&key)?).ok()?;
            event.number = number;
            Some(event)
        })
        .collect()
}

/// Per object with subscribers: the number of the newest event that is durable here.
#[derive(Default)]
pub(super) struct EventHub {
    marks: Mutex<HashMap<String, tokio::sync::watch::Sender<u64>>>,
}

impl EventHub {
    /// A receiver of `id`'s durable mark (0 until the first is raised).
    pub(super) fn subscribe(&self, id: &str) -> tokio::sync::watch::Receiver<u64> {
        let mut marks = self.marks.lock().expect("event hub lock");
        marks
            .entry(id.to_string())
            .or_insert_with(|| tokio::sync::watch::Sender::new(0))
            .subscribe()
    }

    /// Events of `id` up to `number` are durable: wakes its subscribers. Marks only rise.
    pub(super) fn durable(&self, id: &str, number: u64) {
        let mut marks = self.marks.lock().expect("event hub lock");
        let Some(mark) = marks.get(id) else {
            return;
        };
        if mark.receiver_count() == 0 {
            marks.remove(id);
            return;
        }
        mark.send_if_modified(|current| {
            let raised = number > *current;
            if raised {
                *current = number;
            }
            raised
        });
    }

    /// Subscribers, over all objects.
    pub(super) fn subscribers(&self) -> usize {
        let marks = self.marks.lock().expect("event hub lock");
        marks.values().map(|m| m.receiver_count()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, Store, StoreConfig};

    fn event(topic: &str, data: &str) -> PublishedEvent {
        PublishedEvent {
            topic: topic.into(),
            data: data.into(),
        }
    }

    #[test]
    fn events_are_numbered_in_commit_order_and_only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            durability: Durability::None,
            ..StoreConfig::new(dir.path().join("data"))
        };
        let store = Store::open(config).unwrap();
        let state = store.state("obj").unwrap();
        assert_eq!(last_number(&state), 0);
        for round in 0..4 {
            let events = [
                event("a", &format!("{round}.1")),
                event("b", &format!("{round}.2")),
            ];
            let (writes, last) = event_writes(&state, &events, 5, 7);
            assert_eq!(last, Some(2 * round + 2));
            state.commit(writes).unwrap();
        }
        assert_eq!(last_number(&state), 8);
        // Retention 5: events 4..=8 are kept.
        assert_eq!(oldest_number(&state), Some(4));
        let after: Vec<_> = events_after(&state, 5, 7, 100)
            .into_iter()
            .map(|e| (e.number, e.topic, e.data))
            .collect();
        assert_eq!(
            after,
            [(6, "b".into(), "2.2".into()), (7, "a".into(), "3.1".into())]
        );
        assert_eq!(event_writes(&state, &[], 5, 7), (Vec::new(), None));
    }

    #[tokio::test]
    async fn marks_only_rise_and_wake_subscribers() {
        let hub = EventHub::default();
        hub.durable("o", 3); // nobody listens: nothing kept
        let mut rx = hub.subscribe("o");
        assert_eq!(*rx.borrow(), 0);
        hub.durable("o", 2);
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), 2);
        hub.durable("o", 1);
        assert!(!rx.has_changed().unwrap());
        assert_eq!(hub.subscribers(), 1);
    }
}
