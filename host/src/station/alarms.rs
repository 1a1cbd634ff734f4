//! Alarms: an object asks to be woken at a time (`alarms.set`), and its home runs the object's
//! `alarm-handler.fire` then, in the object's turn like a call.
//!
//! An alarm lives in the object's own state, under keys the host reserves: a record per name
//! ([`RECORD_PREFIX`] + name → [`Stored`]) and an entry in a due-time index ([`DUE_PREFIX`] + due
//! time + name). So setting and cancelling commit with the call's batch, and alarms travel with
//! replication, migration and failover with nothing of their own. The index is ordered, so an
//! object's next alarm is its first index key: a station holds one entry per object with pending
//! alarms in its [`AlarmClock`] (never one timer per alarm), and one task sleeps until the
//! earliest.
//!
//! A fire that succeeds removes the alarm in the batch of its writes (unless `fire` set the same
//! name again); one that fails or traps commits nothing, and the alarm is moved to a retry time
//! (backoff doubling from the station's base) until [`MAX_RETRIES`] retries have failed, when it
//! is dropped and the drop logged.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::runtime::AlarmEntry;
use crate::store::{ObjectState, Write};

/// Record of one alarm: `RECORD_PREFIX + name` → the JSON of [`Stored`].
const RECORD_PREFIX: &str = "\u{0}op/alarm/n/";
/// Due index: `DUE_PREFIX + due_ms (20 digits) + "/" + name` → empty.
const DUE_PREFIX: &str = "\u{0}op/alarm/t/";
/// Retries after the first failed fire; after the last one fails the alarm is dropped.
pub const MAX_RETRIES: u32 = 6;

/// One pending alarm as kept in state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    /// When the object asked for it (what `fire` receives as `scheduled-ms`).
    at_ms: u64,
    /// The payload, base64.
    payload: String,
    /// Failed fires so far.
    #[serde(default)]
    attempts: u32,
    /// When it is next due: `at_ms`, or a retry time after a failure.
    due_ms: u64,
}

impl Stored {
    fn entry(&self, name: &str) -> Option<AlarmEntry> {
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&self.payload)
            .ok()?;
        Some(AlarmEntry {
            name: name.to_string(),
            at_ms: self.at_ms,
            payload,
        })
    }
}

/// An alarm that is due: what a fire needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Due {
    /// The alarm as the object set it.
    pub(super) alarm: AlarmEntry,
    /// Failed fires so far.
    pub(super) attempts: u32,
    /// When it became due (its time, or its retry time).
    pub(super) due_ms: u64,
}

fn read(state: &ObjectState, name: &str) -> Option<Stored> {
    let text = state.get(&format!("{RECORD_PREFIX}{name}"))?;
    serde_json::from_str(&text).ok()
}

fn due_key(due_ms: u64, name: &str) -> String {
    format!("{DUE_PREFIX}{due_ms:020}/{name}")
}

fn parse_due_key(key: &str) -> Option<(u64, &str)> {
    let rest = key.strip_prefix(DUE_PREFIX)?;
    let (due, name) = rest.split_at_checked(20)?;
    Some((due.parse().ok()?, name.strip_prefix('/')?))
}

/// The pending alarm `name`, if any.
pub(super) fn pending(state: &ObjectState, name: &str) -> Option<AlarmEntry> {
    read(state, name)?.entry(name)
}

/// Every pending alarm, in due order.
pub(super) fn all_pending(state: &ObjectState) -> Vec<AlarmEntry> {
    state
        .keys(DUE_PREFIX)
        .iter()
        .filter_map(|key| {
            let (_, name) = parse_due_key(key)?;
            pending(state, name)
        })
        .collect()
}

/// When the object's next alarm is due, if it has one.
pub(super) fn next_due(state: &ObjectState) -> Option<u64> {
    let first = state.first_keys(DUE_PREFIX, 1).pop()?;
    parse_due_key(&first).map(|(due, _)| due)
}

/// The first alarm due at or before `now_ms`, if any.
pub(super) fn first_due(state: &ObjectState, now_ms: u64) -> Option<Due> {
    for key in state.first_keys(DUE_PREFIX, 16) {
        let Some((due_ms, name)) = parse_due_key(&key) else {
            continue;
        };
        if due_ms > now_ms {
            return None;
        }
        let Some(stored) = read(state, name) else {
            continue;
        };
        if stored.due_ms != due_ms {
            continue;
        }
        let alarm = stored.entry(name)?;
        return Some(Due {
            alarm,
            attempts: stored.attempts,
            due_ms,
        });
    }
    None
}

/// Whether `due` is still pending as it was read (not cancelled, moved or fired since).
pub(super) fn still_due(state: &ObjectState, due: &Due) -> bool {
    read(state, &due.alarm.name).is_some_and(|s| s.due_ms == due.due_ms)
}

/// The writes that apply a call's alarm changes: each name set (`Some`) replaces its record and
/// index entry, each cancelled (`None`) removes them.
pub(super) fn change_writes(
    state: &ObjectState,
    changes: &[(String, Option<AlarmEntry>)],
) -> Vec<Write> {
    let mut writes = Vec::new();
    for (name, change) in changes {
        writes.extend(remove_writes(state, name));
        if let Some(alarm) = change {
            writes.extend(set_writes(name, alarm, 0, alarm.at_ms));
        }
    }
    writes
}

/// The writes that remove the alarm `name` (nothing if it is not pending).
pub(super) fn remove_writes(state: &ObjectState, name: &str) -> Vec<Write> {
    match read(state, name) {
        Some(stored) => vec![
            Write::Delete {
                key: due_key(stored.due_ms, name),
            },
            Write::Delete {
                key: format!("{RECORD_PREFIX}{name}"),
            },
        ],
        None => Vec::new(),
    }
}

fn set_writes(name: &str, alarm: &AlarmEntry, attempts: u32, due_ms: u64) -> Vec<Write> {
    let stored = Stored {
        at_ms: alarm.at_ms,
        payload: base64::engine::general_purpose::STANDARD.encode(&alarm.payload),
        attempts,
        due_ms,
    };
    vec![
        Write::Set {
            key: format!("{RECORD_PREFIX}{name}"),
            value: serde_json::to_string(&stored).expect("an alarm serializes"),
        },
        Write::Set {
            key: due_key(due_ms, name),
            value: String::new(),
        },
    ]
}

/// After a failed fire of `due`: the writes that move it to its retry time (`now_ms` plus the
/// backoff for its attempt) and that time, or `None` (remove it, see [`remove_writes`]) when it
/// has used its [`MAX_RETRIES`].
pub(super) fn retry_writes(due: &Due, now_ms: u64, base_ms: u64) -> Option<(Vec<Write>, u64)> {
    if due.attempts >= MAX_RETRIES {
        return None;
    }
    let backoff = base_ms.saturating_mul(1 << due.attempts.min(20));
    let retry_at = now_ms.saturating_add(backoff);
    let mut writes = vec![Write::Delete {
        key: due_key(due.due_ms, &due.alarm.name),
    }];
    writes.extend(set_writes(
        &due.alarm.name,
        &due.alarm,
        due.attempts + 1,
        retry_at,
    ));
    Some((writes, retry_at))
}

/// A pending alarm as an administrator sees it (`?alarms=true`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingAlarm {
    /// Its name.
    pub name: String,
    /// The time it was set for (unix ms).
    pub at_ms: u64,
    /// When it is next due: `at_ms`, or its retry time after failed fires.
    pub due_ms: u64,
    /// Failed fires so far.
    pub attempts: u32,
    /// The payload, base64.
    pub payload_base64: String,
}

/// Every pending alarm with its retry state, due soonest first.
pub(super) fn all_due(state: &ObjectState) -> Vec<PendingAlarm> {
    state
        .keys(DUE_PREFIX)
        .iter()
        .filter_map(|key| {
            let (_, name) = parse_due_key(key)?;
            let stored = read(state, name)?;
            Some(PendingAlarm {
                name: name.to_string(),
                at_ms: stored.at_ms,
                due_ms: stored.due_ms,
                attempts: stored.attempts,
                payload_base64: stored.payload,
            })
        })
        .collect()
}

/// When each object with pending alarms on this station is next due: one entry per object, in
/// due order, for the one task that fires them.
#[derive(Default)]
pub(super) struct AlarmClock {
    due: Mutex<Schedule>,
    /// Woken when an entry earlier than every other is added.
    pub(super) wake: tokio::sync::Notify,
}

#[derive(Default)]
struct Schedule {
    by_time: BTreeSet<(u64, String)>,
    by_object: HashMap<String, u64>,
}

impl AlarmClock {
    /// Sets when `id`'s next alarm is due (`None`: it has none).
    pub(super) fn schedule(&self, id: &str, due_ms: Option<u64>) {
        let mut schedule = self.due.lock().expect("alarm clock lock");
        if let Some(old) = schedule.by_object.remove(id) {
            schedule.by_time.remove(&(old, id.to_string()));
        }
        let Some(due_ms) = due_ms else {
            return;
        };
        let earliest = schedule.by_time.first().is_none_or(|(t, _)| due_ms < *t);
        schedule.by_time.insert((due_ms, id.to_string()));
        schedule.by_object.insert(id.to_string(), due_ms);
        drop(schedule);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Takes the objects due at or before `now_ms` (at most `limit`) off the schedule.
    pub(super) fn take_due(&self, now_ms: u64, limit: usize) -> Vec<String> {
        let mut schedule = self.due.lock().expect("alarm clock lock");
        let mut taken = Vec::new();
        while taken.len() < limit {
            match schedule.by_time.first() {
                Some((due, _)) if *due <= now_ms => {}
                _ => break,
            }
            let (_, id) = schedule.by_time.pop_first().expect("checked above");
            schedule.by_object.remove(&id);
            taken.push(id);
        }
        taken
    }

    /// When the earliest entry is due.
    pub(super) fn next(&self) -> Option<u64> {
        let schedule = self.due.lock().expect("alarm clock lock");
        schedule.by_time.first().map(|(due, _)| *due)
    }

    /// Objects on the schedule.
    pub(super) fn len(&self) -> usize {
        self.due.lock().expect("alarm clock lock").by_object.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, Store, StoreConfig};

    fn state(dir: &std::path::Path) -> (Store, ObjectState) {
        let config = StoreConfig {
            durability: Durability::None,
            ..StoreConfig::new(dir.join("data"))
        };
        let store = Store::open(config).unwrap();
        let state = store.state("obj").unwrap();
        (store, state)
    }

    fn alarm(name: &str, at_ms: u64) -> AlarmEntry {
        AlarmEntry {
            name: name.into(),
            at_ms,
            payload: name.as_bytes().to_vec(),
        }
    }

    #[test]
    fn alarms_are_kept_in_due_order_and_moved_by_setting_again() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, state) = state(dir.path());
        let changes = vec![
            ("b".to_string(), Some(alarm("b", 300))),
            ("a/x".to_string(), Some(alarm("a/x", 200))),
        ];
        state.commit(change_writes(&state, &changes)).unwrap();
        assert_eq!(next_due(&state), Some(200));
        let names: Vec<_> = all_pending(&state).into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["a/x", "b"]);
        // Moving `a/x` later leaves one index entry for it.
        let changes = vec![("a/x".to_string(), Some(alarm("a/x", 400)))];
        state.commit(change_writes(&state, &changes)).unwrap();
        assert_eq!(next_due(&state), Some(300));
        assert_eq!(state.keys(DUE_PREFIX).len(), 2);
        assert_eq!(first_due(&state, 299), None);
        let due = first_due(&state, 350).unwrap();
        assert_eq!(due.alarm, alarm("b", 300));
        // Cancelling removes record and index entry.
        state
            .commit(change_writes(&state, &[("b".to_string(), None)]))
            .unwrap();
        assert!(pending(&state, "b").is_none());
        assert!(!still_due(&state, &due));
        assert_eq!(next_due(&state), Some(400));
    }

    #[test]
    fn a_failed_alarm_is_retried_with_doubling_backoff_then_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, state) = state(dir.path());
        state
            .commit(change_writes(&state, &[("x".into(), Some(alarm("x", 10)))]))
            .unwrap();
        let mut now = 10;
        let mut waits = Vec::new();
        loop {
            let due = first_due(&state, now).expect("due");
            assert_eq!(
                due.alarm.at_ms, 10,
                "fire always gets the time it was set for"
            );
            match retry_writes(&due, now, 100) {
                Some((writes, at)) => {
                    state.commit(writes).unwrap();
                    waits.push(at - now);
                    assert_eq!(next_due(&state), Some(at));
                    now = at;
                }
                None => break,
            }
        }
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200]);
        assert_eq!(waits.len() as u32, MAX_RETRIES);
    }

    #[test]
    fn the_clock_hands_out_due_objects_in_time_order_once() {
        let clock = AlarmClock::default();
        clock.schedule("late", Some(500));
        clock.schedule("soon", Some(100));
        clock.schedule("moved", Some(50));
        clock.schedule("moved", Some(900));
        assert_eq!(clock.next(), Some(100));
        assert_eq!(clock.take_due(499, 10), ["soon"]);
        assert_eq!(clock.take_due(499, 10), Vec::<String>::new());
        clock.schedule("late", None);
        assert_eq!(clock.take_due(10_000, 10), ["moved"]);
        assert_eq!(clock.len(), 0);
    }
}
