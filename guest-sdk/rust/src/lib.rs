//! # Object Primitive guest SDK for Rust
//!
//! An *object* is a WebAssembly component that a station serves under
//! `/objects/{id}`. It answers HTTP-shaped requests, one method at a time, and keeps
//! whatever must survive in durable, versioned key/value [`state`]. Everything else in
//! the instance may be thrown away between calls.
//!
//! Write a type, implement [`Object`] for the methods it answers (the others answer
//! `405 Method Not Allowed`), and export it with [`export_object!`]:
//!
//! ```
//! use object_primitive::{Object, Request, Response, export_object, json, state};
//!
//! struct Counter;
//!
//! impl Object for Counter {
//!     fn get(_req: Request) -> Response {
//!         let count = state::get_json::<i64>("count").unwrap_or(0);
//!         Response::json(&json!({ "count": count }))
//!     }
//!
//!     fn post(_req: Request) -> Response {
//!         Response::json(&json!({ "count": state::increment("count", 1) }))
//!     }
//! }
//!
//! export_object!(Counter);
//!
//! // Natively (`cargo test`), state, log and runtime are an in-memory fake, so the
//! // handlers can be called directly:
//! Counter::post(Request::new("POST", "/"));
//! let response = object_primitive::dispatch::<Counter>(Request::new("POST", "/"));
//! assert_eq!(response.status, 200);
//! assert_eq!(response.json_body::<serde_json::Value>().unwrap()["count"], 2);
//!
//! let response = Counter::get(Request::new("GET", "/"));
//! assert_eq!(response.text_body(), r#"{"count":2}"#);
//!
//! // Methods the object does not write answer 405.
//! assert_eq!(Counter::put(Request::new("PUT", "/")).status, 405);
//! ```
//!
//! Build the object as a component with
//! `cargo build --target wasm32-wasip2 --release` (crate type `cdylib`) and deploy the
//! `.wasm` file with `host deploy`.
//!
//! ## What an object can use
//! - [`Request`] / [`Response`]: the call and its answer, with helpers for paths,
//!   query parameters, JSON and errors.
//! - [`state`]: the object's durable key/value store. Writes made during a call commit
//!   atomically when the handler returns a status below 500; a panic (a trap), a
//!   timeout or a status of 500 or more discards them all.
//! - [`log`] and the macros [`trace!`], [`debug!`], [`info!`], [`warn!`], [`error!`]:
//!   lines in the object's log, stored by the station.
//! - [`runtime`]: the object's id, the station's id, the clock, and calls to other
//!   objects.
//! - [`alarms`]: named alarms that wake the object at a time through
//!   [`Object::on_alarm`]; set and cancelled with the call's writes.
//! - [`events`]: events pushed to clients subscribed at `GET /objects/{id}/events`,
//!   delivered once the call's writes are durable.
//! - [`route`]: a router from method and path pattern to handler, and typed access to
//!   JSON object bodies, both answering `400`/`404`/`405` with JSON errors.
//! - [`crypto`]: SHA-256, HMAC, PBKDF2 for passwords, a constant-time comparison,
//!   secure random bytes (the host's `wasi:random`), base64 and hex.
//!
//! The component is built against the WIT world `object-primitive:object/object@0.2.0`
//! (`wit/object.wit`): it imports `state`, `log`, `runtime`, `alarms` and `events` and
//! exports `handler` and `alarm-handler`.
//!
//! ## Testing natively
//! On targets other than `wasm32`, [`state`], [`log`], [`runtime`], [`alarms`] and
//! [`events`] are backed by a thread-local in-memory fake: state keeps versions for
//! [`state::history`], log lines and published events are collected (see the native-only
//! `testing` module), alarms wait until `testing::fire_due_alarms` fires them through
//! [`Object::on_alarm`], the clock can be frozen with `testing::set_now_ms`, and
//! [`runtime::call`] reaches the objects registered with `testing::register_object`,
//! failing with [`CallError::Unavailable`] for any other id. Writes apply immediately
//! (there is no call to commit or discard). Use `testing::reset()` between tests that
//! share a thread.

#![deny(missing_docs)]

pub mod alarms;
pub mod crypto;
pub mod events;
mod http;
pub mod log;
pub mod route;
pub mod runtime;
pub mod state;

#[cfg(target_arch = "wasm32")]
#[path = "sys_wasm.rs"]
mod sys;

#[cfg(not(target_arch = "wasm32"))]
#[path = "sys_fake.rs"]
mod sys;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use alarms::Alarm;
pub use http::{Request, Response};
pub use runtime::CallError;
pub use state::Version;

/// Re-export of `serde_json`, so objects can build JSON without depending on it.
pub use serde_json;
/// Re-export of [`serde_json::json!`]: build a JSON value with JSON syntax.
pub use serde_json::json;

/// An object: one associated function per HTTP method, and one for its alarms.
///
/// Every method has a default that answers `405` with the JSON error
/// `{"error":"method_not_allowed","message":"..."}`, so an object implements only the
/// methods it supports. Export the implementing type with [`export_object!`].
///
/// A handler that panics traps the instance: the station answers `500` and commits
/// none of the call's state writes. Returning a status of 500 or more also discards
/// the writes.
pub trait Object {
    /// Answers `GET`. Defaults to `405 Method Not Allowed`.
    fn get(req: Request) -> Response {
        not_supported(&req)
    }

    /// Answers `POST`. Defaults to `405 Method Not Allowed`.
    fn post(req: Request) -> Response {
        not_supported(&req)
    }

    /// Answers `PUT`. Defaults to `405 Method Not Allowed`.
    fn put(req: Request) -> Response {
        not_supported(&req)
    }

    /// Answers `DELETE`. Defaults to `405 Method Not Allowed`.
    fn delete(req: Request) -> Response {
        not_supported(&req)
    }

    /// Answers `PATCH`. Defaults to `405 Method Not Allowed`.
    fn patch(req: Request) -> Response {
        not_supported(&req)
    }

    /// Handles the alarm `name`, set with [`alarms::set`]`(name, scheduled_ms, payload)`,
    /// now due. It runs in the object's turn, like a call.
    ///
    /// `Ok` commits the writes it made (state, alarms, events) and removes the alarm in the
    /// same batch, unless it set `name` again. `Err` (or a panic) commits nothing, and the
    /// station retries the alarm with backoff, up to 6 times, then drops it and logs why.
    ///
    /// The default logs a warning that the object has no alarm handler and returns `Ok`, so
    /// the alarm is removed.
    fn on_alarm(name: &str, payload: &[u8], scheduled_ms: u64) -> Result<(), String> {
        let _ = (payload, scheduled_ms);
        warn!(
            "alarm {name:?} fired, but this object has no alarm handler (Object::on_alarm); it is dropped"
        );
        Ok(())
    }
}

fn not_supported(req: &Request) -> Response {
    Response::error(
        405,
        "method_not_allowed",
        &format!("{} is not supported by this object", req.method),
    )
}

/// Routes `req` to the [`Object`] method named by `req.method` (case-insensitive), as
/// the station does. Unknown methods answer `405`. Handy for native tests.
pub fn dispatch<T: Object>(req: Request) -> Response {
    match req.method.to_ascii_uppercase().as_str() {
        "GET" => T::get(req),
        "POST" => T::post(req),
        "PUT" => T::put(req),
        "DELETE" => T::delete(req),
        "PATCH" => T::patch(req),
        _ => not_supported(&req),
    }
}

/// Exports a type implementing [`Object`] as the component's `handler` and
/// `alarm-handler` (its [`Object::on_alarm`]).
///
/// Use it once per crate (a `cdylib`), at item level:
///
/// ```
/// use object_primitive::{Object, Request, Response, export_object};
///
/// struct Hello;
///
/// impl Object for Hello {
///     fn get(_req: Request) -> Response {
///         Response::text("hello")
///     }
/// }
///
/// export_object!(Hello);
/// ```
///
/// On `wasm32` this emits the component exports; on other targets it only checks that
/// the type implements [`Object`].
#[macro_export]
macro_rules! export_object {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __ObjectPrimitiveExport = $crate::__private::Adapter<$ty>;
            $crate::__private::bindings::__export_object_world!(
                __ObjectPrimitiveExport with_types_in $crate::__private::bindings
            );
        };
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = $crate::__private::assert_object::<$ty>;
    };
}

/// Implementation details used by [`export_object!`]. Not a stable API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::sys::{Adapter, bindings};

    /// Compile-time check that `T` implements [`crate::Object`].
    pub fn assert_object<T: crate::Object>() {}
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    struct Nothing;
    impl Object for Nothing {}

    struct Echo;
    impl Object for Echo {
        fn patch(req: Request) -> Response {
            info!("patching {}", req.path);
            Response::text(req.text().unwrap_or("?").to_string())
        }
    }
    export_object!(Echo);

    #[test]
    fn defaults_are_405() {
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            let r = dispatch::<Nothing>(Request::new(method, "/"));
            assert_eq!(r.status, 405, "{method}");
            let v: serde_json::Value = r.json_body().unwrap();
            assert_eq!(v["error"], "method_not_allowed");
            assert!(v["message"].as_str().unwrap().contains(method));
        }
    }

    #[test]
    fn dispatch_routes_and_logs() {
        testing::reset();
        let r = dispatch::<Echo>(Request::new("patch", "/x").with_body("hi"));
        assert_eq!((r.status, r.text_body().as_str()), (200, "hi"));
        assert_eq!(
            testing::take_logs(),
            [(log::Level::Info, "patching /x".to_string())]
        );
        assert_eq!(dispatch::<Echo>(Request::new("GET", "/")).status, 405);
    }

    /// Writes what each alarm carried, fails for payload `fail`, and re-sets `again`.
    struct Alarmed;
    impl Object for Alarmed {
        fn on_alarm(name: &str, payload: &[u8], scheduled_ms: u64) -> Result<(), String> {
            if payload == b"fail" {
                return Err(format!("{name} failed"));
            }
            if name == "again" {
                alarms::set("again", scheduled_ms + 10, b"");
            }
            let fired = state::increment("fired", 1);
            state::set(
                &format!("fired:{fired}"),
                &format!("{name}@{scheduled_ms}/{}", runtime::now_ms()),
            );
            events::publish("fired", name);
            Ok(())
        }
    }

    #[test]
    fn alarms_set_move_cancel_and_list_soonest_first() {
        testing::reset();
        alarms::set("b", 20, b"2");
        alarms::set("a", 20, b"1");
        alarms::set("c", 10, b"3");
        let names: Vec<_> = alarms::list().into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["c", "a", "b"]);
        alarms::set("c", 30, b"moved");
        assert_eq!(
            alarms::list().last(),
            Some(&Alarm {
                name: "c".to_string(),
                at_ms: 30,
                payload: b"moved".to_vec()
            })
        );
        assert_eq!(alarms::list().len(), 3);
        assert!(alarms::cancel("a"));
        assert!(!alarms::cancel("a"));
        assert!(!alarms::cancel("never"));
        assert_eq!(alarms::list().len(), 2);
        let json = serde_json::to_string(&alarms::list()[0]).unwrap();
        assert_eq!(json, r#"{"name":"b","at_ms":20,"payload":[50]}"#);
    }

    #[test]
    #[should_panic(expected = "alarm name is 0 bytes")]
    fn alarm_without_a_name_panics() {
        alarms::set("", 0, b"");
    }

    #[test]
    #[should_panic(expected = "the limit is 65536")]
    fn alarm_payload_over_64k_panics() {
        alarms::set("big", 0, &vec![0; 65537]);
    }

    #[test]
    fn fire_due_alarms_in_order_with_the_clock_set() {
        testing::reset();
        alarms::set("late", 300, b"");
        alarms::set("first", 100, b"");
        alarms::set("broken", 150, b"fail");
        alarms::set("again", 200, b"");
        let fired = testing::fire_due_alarms::<Alarmed>(250);
        assert_eq!(
            fired,
            [
                ("first".to_string(), Ok(())),
                ("broken".to_string(), Err("broken failed".to_string())),
                ("again".to_string(), Ok(())),
            ]
        );
        assert_eq!(state::get("fired:1").as_deref(), Some("first@100/250"));
        assert_eq!(state::get("fired:2").as_deref(), Some("again@200/250"));
        // The failed alarm stays; the re-set one moved; the late one waits.
        let pending: Vec<_> = alarms::list()
            .into_iter()
            .map(|a| (a.name, a.at_ms))
            .collect();
        assert_eq!(
            pending,
            [
                ("broken".to_string(), 150),
                ("again".to_string(), 210),
                ("late".to_string(), 300)
            ]
        );
        assert_eq!(runtime::now_ms(), 250);
        assert_eq!(
            testing::take_published_events(),
            [
                ("fired".to_string(), "first".to_string()),
                ("fired".to_string(), "again".to_string())
            ]
        );
        assert!(testing::published_events().is_empty());
        assert_eq!(
            testing::fire_alarm::<Alarmed>("late"),
            Some(Ok(())),
            "fire_alarm ignores the time"
        );
        assert_eq!(testing::fire_alarm::<Alarmed>("late"), None);
        assert!(testing::fire_due_alarms::<Alarmed>(0).is_empty());
    }

    #[test]
    fn the_default_on_alarm_warns_and_removes_the_alarm() {
        testing::reset();
        alarms::set("x", 5, b"");
        assert_eq!(testing::fire_alarm::<Nothing>("x"), Some(Ok(())));
        assert!(alarms::list().is_empty());
        let logs = testing::take_logs();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].0, log::Level::Warn);
        assert!(logs[0].1.contains("no alarm handler"), "{}", logs[0].1);
    }

    #[test]
    fn events_publish_and_check_topics() {
        testing::reset();
        events::publish("t", "data");
        events::publish_json("count", &json!({ "count": 3 }));
        assert_eq!(
            testing::published_events(),
            [
                ("t".to_string(), "data".to_string()),
                ("count".to_string(), r#"{"count":3}"#.to_string())
            ]
        );
        for (topic, why) in [
            ("", "0 bytes"),
            ("op.missed", "which the host reserves"),
            ("a\nb", "control character"),
        ] {
            let panic = std::panic::catch_unwind(|| events::publish(topic, "x")).unwrap_err();
            let message = panic.downcast_ref::<String>().unwrap();
            assert!(message.contains(why), "{topic:?}: {message}");
        }
        testing::reset();
        assert!(testing::published_events().is_empty());
    }

    #[test]
    fn state_versions_use_the_frozen_clock() {
        testing::reset();
        testing::set_now_ms(42);
        state::set("k", "v");
        assert_eq!(state::history("k", 1)[0].at_ms, 42);
        testing::reset();
        assert!(runtime::now_ms() > 1_600_000_000_000);
    }

    #[test]
    fn runtime_fake() {
        testing::reset();
        assert_eq!(runtime::object_id(), "test-object");
        testing::set_station_id("s9");
        assert_eq!(runtime::station_id(), "s9");
        assert!(runtime::now_ms() > 1_600_000_000_000);
        let err = runtime::call("other", Request::new("GET", "/")).unwrap_err();
        assert_eq!(err.kind(), "unavailable");
        assert!(err.to_string().starts_with("unavailable: "));
        trace!("t");
        debug!("d");
        warn!("w");
        error!("e {}", 1);
        let levels: Vec<_> = testing::logs().into_iter().map(|(l, _)| l).collect();
        use log::Level::*;
        assert_eq!(levels, [Trace, Debug, Warn, Error]);
    }
}
