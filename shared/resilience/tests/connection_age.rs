//! Connections of a bounded age: a gRPC server closes each connection once
//! it reaches a maximum age (an HTTP/2 GOAWAY, `GRPC_MAX_CONNECTION_AGE_MS`).
//!
//! That spreads a client's calls over the replicas behind one address, as a
//! Kubernetes Service's virtual IP does: each connection a client opens goes
//! to the replica the address picks, and a connection that never ends keeps
//! every call on the first one. Two inventory servers stand behind a proxy
//! that hands each new TCP connection to the next of them (round robin, as
//! kube-proxy picks per connection). Each server names itself in its
//! answers.
//!
//! And it costs no caller a call. Calls that a client makes as its
//! connection is told to go fail in two ways:
//!
//! - CANCELLED (hyper's "operation was canceled"): the connection dropped
//!   the call before sending it. It is safe to send again whatever it does,
//!   so the resilience stack does, even when it is not idempotent (and its
//!   breaker counts nothing: the server was never asked).
//! - INTERNAL with the GOAWAY as its cause: most were never sent either,
//!   but h2 gives the same error to a call the server was answering when
//!   its connection ended, which it may have applied. Only an idempotent
//!   call is sent again.
//!
//! Several callers share one channel to a server whose connections live
//! 50 ms. Without the stack some calls fail (which shows the race happens
//! here); through the stack no idempotent call fails, and no call fails for
//! being cancelled before it was sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shipshape_proto::inventory::inventory_service_client::InventoryServiceClient;
use shipshape_proto::inventory::inventory_service_server::{
    InventoryService, InventoryServiceServer,
};
use shipshape_proto::inventory::{
    GetProductRequest, ListProductsRequest, ListProductsResponse, PriceSkusRequest,
    PriceSkusResponse, Product, RestockProductRequest,
};
use shipshape_resilience::{BreakerConfig, Downstream, Idempotency, ResilienceConfig, RetryConfig};
use shipshape_runtime::CancellationToken;
use shipshape_runtime::grpc::{self, ServerSettings};
use shipshape_runtime::grpc_tls;
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tower::{Layer as _, ServiceExt as _};

/// A replica that answers every listing with one product named after it.
#[derive(Clone)]
struct Replica(&'static str);

#[tonic::async_trait]
impl InventoryService for Replica {
    async fn list_products(
        &self,
        _: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        Ok(Response::new(ListProductsResponse {
            products: vec![Product {
                sku: self.0.to_owned(),
                ..Product::default()
            }],
        }))
    }

    async fn get_product(
        &self,
        _: Request<GetProductRequest>,
    ) -> Result<Response<Product>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn price_skus(
        &self,
        _: Request<PriceSkusRequest>,
    ) -> Result<Response<PriceSkusResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn restock_product(
        &self,
        _: Request<RestockProductRequest>,
    ) -> Result<Response<Product>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

async fn serve(
    name: &'static str,
    max_connection_age: Duration,
    shutdown: &CancellationToken,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let settings = ServerSettings {
        reflection: false,
        max_connection_age,
        tls: None,
    };
    tokio::spawn(grpc::serve(
        listener,
        InventoryServiceServer::new(Replica(name)),
        shipshape_proto::FILE_DESCRIPTOR_SET,
        settings,
        grpc_tls::CallerPolicy::new(),
        shutdown.clone(),
    ));
    addr
}

/// One address in front of `replicas`: each connection goes to the next.
async fn one_address(replicas: Vec<SocketAddr>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let replica = replicas[next.fetch_add(1, Ordering::Relaxed) % replicas.len()];
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(replica).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

/// Calls through one address every 20 ms, `calls` times; returns how many
/// each replica answered. Any failed call fails the test: a connection told
/// to go must not cost a caller its call.
async fn calls_per_replica(max_connection_age: Duration, calls: usize) -> (usize, usize) {
    let shutdown = CancellationToken::new();
    let a = serve("a", max_connection_age, &shutdown).await;
    let b = serve("b", max_connection_age, &shutdown).await;
    let address = one_address(vec![a, b]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut client = InventoryServiceClient::new(channel);
    let (mut by_a, mut by_b) = (0, 0);
    for call in 0..calls {
        let answer = client
            .list_products(ListProductsRequest {})
            .await
            .unwrap_or_else(|status| panic!("call {call} failed: {status:?}"))
            .into_inner();
        match answer.products[0].sku.as_str() {
            "a" => by_a += 1,
            _ => by_b += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    (by_a, by_b)
}

#[tokio::test]
async fn connections_of_a_bounded_age_spread_calls_over_the_replicas() {
    // 150 calls over about 3 s, on connections of at most 250 ms: a dozen
    // connections, alternating between the replicas.
    let (a, b) = calls_per_replica(Duration::from_millis(250), 150).await;
    eprintln!("with 250 ms connections: a answered {a}, b answered {b}");
    assert!(a >= 30 && b >= 30, "a answered {a}, b answered {b}");
}

#[tokio::test]
async fn a_connection_that_never_ends_keeps_every_call_on_one_replica() {
    let (a, b) = calls_per_replica(Duration::from_secs(3600), 50).await;
    assert_eq!(a.min(b), 0, "a answered {a}, b answered {b}");
    assert_eq!(a + b, 50);
}

const CALLERS: usize = 8;
const CALLS_EACH: usize = 400;

async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

/// `CALLERS` tasks each make `CALLS_EACH` calls with `call`; returns the
/// codes of the calls that failed.
async fn failed_calls<F, Fut>(call: F) -> Vec<Code>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), Code>> + Send,
{
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut failed = Vec::new();
                for _ in 0..CALLS_EACH {
                    if let Err(code) = call().await {
                        failed.push(code);
                    }
                }
                failed
            })
        })
        .collect();
    let mut failed = Vec::new();
    for caller in callers {
        failed.extend(caller.await.expect("a caller"));
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_made_as_a_connection_closes_are_sent_again() {
    let shutdown = CancellationToken::new();
    let addr = serve("a", Duration::from_millis(50), &shutdown).await;

    let bare = InventoryServiceClient::new(channel(addr).await);
    let failed = failed_calls(move || {
        let mut client = bare.clone();
        async move {
            client
                .list_products(ListProductsRequest {})
                .await
                .map(drop)
                .map_err(|status| status.code())
        }
    })
    .await;
    eprintln!(
        "without the stack, {} calls failed: {failed:?}",
        failed.len()
    );
    assert!(
        !failed.is_empty(),
        "no call met a closing connection: the test shows nothing"
    );
    assert!(
        failed.contains(&Code::Cancelled),
        "no call was cancelled before it was sent: {failed:?}"
    );

    for idempotency in [Idempotency::Idempotent, Idempotency::NotIdempotent] {
        // More attempts than the default 3, no budget to run out of and no
        // breaker to open on a burst: the test judges which failures are
        // sent again, not the odds that a call meets several closing
        // connections in a row on a machine that CI keeps busy. (That the
        // breaker does not count an unsent call: `error::tests`.)
        let config = ResilienceConfig {
            retry: RetryConfig {
                max_attempts: 6,
                budget_percent: 100,
                ..RetryConfig::default()
            },
            breaker: BreakerConfig {
                enabled: false,
                ..BreakerConfig::default()
            },
            ..ResilienceConfig::default()
        };
        let downstream = Downstream::new("inventory", config);
        let client = InventoryServiceClient::new(channel(addr).await);
        let listing = downstream
            .layer(idempotency)
            .layer(tower::service_fn(move |()| {
                let mut client = client.clone();
                async move { client.list_products(ListProductsRequest {}).await }
            }));
        let failed = failed_calls(move || {
            let listing = listing.clone();
            async move {
                listing
                    .oneshot(())
                    .await
                    .map(drop)
                    .map_err(|error| Status::from(error).code())
            }
        })
        .await;
        match idempotency {
            Idempotency::Idempotent => {
                assert!(
                    failed.is_empty(),
                    "idempotent, through the stack: {failed:?}"
                );
            }
            Idempotency::NotIdempotent => assert!(
                !failed.contains(&Code::Cancelled),
                "not idempotent, through the stack: {failed:?}"
            ),
        }
    }
    shutdown.cancel();
}
