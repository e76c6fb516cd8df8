//! Connections to the services behind the gateway: lazily connected gRPC
//! channels (balanced over an upstream's replicas when its URL setting lists
//! several), the typed calls the handlers make through the resilience stack,
//! and readiness checks.
//!
//! Every call goes through its upstream's [`Downstream`] (per-attempt
//! timeout, retries of idempotent calls, circuit breaker, bulkhead; see
//! `shipshape_resilience`). One `Downstream` per upstream, shared by all of
//! its methods: they fill one breaker window, and once it opens none of them
//! calls the upstream.
//! The calls answer plain [`Status`]es: the upstream's own, or the stack's
//! refusals (`UNAVAILABLE` / `DEADLINE_EXCEEDED` with `x-error-code`
//! `circuit_open`, `bulkhead_full` or `timeout`), which
//! [`crate::error::ApiError::upstream`] answers as 503 with `Retry-After`.

use std::future::Future;
use std::time::Duration;

use shipshape_auth::Identity;
use shipshape_proto::ERROR_CODE_METADATA;
use shipshape_proto::inventory::inventory_service_client::InventoryServiceClient;
use shipshape_proto::inventory::{
    GetProductRequest, ListProductsRequest, ListProductsResponse, Product, RestockProductRequest,
};
use shipshape_proto::order::order_service_client::OrderServiceClient;
use shipshape_proto::order::{
    CreateOrderRequest, CreateOrderResponse, GetOrderRequest, GetOrderTimelineRequest,
    ListOrdersRequest, ListOrdersResponse, Order, OrderTimeline, RebuildOrderTimelinesRequest,
    RebuildOrderTimelinesResponse, WatchOrderTimelineRequest,
};
use shipshape_resilience::{Classify, Downstream, FailureClass, Idempotency, ResilienceError};
use shipshape_runtime::grpc::ClientMetricsLayer;
use shipshape_runtime::grpc_balance::{host_port, split_urls};
use shipshape_runtime::grpc_tls::{self, TlsFiles};
use shipshape_runtime::ops::CheckFuture;
use shipshape_telemetry::grpc::{TracedChannel, traced};
use tokio::task::JoinSet;
use tonic::Status;
use tonic::transport::Channel;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

/// How long establishing a connection may take. Separate from the call
/// timeout so an upstream that is down fails fast instead of using the whole
/// call budget.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a readiness probe waits for a TCP connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Error codes with which an upstream says that *its own* dependency is
/// unavailable (the order service cannot price an order while inventory is
/// down). The upstream itself answered promptly and is healthy.
const DEPENDENCY_UNAVAILABLE_CODES: [&str; 1] = ["inventory_unavailable"];

/// The upstreams' names as downstreams: in metrics and errors.
pub const ORDER: &str = "order";
pub const INVENTORY: &str = "inventory";

/// A channel to the upstream `service` at `urls` (the setting
/// `variable`), one URL or a comma-separated list of its replicas' (calls
/// are then balanced over the replicas that accept connections; see
/// `shipshape_runtime::grpc_balance`), over mutual TLS with `tls`. It
/// connects on first use (and reconnects after a failure), so the gateway
/// starts, and answers 503, while an upstream is not up yet. It sets no
/// call timeout: the resilience stack's per-attempt timeout is the only
/// one, so there is one setting and one error for it.
pub fn channel(
    variable: &str,
    urls: &str,
    service: &str,
    tls: Option<&TlsFiles>,
) -> anyhow::Result<Channel> {
    grpc_tls::channel(variable, urls, service, tls, CONNECT_TIMEOUT)
}

/// The host and port of each replica `urls` (one URL or a comma-separated
/// list) names: where readiness probes connect.
pub fn replicas(urls: &str) -> anyhow::Result<Vec<(String, u16)>> {
    split_urls(urls)?
        .iter()
        .map(String::as_str)
        .map(host_port)
        .collect()
}

/// The order service's methods, each behind the `"order"` downstream's
/// stack, each on behalf of a caller whose identity travels in the call's
/// metadata. Cheap to clone.
#[derive(Clone)]
pub struct Orders {
    create: Method<Forwarded<CreateOrderRequest>, CreateOrderResponse>,
    get: Method<Forwarded<GetOrderRequest>, Order>,
    list: Method<Forwarded<ListOrdersRequest>, ListOrdersResponse>,
    timeline: Method<Forwarded<GetOrderTimelineRequest>, OrderTimeline>,
    /// For the calls that outlive the stack's per-attempt timeout: the
    /// operators' rebuild, as long as the topics take to read, and the
    /// timeline streams, as long as a browser watches.
    client: OrderServiceClient<TracedChannel>,
}

/// How long a timeline stream may take to open: the order stack's default
/// per-attempt timeout.
const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the gateway waits for a timeline rebuild.
const REBUILD_TIMEOUT: Duration = Duration::from_secs(330);

impl Orders {
    pub fn new(channel: Channel, downstream: &Downstream) -> Self {
        let client = OrderServiceClient::new(traced(channel));
        Self {
            // Retried like a read: the gateway sends every CreateOrder with
            // an idempotency key (the client's, or one made for this request
            // alone; see `routes::create_order`), and the order service
            // answers a repeated key with the order the first attempt
            // created. A retry can never place a second order.
            create: method(
                ORDER,
                downstream,
                Idempotency::Idempotent,
                client.clone(),
                "CreateOrder",
                |mut client, request: Forwarded<CreateOrderRequest>| async move {
                    client.create_order(request.into_request()).await
                },
            ),
            get: method(
                ORDER,
                downstream,
                Idempotency::Idempotent,
                client.clone(),
                "GetOrder",
                |mut client, request: Forwarded<GetOrderRequest>| async move {
                    client.get_order(request.into_request()).await
                },
            ),
            list: method(
                ORDER,
                downstream,
                Idempotency::Idempotent,
                client.clone(),
                "ListOrders",
                |mut client, request: Forwarded<ListOrdersRequest>| async move {
                    client.list_orders(request.into_request()).await
                },
            ),
            timeline: method(
                ORDER,
                downstream,
                Idempotency::Idempotent,
                client.clone(),
                "GetOrderTimeline",
                |mut client, request: Forwarded<GetOrderTimelineRequest>| async move {
                    client.get_order_timeline(request.into_request()).await
                },
            ),
            client,
        }
    }

    pub async fn create_order(
        &self,
        caller: &Identity,
        request: CreateOrderRequest,
    ) -> Result<CreateOrderResponse, Status> {
        call(&self.create, Forwarded::new(caller, request)).await
    }

    pub async fn get_order(
        &self,
        caller: &Identity,
        request: GetOrderRequest,
    ) -> Result<Order, Status> {
        call(&self.get, Forwarded::new(caller, request)).await
    }

    pub async fn list_orders(
        &self,
        caller: &Identity,
        request: ListOrdersRequest,
    ) -> Result<ListOrdersResponse, Status> {
        call(&self.list, Forwarded::new(caller, request)).await
    }

    pub async fn get_order_timeline(
        &self,
        caller: &Identity,
        request: GetOrderTimelineRequest,
    ) -> Result<OrderTimeline, Status> {
        call(&self.timeline, Forwarded::new(caller, request)).await
    }

    /// Opens the live timeline of an order of the caller's; the stream
    /// then runs until either side ends it.
    pub async fn watch_order_timeline(
        &self,
        caller: &Identity,
        request: WatchOrderTimelineRequest,
    ) -> Result<tonic::Streaming<OrderTimeline>, Status> {
        let request = Forwarded::new(caller, request).into_request();
        let mut client = self.client.clone();
        let opened =
            tokio::time::timeout(STREAM_OPEN_TIMEOUT, client.watch_order_timeline(request))
                .await
                .map_err(|_| {
                    Status::unavailable("the order service did not open the stream in time")
                })?;
        opened.map(tonic::Response::into_inner)
    }

    /// Never retried: a second rebuild would only repeat the first.
    pub async fn rebuild_order_timelines(
        &self,
        caller: &Identity,
    ) -> Result<RebuildOrderTimelinesResponse, Status> {
        let mut request = Forwarded::new(caller, RebuildOrderTimelinesRequest {}).into_request();
        request.set_timeout(REBUILD_TIMEOUT);
        self.client
            .clone()
            .rebuild_order_timelines(request)
            .await
            .map(tonic::Response::into_inner)
    }
}

/// A request made on behalf of a caller: the message, and the identity the
/// service reads from the metadata. Cloned for each attempt of a call.
#[derive(Clone)]
pub struct Forwarded<T> {
    caller: Identity,
    message: T,
}

impl<T> Forwarded<T> {
    fn new(caller: &Identity, message: T) -> Self {
        Self {
            caller: caller.clone(),
            message,
        }
    }

    fn into_request(self) -> tonic::Request<T> {
        let mut request = tonic::Request::new(self.message);
        self.caller.write_metadata(request.metadata_mut());
        request
    }
}

/// The inventory service's catalog reads and the operators' restock, each
/// behind the `"inventory"` downstream's stack. Cheap to clone.
#[derive(Clone)]
pub struct Inventory {
    list: Method<ListProductsRequest, ListProductsResponse>,
    get: Method<GetProductRequest, Product>,
    restock: Method<Forwarded<RestockProductRequest>, Product>,
}

impl Inventory {
    pub fn new(channel: Channel, downstream: &Downstream) -> Self {
        let client = InventoryServiceClient::new(traced(channel));
        Self {
            list: method(
                INVENTORY,
                downstream,
                Idempotency::Idempotent,
                client.clone(),
                "ListProducts",
                |mut client, request| async move { client.list_products(request).await },
            ),
            get: method(
                INVENTORY,
                downstream,
                Idempotency::Idempotent,
                client.clone(),
                "GetProduct",
                |mut client, request| async move { client.get_product(request).await },
            ),
            // Never retried: a restock whose answer was lost may have been
            // applied, and a second attempt would add the units again.
            restock: method(
                INVENTORY,
                downstream,
                Idempotency::NotIdempotent,
                client,
                "RestockProduct",
                |mut client, request: Forwarded<RestockProductRequest>| async move {
                    client.restock_product(request.into_request()).await
                },
            ),
        }
    }

    pub async fn list_products(
        &self,
        request: ListProductsRequest,
    ) -> Result<ListProductsResponse, Status> {
        call(&self.list, request).await
    }

    pub async fn get_product(&self, request: GetProductRequest) -> Result<Product, Status> {
        call(&self.get, request).await
    }

    pub async fn restock_product(
        &self,
        caller: &Identity,
        request: RestockProductRequest,
    ) -> Result<Product, Status> {
        call(&self.restock, Forwarded::new(caller, request)).await
    }
}

/// One gRPC method wrapped in the stack. Boxed, because the client call is
/// a closure whose type cannot be named in a struct.
type Method<Req, Res> = BoxCloneSyncService<Req, Res, ResilienceError<UpstreamStatus>>;

/// Wraps `rpc` (a call of a clone of `client`) in `downstream`'s stack;
/// each attempt is counted as a call of `name`'s method `rpc_name`.
fn method<C, Req, Res, F, Fut>(
    name: &'static str,
    downstream: &Downstream,
    idempotency: Idempotency,
    client: C,
    rpc_name: &'static str,
    rpc: F,
) -> Method<Req, Res>
where
    C: Clone + Send + Sync + 'static,
    Req: Clone + Send + 'static,
    Res: Send + 'static,
    F: Fn(C, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<tonic::Response<Res>, Status>> + Send + 'static,
{
    let service = ServiceBuilder::new()
        .layer(downstream.layer(idempotency))
        .map_err(UpstreamStatus)
        // Inside the stack: each attempt is one request.
        .layer(ClientMetricsLayer::new(name, rpc_name))
        .service_fn(move |request| {
            let response = rpc(client.clone(), request);
            async move { response.await.map(tonic::Response::into_inner) }
        });
    BoxCloneSyncService::new(service)
}

async fn call<Req, Res>(method: &Method<Req, Res>, request: Req) -> Result<Res, Status> {
    method.clone().oneshot(request).await.map_err(Status::from)
}

/// An upstream's error answer, judged by the stack like any [`Status`],
/// except one saying the upstream's own dependency is unavailable: that is
/// neither a failure of the upstream (the breaker must not cut the gateway
/// off a healthy order service, and with it `GetOrder`, because inventory is
/// down) nor worth a retry (the upstream already retried its dependency
/// through its own stack; retrying on top multiplies the load on it).
#[derive(Debug)]
struct UpstreamStatus(Status);

impl Classify for UpstreamStatus {
    fn class(&self) -> FailureClass {
        let error_code = self
            .0
            .metadata()
            .get(ERROR_CODE_METADATA)
            .and_then(|value| value.to_str().ok());
        if error_code.is_some_and(|code| DEPENDENCY_UNAVAILABLE_CODES.contains(&code)) {
            FailureClass::Permanent
        } else {
            self.0.class()
        }
    }
}

impl From<UpstreamStatus> for Status {
    fn from(status: UpstreamStatus) -> Self {
        status.0
    }
}

/// A readiness check that passes when some replica of the upstream (at
/// `replicas`, as [`replicas`] reads them) accepts a TCP connection: the
/// balanced channel routes calls around the others. It proves a replica is
/// listening without calling an RPC, so probes add no load to the
/// upstream's request path. The replicas are probed at once, so one that
/// hangs delays the answer only while no other has accepted.
pub fn reachable(replicas: Vec<(String, u16)>) -> impl Fn() -> CheckFuture + Send + Sync + 'static {
    move || {
        let replicas = replicas.clone();
        Box::pin(async move {
            let mut probes = JoinSet::new();
            for (host, port) in replicas {
                probes.spawn(probe(host, port));
            }
            let mut refusals = Vec::new();
            while let Some(probed) = probes.join_next().await {
                match probed {
                    // Dropping the set aborts the probes still running.
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(refusal)) => refusals.push(refusal),
                    Err(e) => refusals.push(format!("probe failed: {e}")),
                }
            }
            // Sorted, so the message does not depend on which probe
            // answered first.
            refusals.sort();
            Err(refusals.join("; "))
        })
    }
}

/// Whether `host:port` accepts a TCP connection within [`PROBE_TIMEOUT`].
async fn probe(host: String, port: u16) -> Result<(), String> {
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("{host}:{port}: {e}")),
        Err(_) => Err(format!(
            "{host}:{port}: no connection within {} ms",
            PROBE_TIMEOUT.as_millis()
        )),
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic::metadata::MetadataValue;

    use super::*;

    #[test]
    fn a_dependency_of_the_upstream_being_down_is_not_the_upstreams_failure() {
        let mut status = Status::unavailable("inventory is unavailable");
        status.metadata_mut().insert(
            ERROR_CODE_METADATA,
            MetadataValue::from_static("inventory_unavailable"),
        );
        assert_eq!(UpstreamStatus(status).class(), FailureClass::Permanent);

        let mut status = Status::unavailable("order database unavailable");
        status.metadata_mut().insert(
            ERROR_CODE_METADATA,
            MetadataValue::from_static("database_unavailable"),
        );
        assert_eq!(UpstreamStatus(status).class(), FailureClass::Transient);
        for (code, class) in [
            (Code::Unavailable, FailureClass::Transient),
            (Code::NotFound, FailureClass::Permanent),
        ] {
            assert_eq!(UpstreamStatus(Status::new(code, "")).class(), class);
        }
    }

    #[test]
    fn each_listed_replica_is_probed() {
        assert_eq!(
            replicas("http://order:50051").expect("one URL"),
            [("order".to_owned(), 50051)]
        );
        assert_eq!(
            replicas("http://127.0.0.1:50051,http://127.0.0.1:50061").expect("two URLs"),
            [
                ("127.0.0.1".to_owned(), 50051),
                ("127.0.0.1".to_owned(), 50061)
            ]
        );
        assert!(replicas("http://127.0.0.1:50051,").is_err());
        assert!(replicas("http://127.0.0.1:50051,not a url").is_err());
    }

    #[tokio::test]
    async fn reachable_reflects_whether_something_listens() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let replica = ("127.0.0.1".to_owned(), port);
        assert_eq!(reachable(vec![replica.clone()])().await, Ok(()));
        // Port 1 refuses: one listening replica is enough.
        let refusing = ("127.0.0.1".to_owned(), 1);
        assert_eq!(
            reachable(vec![refusing.clone(), replica.clone()])().await,
            Ok(())
        );
        drop(listener);
        assert!(reachable(vec![replica.clone()])().await.is_err());
        let refusals = reachable(vec![replica, refusing])()
            .await
            .expect_err("none listens");
        assert!(
            refusals.contains(&format!("127.0.0.1:{port}:")) && refusals.contains("127.0.0.1:1:"),
            "{refusals}"
        );
    }
}
