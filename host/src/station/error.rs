//! What a station operation can fail with: one typed error the API maps to a status and a stable
//! code.

use super::{BadQuota, Elsewhere, IdError};
use std::time::Duration;

use crate::{runtime, store};

/// Errors a station operation reports; the API maps each to a status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object id is malformed.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// No object with this id is deployed here.
    #[error("no object `{0}` is deployed")]
    ObjectNotFound(String),
    /// The object has no such version.
    #[error("object `{object}` has no version {version}")]
    VersionNotFound {
        /// Object id.
        object: String,
        /// Requested version.
        version: u32,
    },
    /// The object is homed on this station (so it cannot receive it from another).
    #[error("object `{0}` is homed on this station")]
    HomedHere(String),
    /// The deploy would switch an object between stateful and stateless.
    #[error(
        "object `{object}` is deployed {}; undeploy it first to deploy it {}",
        if *stateless { "stateless" } else { "with state" },
        if *stateless { "with state" } else { "stateless" }
    )]
    ModeConflict {
        /// Object id.
        object: String,
        /// Whether it is stateless now.
        stateless: bool,
    },
    /// The object is deployed stateless, and what was asked needs state.
    #[error(
        "object `{object}` is deployed stateless, so it cannot {what} (deploy it without --stateless)"
    )]
    Stateless {
        /// Object id.
        object: String,
        /// What was asked, e.g. "publish events".
        what: &'static str,
    },
    /// The component was refused at deploy.
    #[error(transparent)]
    Component(runtime::Error),
    /// The object could not be instantiated to serve a call.
    #[error("object `{object}` could not start: {source}")]
    Activation {
        /// Object id.
        object: String,
        /// Why.
        source: runtime::Error,
    },
    /// The call trapped; nothing was committed.
    #[error("object `{object}` trapped: {message}")]
    Trapped {
        /// Object id.
        object: String,
        /// The trap.
        message: String,
        /// The guest backtrace, for the log.
        backtrace: String,
    },
    /// The request's `Idempotency-Key` header is malformed.
    #[error("object `{object}`: {message}")]
    InvalidIdempotencyKey {
        /// Object id.
        object: String,
        /// What is wrong with it.
        message: String,
    },
    /// The `Idempotency-Key` was used before for a different request (method, path, query or
    /// body); nothing ran.
    #[error(
        "object `{object}`: the Idempotency-Key {key:?} was used for a different request (method, path, query or body); use a new key for a new request"
    )]
    IdempotencyMismatch {
        /// Object id.
        object: String,
        /// The key.
        key: String,
    },
    /// The call ran out of time; nothing was committed.
    #[error("object `{object}` did not answer within {deadline_ms} ms")]
    DeadlineExceeded {
        /// Object id.
        object: String,
        /// The deadline that applied.
        deadline_ms: u64,
    },
    /// The object moved to another station while the call waited; it must be sent there.
    #[error("object `{object}` moved to {address}")]
    Moved {
        /// Object id.
        object: String,
        /// The new home's address.
        address: String,
    },
    /// Replicas did not acknowledge the write in time (`--sync-replicas`). The write is durable
    /// here but was not acknowledged.
    #[error(
        "object `{object}`: the write is durable on its home but no replica acknowledged it: {message}"
    )]
    ReplicationFailed {
        /// Object id.
        object: String,
        /// Why.
        message: String,
    },
    /// The object answered with something that is not a valid HTTP response.
    #[error("object `{object}` answered with an invalid response: {message}")]
    InvalidResponse {
        /// Object id.
        object: String,
        /// What was wrong.
        message: String,
    },
    /// Another station homes the object; the request belongs there.
    #[error("object `{object}` is homed on station {}", .home.station)]
    HomedElsewhere {
        /// Object id.
        object: String,
        /// Its home.
        home: Elsewhere,
    },
    /// This station may not serve the object right now (not its home at this epoch in the
    /// directory, or its write lease lapsed): retry; the cluster routes it.
    #[error("object `{object}` cannot be served here right now: {reason}")]
    NotWriter {
        /// Object id.
        object: String,
        /// Why.
        reason: String,
    },
    /// The cluster directory cannot commit the change now.
    #[error("the cluster directory is unavailable: {0}")]
    DirectoryUnavailable(String),
    /// The store failed; the write may not be durable, so the call is reported as failed.
    #[error("storage error: {0}")]
    Storage(#[from] store::Error),
    /// A call would grow the object's state past its quota; nothing was committed.
    #[error("{message}")]
    StateQuotaExceeded {
        /// Object id.
        object: String,
        /// Which limit, and by how much.
        message: String,
    },
    /// A call wrote more than its write quota; nothing was committed.
    #[error("object `{object}`: {message}; nothing committed")]
    WriteQuotaExceeded {
        /// Object id.
        object: String,
        /// What it wrote, and the quota.
        message: String,
    },
    /// The object already has its quota of calls running or waiting for its turn.
    #[error("object `{object}` has {limit} calls running or queued, its quota; retry shortly")]
    TooBusy {
        /// Object id.
        object: String,
        /// The queue quota.
        limit: u32,
    },
    /// The object is over its quota of calls per second.
    #[error("object `{object}` is over its quota of {rate} calls per second")]
    RateLimited {
        /// Object id.
        object: String,
        /// The quota.
        rate: u32,
        /// When a call would be admitted.
        retry_after: Duration,
    },
    /// A deploy's quota overrides do not parse.
    #[error(transparent)]
    BadQuota(#[from] BadQuota),
    /// A blocking task panicked or was cancelled.
    #[error("internal error: {0}")]
    Internal(String),
}
