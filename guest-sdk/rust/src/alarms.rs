//! Named alarms: ask the station to wake the object at a time, with a payload.
//!
//! When an alarm is due the station calls the object's [`Object::on_alarm`](crate::Object::on_alarm)
//! in the object's turn, like a call. Setting and cancelling are writes of the call: they
//! commit with its batch, so a call that panics (traps) or answers a status of 500 or more
//! sets and cancels nothing. Alarms are durable: they survive restarts, migration and
//! failover, and an alarm due while its station was down fires soon after it starts.
//!
//! An object may have many alarms, one per name; setting a pending name moves it.
//!
//! ```
//! use object_primitive::{alarms, runtime};
//!
//! let due = runtime::now_ms() + 60_000;
//! alarms::set("reminder-1", due, b"call Ada");
//! alarms::set("reminder-2", due + 1, b"");
//! assert_eq!(alarms::list()[0].name, "reminder-1");
//! assert!(alarms::cancel("reminder-2"));
//! assert!(!alarms::cancel("reminder-2"));
//! assert_eq!(alarms::list().len(), 1);
//! ```
//!
//! Natively the alarms live in the in-memory fake; `testing::fire_due_alarms` and
//! `testing::fire_alarm` fire them through an object's `on_alarm`.

use serde::{Deserialize, Serialize};

use crate::sys;

/// One pending alarm, as returned by [`list`]. Serializes as
/// `{"name":..,"at_ms":..,"payload":[..bytes..]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// The name it was set under (unique per object).
    pub name: String,
    /// When it is due, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The bytes given to [`set`], handed back to `on_alarm`.
    pub payload: Vec<u8>,
}

/// Sets the alarm `name` to fire at `at_ms` (milliseconds since the Unix epoch; a time in
/// the past fires as soon as possible) with `payload`. Setting a name that is pending
/// moves it: there is one alarm per name.
///
/// The station traps the call (nothing commits) if `name` is empty or longer than 256
/// bytes, or `payload` is larger than 64 KiB.
pub fn set(name: &str, at_ms: u64, payload: &[u8]) {
    sys::alarms_set(name, at_ms, payload)
}

/// Cancels the alarm `name`; `true` if it was pending.
pub fn cancel(name: &str) -> bool {
    sys::alarms_cancel(name)
}

/// The pending alarms, soonest first (alarms due at the same time by name). They include
/// the alarms set and cancelled earlier in this call.
pub fn list() -> Vec<Alarm> {
    sys::alarms_list()
}
