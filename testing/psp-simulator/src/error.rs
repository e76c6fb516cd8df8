//! Every way a request can fail, and how each one looks on the wire:
//! `{"error": {"code": ..., "message": ...}}` with a stable `code`.
//!
//! A decline is not here: it is an answer the processor stands by, stored
//! under its idempotency key like an approval.

use std::fmt;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Malformed; sending it again unchanged cannot succeed.
    InvalidRequest(String),
    /// The key was first used with a different request.
    IdempotencyKeyReused(String),
    /// No approved capture has this `psp_reference`.
    UnknownCapture(String),
    /// No capture was ever processed under this idempotency key.
    NoCaptureUnderKey(String),
    CurrencyMismatch {
        captured: String,
        requested: String,
    },
    RefundExceedsCapture {
        captured_minor: i64,
        refunded_minor: i64,
        requested_minor: i64,
    },
    /// Nothing was processed, so the same request may be retried.
    ProcessorUnavailable,
    /// A new decision could not be written to the journal (`PSP_JOURNAL_PATH`),
    /// so it was not kept either: nothing was processed. Carries the cause.
    Journal(String),
    /// An `/admin` request from a caller that is neither on a loopback
    /// address nor presents `PSP_ADMIN_TOKEN`.
    AdminForbidden,
    RouteNotFound,
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::IdempotencyKeyReused(_) => "idempotency_key_reused",
            Self::UnknownCapture(_) => "unknown_capture",
            Self::NoCaptureUnderKey(_) => "capture_not_found",
            Self::CurrencyMismatch { .. } => "currency_mismatch",
            Self::RefundExceedsCapture { .. } => "refund_exceeds_capture",
            Self::ProcessorUnavailable => "processor_unavailable",
            Self::Journal(_) => "internal_error",
            Self::AdminForbidden => "forbidden",
            Self::RouteNotFound => "not_found",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::IdempotencyKeyReused(_)
            | Self::CurrencyMismatch { .. }
            | Self::RefundExceedsCapture { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnknownCapture(_) | Self::NoCaptureUnderKey(_) | Self::RouteNotFound => {
                StatusCode::NOT_FOUND
            }
            Self::ProcessorUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Journal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::AdminForbidden => StatusCode::FORBIDDEN,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidRequest(message) => f.write_str(message),
            Self::IdempotencyKeyReused(key) => write!(
                f,
                "idempotency key {key:?} was first used with a different request"
            ),
            Self::UnknownCapture(reference) => {
                write!(f, "no approved capture has psp_reference {reference:?}")
            }
            Self::NoCaptureUnderKey(key) => {
                write!(f, "no capture was processed under idempotency key {key:?}")
            }
            Self::CurrencyMismatch {
                captured,
                requested,
            } => write!(
                f,
                "the capture is in {captured}; a refund in {requested} is not possible"
            ),
            Self::RefundExceedsCapture {
                captured_minor,
                refunded_minor,
                requested_minor,
            } => write!(
                f,
                "refunding {requested_minor} would exceed the capture: \
                 {refunded_minor} of {captured_minor} already refunded"
            ),
            Self::ProcessorUnavailable => {
                f.write_str("the processor is unavailable; the request was not processed")
            }
            Self::Journal(cause) => write!(
                f,
                "the ledger's journal could not be written ({cause}); \
                 the request was not processed"
            ),
            Self::AdminForbidden => f.write_str(
                "the admin routes answer callers on a loopback address, or with \
                 `Authorization: Bearer <PSP_ADMIN_TOKEN>`, only",
            ),
            Self::RouteNotFound => f.write_str("no such route"),
        }
    }
}

impl std::error::Error for Error {}

/// A body that is not JSON, or not the expected shape, is the caller's
/// mistake like any other, and gets the same JSON error (axum's own
/// rejection would answer in plain text).
impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        Self::InvalidRequest(rejection.body_text())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code(), "message": self.to_string() } });
        (self.status(), Json(body)).into_response()
    }
}
