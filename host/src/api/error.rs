//! The one place station errors become HTTP statuses and stable JSON error codes.
//!
//! Every error body is `{"error": "<code>", "message": "...", "object_id"?, "station"?}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::runtime;
use crate::station::Error as StationError;

pub use crate::cluster::forward::ERROR_HEADER;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// The object concerned, if any.
    pub object_id: Option<String>,
    /// Seconds after which a retry may succeed (`Retry-After`), for 429 and 503 answers.
    pub retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_id: Option<&'a str>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            object_id: None,
            retry_after_secs: None,
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 413 for a body over `limit` bytes.
    pub fn body_too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// Attaches the object id.
    pub fn for_object(mut self, id: &str) -> ApiError {
        self.object_id = Some(id.to_string());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, object = ?self.object_id, "{}", self.message);
        }
        let body = Body {
            error: self.code,
            message: &self.message,
            object_id: self.object_id.as_deref(),
        };
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().insert(
            ERROR_HEADER,
            axum::http::HeaderValue::from_static(self.code),
        );
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<StationError> for ApiError {
    fn from(error: StationError) -> ApiError {
        let message = error.to_string();
        let (status, code, object) = match &error {
            StationError::InvalidId(_) => (StatusCode::BAD_REQUEST, "invalid_object_id", None),
            StationError::ObjectNotFound(id) => {
                (StatusCode::NOT_FOUND, "object_not_found", Some(id))
            }
            StationError::VersionNotFound { object, .. } => {
                (StatusCode::NOT_FOUND, "version_not_found", Some(object))
            }
            StationError::HomedHere(object) => (StatusCode::CONFLICT, "already_home", Some(object)),
            StationError::ModeConflict { object, .. } => {
                (StatusCode::CONFLICT, "mode_conflict", Some(object))
            }
            StationError::Stateless { object, .. } => {
                (StatusCode::CONFLICT, "stateless_object", Some(object))
            }
            StationError::Component(e) => {
                let code = match e {
                    runtime::Error::InvalidComponent(_) => "invalid_component",
                    runtime::Error::UnsupportedImport { .. } => "unsupported_import",
                    runtime::Error::WorldMismatch(_) => "world_mismatch",
                    runtime::Error::Instantiate(_) => "instantiate_failed",
                };
                (StatusCode::BAD_REQUEST, code, None)
            }
            StationError::Activation { object, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "activation_failed",
                Some(object),
            ),
            StationError::Trapped { object, .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "trapped", Some(object))
            }
            StationError::InvalidIdempotencyKey { object, .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                Some(object),
            ),
            StationError::IdempotencyMismatch { object, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_mismatch",
                Some(object),
            ),
            StationError::DeadlineExceeded { object, .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "deadline_exceeded",
                Some(object),
            ),
            StationError::InvalidResponse { object, .. } => {
                (StatusCode::BAD_GATEWAY, "invalid_response", Some(object))
            }
            StationError::Moved { object, .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "moved", Some(object))
            }
            StationError::ReplicationFailed { object, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "replication_failed",
                Some(object),
            ),
            StationError::HomedElsewhere { object, .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "not_home", Some(object))
            }
            StationError::NotWriter { object, .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "not_home", Some(object))
            }
            StationError::DirectoryUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "directory_unavailable",
                None,
            ),
            StationError::StateQuotaExceeded { object, .. } => (
                StatusCode::INSUFFICIENT_STORAGE,
                "state_quota_exceeded",
                Some(object),
            ),
            StationError::WriteQuotaExceeded { object, .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "write_quota_exceeded",
                Some(object),
            ),
            StationError::TooBusy { object, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_busy", Some(object))
            }
            StationError::RateLimited { object, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some(object))
            }
            StationError::BadQuota(_) => (StatusCode::BAD_REQUEST, "bad_quota", None),
            // The store refuses writes after an error it cannot prove harmless (fail-stop), or cannot
            // read an object's files: unavailable until an operator acts, never a silent loss.
            StationError::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_error", None),
            StationError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", None)
            }
        };
        let retry_after_secs = match &error {
            StationError::TooBusy { .. } => Some(1),
            // Whole seconds, rounded up: a client waiting that long is admitted.
            StationError::RateLimited { retry_after, .. } => {
                Some(retry_after.as_millis().div_ceil(1000).max(1) as u64)
            }
            _ => None,
        };
        ApiError {
            status,
            code,
            message,
            object_id: object.cloned(),
            retry_after_secs,
        }
    }
}
