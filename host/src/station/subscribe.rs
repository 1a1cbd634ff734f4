//! One subscriber of an object's events: from where it asked to start (a `Last-Event-ID`, or
//! now), every durable event in number order, read from the object's state as the durable mark
//! rises (see `pubsub.rs`). It ends when the object leaves this station (undeployed, moved,
//! demoted), so a client reconnects and is routed to the new home.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::alarms::PendingAlarm;
use super::pubsub::{self, StoredEvent};
use super::{Error, LiveObject, Station};
use crate::store::ObjectState;

/// Events one read from state takes at most.
const READ_BATCH: usize = 256;
/// How often a waiting subscriber checks that the object is still served here.
const SERVED_CHECK: Duration = Duration::from_secs(1);

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// An event, in number order.
    Event(StoredEvent),
    /// Events `from..=to` are no longer kept (the subscriber asked for older ones than the
    /// object's retention holds): they will not arrive.
    Missed {
        /// The first number missed.
        from: u64,
        /// The last number missed.
        to: u64,
    },
}

/// A subscription to one object's events.
pub struct EventStream {
    station: Station,
    object: Arc<LiveObject>,
    state: ObjectState,
    mark: tokio::sync::watch::Receiver<u64>,
    topic: Option<String>,
    /// The number of the last event handled (sent, or skipped by the topic filter).
    sent: u64,
    pending: VecDeque<StoredEvent>,
}

impl Station {
    /// Subscribes to `id`'s events with `topic` (all without), starting after event number
    /// `after` (a client's `Last-Event-ID`; `None`: only events from now on).
    pub async fn subscribe_events(
        &self,
        id: &str,
        topic: Option<String>,
        after: Option<u64>,
    ) -> Result<EventStream, Error> {
        let object = self.object(id)?;
        if object.stateless {
            return Err(Error::Stateless {
                object: id.to_string(),
                what: "publish events",
            });
        }
        let state = self.state_of(&object).await?;
        let deadline = std::time::Instant::now() + self.inner.config.call_deadline;
        self.wait_writer(&object, deadline).await?;
        let mark = self.inner.event_hub.subscribe(id);
        // What is committed now is delivered once it is durable.
        let committed = pubsub::last_number(&state);
        state.barrier()?.durable().await?;
        self.inner.event_hub.durable(id, committed);
        Ok(EventStream {
            station: self.clone(),
            object,
            state,
            mark,
            topic,
            // A number past the newest (another incarnation's, say) waits for nothing.
            sent: after.unwrap_or(committed).min(committed),
            pending: VecDeque::new(),
        })
    }

    /// Event subscribers on this station.
    pub fn event_subscribers(&self) -> usize {
        self.inner.event_hub.subscribers()
    }

    /// Objects with pending alarms on this station's clock.
    pub fn alarm_objects(&self) -> usize {
        self.inner.alarm_clock.len()
    }

    /// The pending alarms of `id`, due soonest first, as `?alarms=true` shows them.
    pub async fn pending_alarms(&self, id: &str) -> Result<Vec<PendingAlarm>, Error> {
        let object = self.object(id)?;
        if object.stateless {
            return Ok(Vec::new());
        }
        let state = self.state_of(&object).await?;
        Ok(super::alarms::all_due(&state))
    }

    /// Whether `object` is still the one served (and written) here.
    fn still_serves(&self, object: &Arc<LiveObject>) -> bool {
        let current = self
            .inner
            .objects
            .lock()
            .expect("objects lock")
            .get(&object.id)
            .is_some_and(|o| Arc::ptr_eq(o, object));
        current
            && object.moved_to.lock().expect("moved lock").is_none()
            && self.check_writer(object).is_ok()
    }
}

impl EventStream {
    /// The next item; `None` when the object is no longer served here.
    pub async fn next(&mut self) -> Option<StreamItem> {
        loop {
            while let Some(event) = self.pending.pop_front() {
                self.sent = event.number;
                if self.topic.as_ref().is_none_or(|t| *t == event.topic) {
                    return Some(StreamItem::Event(event));
                }
            }
            let durable = *self.mark.borrow_and_update();
            if durable > self.sent {
                if let Some(oldest) = pubsub::oldest_number(&self.state)
                    && oldest > self.sent + 1
                {
                    let missed = StreamItem::Missed {
                        from: self.sent + 1,
                        to: oldest - 1,
                    };
                    self.sent = oldest - 1;
                    return Some(missed);
                }
                let read = pubsub::events_after(&self.state, self.sent, durable, READ_BATCH);
                if read.is_empty() {
                    self.sent = durable;
                }
                self.pending = read.into();
                continue;
            }
            tokio::select! {
                changed = self.mark.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                () = tokio::time::sleep(SERVED_CHECK) => {
                    if !self.station.still_serves(&self.object) {
                        return None;
                    }
                }
            }
        }
    }
}
