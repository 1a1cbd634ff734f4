//! The native backend: a thread-local in-memory fake of the station, so objects and
//! this crate can be tested with a plain `cargo test`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::alarms::Alarm;
use crate::log::Level;
use crate::runtime::CallError;
use crate::state::Version;
use crate::{Request, Response};

pub(crate) struct Fake {
    pub state: BTreeMap<String, String>,
    /// Every write of each key, oldest first.
    pub history: BTreeMap<String, Vec<Version>>,
    pub seq: u64,
    pub logs: Vec<(Level, String)>,
    pub object_id: String,
    pub station_id: String,
    /// Objects reachable with `runtime::call`: id -> handler.
    pub objects: BTreeMap<String, Rc<dyn Fn(Request) -> Response>>,
    /// Pending alarms by name.
    pub alarms: BTreeMap<String, PendingAlarm>,
    /// The last [`PendingAlarm::generation`] given out.
    pub alarm_generation: u64,
    /// Every event published, oldest first: (topic, data).
    pub events: Vec<(String, String)>,
    /// The frozen clock set by `testing::set_now_ms`, or `None` for the wall clock.
    pub now_ms: Option<u64>,
}

/// An alarm in the fake.
#[derive(Clone)]
pub(crate) struct PendingAlarm {
    pub at_ms: u64,
    pub payload: Vec<u8>,
    /// Which `alarms::set` put it there: a firing removes the alarm only if it was not set
    /// again meanwhile, as the station does.
    pub generation: u64,
}

/// The station's limits (`host/src/runtime/host_alarms.rs`): the fake panics (traps) alike.
const MAX_ALARM_NAME_BYTES: usize = 256;
const MAX_ALARM_PAYLOAD_BYTES: usize = 64 << 10;
const MAX_TOPIC_BYTES: usize = 128;
const MAX_EVENT_DATA_BYTES: usize = 64 << 10;

impl Fake {
    fn new() -> Fake {
        Fake {
            state: BTreeMap::new(),
            history: BTreeMap::new(),
            seq: 0,
            logs: Vec::new(),
            object_id: "test-object".to_string(),
            station_id: "test-station".to_string(),
            objects: BTreeMap::new(),
            alarms: BTreeMap::new(),
            alarm_generation: 0,
            events: Vec::new(),
            now_ms: None,
        }
    }

    fn now(&self) -> u64 {
        self.now_ms.unwrap_or_else(wall_clock_ms)
    }

    fn write(&mut self, key: &str, value: Option<&str>) {
        self.seq += 1;
        match value {
            Some(v) => {
                self.state.insert(key.to_string(), v.to_string());
            }
            None => {
                self.state.remove(key);
            }
        }
        let version = Version {
            seq: self.seq,
            at_ms: self.now(),
            value: value.map(str::to_string),
        };
        self.history
            .entry(key.to_string())
            .or_default()
            .push(version);
    }
}

thread_local! {
    static FAKE: RefCell<Fake> = RefCell::new(Fake::new());
}

pub(crate) fn with<R>(f: impl FnOnce(&mut Fake) -> R) -> R {
    FAKE.with(|fake| f(&mut fake.borrow_mut()))
}

pub(crate) fn reset() {
    with(|fake| *fake = Fake::new())
}

pub fn state_get(key: &str) -> Option<String> {
    with(|f| f.state.get(key).cloned())
}

pub fn state_set(key: &str, value: &str) {
    with(|f| f.write(key, Some(value)))
}

pub fn state_delete(key: &str) -> bool {
    with(|f| {
        let existed = f.state.contains_key(key);
        if existed {
            f.write(key, None);
        }
        existed
    })
}

pub fn state_keys(prefix: &str) -> Vec<String> {
    with(|f| {
        f.state
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    })
}

pub fn state_increment(key: &str, delta: i64) -> i64 {
    with(|f| {
        let current = match f.state.get(key) {
            None => 0,
            Some(v) => v.parse::<i64>().unwrap_or_else(|_| {
                panic!("state.increment: value of {key:?} is not a decimal integer: {v:?}")
            }),
        };
        let new = current
            .checked_add(delta)
            .unwrap_or_else(|| panic!("state.increment: {current} + {delta} overflows"));
        f.write(key, Some(&new.to_string()));
        new
    })
}

pub fn state_compare_and_swap(key: &str, expected: Option<&str>, new: Option<&str>) -> bool {
    with(|f| {
        if f.state.get(key).map(String::as_str) != expected {
            return false;
        }
        if new.is_some() || f.state.contains_key(key) {
            f.write(key, new);
        }
        true
    })
}

pub fn state_history(key: &str, limit: u32) -> Vec<Version> {
    with(|f| {
        f.history
            .get(key)
            .map(|h| h.iter().rev().take(limit as usize).cloned().collect())
            .unwrap_or_default()
    })
}

pub fn log(level: Level, message: &str) {
    with(|f| f.logs.push((level, message.to_string())))
}

pub fn object_id() -> String {
    with(|f| f.object_id.clone())
}

pub fn station_id() -> String {
    with(|f| f.station_id.clone())
}

pub fn now_ms() -> u64 {
    with(|f| f.now())
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn call(id: &str, req: Request) -> Result<Response, CallError> {
    // Taken out of the fake before the call: the callee uses the fake too.
    let Some(target) = with(|f| f.objects.get(id).cloned()) else {
        return Err(CallError::Unavailable(format!(
            "cannot call object {id:?}: runtime::call needs a station \
             (native test fake; see testing::register_object)"
        )));
    };
    Ok(target(req))
}

pub fn alarms_set(name: &str, at_ms: u64, payload: &[u8]) {
    if name.is_empty() || name.len() > MAX_ALARM_NAME_BYTES {
        panic!(
            "alarms.set: alarm name is {} bytes; it must be 1 to {MAX_ALARM_NAME_BYTES}",
            name.len()
        );
    }
    if payload.len() > MAX_ALARM_PAYLOAD_BYTES {
        panic!(
            "alarms.set: the payload of alarm {name:?} is {} bytes; the limit is \
             {MAX_ALARM_PAYLOAD_BYTES}",
            payload.len()
        );
    }
    with(|f| {
        f.alarm_generation += 1;
        let alarm = PendingAlarm {
            at_ms,
            payload: payload.to_vec(),
            generation: f.alarm_generation,
        };
        f.alarms.insert(name.to_string(), alarm);
    })
}

pub fn alarms_cancel(name: &str) -> bool {
    with(|f| f.alarms.remove(name).is_some())
}

pub fn alarms_list() -> Vec<Alarm> {
    let mut list: Vec<Alarm> = with(|f| {
        f.alarms
            .iter()
            .map(|(name, a)| Alarm {
                name: name.clone(),
                at_ms: a.at_ms,
                payload: a.payload.clone(),
            })
            .collect()
    });
    // By name within a time: the map iterates by name and the sort is stable.
    list.sort_by_key(|a| a.at_ms);
    list
}

pub fn events_publish(topic: &str, data: &str) {
    if topic.starts_with("op.") {
        panic!(
            "events.publish: event topic {topic:?} starts with \"op.\", which the host reserves"
        );
    }
    if topic.is_empty() || topic.len() > MAX_TOPIC_BYTES {
        panic!(
            "events.publish: event topic is {} bytes; it must be 1 to {MAX_TOPIC_BYTES}",
            topic.len()
        );
    }
    if topic.chars().any(char::is_control) {
        panic!("events.publish: event topic {topic:?} holds a control character");
    }
    if data.len() > MAX_EVENT_DATA_BYTES {
        panic!(
            "events.publish: the data is {} bytes; the limit is {MAX_EVENT_DATA_BYTES}",
            data.len()
        );
    }
    with(|f| f.events.push((topic.to_string(), data.to_string())))
}
