//! Traces over gRPC: [`ServerTraceLayer`] opens a server span per call,
//! continuing the caller's trace from the request metadata;
//! [`traced`] wraps a client's channel so each call sends it.

use std::task::{Context, Poll};

use std::future::Future;
use std::pin::Pin;

use axum::http::{Request, Response};
use tonic::Status;
use tonic::metadata::MetadataKey;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::TraceContext;

/// Opens a span per request a tonic server receives.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerTraceLayer;

impl<S> Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace { inner }
    }
}

#[derive(Clone, Debug)]
pub struct ServerTrace<S> {
    inner: S,
}

impl<S, B, ResBody> Service<Request<B>> for ServerTrace<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // `/package.Service/Method`, the span name the conventions ask for.
        // The path is the caller's to choose, but a server answers only the
        // methods it has, and the span is no metric label.
        let path = request.uri().path();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        let span = tracing::info_span!(
            "grpc.request",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
        );
        TraceContext::from_headers(request.headers()).adopt(&span);
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let response = response.await;
                // A handler's error is a trailers-only answer: its status is
                // in the headers. Anything else succeeded or broke the
                // transport.
                let failed = response.as_ref().map_or(true, |response| {
                    response
                        .headers()
                        .get("grpc-status")
                        .is_some_and(|status| status.as_bytes() != b"0")
                });
                if failed {
                    tracing::Span::current().record("otel.status_code", "ERROR");
                }
                response
            }
            .instrument(span),
        )
    }
}

/// A channel whose every call sends the caller's trace context: give it to
/// a generated client (`InventoryServiceClient::new(traced(channel))`).
pub type TracedChannel = InterceptedService<Channel, Inject>;

/// The interceptor of a [`TracedChannel`].
pub type Inject = fn(tonic::Request<()>) -> Result<tonic::Request<()>, Status>;

pub fn traced(channel: Channel) -> TracedChannel {
    InterceptedService::new(channel, inject_context)
}

/// A tonic client interceptor sending the current span's trace context in
/// the request metadata: `Client::with_interceptor(channel, inject_context)`.
pub fn inject_context(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
    for (name, value) in TraceContext::current().pairs() {
        if let (Ok(name), Ok(value)) = (MetadataKey::from_bytes(name.as_bytes()), value.parse()) {
            request.metadata_mut().insert(name, value);
        }
    }
    Ok(request)
}
