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

impl CallError {
    /// The HTTP status that best reports this error to the object's own caller:
    ///
    /// | error | status | code |
    /// |---|---|---|
    /// | [`CallError::NotFound`] | 404 | `not_found` |
    /// | [`CallError::Unavailable`] | 503 | `unavailable` |
    /// | [`CallError::Timeout`] | 504 | `timeout` |
    /// | [`CallError::Trapped`] | 502 | `trapped` |
    /// | [`CallError::LoopDetected`] | 508 | `loop_detected` |
    /// | [`CallError::Invalid`] | 400 | `invalid` |
    pub fn status(&self) -> u16 {
        match self {
            CallError::NotFound(_) => 404,
            CallError::Unavailable(_) => 503,
            CallError::Timeout => 504,
            CallError::Trapped(_) => 502,
            CallError::LoopDetected(_) => 508,
            CallError::Invalid(_) => 400,
        }
    }

    /// The error code of [`CallError::to_response`]: the [`kind`](CallError::kind) in
    /// snake case (`not_found`, `unavailable`, `timeout`, `trapped`, `loop_detected`,
    /// `invalid`).
    pub fn code(&self) -> &'static str {
        match self {
            CallError::NotFound(_) => "not_found",
            CallError::Unavailable(_) => "unavailable",
            CallError::Timeout => "timeout",
            CallError::Trapped(_) => "trapped",
            CallError::LoopDetected(_) => "loop_detected",
            CallError::Invalid(_) => "invalid",
        }
    }

    /// An error answer that passes this failure on to the object's own caller: status
    /// [`status`](CallError::status) with the JSON body `{"error": code, "message": ..}`
    /// ([`Response::error`]). A handler can return it as is when a call it depends on
    /// fails:
    ///
    /// ```
    /// use object_primitive::{Request, Response, runtime};
    ///
    /// fn total(_req: Request) -> Response {
    ///     match runtime::call("ledger", Request::new("GET", "/total")) {
    ///         Ok(answer) => answer,
    ///         Err(e) => e.to_response(),
    ///     }
    /// }
    ///
    /// // Natively there is no station to call, so the call is `unavailable`.
    /// let response = total(Request::new("GET", "/"));
    /// assert_eq!(response.status, 503);
    /// let body: serde_json::Value = response.json_body().unwrap();
    /// assert_eq!(body["error"], "unavailable");
    /// ```
    pub fn to_response(&self) -> Response {
        let message = match self.message() {
            "" => self.to_string(),
            m => m.to_string(),
        };
        Response::error(self.status(), self.code(), &message)
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
