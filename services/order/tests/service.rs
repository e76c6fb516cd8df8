//! The order service started inside the test, on a database of its own and
//! the real broker, and called the way the gateway calls it: CreateOrder
//! over gRPC answers a PENDING order priced by the real inventory service
//! (started beside it on its own database), and its OrderPlaced reaches the
//! order topic.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use shipshape_auth::Identity;
use shipshape_messaging::testing::{RunningService, TestBus, service_config};
use shipshape_order::{Config, Spec, pricing_defaults};
use shipshape_proto::order::order_service_client::OrderServiceClient;
use shipshape_proto::order::{CreateOrderRequest, LineRequest, OrderStatus};
use shipshape_proto::{Event, ORDER_EVENTS, common};
use shipshape_testkit::{BackingServices, Service};
use shipshape_types::{OrderId, ShippingAddress};
use tonic::Request;

/// Long enough for a cold consumer group to form on a busy machine.
const EVENT_WAIT: Duration = Duration::from_secs(60);

/// What the demo catalog the inventory migrations load charges for
/// `SKU-0001`.
fn unit_price() -> common::Money {
    common::Money {
        amount_minor: 2490,
        currency: "EUR".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_order_is_pending_and_its_placement_is_published() -> anyhow::Result<()> {
    BackingServices::run(&[Service::Order, Service::Inventory], create_an_order).await
}

/// Starts the real inventory service on `backing`; pricing is the one call
/// the order service makes to it.
async fn start_inventory(backing: &BackingServices) -> anyhow::Result<RunningService> {
    use shipshape_inventory as inventory;
    let config = service_config::<inventory::Spec>(backing)?;
    let own = inventory::Config {
        grpc_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    };
    RunningService::start::<inventory::Spec>(config, own).await
}

async fn create_an_order(backing: &BackingServices) -> anyhow::Result<()> {
    let inventory = start_inventory(backing).await?;
    let config = service_config::<Spec>(backing)?;
    let bus = TestBus::connect(&config.kafka, &[ORDER_EVENTS]).await?;
    let own = Config {
        grpc_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        inventory_url: format!("http://{}", inventory.grpc_addr()?),
        inventory: pricing_defaults(),
        saga_deadline: Duration::from_secs(30),
        sweep_interval: Duration::from_secs(1),
        kafka: config.kafka.clone(),
    };
    let order_service = RunningService::start::<Spec>(config, own).await?;

    let mut client =
        OrderServiceClient::connect(format!("http://{}", order_service.grpc_addr()?)).await?;
    let mut request = Request::new(CreateOrderRequest {
        lines: vec![LineRequest {
            sku: "SKU-0001".to_owned(),
            quantity: 2,
        }],
        card_token: "tok_visa".to_owned(),
        shipping_address: Some(ShippingAddress::example().into()),
        idempotency_key: String::new(),
    });
    Identity::new("customer-1", &[])?.write_metadata(request.metadata_mut());
    let order = client
        .create_order(request)
        .await?
        .into_inner()
        .order
        .context("CreateOrder answers the order")?;
    anyhow::ensure!(
        order.status() == OrderStatus::Pending,
        "a new order is PENDING, not {:?}",
        order.status()
    );
    let expected_total = common::Money {
        amount_minor: 2 * unit_price().amount_minor,
        ..unit_price()
    };
    anyhow::ensure!(
        order.total.as_ref() == Some(&expected_total),
        "two units at {:?} make {expected_total:?}, not {:?}",
        unit_price(),
        order.total
    );

    let order_id: OrderId = order.order_id.parse()?;
    match bus.next_event(order_id, EVENT_WAIT).await? {
        Event::OrderPlaced(placed) => {
            anyhow::ensure!(
                placed.customer_id == "customer-1" && placed.total == order.total,
                "OrderPlaced names the caller and the order's total: {placed:?}"
            );
        }
        other => anyhow::bail!("the order's first event is OrderPlaced, not {other:?}"),
    }
    order_service.stop().await?;
    inventory.stop().await
}
