//! Turns what a client sent into a request the rest of the system can trust.
//! No I/O: each rule is a plain function of its input, so the whole API
//! contract's "400 with a stable code" half is tested without a server.
//!
//! The order service checks again (it must not trust its callers), but
//! rejecting here saves a network hop and gives the client every code from
//! one place.

use std::collections::HashSet;
use std::fmt;

use axum::http::HeaderMap;
use shipshape_types::limits::{
    MAX_CARD_TOKEN_LEN, MAX_IDEMPOTENCY_KEY_LEN, MAX_RESTOCK_UNITS, check_order_lines,
};
use shipshape_types::{CountryCode, InvalidValue, Quantity, ShippingAddress, Sku};

use crate::api::{AddressBody, CreateOrderBody};

pub const MAX_ADDRESS_FIELD_LEN: usize = 100;
pub const MAX_POSTAL_CODE_LEN: usize = 20;

/// The request header that makes order creation safe to retry.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// An order request whose every field has been checked.
#[derive(Debug)]
pub struct NewOrder {
    pub lines: Vec<OrderLine>,
    pub card_token: CardToken,
    pub shipping_address: ShippingAddress,
}

#[derive(Debug, PartialEq)]
pub struct OrderLine {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// The PSP's stand-in for a card. It is not the card number, but it can be
/// charged, so it never appears in `Debug` output or logs.
pub struct CardToken(String);

impl CardToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CardToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CardToken(<redacted>)")
    }
}

/// The client's `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, PartialEq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// A key for an order request that came without one: `gw-` and a random
    /// UUID, unique to the request, so it replays nothing the client did and
    /// only the gateway's own retries of the request share it.
    pub fn generate() -> Self {
        Self(format!("gw-{}", uuid::Uuid::new_v4()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a `POST /api/v1/orders` body. The first problem found is reported,
/// items before payment before address, so the answer is deterministic.
pub fn new_order(body: CreateOrderBody) -> Result<NewOrder, InvalidValue> {
    check_order_lines(body.items.len())?;
    let mut seen = HashSet::with_capacity(body.items.len());
    let mut lines = Vec::with_capacity(body.items.len());
    for (i, item) in body.items.into_iter().enumerate() {
        let sku = Sku::parse(&item.sku).map_err(|e| at(&format!("items[{i}].sku"), e))?;
        let quantity =
            Quantity::new(item.quantity).map_err(|e| at(&format!("items[{i}].quantity"), e))?;
        // One line per sku keeps reservations and prices unambiguous; the
        // client sums quantities itself.
        if !seen.insert(sku.clone()) {
            return Err(InvalidValue::new(
                "duplicate_sku",
                format!("items[{i}]: sku `{sku}` appears more than once; combine the quantities"),
            ));
        }
        lines.push(OrderLine { sku, quantity });
    }
    Ok(NewOrder {
        lines,
        card_token: card_token(body.payment.card_token)?,
        shipping_address: shipping_address(body.shipping_address)?,
    })
}

/// Checks the units a restock adds: 1 to [`MAX_RESTOCK_UNITS`].
pub fn restock_units(add: i64) -> Result<i64, InvalidValue> {
    if (1..=MAX_RESTOCK_UNITS).contains(&add) {
        Ok(add)
    } else {
        Err(InvalidValue::new(
            "invalid_quantity",
            format!("add must be 1 to {MAX_RESTOCK_UNITS}, not {add}"),
        ))
    }
}

/// The page size of `GET /api/v1/orders?limit=`: 1 to 100, 20 when absent.
pub fn page_size(limit: Option<u32>) -> Result<i32, InvalidValue> {
    match limit {
        None => Ok(20),
        Some(limit @ 1..=100) => Ok(limit as i32),
        Some(limit) => Err(InvalidValue::new(
            "invalid_limit",
            format!("limit must be 1 to 100, not {limit}"),
        )),
    }
}

/// The `Last-Event-ID` of a reconnecting timeline stream: the sequence of
/// the last step the client has (0, all of them, when absent or empty).
pub fn last_event_id(headers: &HeaderMap) -> Result<i64, InvalidValue> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(0);
    };
    let text = value.to_str().unwrap_or("\u{fffd}").trim();
    if text.is_empty() {
        return Ok(0);
    }
    text.parse::<i64>()
        .ok()
        .filter(|sequence| *sequence >= 0)
        .ok_or_else(|| {
            InvalidValue::new(
                "invalid_last_event_id",
                "Last-Event-ID must be the id of an event this stream sent (a whole number)",
            )
        })
}

/// 1 to [`MAX_CARD_TOKEN_LEN`] characters (not bytes, as the message says
/// and the order service counts), not blank, and no control characters: a
/// NUL cannot be stored in Postgres, and an order accepted with one would
/// never get through its checkout.
fn card_token(token: String) -> Result<CardToken, InvalidValue> {
    let well_formed = !token.trim().is_empty()
        && token.chars().count() <= MAX_CARD_TOKEN_LEN
        && !token.chars().any(char::is_control);
    if !well_formed {
        // The message must not echo the token.
        return Err(InvalidValue::new(
            "invalid_card_token",
            format!(
                "payment.card_token must be 1 to {MAX_CARD_TOKEN_LEN} characters, \
                 not blank and without control characters"
            ),
        ));
    }
    Ok(CardToken(token))
}

fn shipping_address(address: AddressBody) -> Result<ShippingAddress, InvalidValue> {
    let name = address_field("name", address.name, true, MAX_ADDRESS_FIELD_LEN)?;
    let line1 = address_field("line1", address.line1, true, MAX_ADDRESS_FIELD_LEN)?;
    let line2 = address_field(
        "line2",
        address.line2.unwrap_or_default(),
        false,
        MAX_ADDRESS_FIELD_LEN,
    )?;
    let city = address_field("city", address.city, true, MAX_ADDRESS_FIELD_LEN)?;
    let postal_code = address_field(
        "postal_code",
        address.postal_code,
        true,
        MAX_POSTAL_CODE_LEN,
    )?;
    let country =
        CountryCode::parse(&address.country).map_err(|e| at("shipping_address.country", e))?;
    Ok(ShippingAddress {
        name,
        line1,
        line2,
        city,
        postal_code,
        country,
    })
}

/// One free-text address field. Lengths count characters, not bytes, so
/// "Zürich" is as long as it looks. Control characters are refused because
/// they end up on shipping labels and in logs.
fn address_field(
    field: &str,
    value: String,
    required: bool,
    max_len: usize,
) -> Result<String, InvalidValue> {
    let invalid = |why: String| {
        InvalidValue::new("invalid_address", format!("shipping_address.{field} {why}"))
    };
    if required && value.trim().is_empty() {
        return Err(invalid("is required".to_owned()));
    }
    if value.chars().count() > max_len {
        return Err(invalid(format!("must be at most {max_len} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid("must not contain control characters".to_owned()));
    }
    Ok(value)
}

/// The optional `Idempotency-Key` header. Sent twice, it is ambiguous and
/// refused rather than guessed at.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, InvalidValue> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = || {
        InvalidValue::new(
            "invalid_idempotency_key",
            format!(
                "the Idempotency-Key header must be sent once, with 1 to \
                 {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
            ),
        )
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    let bytes = value.as_bytes();
    let well_formed = !bytes.is_empty()
        && bytes.len() <= MAX_IDEMPOTENCY_KEY_LEN
        && bytes.iter().all(u8::is_ascii_graphic);
    if !well_formed {
        return Err(invalid());
    }
    // Visible ASCII is valid UTF-8, so this cannot fail after the check.
    let key = value.to_str().map_err(|_| invalid())?;
    Ok(Some(IdempotencyKey(key.to_owned())))
}

/// Prefixes a newtype's message with where in the body the value was.
fn at(path: &str, error: InvalidValue) -> InvalidValue {
    InvalidValue::new(error.code, format!("{path}: {}", error.message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ItemBody, PaymentBody};
    use axum::http::HeaderValue;
    use shipshape_types::limits::MAX_ORDER_LINES;

    #[test]
    fn a_last_event_id_is_a_sequence_or_nothing() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("last-event-id", HeaderValue::from_static(value));
            last_event_id(&headers)
        };
        assert_eq!(last_event_id(&HeaderMap::new()), Ok(0));
        assert_eq!(with(""), Ok(0));
        assert_eq!(with("42"), Ok(42));
        for bad in ["-1", "4x", "9223372036854775808"] {
            assert_eq!(
                with(bad).map_err(|e| e.code),
                Err("invalid_last_event_id"),
                "{bad}"
            );
        }
    }

    fn body() -> CreateOrderBody {
        CreateOrderBody {
            items: vec![ItemBody {
                sku: "SKU-0001".into(),
                quantity: 2,
            }],
            payment: PaymentBody {
                card_token: "tok_visa".into(),
            },
            shipping_address: AddressBody {
                name: "Ada Lovelace".into(),
                line1: "1 Main St".into(),
                line2: None,
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
            },
        }
    }

    fn code_of(change: impl FnOnce(&mut CreateOrderBody)) -> &'static str {
        let mut body = body();
        change(&mut body);
        new_order(body).expect_err("should be rejected").code
    }

    fn item(sku: &str, quantity: i64) -> ItemBody {
        ItemBody {
            sku: sku.into(),
            quantity,
        }
    }

    #[test]
    fn a_well_formed_order_passes() {
        let order = new_order(body()).expect("valid");
        assert_eq!(order.lines.len(), 1);
        assert_eq!(order.lines[0].sku.as_str(), "SKU-0001");
        assert_eq!(order.lines[0].quantity.get(), 2);
        assert_eq!(order.card_token.expose(), "tok_visa");
        assert_eq!(order.shipping_address.line2, "");
        assert_eq!(order.shipping_address.country.as_str(), "DE");
    }

    #[test]
    fn item_rules() {
        assert_eq!(code_of(|b| b.items.clear()), "empty_order");
        assert_eq!(
            code_of(|b| b.items = (0..=MAX_ORDER_LINES)
                .map(|i| item(&format!("SKU-{i}"), 1))
                .collect()),
            "too_many_items"
        );
        assert_eq!(code_of(|b| b.items[0].sku = "sku-1".into()), "invalid_sku");
        assert_eq!(code_of(|b| b.items[0].sku = String::new()), "invalid_sku");
        assert_eq!(code_of(|b| b.items[0].quantity = 0), "invalid_quantity");
        assert_eq!(code_of(|b| b.items[0].quantity = -1), "invalid_quantity");
        assert_eq!(code_of(|b| b.items[0].quantity = 101), "invalid_quantity");
        assert_eq!(
            code_of(|b| b.items.push(item("SKU-0001", 1))),
            "duplicate_sku"
        );
    }

    #[test]
    fn item_limits_are_inclusive() {
        let mut full = body();
        full.items = (0..MAX_ORDER_LINES)
            .map(|i| item(&format!("SKU-{i}"), Quantity::MAX))
            .collect();
        assert_eq!(new_order(full).expect("valid").lines.len(), MAX_ORDER_LINES);
    }

    #[test]
    fn errors_say_which_item() {
        let mut body = body();
        body.items.push(item("bad sku", 1));
        let error = new_order(body).expect_err("rejected");
        assert!(
            error.message.starts_with("items[1].sku"),
            "{}",
            error.message
        );
    }

    #[test]
    fn card_token_rules() {
        assert_eq!(
            code_of(|b| b.payment.card_token = String::new()),
            "invalid_card_token"
        );
        assert_eq!(
            code_of(|b| b.payment.card_token = "t".repeat(MAX_CARD_TOKEN_LEN + 1)),
            "invalid_card_token"
        );
        for bad in ["   ", "tok\u{0}x", "tok\nx", "tok\u{7f}"] {
            assert_eq!(
                code_of(|b| b.payment.card_token = bad.into()),
                "invalid_card_token",
                "{bad:?}"
            );
        }
        let mut longest = body();
        longest.payment.card_token = "t".repeat(MAX_CARD_TOKEN_LEN);
        assert!(new_order(longest).is_ok());
        // Characters, not bytes.
        let mut wide = body();
        wide.payment.card_token = "é".repeat(MAX_CARD_TOKEN_LEN);
        assert!(new_order(wide).is_ok());
    }

    #[test]
    fn the_card_token_is_never_printed() {
        let order = new_order(body()).expect("valid");
        assert!(!format!("{order:?}").contains("tok_visa"));
        let mut long = body();
        long.payment.card_token = format!("tok_{}", "x".repeat(MAX_CARD_TOKEN_LEN));
        let error = new_order(long).expect_err("rejected");
        assert!(!error.message.contains("tok_"));
    }

    fn a(body: &mut CreateOrderBody) -> &mut AddressBody {
        &mut body.shipping_address
    }

    #[test]
    fn address_rules() {
        assert_eq!(code_of(|b| a(b).name = String::new()), "invalid_address");
        assert_eq!(code_of(|b| a(b).name = "   ".into()), "invalid_address");
        assert_eq!(code_of(|b| a(b).line1 = String::new()), "invalid_address");
        assert_eq!(code_of(|b| a(b).city = String::new()), "invalid_address");
        assert_eq!(
            code_of(|b| a(b).postal_code = String::new()),
            "invalid_address"
        );
        assert_eq!(
            code_of(|b| a(b).name = "n".repeat(MAX_ADDRESS_FIELD_LEN + 1)),
            "invalid_address"
        );
        assert_eq!(
            code_of(|b| a(b).line2 = Some("l".repeat(MAX_ADDRESS_FIELD_LEN + 1))),
            "invalid_address"
        );
        assert_eq!(
            code_of(|b| a(b).postal_code = "1".repeat(MAX_POSTAL_CODE_LEN + 1)),
            "invalid_address"
        );
        assert_eq!(
            code_of(|b| a(b).city = "Ber\nlin".into()),
            "invalid_address"
        );
        assert_eq!(code_of(|b| a(b).country = "de".into()), "invalid_country");
        assert_eq!(code_of(|b| a(b).country = "DEU".into()), "invalid_country");
        assert_eq!(code_of(|b| a(b).country = String::new()), "invalid_country");
    }

    #[test]
    fn address_lengths_count_characters() {
        let mut body = body();
        body.shipping_address.city = "ü".repeat(MAX_ADDRESS_FIELD_LEN);
        body.shipping_address.line2 = Some(String::new());
        let order = new_order(body).expect("valid");
        assert_eq!(
            order.shipping_address.city.chars().count(),
            MAX_ADDRESS_FIELD_LEN
        );
    }

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            let value = HeaderValue::from_bytes(value).expect("header value");
            headers.append(IDEMPOTENCY_KEY_HEADER, value);
        }
        headers
    }

    #[test]
    fn idempotency_key_is_optional() {
        assert_eq!(idempotency_key(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn idempotency_key_accepts_visible_ascii_up_to_255() {
        let key = idempotency_key(&headers(&[b"checkout-7f3a/2025~01"])).expect("valid");
        assert_eq!(key.map(|k| k.0), Some("checkout-7f3a/2025~01".to_owned()));
        let longest = "k".repeat(MAX_IDEMPOTENCY_KEY_LEN);
        assert!(idempotency_key(&headers(&[longest.as_bytes()])).is_ok());
    }

    #[test]
    fn a_generated_key_is_a_valid_key_of_its_own() {
        let key = IdempotencyKey::generate();
        let parsed = idempotency_key(&headers(&[key.as_str().as_bytes()])).expect("valid");
        assert_eq!(parsed.as_ref(), Some(&key));
        assert!(key.as_str().starts_with("gw-"), "{key:?}");
        assert_ne!(IdempotencyKey::generate(), key);
    }

    #[test]
    fn idempotency_key_rejects_the_rest() {
        let too_long = "k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1);
        let bad: [&[&[u8]]; 5] = [
            &[b""],
            &[b"has space"],
            &[too_long.as_bytes()],
            &["clé".as_bytes()],
            &[b"one", b"two"],
        ];
        for values in bad {
            let error = idempotency_key(&headers(values)).expect_err("rejected");
            assert_eq!(error.code, "invalid_idempotency_key", "{values:?}");
        }
    }

    #[test]
    fn a_restock_adds_one_to_a_million_units() {
        assert_eq!(restock_units(1), Ok(1));
        assert_eq!(restock_units(MAX_RESTOCK_UNITS), Ok(MAX_RESTOCK_UNITS));
        for bad in [0, -1, MAX_RESTOCK_UNITS + 1, i64::MAX] {
            assert_eq!(
                restock_units(bad).expect_err("rejected").code,
                "invalid_quantity"
            );
        }
    }
}
