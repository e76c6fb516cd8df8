//! What a call through the stack can fail with, and how the inner errors
//! are judged: whether the downstream is in trouble (a breaker failure,
//! worth a retry) or the caller asked for something wrong.

use std::convert::Infallible;

use shipshape_proto::ERROR_CODE_METADATA;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::retry::Idempotency;

/// A call's failure: one of the stack's own refusals, or the inner
/// service's error.
#[derive(Debug, thiserror::Error)]
pub enum ResilienceError<E> {
    /// No answer within the per-call timeout (the attempt was abandoned).
    #[error("{downstream} did not answer within the call timeout")]
    Timeout { downstream: &'static str },
    /// The breaker is open: the downstream was not called.
    #[error("{downstream} is failing; circuit breaker open, call not made")]
    CircuitOpen { downstream: &'static str },
    /// Too many calls in flight to the downstream: it was not called.
    #[error("{downstream} has too many calls in flight; bulkhead full, call not made")]
    BulkheadFull { downstream: &'static str },
    /// The inner service failed.
    #[error(transparent)]
    Inner(E),
}

/// How an error of the inner service reflects on the downstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// The downstream is unavailable, overloaded or broke: a failure for the
    /// circuit breaker, and worth retrying if the call is idempotent.
    Transient,
    /// The downstream answered properly that the request is wrong (invalid,
    /// not found, conflicting). It is healthy, so the breaker counts a
    /// success, and the same request would fail the same way again.
    Permanent,
    /// The request never left this process: its connection was closing
    /// when the call was made (the server's GOAWAY at a connection's
    /// maximum age). Any call may be sent again, idempotent or not, and the
    /// breaker counts nothing: the downstream was not asked.
    Unsent,
}

/// Implemented by the inner service's error type, so the stack can tell a
/// sick downstream from a bad request.
pub trait Classify {
    fn class(&self) -> FailureClass;
}

impl Classify for Status {
    /// Codes that say the server or the path to it is in trouble are
    /// transient; codes that judge the request are permanent. A call the
    /// client's connection cancelled before sending it is unsent.
    fn class(&self) -> FailureClass {
        match self.code() {
            Code::Cancelled if cancelled_before_sending(self) => FailureClass::Unsent,
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Unknown
            | Code::DataLoss => FailureClass::Transient,
            _ => FailureClass::Permanent,
        }
    }
}

/// Whether `status` is hyper's "operation was canceled": the client's
/// connection dropped the request before sending it (tonic keeps hyper's
/// error as the status's source). Checked against hyper 1.12's client:
/// it cancels only requests still queued for a connection that ended or
/// was never ready (`client/dispatch.rs`, `client/conn/http2.rs`); a
/// request the connection took fails otherwise. Recheck when hyper moves.
fn cancelled_before_sending(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        source = error.source();
    }
    false
}

impl<E: Classify> ResilienceError<E> {
    /// What the circuit breaker makes of this error: `Some(true)` a
    /// failure, `Some(false)` a success (the downstream answered), `None`
    /// nothing (the downstream was never reached).
    pub(crate) fn is_breaker_failure(&self) -> Option<bool> {
        match self {
            ResilienceError::Timeout { .. } => Some(true),
            ResilienceError::Inner(e) => match e.class() {
                FailureClass::Transient => Some(true),
                FailureClass::Permanent => Some(false),
                FailureClass::Unsent => None,
            },
            ResilienceError::CircuitOpen { .. } | ResilienceError::BulkheadFull { .. } => None,
        }
    }

    /// Whether another attempt of a call with `idempotency` may succeed
    /// and do no harm. An open breaker stays open for longer than any
    /// backoff, and a full bulkhead means the downstream is saturated, so
    /// retrying either only adds load where it hurts. A call that was never
    /// sent may be sent again whatever it does; any other only when it is
    /// idempotent.
    pub(crate) fn is_retryable(&self, idempotency: Idempotency) -> bool {
        let idempotent = idempotency == Idempotency::Idempotent;
        match self {
            ResilienceError::Timeout { .. } => idempotent,
            ResilienceError::Inner(e) => match e.class() {
                FailureClass::Transient => idempotent,
                FailureClass::Permanent => false,
                FailureClass::Unsent => true,
            },
            ResilienceError::CircuitOpen { .. } | ResilienceError::BulkheadFull { .. } => false,
        }
    }
}

/// The status a gRPC handler returns for a failed downstream call: the
/// inner status unchanged, or for the stack's own refusals a status the
/// caller can act on (`DEADLINE_EXCEEDED`, `UNAVAILABLE`) carrying a stable
/// code under [`ERROR_CODE_METADATA`].
impl<E: Into<Status>> From<ResilienceError<E>> for Status {
    fn from(error: ResilienceError<E>) -> Self {
        // Rebuilt without the inner type, which need not be `Display`.
        let (code, error_code, refusal) = match error {
            ResilienceError::Inner(inner) => return inner.into(),
            ResilienceError::Timeout { downstream } => (
                Code::DeadlineExceeded,
                "timeout",
                ResilienceError::<Infallible>::Timeout { downstream },
            ),
            ResilienceError::CircuitOpen { downstream } => (
                Code::Unavailable,
                "circuit_open",
                ResilienceError::CircuitOpen { downstream },
            ),
            ResilienceError::BulkheadFull { downstream } => (
                Code::Unavailable,
                "bulkhead_full",
                ResilienceError::BulkheadFull { downstream },
            ),
        };
        let mut status = Status::new(code, refusal.to_string());
        status
            .metadata_mut()
            .insert(ERROR_CODE_METADATA, MetadataValue::from_static(error_code));
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_never_sent_is_sent_again_whatever_it_does_and_judges_nothing() {
        use crate::testing::NeverSent;

        let unsent = ResilienceError::Inner(NeverSent);
        assert!(unsent.is_retryable(Idempotency::NotIdempotent));
        assert!(unsent.is_retryable(Idempotency::Idempotent));
        assert_eq!(unsent.is_breaker_failure(), None);
        // A transient failure reached the downstream: only an idempotent
        // call may go again, and the breaker counts it.
        let transient = ResilienceError::Inner(Status::unavailable("down"));
        assert!(!transient.is_retryable(Idempotency::NotIdempotent));
        assert!(transient.is_retryable(Idempotency::Idempotent));
        assert_eq!(transient.is_breaker_failure(), Some(true));
        // A CANCELLED answer from the server is not a call never sent.
        assert_eq!(
            Status::cancelled("the server gave up").class(),
            FailureClass::Permanent
        );
    }

    #[test]
    fn outages_are_transient_and_bad_requests_permanent() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Internal,
            Code::Unknown,
            Code::DataLoss,
        ] {
            assert_eq!(Status::new(code, "").class(), FailureClass::Transient);
        }
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::Cancelled,
        ] {
            assert_eq!(Status::new(code, "").class(), FailureClass::Permanent);
        }
    }

    #[test]
    fn refusals_become_statuses_with_a_stable_error_code() {
        let cases: [(ResilienceError<Status>, Code, &str); 3] = [
            (
                ResilienceError::Timeout {
                    downstream: "inventory",
                },
                Code::DeadlineExceeded,
                "timeout",
            ),
            (
                ResilienceError::CircuitOpen {
                    downstream: "inventory",
                },
                Code::Unavailable,
                "circuit_open",
            ),
            (
                ResilienceError::BulkheadFull {
                    downstream: "inventory",
                },
                Code::Unavailable,
                "bulkhead_full",
            ),
        ];
        for (error, code, error_code) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            assert!(status.message().contains("inventory"), "{status:?}");
            let metadata = status.metadata().get(ERROR_CODE_METADATA);
            assert_eq!(metadata.map(|v| v.to_str().unwrap()), Some(error_code));
        }

        let inner = Status::not_found("no such sku");
        let status = Status::from(ResilienceError::Inner(inner));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "no such sku");
        assert!(status.metadata().get(ERROR_CODE_METADATA).is_none());
    }
}
