//! The public API's contract against the real stack: idempotent order
//! creation, and bad input answered with 4xx JSON errors, never a 5xx.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use shipshape_e2e::{Shop, address, order_body};

#[tokio::test]
async fn an_idempotency_key_replays_the_order_and_refuses_a_different_request() -> anyhow::Result<()>
{
    let shop = Shop::start().await?;
    let body = order_body(&[("SKU-0007", 1)], "tok_visa", "FR");
    let (status, headers, first) = shop.post_order(&body, Some("checkout-42")).await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(first["status"], "PENDING");
    let id = first["order_id"].as_str().unwrap().to_owned();
    assert_eq!(headers["location"], format!("/api/v1/orders/{id}").as_str());

    let (status, headers, again) = shop.post_order(&body, Some("checkout-42")).await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(again["order_id"], id.as_str());
    assert_eq!(headers["idempotent-replayed"], "true");

    let other = order_body(&[("SKU-0007", 2)], "tok_visa", "FR");
    let (status, _, error) = shop.post_order(&other, Some("checkout-42")).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["code"], "idempotency_key_reused");

    shop.wait_terminal(&id, Duration::from_secs(30)).await?;
    shop.wait_quiet(Duration::from_secs(30)).await?;
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(shop.db(shipshape_testkit::Service::Order))
        .await?;
    assert_eq!(orders, 1, "a retried POST must not create a second order");
    assert_eq!(shop.available("SKU-0007").await?, 499);
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_a_4xx_json_error_never_a_5xx() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let valid = order_body(&[("SKU-0001", 1)], "tok_visa", "DE");
    let cases = [
        (
            json!({"items": [], "payment": {"card_token": "tok_visa"}, "shipping_address": address("DE")}),
            "empty_order",
        ),
        (
            order_body(&[("SKU-0001", 0)], "tok_visa", "DE"),
            "invalid_quantity",
        ),
        (
            order_body(&[("SKU-0001", -4)], "tok_visa", "DE"),
            "invalid_quantity",
        ),
        (
            order_body(&[("SKU-9999", 1)], "tok_visa", "DE"),
            "unknown_sku",
        ),
        (
            order_body(&[("not a sku", 1)], "tok_visa", "DE"),
            "invalid_sku",
        ),
        (
            order_body(&[("SKU-0001", 1)], "", "DE"),
            "invalid_card_token",
        ),
        (
            order_body(&[("SKU-0001", 1)], "tok_visa", "Germany"),
            "invalid_country",
        ),
        (json!({"items": "lots"}), "invalid_json"),
    ];
    for (body, code) in cases {
        let (status, _, error) = shop.post_order(&body, None).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {error}");
        assert_eq!(error["error"]["code"], code, "{body}");
        assert!(error["error"]["message"].is_string());
    }
    let (status, _, _) = shop.post_order(&valid, None).await?;
    assert_eq!(status, StatusCode::ACCEPTED);

    let unknown = uuid::Uuid::new_v4();
    let (status, error) = shop.get(&format!("/api/v1/orders/{unknown}")).await?;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, error) = shop.get("/api/v1/orders/not-a-uuid").await?;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_order_id"))
    );
    let (status, _) = shop.get("/api/v1/products/SKU-9999").await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn the_catalog_lists_twenty_products_with_price_and_stock() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let (status, catalog) = shop.get("/api/v1/products").await?;
    assert_eq!(status, StatusCode::OK);
    let products = catalog["products"].as_array().unwrap();
    assert_eq!(products.len(), 20);
    let (status, product) = shop.get("/api/v1/products/SKU-0001").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        product["price"],
        json!({"amount_minor": 2490, "currency": "EUR"})
    );
    assert_eq!(product["available"], 500);
    Ok(())
}
