//! The real backend on `wasm32`: the component's imports and exports.

use std::marker::PhantomData;

use crate::alarms::Alarm;
use crate::log::Level;
use crate::runtime::CallError;
use crate::state::Version;
use crate::{Object, Request, Response};

/// Bindings generated from `wit/object.wit` (world `object@0.2.0`).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "object",
        pub_export_macro: true,
        export_macro_name: "__export_object_world",
        default_bindings_module: "object_primitive::__private::bindings",
    });
}

use bindings::exports::object_primitive::object::alarm_handler::Guest as AlarmGuest;
use bindings::exports::object_primitive::object::handler::Guest;
use bindings::object_primitive::object::{
    alarms as wit_alarms, events as wit_events, log as wit_log, runtime as wit_runtime,
    state as wit_state, types,
};

impl From<types::Request> for Request {
    fn from(r: types::Request) -> Request {
        Request {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<Request> for types::Request {
    fn from(r: Request) -> types::Request {
        types::Request {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<types::Response> for Response {
    fn from(r: types::Response) -> Response {
        Response {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<Response> for types::Response {
    fn from(r: Response) -> types::Response {
        types::Response {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

/// Implements the generated `handler` and `alarm-handler` traits for any [`Object`].
#[doc(hidden)]
pub struct Adapter<T>(PhantomData<T>);

impl<T: Object> Guest for Adapter<T> {
    fn get(req: types::Request) -> types::Response {
        T::get(req.into()).into()
    }
    fn post(req: types::Request) -> types::Response {
        T::post(req.into()).into()
    }
    fn put(req: types::Request) -> types::Response {
        T::put(req.into()).into()
    }
    fn delete(req: types::Request) -> types::Response {
        T::delete(req.into()).into()
    }
    fn patch(req: types::Request) -> types::Response {
        T::patch(req.into()).into()
    }
}

impl<T: Object> AlarmGuest for Adapter<T> {
    fn fire(name: String, payload: Vec<u8>, scheduled_ms: u64) -> Result<(), String> {
        T::on_alarm(&name, &payload, scheduled_ms)
    }
}

pub fn state_get(key: &str) -> Option<String> {
    wit_state::get(key)
}

pub fn state_set(key: &str, value: &str) {
    wit_state::set(key, value)
}

pub fn state_delete(key: &str) -> bool {
    wit_state::delete(key)
}

pub fn state_keys(prefix: &str) -> Vec<String> {
    wit_state::keys(prefix)
}

pub fn state_increment(key: &str, delta: i64) -> i64 {
    wit_state::increment(key, delta)
}

pub fn state_compare_and_swap(key: &str, expected: Option<&str>, new: Option<&str>) -> bool {
    wit_state::compare_and_swap(key, expected, new)
}

pub fn state_history(key: &str, limit: u32) -> Vec<Version> {
    wit_state::history(key, limit)
        .into_iter()
        .map(|v| Version {
            seq: v.seq,
            at_ms: v.at_ms,
            value: v.value,
        })
        .collect()
}

pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => types::Level::Trace,
        Level::Debug => types::Level::Debug,
        Level::Info => types::Level::Info,
        Level::Warn => types::Level::Warn,
        Level::Error => types::Level::Error,
    };
    wit_log::log(level, message)
}

pub fn object_id() -> String {
    wit_runtime::object_id()
}

pub fn station_id() -> String {
    wit_runtime::station_id()
}

pub fn now_ms() -> u64 {
    wit_runtime::now_ms()
}

pub fn call(id: &str, req: Request) -> Result<Response, CallError> {
    match wit_runtime::call_object(id, &req.into()) {
        Ok(response) => Ok(response.into()),
        Err(e) => Err(match e {
            types::CallError::NotFound(m) => CallError::NotFound(m),
            types::CallError::Unavailable(m) => CallError::Unavailable(m),
            types::CallError::Timeout => CallError::Timeout,
            types::CallError::Trapped(m) => CallError::Trapped(m),
            types::CallError::LoopDetected(m) => CallError::LoopDetected(m),
            types::CallError::Invalid(m) => CallError::Invalid(m),
        }),
    }
}

pub fn alarms_set(name: &str, at_ms: u64, payload: &[u8]) {
    wit_alarms::set(name, at_ms, payload)
}

pub fn alarms_cancel(name: &str) -> bool {
    wit_alarms::cancel(name)
}

pub fn alarms_list() -> Vec<Alarm> {
    wit_alarms::list()
        .into_iter()
        .map(|a| Alarm {
            name: a.name,
            at_ms: a.at_ms,
            payload: a.payload,
        })
        .collect()
}

pub fn events_publish(topic: &str, data: &str) {
    wit_events::publish(topic, data)
}
