//! Facts about the running call, and calls to other objects.

use crate::{Request, Response, sys};

/// The id this object is deployed under.
pub fn object_id() -> String {
    sys::object_id()
}

/// The id of the station running this call.
pub fn station_id() -> String {
    sys::station_id()
}

/// Wall-clock time, milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    sys::now_ms()
}

/// Calls object `id` with `req` and returns its response, whatever its status.
///
/// The callee runs in its own turn and commits its own writes; the caller's remaining
/// deadline applies. Calling an object already on the current call chain fails with
/// [`CallError::LoopDetected`] instead of deadlocking.
///
/// ```
/// use object_primitive::{CallError, Request, runtime};
///
/// match runtime::call("counter", Request::new("POST", "/")) {
///     Ok(response) => println!("counter answered {}", response.status),
///     Err(CallError::NotFound(msg)) => println!("no counter: {msg}"),
///     Err(other) => println!("call failed: {other}"),
/// }
/// ```
pub fn call(id: &str, req: Request) -> Result<Response, CallError> {
    sys::call(id, req)
}

/// Why [`call`] did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No object with that id is deployed.
    NotFound(String),
    /// The object exists but no station can run it now (overloaded, station down).
    Unavailable(String),
    /// The callee did not answer before the caller's deadline.
    Timeout,
    /// The callee trapped; the message says why. Nothing of its call was committed.
    Trapped(String),
    /// The call would re-enter an object already on this call chain (A -> B -> A).
    LoopDetected(String),
    /// The request was refused before it ran (bad object id, bad method).
    Invalid(String),
}

impl CallError {
    /// The variant's name as in the WIT contract: `not-found`, `unavailable`,
    /// `timeout`, `trapped`, `loop-detected` or `invalid`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::NotFound(_) => "not-found",
            CallError::Unavailable(_) => "unavailable",
            CallError::Timeout => "timeout",
            CallError::Trapped(_) => "trapped",
            CallError::LoopDetected(_) => "loop-detected",
            CallError::Invalid(_) => "invalid",
        }
    }

    /// The message carried by the error (empty for [`CallError::Timeout`]).
    pub fn message(&self) -> &str {
        match self {
            CallError::NotFound(m)
            | CallError::Unavailable(m)
            | CallError::Trapped(m)
            | CallError::LoopDetected(m)
            | CallError::Invalid(m) => m,
            CallError::Timeout => "",
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout => f.write_str("timeout: the callee did not answer in time"),
            other => write!(f, "{}: {}", other.kind(), other.message()),
        }
    }
}

impl std::error::Error for CallError {}
