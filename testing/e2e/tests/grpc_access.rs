//! Mutual TLS between the services, end to end (issue 18). The gateway,
//! order and inventory each hold a certificate of the stack's CA naming
//! them; a server lets a call through only from a peer whose certificate
//! names a service allowed on that method, and only then reads the
//! identity metadata the gateway forwards. Tried as an attacker inside the
//! network would, against a running stack:
//!
//! - no certificate, a plaintext connection, or a certificate of another
//!   CA (naming the gateway, even): the handshake fails, nothing is called;
//! - a valid certificate of a service that may not call the method: the
//!   payment service reading alice's orders, inventory placing an order,
//!   the order service restocking a million units with the `admin` scope:
//!   `PERMISSION_DENIED` before any handler runs;
//! - the gateway (and the order service pricing an order) are let in, and
//!   a checkout through the gateway confirms as ever.

use shipshape_e2e::{Outcome, SHOPPER, Shop};
use shipshape_proto::inventory::inventory_service_client::InventoryServiceClient;
use shipshape_proto::inventory::{PriceSkusRequest, RestockProductRequest};
use shipshape_proto::order::ListOrdersRequest;
use shipshape_proto::order::order_service_client::OrderServiceClient;
use shipshape_testkit::Service;
use shipshape_testkit::pki::Pki;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// The forwarded identity of `subject`, with `scopes`.
fn as_customer<T>(message: T, subject: &str, scopes: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("x-shipshape-subject", subject.parse().expect("ascii"));
    if !scopes.is_empty() {
        metadata.insert("x-shipshape-scopes", scopes.parse().expect("ascii"));
    }
    request
}

/// A TLS channel to `service` with `tls`.
fn channel(url: &str, tls: ClientTlsConfig) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .tls_config(tls)?
        .connect_lazy())
}

/// A call that never reached a handler: it failed in the transport, as the
/// connection was refused during or right after the TLS handshake (with
/// TLS 1.3 the server refuses a client's certificate after the client has
/// finished its side, so the client sees the connection close or break).
fn refused_at_handshake(status: &tonic::Status) -> bool {
    std::error::Error::source(status)
        .is_some_and(|source| source.downcast_ref::<tonic::transport::Error>().is_some())
}

/// Asks order for alice's orders as the gateway would, over `channel`,
/// and returns how the call ended.
async fn list_alices_orders(channel: Channel) -> Result<usize, tonic::Status> {
    let mut orders = OrderServiceClient::new(channel);
    let request = as_customer(ListOrdersRequest::default(), SHOPPER, "");
    orders
        .list_orders(request)
        .await
        .map(|answer| answer.into_inner().orders.len())
}

#[tokio::test]
async fn only_services_named_by_the_cas_certificates_get_in_and_only_where_allowed()
-> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let id = shop.place(&[("SKU-0002", 1)], "tok_visa", "DE").await?;
    shop.assert_outcome(&id, Outcome::confirmed()).await?;
    let pki = shop.stack.pki().expect("the test stack runs gRPC over TLS");
    let order_url = shop.stack.grpc_url(Service::Order).expect("order gRPC");
    assert!(order_url.starts_with("https://"), "{order_url}");

    // The gateway's certificate: let in, and alice's order is there.
    let as_gateway = shop.stack.grpc_channel(Service::Order, "gateway")?;
    assert_eq!(list_alices_orders(as_gateway).await?, 1);

    // No certificate at all.
    let ca = Certificate::from_pem(std::fs::read(pki.ca_path())?);
    let bare = ClientTlsConfig::new()
        .ca_certificate(ca.clone())
        .domain_name("order");
    let refused = list_alices_orders(channel(&order_url, bare)?)
        .await
        .expect_err("no client certificate");
    assert!(refused_at_handshake(&refused), "{refused}");

    // Plaintext to the TLS port.
    let plain = order_url.replacen("https://", "http://", 1);
    let refused = list_alices_orders(Endpoint::from_shared(plain)?.connect_lazy())
        .await
        .expect_err("plaintext");
    assert!(refused_at_handshake(&refused), "{refused}");

    // A certificate naming the gateway, from a CA of the attacker's own.
    let dir = shop.stack.log_dir().join("intruder-tls");
    let intruder = Pki::create(&dir, "Intruder CA")?;
    let forged = intruder
        .tls_files("gateway")?
        .client("order")
        .ca_certificate(ca);
    let refused = list_alices_orders(channel(&order_url, forged)?)
        .await
        .expect_err("another CA");
    assert!(refused_at_handshake(&refused), "{refused}");

    // Real certificates of services that may not call these methods.
    for caller in ["payment", "inventory", "order"] {
        let refused = list_alices_orders(shop.stack.grpc_channel(Service::Order, caller)?)
            .await
            .expect_err("not the gateway");
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "{caller}: {refused}"
        );
    }
    let before = shop.available("SKU-0002").await?;
    for caller in ["order", "payment", "shipping"] {
        let mut inventory =
            InventoryServiceClient::new(shop.stack.grpc_channel(Service::Inventory, caller)?);
        let restock = RestockProductRequest {
            sku: "SKU-0002".to_owned(),
            quantity: 1_000_000,
        };
        let refused = inventory
            .restock_product(as_customer(restock, "operator", "admin"))
            .await
            .expect_err("only the gateway restocks");
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "{caller}: {refused}"
        );
    }
    assert_eq!(shop.available("SKU-0002").await?, before, "no unit added");

    // The order service prices through inventory: that one method is its.
    let mut inventory =
        InventoryServiceClient::new(shop.stack.grpc_channel(Service::Inventory, "order")?);
    let priced = inventory
        .price_skus(PriceSkusRequest {
            skus: vec!["SKU-0002".to_owned()],
        })
        .await?
        .into_inner();
    assert_eq!(priced.prices.len(), 1);

    // Everything on, a checkout still goes through.
    let id = shop.place(&[("SKU-0001", 1)], "tok_visa", "DE").await?;
    shop.assert_outcome(&id, Outcome::confirmed()).await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
