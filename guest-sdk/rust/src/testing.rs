//! Controls for the in-memory fake that backs [`state`](crate::state),
//! [`log`](crate::log) and [`runtime`](crate::runtime) on native targets (not `wasm32`).
//!
//! The fake is thread-local: each test thread starts empty. Call [`reset`] when a thread
//! runs several tests that must not see each other's state.
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
use crate::{Object, Request, Response, sys};

/// Clears the fake: state, history, log lines, registered objects, and the object and
/// station ids (back to `test-object` and `test-station`).
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
