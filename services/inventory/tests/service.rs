//! The inventory service started inside the test, on a database of its own
//! and the real broker: it lists its catalog over gRPC, and answers an
//! OrderPlaced with StockReserved, taking the units out of what is
//! available.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use shipshape_inventory::{Config, Spec};
use shipshape_messaging::testing::{RunningService, TestBus, order_placed, service_config};
use shipshape_proto::inventory::inventory_service_client::InventoryServiceClient;
use shipshape_proto::inventory::{GetProductRequest, ListProductsRequest};
use shipshape_proto::{Event, INVENTORY_EVENTS};
use shipshape_testkit::{BackingServices, Service};
use shipshape_types::OrderId;

/// Long enough for a cold consumer group to form on a busy machine.
const EVENT_WAIT: Duration = Duration::from_secs(60);

/// A product of the demo catalog the migrations load, with stock to spare.
const SKU: &str = "SKU-0001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_order_reserves_stock_from_the_listed_catalog() -> anyhow::Result<()> {
    BackingServices::run(&[Service::Inventory], reserve_an_order).await
}

async fn reserve_an_order(backing: &BackingServices) -> anyhow::Result<()> {
    let config = service_config::<Spec>(backing)?;
    let bus = TestBus::connect(&config.kafka, &[INVENTORY_EVENTS]).await?;
    let own = Config {
        grpc_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    };
    let inventory = RunningService::start::<Spec>(config, own).await?;

    let mut catalog =
        InventoryServiceClient::connect(format!("http://{}", inventory.grpc_addr()?)).await?;
    let products = catalog
        .list_products(ListProductsRequest {})
        .await?
        .into_inner()
        .products;
    let listed = products
        .iter()
        .find(|product| product.sku == SKU)
        .with_context(|| format!("the catalog lists {SKU}: {products:?}"))?;
    let unit_price = listed
        .price
        .clone()
        .context("a listed product has a price")?;
    let available = listed.available;

    let order_id = OrderId::generate();
    let placed = order_placed(SKU, 3, unit_price, "DE");
    bus.publish("order", order_id, &Event::OrderPlaced(placed))
        .await?;
    let answer = bus.next_event(order_id, EVENT_WAIT).await?;
    anyhow::ensure!(
        matches!(answer, Event::StockReserved(_)),
        "{SKU} has stock to spare, so the order is reserved, not {answer:?}"
    );
    let after = catalog
        .get_product(GetProductRequest {
            sku: SKU.to_owned(),
        })
        .await?
        .into_inner()
        .available;
    anyhow::ensure!(
        after == available - 3,
        "the reservation takes 3 of the {available} units available, leaving {after}"
    );
    inventory.stop().await
}
