//! Controls for the in-memory fake that backs [`state`](crate::state),
//! [`log`](crate::log), [`runtime`](crate::runtime), [`alarms`](crate::alarms) and
//! [`events`](crate::events) on native targets (not `wasm32`).
//!
//! The fake is thread-local: each test thread starts empty. Call [`reset`] when a thread
//! runs several tests that must not see each other's state.
//!
//! Writes apply immediately: there is no call to commit or discard, so state writes, alarms
//! set or cancelled and events published by a handler that answers 500 (or panics) are
//! kept, unlike on a station. Alarms do not fire by themselves: [`fire_due_alarms`] and
//! [`fire_alarm`] fire them through the object's [`Object::on_alarm`], and
//! [`set_now_ms`] freezes the clock that [`runtime::now_ms`](crate::runtime::now_ms) reads.
//!
//! ```
//! use object_primitive::{info, state, testing};
//! use object_primitive::log::Level;
//!
//! testing::reset();
//! state::set("k", "v");
//! info!("hello {}", 42);
//! assert_eq!(testing::state()["k"], "v");
//! assert_eq!(testing::take_logs(), [(Level::Info, "hello 42".to_string())]);
//! testing::reset();
//! assert!(state::get("k").is_none());
//! ```

use std::collections::BTreeMap;

use std::rc::Rc;

use crate::log::Level;
use crate::{Object, Request, Response, alarms, sys};

/// Clears the fake: state, history, log lines, registered objects, pending alarms,
/// published events, the frozen clock (back to the wall clock), and the object and station
/// ids (back to `test-object` and `test-station`).
pub fn reset() {
    sys::reset()
}

/// A copy of the current state.
pub fn state() -> BTreeMap<String, String> {
    sys::with(|f| f.state.clone())
}

/// The log lines written so far, oldest first.
pub fn logs() -> Vec<(Level, String)> {
    sys::with(|f| f.logs.clone())
}

/// The log lines written so far, oldest first, and forgets them.
pub fn take_logs() -> Vec<(Level, String)> {
    sys::with(|f| std::mem::take(&mut f.logs))
}

/// Sets what [`runtime::object_id`](crate::runtime::object_id) returns.
pub fn set_object_id(id: &str) {
    sys::with(|f| f.object_id = id.to_string())
}

/// Sets what [`runtime::station_id`](crate::runtime::station_id) returns.
pub fn set_station_id(id: &str) {
    sys::with(|f| f.station_id = id.to_string())
}

/// Makes [`runtime::call`](crate::runtime::call)`(id, ..)` reach object `T` (through
/// [`dispatch`](crate::dispatch)). It shares this fake's state, unlike a real object.
/// Unregistered ids fail with [`CallError::Unavailable`](crate::CallError::Unavailable).
///
/// ```
/// use object_primitive::{Object, Request, Response, runtime, testing};
///
/// struct Pong;
/// impl Object for Pong {
///     fn get(_req: Request) -> Response {
///         Response::text("pong")
///     }
/// }
///
/// testing::register_object::<Pong>("pong");
/// let answer = runtime::call("pong", Request::new("GET", "/")).unwrap();
/// assert_eq!(answer.text_body(), "pong");
/// assert!(runtime::call("other", Request::new("GET", "/")).is_err());
/// ```
pub fn register_object<T: Object + 'static>(id: &str) {
    register_fn(id, crate::dispatch::<T>)
}

/// Makes [`runtime::call`](crate::runtime::call)`(id, ..)` answer with `handler`: for
/// a stand-in that misbehaves (answers 500, say) or records what it was sent.
pub fn register_fn(id: &str, handler: impl Fn(Request) -> Response + 'static) {
    sys::with(|f| f.objects.insert(id.to_string(), Rc::new(handler)));
}

/// Makes `id` unreachable again (as if it were undeployed).
pub fn unregister_object(id: &str) {
    sys::with(|f| f.objects.remove(id));
}

/// Freezes the clock: [`runtime::now_ms`](crate::runtime::now_ms) (and the time of state
/// versions) returns `ms` until the next `set_now_ms`, [`fire_due_alarms`] or [`reset`].
pub fn set_now_ms(ms: u64) {
    sys::with(|f| f.now_ms = Some(ms))
}

/// Fires the pending alarm `name` now, whatever its time, as the station would: it calls
/// `T::on_alarm(name, payload, at_ms)`; on `Ok` the alarm is removed, unless `on_alarm` set
/// it again (then the new one stays pending); on `Err` it stays pending, where a station
/// would retry it with backoff. `None` if no alarm `name` is pending.
///
/// ```
/// use object_primitive::{Object, alarms, state, testing};
///
/// struct Wake;
/// impl Object for Wake {
///     fn on_alarm(name: &str, payload: &[u8], _scheduled_ms: u64) -> Result<(), String> {
///         state::set(name, std::str::from_utf8(payload).map_err(|e| e.to_string())?);
///         Ok(())
///     }
/// }
///
/// testing::reset();
/// alarms::set("a", 0, b"up");
/// assert_eq!(testing::fire_alarm::<Wake>("a"), Some(Ok(())));
/// assert_eq!(state::get("a").as_deref(), Some("up"));
/// assert!(alarms::list().is_empty());
/// assert_eq!(testing::fire_alarm::<Wake>("a"), None);
/// ```
pub fn fire_alarm<T: Object>(name: &str) -> Option<Result<(), String>> {
    let alarm = sys::with(|f| f.alarms.get(name).cloned())?;
    let result = T::on_alarm(name, &alarm.payload, alarm.at_ms);
    if result.is_ok() {
        sys::with(|f| {
            if f.alarms.get(name).map(|a| a.generation) == Some(alarm.generation) {
                f.alarms.remove(name);
            }
        });
    }
    Some(result)
}

/// Sets the clock to `now_ms` (as [`set_now_ms`]) and fires, soonest first, every alarm
/// due at or before it, each as [`fire_alarm`] does. Returns each alarm's name and the
/// result of its `on_alarm`, in firing order.
///
/// Only the alarms pending and due when it starts fire (an alarm that an earlier firing
/// cancelled or moved is skipped); one that `on_alarm` sets due again fires on the next
/// call, as an alarm that failed does.
///
/// ```
/// use object_primitive::{Object, alarms, runtime, testing};
///
/// struct Quiet;
/// impl Object for Quiet {
///     fn on_alarm(_name: &str, _payload: &[u8], _scheduled_ms: u64) -> Result<(), String> {
///         Ok(())
///     }
/// }
///
/// testing::reset();
/// alarms::set("later", 2_000, b"");
/// alarms::set("soon", 1_000, b"");
/// let fired = testing::fire_due_alarms::<Quiet>(1_500);
/// assert_eq!(fired, [("soon".to_string(), Ok(()))]);
/// assert_eq!(runtime::now_ms(), 1_500);
/// assert_eq!(alarms::list()[0].name, "later");
/// ```
pub fn fire_due_alarms<T: Object>(now_ms: u64) -> Vec<(String, Result<(), String>)> {
    set_now_ms(now_ms);
    let due: Vec<(String, u64)> = alarms::list()
        .into_iter()
        .filter(|a| a.at_ms <= now_ms)
        .map(|a| {
            let generation = sys::with(|f| f.alarms[&a.name].generation);
            (a.name, generation)
        })
        .collect();
    let mut fired = Vec::new();
    for (name, generation) in due {
        let still_due =
            sys::with(|f| f.alarms.get(&name).map(|a| a.generation) == Some(generation));
        if still_due && let Some(result) = fire_alarm::<T>(&name) {
            fired.push((name, result));
        }
    }
    fired
}

/// The events published so far, oldest first: `(topic, data)`.
pub fn published_events() -> Vec<(String, String)> {
    sys::with(|f| f.events.clone())
}

/// The events published so far, oldest first, and forgets them.
pub fn take_published_events() -> Vec<(String, String)> {
    sys::with(|f| std::mem::take(&mut f.events))
}
