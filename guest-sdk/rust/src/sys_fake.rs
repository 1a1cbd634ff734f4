//! The native backend: a thread-local in-memory fake of the station, so objects and
//! this crate can be tested with a plain `cargo test`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

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
}

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
        }
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
            at_ms: now_ms(),
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
