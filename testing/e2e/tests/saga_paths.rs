//! Every path of the checkout saga, through the public API, with the effects
//! checked in every service's database and the payment provider's ledger.

use std::time::Duration;

use shipshape_e2e::{Outcome, Shop};
use shipshape_testkit::{Service, StackOptions};

const SAGA: Duration = Duration::from_secs(30);

/// A saga deadline (`SAGA_DEADLINE_MS`) no test reaches: the tests whose
/// path depends on what the deadline meets pass it themselves
/// (`Shop::pass_deadline`) once that has happened, instead of racing the clock.
const NEVER: &str = "3600000";

#[tokio::test]
async fn happy_path_confirms_with_stock_taken_one_capture_and_one_shipment() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let before = shop.available("SKU-0001").await?;
    let id = shop
        .place(&[("SKU-0001", 2), ("SKU-0004", 1)], "tok_visa", "DE")
        .await?;
    let order = shop.wait_terminal(&id, SAGA).await?;
    assert_eq!(order["total"]["amount_minor"], 2 * 2490 + 499);
    assert!(order["completed_at"].is_string());
    shop.assert_outcome(&id, Outcome::confirmed()).await?;
    assert_eq!(shop.available("SKU-0001").await?, before - 2);
    Ok(())
}

#[tokio::test]
async fn quantity_above_stock_cancels_out_of_stock_without_any_charge() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    // SKU-0019 has five units; SKU-0001 plenty: all or nothing is reserved.
    let id = shop
        .place(&[("SKU-0001", 1), ("SKU-0019", 6)], "tok_visa", "DE")
        .await?;
    shop.assert_outcome(
        &id,
        Outcome {
            status: "CANCELLED",
            reason: Some("out_of_stock"),
            reservation: "REJECTED",
            payment: "VOIDED",
            captures: 0,
            refunds: 0,
            shipped: false,
        },
    )
    .await?;
    assert_eq!(shop.available("SKU-0001").await?, 500);
    assert_eq!(shop.available("SKU-0019").await?, 5);
    Ok(())
}

#[tokio::test]
async fn declined_card_cancels_and_releases_the_stock() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let id = shop.place(&[("SKU-0002", 3)], "tok_decline", "DE").await?;
    shop.assert_outcome(&id, Outcome::declined()).await?;
    assert_eq!(shop.available("SKU-0002").await?, 500);
    Ok(())
}

#[tokio::test]
async fn unserved_destination_refunds_the_capture_and_releases_the_stock() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let id = shop.place(&[("SKU-0003", 1)], "tok_visa", "AQ").await?;
    shop.assert_outcome(
        &id,
        Outcome {
            status: "CANCELLED",
            reason: Some("shipping_failed"),
            reservation: "RELEASED",
            payment: "REFUNDED",
            captures: 1,
            refunds: 1,
            shipped: false,
        },
    )
    .await?;
    assert_eq!(shop.available("SKU-0003").await?, 500);
    Ok(())
}

/// The PSP charges `tok_slow` on arrival and answers 5 s later. The deadline
/// passes once the charge is in the PSP's ledger, so the cancellation meets
/// a capture under way: the capture that completes late is refunded and the
/// shipment called off. With the deadline left to the clock, a busy machine
/// could cancel before the capture started (the payment is voided) or after
/// its answer (captured, then refunded as any cancelled order's).
#[tokio::test]
async fn deadline_cancels_timed_out_and_a_late_capture_refunds_itself() -> anyhow::Result<()> {
    let options = StackOptions::for_tests()?
        .with_env(Service::Order, "SAGA_DEADLINE_MS", NEVER)
        .with_env(Service::Order, "SAGA_SWEEP_INTERVAL_MS", "100")
        .with_env(Service::Psp, "PSP_SLOW_CARD_DELAY_MS", "5000")
        // The answer, not a timeout, ends the call.
        .with_env(Service::Payment, "PSP_TIMEOUT_MS", "15000");
    let shop = Shop::start_with(options).await?;
    let id = shop.place(&[("SKU-0005", 1)], "tok_slow", "DE").await?;
    shop.cancel_during_the_capture(&id, SAGA).await?;
    shop.assert_outcome(
        &id,
        Outcome {
            status: "CANCELLED",
            reason: Some("timed_out"),
            reservation: "RELEASED",
            payment: "REFUNDED",
            captures: 1,
            refunds: 1,
            shipped: false,
        },
    )
    .await?;
    assert_eq!(shop.available("SKU-0005").await?, 500);
    Ok(())
}

/// The PSP never processes `tok_unavailable`: when the deadline passes, the
/// payment is voided (nothing can have been charged) and the stock released.
#[tokio::test]
async fn deadline_voids_a_payment_the_provider_never_processed() -> anyhow::Result<()> {
    let options = StackOptions::for_tests()?
        .with_env(Service::Order, "SAGA_DEADLINE_MS", "1500")
        .with_env(Service::Order, "SAGA_SWEEP_INTERVAL_MS", "100");
    let shop = Shop::start_with(options).await?;
    let id = shop
        .place(&[("SKU-0006", 1)], "tok_unavailable", "DE")
        .await?;
    shop.assert_outcome(
        &id,
        Outcome {
            status: "CANCELLED",
            reason: Some("timed_out"),
            reservation: "RELEASED",
            payment: "VOIDED",
            captures: 0,
            refunds: 0,
            shipped: false,
        },
    )
    .await?;
    Ok(())
}

/// Every capture attempt times out, so the payment service cannot know
/// whether the card was charged. When the deadline cancels the order it must
/// not void blindly: the order waits in CANCELLING (stock already released)
/// until the provider answers a lookup by the capture's key, which proves
/// nothing was charged. The deadline passes once a capture attempt has been
/// made: before one, nothing can have been charged and voiding is right.
#[tokio::test]
async fn an_unanswered_capture_is_looked_up_before_the_payment_is_voided() -> anyhow::Result<()> {
    let options = StackOptions::for_tests()?
        .with_env(Service::Order, "SAGA_DEADLINE_MS", NEVER)
        .with_env(Service::Order, "SAGA_SWEEP_INTERVAL_MS", "100")
        .with_env(Service::Payment, "PSP_TIMEOUT_MS", "300")
        // The timeouts open the PSP breaker; the lookup after the provider
        // recovers must not wait out the default 30 s open period.
        .with_env(Service::Payment, "PSP_BREAKER_OPEN_MS", "1000")
        .with_env(Service::Payment, "PAYMENT_RETRY_INTERVAL_MS", "100");
    let shop = Shop::start_with(options).await?;
    shop.psp_faults(1000, 0.0).await?;
    let id = shop
        .place(&[("SKU-0015", 1)], "tok_unavailable", "DE")
        .await?;

    let deadline = tokio::time::Instant::now() + SAGA;
    // Set as a capture attempt is claimed, before the call is made.
    loop {
        let uncertain: Option<bool> =
            sqlx::query_scalar("SELECT capture_uncertain FROM payments WHERE order_id = $1::uuid")
                .bind(&id)
                .fetch_optional(shop.db(Service::Payment))
                .await?;
        if uncertain == Some(true) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no capture of order {id} was ever attempted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shop.pass_deadline(&id).await?;
    loop {
        let (_, order) = shop.get(&format!("/api/v1/orders/{id}")).await?;
        let uncertain: Option<bool> =
            sqlx::query_scalar("SELECT capture_uncertain FROM payments WHERE order_id = $1::uuid")
                .bind(&id)
                .fetch_optional(shop.db(Service::Payment))
                .await?;
        if order["status"] == "CANCELLING" && uncertain == Some(true) {
            assert_eq!(order["cancellation_reason"], "timed_out");
            break;
        }
        assert_ne!(
            order["status"], "CANCELLED",
            "voided without knowing: {order}"
        );
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "never reached CANCELLING: {order}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Still unknown for a while: the order must keep waiting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, order) = shop.get(&format!("/api/v1/orders/{id}")).await?;
    assert_eq!(order["status"], "CANCELLING", "{order}");

    shop.psp_faults(0, 0.0).await?;
    shop.assert_outcome(
        &id,
        Outcome {
            status: "CANCELLED",
            reason: Some("timed_out"),
            reservation: "RELEASED",
            payment: "VOIDED",
            captures: 0,
            refunds: 0,
            shipped: false,
        },
    )
    .await?;
    Ok(())
}
