//! What every Shipshape gRPC server and client shares: RED metrics as tower
//! layers (one for servers, one for clients), and [`serve`], which runs a
//! service with its metrics and the standard `grpc.health.v1` and
//! reflection services.
//!
//! Server metrics, [`ServerMetricsLayer`] (applied by [`serve`]):
//! `shipshape_grpc_server_requests_total{service,method,code}` and
//! `shipshape_grpc_server_request_duration_seconds{service,method,code}`.
//! Client metrics, [`ClientMetricsLayer`], around each attempt of a call:
//! `shipshape_grpc_client_requests_total{downstream,method,code}` and
//! `shipshape_grpc_client_request_duration_seconds{downstream,method,code}`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Request, Response};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status};
use tower::{Layer, Service};
use tracing::Instrument as _;

use crate::grpc_tls::{CallerCheckLayer, CallerPolicy, TlsFiles};

pub const SERVER_REQUESTS: &str = "shipshape_grpc_server_requests_total";
pub const SERVER_DURATION: &str = "shipshape_grpc_server_request_duration_seconds";
pub const CLIENT_REQUESTS: &str = "shipshape_grpc_client_requests_total";
pub const CLIENT_DURATION: &str = "shipshape_grpc_client_request_duration_seconds";

/// What a call's `service` and `method` are labelled when the server has no
/// such method: the path is the caller's to choose, so it must not become a
/// label value.
const UNMATCHED: &str = "unmatched";

/// How a gRPC server runs, beyond the API it serves.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// `GRPC_REFLECTION` (`true` or `false`, default true): whether server
    /// reflection is served. It tells a caller every method, so production
    /// may switch it off.
    pub reflection: bool,
    /// `GRPC_MAX_CONNECTION_AGE_MS` (default 30000): a connection this old
    /// is told to go (HTTP/2 GOAWAY) and closed once its calls end. Its
    /// client connects again, and through a Kubernetes Service's one
    /// address reaches whichever pod the Service picks: without it a client
    /// keeps the pod it first reached, and pods added later get no calls
    /// from it.
    ///
    /// No grace period is set: tonic 0.14 (`connection_timeout_future`)
    /// then waits for the age plus the grace and cuts the connection
    /// without a GOAWAY, failing the calls under way. Without one it sends
    /// the GOAWAY at the age and lets the calls under way finish.
    pub max_connection_age: Duration,
    /// `GRPC_TLS_CERT`, `GRPC_TLS_KEY`, `GRPC_TLS_CA`: mutual TLS, and
    /// the callers checked against the API's [`CallerPolicy`] (see
    /// [`crate::grpc_tls`]). Without them the server believes whoever
    /// reaches its port, which only loopback makes safe.
    pub tls: Option<TlsFiles>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            reflection: true,
            max_connection_age: Duration::from_secs(30),
            tls: None,
        }
    }
}

impl ServerSettings {
    pub fn from_env() -> anyhow::Result<Self> {
        let defaults = Self::default();
        let max_connection_age = crate::config::millis_or(
            "GRPC_MAX_CONNECTION_AGE_MS",
            defaults.max_connection_age.as_millis() as u64,
        )?;
        anyhow::ensure!(
            !max_connection_age.is_zero(),
            "GRPC_MAX_CONNECTION_AGE_MS must be above 0: every connection would be told to go at once"
        );
        Ok(Self {
            reflection: crate::config::var_or("GRPC_REFLECTION", defaults.reflection)?,
            max_connection_age,
            tls: TlsFiles::from_env()?,
        })
    }
}

pub(crate) fn describe() {
    metrics::describe_counter!(
        SERVER_REQUESTS,
        "gRPC requests answered by this server, by service, method and status code"
    );
    metrics::describe_histogram!(
        SERVER_DURATION,
        metrics::Unit::Seconds,
        "Time from a gRPC request's arrival to its response headers, by service, method and status code"
    );
    metrics::describe_counter!(
        CLIENT_REQUESTS,
        "gRPC call attempts made to a downstream, by downstream, method and status code"
    );
    metrics::describe_histogram!(
        CLIENT_DURATION,
        metrics::Unit::Seconds,
        "Duration of gRPC call attempts made to a downstream, by downstream, method and status code"
    );
}

/// The canonical name of a status code (`OK`, `NOT_FOUND`, ...), as gRPC
/// spells it in its specification and other tools label it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Counts and times every request a tonic server answers.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerMetricsLayer;

impl<S> Layer<S> for ServerMetricsLayer {
    type Service = ServerMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerMetrics { inner }
    }
}

#[derive(Clone, Debug)]
pub struct ServerMetrics<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ServerMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let mut timing = Timing::new(move |code, seconds| {
            let (service, method) = match path.trim_start_matches('/').split_once('/') {
                Some((service, method)) if code != Code::Unimplemented => {
                    (service.to_owned(), method.to_owned())
                }
                _ => (UNMATCHED.to_owned(), UNMATCHED.to_owned()),
            };
            let labels = [
                ("service", service),
                ("method", method),
                ("code", code_name(code).to_owned()),
            ];
            metrics::counter!(SERVER_REQUESTS, &labels).increment(1);
            metrics::histogram!(SERVER_DURATION, &labels).record(seconds);
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            // Every Shipshape RPC is unary: a handler's error travels in the
            // response headers (a trailers-only response), and a response
            // without `grpc-status` there is a success whose OK comes in
            // the trailers. A transport error is no gRPC answer at all.
            let code = match &response {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok()?.parse::<i32>().ok())
                    .map_or(Code::Ok, Code::from_i32),
                Err(_) => Code::Unknown,
            };
            timing.answered(code);
            response
        })
    }
}

/// Records one request when dropped: with the code it ended with, or
/// CANCELLED when its future was dropped before the answer (the caller gave
/// up: a client's timeout, a disconnect), which would otherwise go uncounted.
struct Timing<F: FnMut(Code, f64)> {
    record: F,
    started: Instant,
    code: Code,
}

impl<F: FnMut(Code, f64)> Timing<F> {
    fn new(record: F) -> Self {
        Self {
            record,
            started: Instant::now(),
            code: Code::Cancelled,
        }
    }

    /// The request ended with `code`. A method rather than a field
    /// assignment: an `async move` block would capture only the field, and
    /// drop the rest of the guard, with the record, at once.
    fn answered(&mut self, code: Code) {
        self.code = code;
    }
}

impl<F: FnMut(Code, f64)> Drop for Timing<F> {
    fn drop(&mut self) {
        (self.record)(self.code, self.started.elapsed().as_secs_f64());
    }
}

/// Counts, times and traces each call to `downstream`'s `method`, by the status the
/// call ended with. Put it innermost, around the client call itself, so each
/// attempt the resilience stack makes is one request (an attempt cut off by
/// its timeout counts as CANCELLED), and a call the stack refuses (open
/// breaker, full bulkhead) none: those are no RPC, and have metrics of
/// their own.
#[derive(Clone, Copy, Debug)]
pub struct ClientMetricsLayer {
    downstream: &'static str,
    method: &'static str,
}

impl ClientMetricsLayer {
    pub fn new(downstream: &'static str, method: &'static str) -> Self {
        Self { downstream, method }
    }
}

impl<S> Layer<S> for ClientMetricsLayer {
    type Service = ClientMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientMetrics {
            inner,
            labels: *self,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClientMetrics<S> {
    inner: S,
    labels: ClientMetricsLayer,
}

impl<S, Req> Service<Req> for ClientMetrics<S>
where
    S: Service<Req, Error = Status>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = Status;
    type Future = BoxFuture<Result<S::Response, Status>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let ClientMetricsLayer { downstream, method } = self.labels;
        let mut timing = Timing::new(move |code, seconds| {
            let labels = [
                ("downstream", downstream),
                ("method", method),
                ("code", code_name(code)),
            ];
            metrics::counter!(CLIENT_REQUESTS, &labels).increment(1);
            metrics::histogram!(CLIENT_DURATION, &labels).record(seconds);
        });
        // One client span per attempt; the call's trace context is sent
        // from inside it (see `shipshape_telemetry::grpc::inject_context`).
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %format_args!("{downstream}/{method}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.method = method,
            peer.service = downstream,
        );
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let response = response.await;
                let code = response.as_ref().map_or_else(Status::code, |_| Code::Ok);
                if code != Code::Ok {
                    tracing::Span::current().record("otel.status_code", "ERROR");
                }
                timing.answered(code);
                response
            }
            .instrument(span),
        )
    }
}

/// A generated gRPC server (such as `OrderServiceServer<OrderApi>`), as
/// tonic's router takes it: named, cloneable, and sendable to the
/// connection tasks.
pub trait GrpcApi:
    Service<
        Request<tonic::body::Body>,
        Error = std::convert::Infallible,
        Response: axum::response::IntoResponse,
        Future: Send + 'static,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> GrpcApi for S where
    S: Service<
            Request<tonic::body::Body>,
            Error = std::convert::Infallible,
            Response: axum::response::IntoResponse,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Serves `service` on `listener` the way every Shipshape gRPC server runs:
/// with a server span per call continuing the caller's trace,
/// [`ServerMetricsLayer`], `grpc.health.v1`, reflection from `descriptors`
/// (an encoded file descriptor set) unless `settings` switch it off, and
/// connections of a bounded age, until `shutdown`, when health turns
/// NOT_SERVING before the listener closes. With TLS in `settings`, only
/// callers with a certificate of the CA get through the handshake, and
/// only those `callers` allows on a method reach its handler.
///
/// The listener is bound by the caller, before it serves, so that a test
/// binding port 0 learns the port it was given.
pub async fn serve<S: GrpcApi>(
    listener: TcpListener,
    service: S,
    descriptors: &'static [u8],
    settings: ServerSettings,
    callers: CallerPolicy,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let descriptors = settings.reflection.then_some(descriptors);
    let (health, draining) = health::<S>(shutdown).await;
    // What tonic sets on the connections of a listener it binds itself.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder =
        tonic::transport::Server::builder().max_connection_age(settings.max_connection_age);
    if let Some(tls) = &settings.tls {
        builder = builder.tls_config(tls.server())?;
    }
    builder
        .layer(shipshape_telemetry::grpc::ServerTraceLayer)
        .layer(ServerMetricsLayer)
        .layer(CallerCheckLayer {
            policy: settings.tls.is_some().then(|| Arc::new(callers)),
        })
        .add_service(service)
        .add_service(health)
        .add_optional_service(
            descriptors
                .map(|set| reflection::<S>(set).build_v1())
                .transpose()?,
        )
        .add_optional_service(
            descriptors
                .map(|set| reflection::<S>(set).build_v1alpha())
                .transpose()?,
        )
        .serve_with_incoming_shutdown(incoming, draining)
        .await?;
    Ok(())
}

/// `grpc.health.v1.Health` for a server offering `S`: SERVING from now on
/// (the server is built once the service's database and broker answered).
/// The returned future is the server's shutdown signal: on `shutdown` it
/// marks the server NOT_SERVING, then resolves, so health watchers hear of
/// it before the listener closes.
async fn health<S: NamedService>(
    shutdown: CancellationToken,
) -> (
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    impl Future<Output = ()> + Send,
) {
    let (reporter, server) = tonic_health::server::health_reporter();
    reporter.set_serving::<S>().await;
    let draining = async move {
        shutdown.cancelled().await;
        for service in ["", S::NAME] {
            reporter
                .set_service_status(service, tonic_health::ServingStatus::NotServing)
                .await;
        }
    };
    (server, draining)
}

/// Server reflection for a server offering `S`, whose files are among
/// `descriptors` (an encoded file descriptor set), beside health and
/// reflection. Only these are advertised: the set also describes services
/// other processes serve.
///
/// Built as `grpc.reflection.v1` and as `v1alpha`, each advertising both:
/// `grpcurl` speaks v1, while grpcio's Python reflection client and many
/// older tools speak only v1alpha.
fn reflection<S: NamedService>(
    descriptors: &'static [u8],
) -> tonic_reflection::server::Builder<'static> {
    use tonic_reflection::pb::{v1, v1alpha};
    tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(descriptors)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(v1alpha::FILE_DESCRIPTOR_SET)
        .with_service_name(S::NAME)
        .with_service_name(tonic_health::pb::health_server::SERVICE_NAME)
        .with_service_name(v1::server_reflection_server::SERVICE_NAME)
        .with_service_name(v1alpha::server_reflection_server::SERVICE_NAME)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use tower::ServiceExt;

    use super::*;

    fn rendered(series: &str) -> Option<f64> {
        crate::metrics::render().lines().find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// A fake tonic server: answers `status` in the headers when given,
    /// as tonic does for a handler's error.
    async fn answer(status: Option<Code>) -> Result<Response<()>, Infallible> {
        let mut response = Response::new(());
        if let Some(code) = status {
            response
                .headers_mut()
                .insert("grpc-status", (code as i32).into());
        }
        Ok(response)
    }

    #[tokio::test]
    async fn the_server_layer_counts_requests_by_method_and_code() {
        crate::metrics::install();
        let call = |path: &str, status: Option<Code>| {
            let service =
                ServerMetricsLayer.layer(tower::service_fn(move |_: Request<()>| answer(status)));
            let request = Request::builder()
                .uri(format!("http://localhost{path}"))
                .body(())
                .expect("a valid request");
            service.oneshot(request)
        };
        for _ in 0..2 {
            call("/test.v1.Shop/Buy", None).await.expect("answered");
        }
        call("/test.v1.Shop/Buy", Some(Code::NotFound))
            .await
            .expect("answered");
        call("/test.v1.Shop/Hack", Some(Code::Unimplemented))
            .await
            .expect("answered");
        let series = |labels: &str| rendered(&format!("{SERVER_REQUESTS}{{{labels}}}"));
        assert_eq!(
            series(r#"service="test.v1.Shop",method="Buy",code="OK""#),
            Some(2.0)
        );
        assert_eq!(
            series(r#"service="test.v1.Shop",method="Buy",code="NOT_FOUND""#),
            Some(1.0)
        );
        // An unknown method's name stays out of the labels.
        assert_eq!(
            series(r#"service="unmatched",method="unmatched",code="UNIMPLEMENTED""#),
            Some(1.0)
        );
        assert_eq!(
            rendered(&format!(
                r#"{SERVER_DURATION}_count{{service="test.v1.Shop",method="Buy",code="OK"}}"#
            )),
            Some(2.0)
        );
    }

    #[tokio::test]
    async fn the_client_layer_counts_attempts_by_code() {
        crate::metrics::install();
        let layer = ClientMetricsLayer::new("test-downstream", "Buy");
        let ok = layer.layer(tower::service_fn(
            |n: u32| async move { Ok::<_, Status>(n) },
        ));
        assert_eq!(ok.oneshot(7).await.expect("answered"), 7);
        let failing = layer.layer(tower::service_fn(|_: u32| async {
            Err::<u32, _>(Status::unavailable("down"))
        }));
        for _ in 0..3 {
            let error = failing.clone().oneshot(1).await.expect_err("fails");
            assert_eq!(error.code(), Code::Unavailable);
        }
        let series = |code: &str| {
            rendered(&format!(
                r#"{CLIENT_REQUESTS}{{downstream="test-downstream",method="Buy",code="{code}"}}"#
            ))
        };
        assert_eq!(series("OK"), Some(1.0));
        assert_eq!(series("UNAVAILABLE"), Some(3.0));

        // An attempt its caller gives up on still counts, as CANCELLED.
        let hanging = layer.layer(tower::service_fn(|_: u32| {
            std::future::pending::<Result<u32, Status>>()
        }));
        let attempt = tokio::time::timeout(Duration::from_millis(10), hanging.oneshot(1));
        assert!(attempt.await.is_err(), "the fake never answers");
        assert_eq!(series("CANCELLED"), Some(1.0));
    }
}
