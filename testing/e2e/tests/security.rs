//! Who may see and do what, end to end: customers are authenticated by
//! their bearer token, see only their own orders (another's is 404, as if
//! it did not exist), list their own orders a page at a time, and only the
//! `admin` scope restocks. Behind the gateway, the services believe only the
//! identity it forwards: a call without one is refused.

use std::time::Duration;

use anyhow::Context;
use reqwest::StatusCode;
use serde_json::Value;
use shipshape_e2e::{SHOPPER, Shop};
use shipshape_proto::inventory::RestockProductRequest;
use shipshape_proto::inventory::inventory_service_client::InventoryServiceClient;
use shipshape_proto::order::order_service_client::OrderServiceClient;
use shipshape_proto::order::{GetOrderRequest, ListOrdersRequest};
use shipshape_testkit::Service;

const SAGA: Duration = Duration::from_secs(30);

async fn get_as(
    shop: &Shop,
    token: Option<&str>,
    path: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = reqwest::Client::new().get(shop.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let mut body: Value = response.json().await?;
    if let Some(challenge) = challenge {
        body["www-authenticate"] = challenge.into();
    }
    Ok((status, body))
}

#[tokio::test]
async fn customers_see_only_their_own_orders_a_page_at_a_time() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(shop.place(&[("SKU-0001", 1)], "tok_visa", "DE").await?);
    }
    for id in &mine {
        shop.wait_terminal(id, SAGA).await?;
    }
    let bob = shop.stack.token("bob", &[])?;

    // Another customer's order does not exist for bob.
    let (status, body) = get_as(&shop, Some(&bob), &format!("/api/v1/orders/{}", mine[0])).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = get_as(&shop, Some(&bob), "/api/v1/orders").await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["orders"], serde_json::json!([]), "bob has no orders");

    // The shopper's own, newest first, two to a page.
    let (status, first) = shop.get("/api/v1/orders?limit=2").await?;
    assert_eq!(status, StatusCode::OK, "{first}");
    let token = first["next_page_token"]
        .as_str()
        .context("a second page")?
        .to_owned();
    let (status, second) = shop
        .get(&format!("/api/v1/orders?limit=2&page_token={token}"))
        .await?;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert!(second["next_page_token"].is_null(), "{second}");
    let listed: Vec<&str> = first["orders"]
        .as_array()
        .into_iter()
        .chain(second["orders"].as_array())
        .flatten()
        .map(|order| order["order_id"].as_str().unwrap_or_default())
        .collect();
    let newest_first: Vec<&str> = mine.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);

    let (status, body) = shop.get("/api/v1/orders?page_token=forged").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_page_token");
    Ok(())
}

#[tokio::test]
async fn no_token_is_401_a_bad_one_too_the_catalog_is_public_and_restocking_needs_admin()
-> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let (status, body) = get_as(&shop, None, "/api/v1/orders").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["www-authenticate"], r#"Bearer realm="shipshape""#);

    let (status, body) = get_as(&shop, Some("not-a-jwt"), "/api/v1/products").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["www-authenticate"]
            .as_str()
            .is_some_and(|c| c.contains(r#"error="invalid_token""#)),
        "{body}"
    );

    let (status, body) = get_as(&shop, None, "/api/v1/products/SKU-0001").await?;
    assert_eq!(status, StatusCode::OK, "{body}");

    let restock = |token: String| {
        reqwest::Client::new()
            .put(shop.url("/api/v1/admin/products/SKU-0001/stock"))
            .bearer_auth(token)
            .json(&serde_json::json!({"add": 7}))
            .send()
    };
    let refused = restock(shop.stack.token(SHOPPER, &[])?).await?;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let before = shop.available("SKU-0001").await?;
    let done = restock(shop.stack.token("operator", &["admin"])?).await?;
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(shop.available("SKU-0001").await?, before + 7);
    Ok(())
}

#[tokio::test]
async fn the_services_refuse_calls_without_a_forwarded_identity() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let id = shop.place(&[("SKU-0002", 1)], "tok_visa", "DE").await?;

    // As the gateway: the one caller the order service lets in.
    let mut orders = OrderServiceClient::new(shop.stack.grpc_channel(Service::Order, "gateway")?);
    let anonymous = orders
        .get_order(GetOrderRequest {
            order_id: id.clone(),
        })
        .await
        .expect_err("no identity, no order");
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    let listing = orders
        .list_orders(ListOrdersRequest::default())
        .await
        .expect_err("no identity, no list");
    assert_eq!(listing.code(), tonic::Code::Unauthenticated);

    // With a forwarded identity, only the owner's order is found.
    let as_caller = |subject: &str| {
        let mut request = tonic::Request::new(GetOrderRequest {
            order_id: id.clone(),
        });
        request
            .metadata_mut()
            .insert("x-shipshape-subject", subject.parse().expect("ascii"));
        request
    };
    let found = orders.get_order(as_caller(SHOPPER)).await?.into_inner();
    assert_eq!(found.order_id, id);
    assert_eq!(found.customer_id, SHOPPER);
    let lines: Vec<_> = found
        .lines
        .iter()
        .map(|line| (line.sku.as_str(), line.quantity))
        .collect();
    assert_eq!(lines, [("SKU-0002", 1)]);
    let other = orders
        .get_order(as_caller("mallory"))
        .await
        .expect_err("not hers");
    assert_eq!(other.code(), tonic::Code::NotFound);

    let mut inventory =
        InventoryServiceClient::new(shop.stack.grpc_channel(Service::Inventory, "gateway")?);
    let mut restock = tonic::Request::new(RestockProductRequest {
        sku: "SKU-0002".into(),
        quantity: 5,
    });
    restock
        .metadata_mut()
        .insert("x-shipshape-subject", "mallory".parse().expect("ascii"));
    let refused = inventory
        .restock_product(restock)
        .await
        .expect_err("no admin scope");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    Ok(())
}
