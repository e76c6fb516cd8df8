//! Bounds on what one request may carry. The gateway checks them to answer
//! `400` without a network hop, and the service that owns the data checks
//! them again because it trusts no caller; both read them from here, so the
//! two can never disagree.

use crate::InvalidValue;

/// Lines in one order: more than any real basket, and a bound on the work
/// one request can cause.
pub const MAX_ORDER_LINES: usize = 50;
/// Characters in a payment card token.
pub const MAX_CARD_TOKEN_LEN: usize = 64;
/// Characters in an `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Units one restock adds: far above any real delivery, low enough that a
/// typo cannot put a near-overflow count on the shelf.
pub const MAX_RESTOCK_UNITS: i64 = 1_000_000;

/// An order's number of items: at least one, at most [`MAX_ORDER_LINES`]
/// (`empty_order`, `too_many_items`).
pub fn check_order_lines(count: usize) -> Result<(), InvalidValue> {
    if count == 0 {
        return Err(InvalidValue::new(
            "empty_order",
            "an order needs at least one item",
        ));
    }
    if count > MAX_ORDER_LINES {
        return Err(InvalidValue::new(
            "too_many_items",
            format!("an order has at most {MAX_ORDER_LINES} items, this one has {count}"),
        ));
    }
    Ok(())
}
