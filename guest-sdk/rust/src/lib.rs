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
//! - [`route`]: a router from method and path pattern to handler, and typed access to
//!   JSON object bodies, both answering `400`/`404`/`405` with JSON errors.
//! - [`crypto`]: SHA-256, HMAC, PBKDF2 for passwords, a constant-time comparison,
//!   secure random bytes (the host's `wasi:random`), base64 and hex.
//!
//! ## Testing natively
//! On targets other than `wasm32`, [`state`], [`log`] and [`runtime`] are backed by a
//! thread-local in-memory fake: state keeps versions for [`state::history`], log lines
//! are collected (see the native-only `testing` module) and [`runtime::call`] reaches
//! the objects registered with `testing::register_object`, failing with
//! [`CallError::Unavailable`] for any other id. Writes apply immediately (there is no call to commit
//! or discard). Use `testing::reset()` between tests that share a thread.

#![deny(missing_docs)]

pub mod crypto;
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

pub use http::{Request, Response};
pub use runtime::CallError;
pub use state::Version;

/// Re-export of `serde_json`, so objects can build JSON without depending on it.
pub use serde_json;
/// Re-export of [`serde_json::json!`]: build a JSON value with JSON syntax.
pub use serde_json::json;

/// An object: one associated function per HTTP method.
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

/// Exports a type implementing [`Object`] as the component's `handler`.
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
