//! The `alarms` and `events` imports (0.2.0): like state writes, an alarm set or cancelled and an
//! event published are buffered in the call and handed back in [`super::CallOutcome`]; the
//! station commits them with the call's batch, or drops them with its writes.

use super::activation::StoreData;
use super::object_primitive::object::alarms::{self, Alarm};
use super::object_primitive::object::events;
use super::{AlarmEntry, PublishedEvent};

/// Longest alarm name, in bytes.
pub const MAX_ALARM_NAME_BYTES: usize = 256;
/// Largest alarm payload, in bytes.
pub const MAX_ALARM_PAYLOAD_BYTES: usize = 64 << 10;
/// Longest event topic, in bytes.
pub const MAX_TOPIC_BYTES: usize = 128;
/// Largest event data, in bytes.
pub const MAX_EVENT_DATA_BYTES: usize = 64 << 10;
/// Most events one call may publish.
pub const MAX_EVENTS_PER_CALL: usize = 1_000;

fn check_name(name: &str) -> wasmtime::Result<()> {
    if name.is_empty() || name.len() > MAX_ALARM_NAME_BYTES {
        wasmtime::bail!(
            "alarm name is {} bytes; it must be 1 to {MAX_ALARM_NAME_BYTES}",
            name.len()
        );
    }
    Ok(())
}

/// A topic travels in the SSE `event:` field and in `?topic=`: no control characters (a line
/// break would end the field), 1 to [`MAX_TOPIC_BYTES`] bytes, and not starting with `op.`
/// (the host's own SSE events, such as `op.missed`).
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.starts_with("op.") {
        return Err(format!(
            "event topic {topic:?} starts with \"op.\", which the host reserves"
        ));
    }
    if topic.is_empty() || topic.len() > MAX_TOPIC_BYTES {
        return Err(format!(
            "event topic is {} bytes; it must be 1 to {MAX_TOPIC_BYTES}",
            topic.len()
        ));
    }
    if topic.chars().any(char::is_control) {
        return Err(format!("event topic {topic:?} holds a control character"));
    }
    Ok(())
}

impl alarms::Host for StoreData {
    async fn set(&mut self, name: String, at_ms: u64, payload: Vec<u8>) -> wasmtime::Result<()> {
        self.check_writable("alarms.set")?;
        check_name(&name)?;
        if payload.len() > MAX_ALARM_PAYLOAD_BYTES {
            wasmtime::bail!(
                "alarms.set: the payload of alarm {name:?} is {} bytes; the limit is \
                 {MAX_ALARM_PAYLOAD_BYTES}",
                payload.len()
            );
        }
        let call = self.active()?;
        call.charge((name.len() + payload.len() + 8) as u64)?;
        let entry = AlarmEntry {
            name: name.clone(),
            at_ms,
            payload,
        };
        call.alarms.insert(name, Some(entry));
        Ok(())
    }

    async fn cancel(&mut self, name: String) -> wasmtime::Result<bool> {
        self.check_writable("alarms.cancel")?;
        let call = self.active()?;
        let pending = match call.alarms.get(&name) {
            Some(change) => change.is_some(),
            None => call.ctx.state.alarm(&name).is_some(),
        };
        if pending {
            call.charge(name.len() as u64)?;
            call.alarms.insert(name, None);
        }
        Ok(pending)
    }

    async fn list(&mut self) -> wasmtime::Result<Vec<Alarm>> {
        let call = self.active()?;
        let mut pending: Vec<AlarmEntry> = call
            .ctx
            .state
            .alarms()
            .into_iter()
            .filter(|a| !call.alarms.contains_key(&a.name))
            .collect();
        pending.extend(call.alarms.values().flatten().cloned());
        pending.sort_by(|a, b| (a.at_ms, &a.name).cmp(&(b.at_ms, &b.name)));
        Ok(pending
            .into_iter()
            .map(|a| Alarm {
                name: a.name,
                at_ms: a.at_ms,
                payload: a.payload,
            })
            .collect())
    }
}

impl events::Host for StoreData {
    async fn publish(&mut self, topic: String, data: String) -> wasmtime::Result<()> {
        self.check_writable("events.publish")?;
        check_topic(&topic).map_err(|e| wasmtime::Error::msg(format!("events.publish: {e}")))?;
        if data.len() > MAX_EVENT_DATA_BYTES {
            wasmtime::bail!(
                "events.publish: the data is {} bytes; the limit is {MAX_EVENT_DATA_BYTES}",
                data.len()
            );
        }
        let call = self.active()?;
        if call.events.len() >= MAX_EVENTS_PER_CALL {
            wasmtime::bail!(
                "events.publish: one call may publish at most {MAX_EVENTS_PER_CALL} events"
            );
        }
        call.charge((topic.len() + data.len()) as u64)?;
        call.events.push(PublishedEvent { topic, data });
        Ok(())
    }
}
