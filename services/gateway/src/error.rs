//! The one place where failures become HTTP answers. Every error the gateway
//! returns has the body `{"error":{"code":"...","message":"..."}}`; the code
//! is stable and meant for programs, the message is for people.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shipshape_proto::ERROR_CODE_METADATA;
use shipshape_types::InvalidValue;
use tonic::Code;
use tonic::metadata::MetadataMap;
use utoipa::ToSchema;

/// Seconds a client should wait before retrying when an upstream is down or
/// the gateway is overloaded. One second is long enough to ride out a
/// restart or a breaker probe and short enough that a person at a checkout
/// page does not notice.
const RETRY_AFTER_SECS: u32 = 1;

/// Error codes the resilience layer puts in [`ERROR_CODE_METADATA`] when it
/// gives up on a call or refuses to make it: the upstream may be healthy,
/// but it cannot answer now. Whatever gRPC code comes with them, they mean
/// "unavailable", never "your request is wrong".
const UNAVAILABLE_ERROR_CODES: [&str; 3] = ["circuit_open", "bulkhead_full", "timeout"];

/// An error answered to the client; handlers return `Result<_, ApiError>`.
#[derive(Debug, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    retry_after_secs: Option<u32>,
    /// The `WWW-Authenticate` challenge of a 401 or 403 (RFC 6750).
    challenge: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            retry_after_secs: None,
            challenge: None,
        }
    }

    /// The caller is not authenticated: 401 with the Bearer challenge,
    /// saying why when a token was presented (`invalid_token`).
    pub fn unauthenticated(invalid_token: Option<&str>) -> Self {
        let (message, challenge) = match invalid_token {
            None => (
                "this endpoint needs `Authorization: Bearer <token>`".to_owned(),
                r#"Bearer realm="shipshape""#.to_owned(),
            ),
            Some(reason) => (
                format!("the bearer token was refused: {reason}"),
                format!(
                    r#"Bearer realm="shipshape", error="invalid_token", error_description="{}""#,
                    challenge_text(reason)
                ),
            ),
        };
        Self {
            challenge: Some(challenge),
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
        }
    }

    /// The caller is authenticated but lacks `scope`: 403.
    pub fn insufficient_scope(scope: &str) -> Self {
        Self {
            challenge: Some(format!(
                r#"Bearer realm="shipshape", error="insufficient_scope", scope="{scope}""#
            )),
            ..Self::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("this endpoint needs the `{scope}` scope"),
            )
        }
    }

    pub fn bad_request(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A failed gRPC call to `service`, mapped to the HTTP status a client
    /// can act on: its own mistakes are 4xx with the upstream's explanation,
    /// an upstream that is down is 503 with `Retry-After`, and anything else
    /// is 502 without internal details.
    pub fn upstream(service: &'static str, status: &tonic::Status) -> Self {
        let (http, default_code) = if is_unavailable(status) {
            (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable")
        } else {
            classify(status.code())
        };
        let code = error_code(status.metadata()).unwrap_or(default_code);
        if http.is_server_error() {
            tracing::warn!(
                service,
                grpc_code = ?status.code(),
                grpc_message = status.message(),
                code,
                "upstream call failed"
            );
        } else {
            tracing::debug!(
                service,
                grpc_code = ?status.code(),
                grpc_message = status.message(),
                code,
                "upstream rejected the request"
            );
        }
        let message = if http.is_client_error() && !status.message().is_empty() {
            status.message().to_owned()
        } else if http == StatusCode::SERVICE_UNAVAILABLE {
            format!("the {service} service is unavailable; retry shortly")
        } else if http.is_client_error() {
            format!("the {service} service rejected the request")
        } else {
            format!("the {service} service failed to answer")
        };
        let mut error = Self::new(http, code, message);
        if http == StatusCode::SERVICE_UNAVAILABLE {
            error.retry_after_secs = Some(RETRY_AFTER_SECS);
        }
        error
    }

    /// An upstream answered, but with something the gateway cannot turn into
    /// the public contract (a missing field, an unknown status). That is a
    /// bug on one side or the other, never the client's fault.
    pub fn malformed_response(service: &'static str, problem: impl std::fmt::Display) -> Self {
        tracing::warn!(service, %problem, "upstream answered with a malformed response");
        Self::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("the {service} service gave an unusable answer"),
        )
    }

    /// `429`: the client sent more than its share; it may retry after
    /// `retry_after_secs`.
    pub fn rate_limited(retry_after_secs: u32) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from this client; retry after the time in Retry-After",
        )
        .retrying_after(retry_after_secs)
    }

    /// `429`: the client has as many requests in flight as one client may.
    pub fn too_many_in_flight() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_in_flight",
            "this client has too many requests in flight; wait for an answer before sending more",
        )
        .retrying_after(RETRY_AFTER_SECS)
    }

    /// `503`: the gateway is working on as many requests as it takes at once.
    pub fn overloaded() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the service is at capacity; retry shortly",
        )
        .retrying_after(RETRY_AFTER_SECS)
    }

    /// The same error with `Retry-After: secs`.
    fn retrying_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn retry_after_secs(&self) -> Option<u32> {
        self.retry_after_secs
    }
}

/// `reason` as an RFC 6750 `error_description`: visible ASCII and spaces,
/// without quotes or backslashes. A reason may quote part of the token
/// (a JSON error about its header or claims); left as it is, a control or
/// non-ASCII character would make the header invalid and the `401` would go
/// out without its challenge.
fn challenge_text(reason: &str) -> String {
    reason
        .chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            ' ' => ' ',
            c if c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect()
}

/// Whether a failed call says only that the upstream cannot answer right now,
/// and nothing about the request: transport failures and timeouts (the
/// resilience stack's come as `DeadlineExceeded`; tonic reports a call it
/// gave up on as `Cancelled`), an upstream shedding load, and the resilience
/// layer's refusals. Such a call may succeed if retried,
/// and an earlier answer is the best substitute for it.
pub fn is_unavailable(status: &tonic::Status) -> bool {
    let transient_code = matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted
    );
    transient_code
        || error_code(status.metadata()).is_some_and(|code| UNAVAILABLE_ERROR_CODES.contains(&code))
}

/// The HTTP status and default error code for a gRPC status code that is not
/// [unavailable](is_unavailable).
fn classify(code: Code) -> (StatusCode, &'static str) {
    match code {
        Code::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_request"),
        Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        // The order service's only precondition is that an idempotency key
        // is not reused for a different request.
        Code::FailedPrecondition => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
        Code::AlreadyExists => (StatusCode::UNPROCESSABLE_ENTITY, "already_exists"),
        // Only an operator's action that is already under way.
        Code::Aborted => (StatusCode::CONFLICT, "conflict"),
        _ => (StatusCode::BAD_GATEWAY, "upstream_error"),
    }
}

/// The upstream's own error code, if it sent a well-formed one. Anything
/// else is ignored, so a misbehaving upstream cannot put arbitrary text into
/// a field clients match on.
fn error_code(metadata: &MetadataMap) -> Option<&str> {
    let code = metadata.get(ERROR_CODE_METADATA)?.to_str().ok()?;
    let well_formed = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    well_formed.then_some(code)
}

impl From<InvalidValue> for ApiError {
    fn from(invalid: InvalidValue) -> Self {
        Self::bad_request(invalid.code, invalid.message)
    }
}

/// axum's own answers to a bad body are plain text; ours are JSON with the
/// codes the API documents.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the request body must be JSON with `Content-Type: application/json`",
            ),
            // Syntax errors, wrong types, missing and unknown fields alike.
            JsonRejection::JsonSyntaxError(_) | JsonRejection::JsonDataError(_) => {
                Self::bad_request("invalid_json", rejection.body_text())
            }
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is too large",
            ),
            other => Self::bad_request("invalid_json", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request("invalid_query", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request("invalid_path", rejection.body_text())
    }
}

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// Stable and meant for programs, such as `invalid_sku`.
    #[schema(pattern = "^[a-z0-9_]{1,64}$", example = "invalid_sku")]
    pub code: &'a str,
    /// For people; may change.
    pub message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: &self.code,
                message: &self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(challenge) = self
            .challenge
            .and_then(|challenge| HeaderValue::try_from(challenge).ok())
        {
            response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn mapped(code: Code) -> ApiError {
        ApiError::upstream("order", &tonic::Status::new(code, "upstream says no"))
    }

    #[test]
    fn each_grpc_code_maps_to_a_status_and_default_code() {
        let cases = [
            (Code::InvalidArgument, 400, "invalid_request"),
            (Code::NotFound, 404, "not_found"),
            (Code::FailedPrecondition, 422, "idempotency_key_reused"),
            (Code::AlreadyExists, 422, "already_exists"),
            (Code::Unavailable, 503, "service_unavailable"),
            (Code::DeadlineExceeded, 503, "service_unavailable"),
            (Code::Cancelled, 503, "service_unavailable"),
            (Code::ResourceExhausted, 503, "service_unavailable"),
            (Code::Internal, 502, "upstream_error"),
            (Code::Unknown, 502, "upstream_error"),
            (Code::Unimplemented, 502, "upstream_error"),
            (Code::Unauthenticated, 502, "upstream_error"),
            (Code::PermissionDenied, 502, "upstream_error"),
            (Code::Aborted, 409, "conflict"),
            (Code::OutOfRange, 502, "upstream_error"),
            (Code::DataLoss, 502, "upstream_error"),
            (Code::Ok, 502, "upstream_error"),
        ];
        for (code, http, expected) in cases {
            let error = mapped(code);
            assert_eq!(error.status().as_u16(), http, "{code:?}");
            assert_eq!(error.code(), expected, "{code:?}");
            let retry = (http == 503).then_some(RETRY_AFTER_SECS);
            assert_eq!(error.retry_after_secs(), retry, "{code:?}");
        }
    }

    #[test]
    fn client_errors_carry_the_upstream_message_server_errors_do_not() {
        assert_eq!(mapped(Code::InvalidArgument).message(), "upstream says no");
        assert_eq!(mapped(Code::NotFound).message(), "upstream says no");
        assert!(
            !mapped(Code::Internal)
                .message()
                .contains("upstream says no")
        );
        assert!(
            !mapped(Code::Unavailable)
                .message()
                .contains("upstream says no")
        );
    }

    #[test]
    fn metadata_error_code_overrides_the_default() {
        let mut status = tonic::Status::invalid_argument("SKU-9999 is not in the catalog");
        status.metadata_mut().insert(
            ERROR_CODE_METADATA,
            MetadataValue::from_static("unknown_sku"),
        );
        let error = ApiError::upstream("order", &status);
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error.code(), "unknown_sku");
        assert_eq!(error.message(), "SKU-9999 is not in the catalog");
    }

    #[test]
    fn malformed_metadata_error_code_is_ignored() {
        for bad in ["", "Not A Code", "<script>", &"x".repeat(65)] {
            let mut status = tonic::Status::not_found("no such order");
            let value = MetadataValue::try_from(bad).expect("ascii metadata");
            status.metadata_mut().insert(ERROR_CODE_METADATA, value);
            assert_eq!(
                ApiError::upstream("order", &status).code(),
                "not_found",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_resilience_layers_refusals_are_unavailable_whatever_the_grpc_code() {
        for error_code in UNAVAILABLE_ERROR_CODES {
            for code in [Code::Unavailable, Code::Unknown, Code::Internal] {
                let mut status = tonic::Status::new(code, "refused");
                status
                    .metadata_mut()
                    .insert(ERROR_CODE_METADATA, MetadataValue::from_static(error_code));
                assert!(is_unavailable(&status), "{error_code} {code:?}");
                let error = ApiError::upstream("inventory", &status);
                assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(error.code(), error_code);
                assert_eq!(error.retry_after_secs(), Some(RETRY_AFTER_SECS));
            }
        }
        let mut status = tonic::Status::not_found("no such product");
        status.metadata_mut().insert(
            ERROR_CODE_METADATA,
            MetadataValue::from_static("unknown_sku"),
        );
        assert!(!is_unavailable(&status));
    }

    #[test]
    fn a_refused_token_always_gets_its_challenge() {
        for reason in [
            "bad \"quoted\" \\ token",
            "unknown variant `é\n`",
            "nul \u{0}",
        ] {
            let response = ApiError::unauthenticated(Some(reason)).into_response();
            let challenge = response.headers()[WWW_AUTHENTICATE]
                .to_str()
                .expect("visible ASCII");
            assert!(challenge.starts_with("Bearer realm="), "{challenge}");
            assert_eq!(challenge.matches('"').count(), 6, "{challenge}");
        }
    }

    #[test]
    fn edge_refusals_say_when_to_retry() {
        let limited = ApiError::rate_limited(7);
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.code(), "rate_limited");
        assert_eq!(limited.retry_after_secs(), Some(7));

        let overloaded = ApiError::overloaded();
        assert_eq!(overloaded.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(overloaded.code(), "overloaded");
        assert_eq!(overloaded.retry_after_secs(), Some(RETRY_AFTER_SECS));
    }

    #[tokio::test]
    async fn responses_are_json_and_unavailable_says_when_to_retry() {
        let response = mapped(Code::Unavailable).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(json["error"]["code"], "service_unavailable");
        assert!(json["error"]["message"].is_string());

        let response = ApiError::bad_request("empty_order", "no items").into_response();
        assert!(response.headers().get(RETRY_AFTER).is_none());
    }
}
