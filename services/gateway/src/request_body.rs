//! Request bodies are read whole, against a deadline, before any work is
//! done for the request. A client that sends its body a byte a second would
//! otherwise hold a place among the requests in flight for as long as it
//! likes: a few hundred such connections from one customer took every place
//! and the gateway answered everyone else `503 overloaded`. Read here,
//! outside the load shedder, a slow body costs a connection and a small
//! buffer, and is cut off within seconds with `408`.
//!
//! The deadline: the whole body within [`BodyLimits::timeout`], and after
//! the first second ([`GRACE`]) at no less than
//! [`BodyLimits::min_bytes_per_sec`] on average. A body announced larger
//! than [`BodyLimits::max_bytes`] is refused with `413` before a byte of it
//! is read, so a client that sent `Expect: 100-continue` gets the `413`
//! instead of `100 Continue`. Every route that takes a body needs a caller,
//! so an anonymous request with one is answered `401` at once.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::time::Instant;

use shipshape_auth::Identity;

use crate::error::ApiError;
use crate::http_metrics;

/// Time a body has before the minimum rate applies: enough for the first
/// packets of any honest client, however slow its start.
pub const GRACE: Duration = Duration::from_secs(1);

/// How much body, how fast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest body accepted.
    pub max_bytes: usize,
    /// The whole body must have arrived this long after the request's head.
    pub timeout: Duration,
    /// After [`GRACE`], the body must arrive at least this fast on average.
    pub min_bytes_per_sec: u32,
}

impl BodyLimits {
    /// When the byte after the first `received` must have arrived, counted
    /// from the head.
    fn next_byte_due(&self, received: usize) -> Duration {
        let nanos = (received as u128).saturating_mul(1_000_000_000)
            / u128::from(self.min_bytes_per_sec.max(1));
        let at_min_rate = GRACE.saturating_add(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ));
        at_min_rate.min(self.timeout)
    }
}

/// Why a body was not read.
#[derive(Debug, PartialEq, Eq)]
enum BodyError {
    TooLarge,
    TooSlow,
    /// The connection failed or the framing was invalid.
    Broken,
    /// No caller to read it for.
    Anonymous,
}

/// Middleware: reads the body within [`BodyLimits`] and hands the request
/// on with the body in memory; answers `413`, `408` or `400` otherwise.
pub async fn read_body(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if !has_body(&parts.headers) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    // Every route that takes a body needs a caller: an anonymous one is
    // refused before a byte of it is read, as it was before bodies were
    // read here.
    if parts.extensions.get::<Identity>().is_none() {
        return refusal(BodyError::Anonymous, &limits);
    }
    let announced = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limits.max_bytes as u64) {
        return refusal(BodyError::TooLarge, &limits);
    }
    match read(body, &limits).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(error) => refusal(error, &limits),
    }
}

/// Whether the request carries a body (RFC 9112, section 6.3): a non-zero
/// `Content-Length` or any `Transfer-Encoding`.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .is_some_and(|value| value.as_bytes() != b"0")
}

async fn read(mut body: Body, limits: &BodyLimits) -> Result<Bytes, BodyError> {
    let head = Instant::now();
    let mut buffer = Vec::new();
    loop {
        let due = head + limits.next_byte_due(buffer.len());
        let frame = match tokio::time::timeout_at(due, body.frame()).await {
            Err(_) => return Err(BodyError::TooSlow),
            Ok(None) => return Ok(Bytes::from(buffer)),
            Ok(Some(Err(_))) => return Err(BodyError::Broken),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > limits.max_bytes {
                return Err(BodyError::TooLarge);
            }
            buffer.extend_from_slice(&data);
        }
    }
}

fn refusal(error: BodyError, limits: &BodyLimits) -> Response {
    let api_error = match error {
        BodyError::TooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {} bytes", limits.max_bytes),
        ),
        BodyError::TooSlow => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body must arrive within {} ms, at {} bytes a second or faster",
                limits.timeout.as_millis(),
                limits.min_bytes_per_sec
            ),
        ),
        BodyError::Broken => ApiError::bad_request("invalid_body", "the request body is malformed"),
        BodyError::Anonymous => ApiError::unauthenticated(None),
    };
    metrics::counter!(http_metrics::BODIES_REFUSED, "code" => api_error.code().to_owned())
        .increment(1);
    let mut response = api_error.into_response();
    // The rest of the body may still be on its way: the connection cannot
    // carry another request.
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use axum::Router;
    use axum::middleware::from_fn_with_state;
    use axum::routing::post;
    use http_body::Frame;
    use tokio::sync::mpsc;
    use tower::ServiceExt;

    use super::*;

    const LIMITS: BodyLimits = BodyLimits {
        max_bytes: 100,
        timeout: Duration::from_secs(10),
        min_bytes_per_sec: 10,
    };

    fn router() -> Router {
        Router::new()
            .route(
                "/",
                post(|body: Bytes| async move { format!("got {}", body.len()) }),
            )
            .layer(from_fn_with_state(LIMITS, read_body))
    }

    /// A body the test sends chunk by chunk; it ends when the sender drops.
    struct Chunks(mpsc::UnboundedReceiver<Bytes>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|chunk| Ok(Frame::data(chunk))))
        }
    }

    /// A request with a streamed body, announced with `Content-Length`
    /// when `length` is given, chunked otherwise.
    fn streamed(length: Option<usize>) -> (Request, mpsc::UnboundedSender<Bytes>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let builder = match length {
            Some(length) => Request::post("/").header(CONTENT_LENGTH, length),
            None => Request::post("/").header(TRANSFER_ENCODING, "chunked"),
        };
        let mut request = builder.body(Body::new(Chunks(receiver))).expect("request");
        request.extensions_mut().insert(caller());
        (request, sender)
    }

    fn caller() -> Identity {
        Identity::new("alice", &[]).expect("identity")
    }

    async fn text(response: Response) -> String {
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        String::from_utf8(body.to_vec()).expect("utf-8")
    }

    #[test]
    fn each_byte_is_due_at_the_minimum_rate_after_the_grace_within_the_timeout() {
        assert_eq!(LIMITS.next_byte_due(0), GRACE);
        assert_eq!(LIMITS.next_byte_due(1), GRACE + Duration::from_millis(100));
        assert_eq!(LIMITS.next_byte_due(20), GRACE + Duration::from_secs(2));
        assert_eq!(LIMITS.next_byte_due(1_000), LIMITS.timeout);
        assert_eq!(LIMITS.next_byte_due(usize::MAX), LIMITS.timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_sent_in_time_reaches_the_handler() {
        let (request, sender) = streamed(Some(50));
        let sending = tokio::spawn(async move {
            // 20 bytes a second, twice the minimum.
            for _ in 0..10 {
                sender.send(Bytes::from_static(b"12345")).expect("send");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        let response = router().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(response).await, "got 50");
        sending.await.expect("sent");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_a_byte_a_second_is_cut_off_once_below_the_minimum_rate() {
        let (request, sender) = streamed(Some(50));
        let started = Instant::now();
        let _sending = tokio::spawn(async move {
            while sender.send(Bytes::from_static(b"x")).is_ok() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let response = router().oneshot(request).await.expect("infallible");
        // Byte 1 at 0 s and byte 2 at 1 s are in time; byte 3 was due at
        // 1.2 s (grace plus 2 bytes at 10 a second).
        assert_eq!(started.elapsed(), Duration::from_millis(1_200));
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()[CONNECTION], "close");
        assert!(text(response).await.contains("body_timeout"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_announced_too_large_is_refused_before_it_is_read() {
        let (request, sender) = streamed(Some(101));
        let response = router().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(text(response).await.contains("payload_too_large"));
        // The body was dropped unread: hyper sends `100 Continue` only
        // when a body is first polled.
        assert!(sender.send(Bytes::from_static(b"x")).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunked_body_beyond_the_limit_is_refused() {
        let (request, sender) = streamed(None);
        for _ in 0..3 {
            sender.send(Bytes::from(vec![b'x'; 40])).expect("send");
        }
        let response = router().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test(start_paused = true)]
    async fn an_anonymous_body_is_refused_before_it_is_read() {
        let (mut request, sender) = streamed(Some(10));
        request.extensions_mut().remove::<Identity>();
        let response = router().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(
            sender.send(Bytes::from_static(b"x")).is_err(),
            "body dropped unread"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_without_a_body_pass_at_once() {
        let request = Request::post("/")
            .header(CONTENT_LENGTH, "0")
            .body(Body::empty())
            .expect("request");
        let response = router().oneshot(request).await.expect("infallible");
        assert_eq!(text(response).await, "got 0");
    }
}
