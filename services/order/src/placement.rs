//! Validating and pricing a new order, free of I/O.

use std::collections::{HashMap, HashSet};

use shipshape_proto::{common, order};
use shipshape_types::limits::{MAX_CARD_TOKEN_LEN, MAX_IDEMPOTENCY_KEY_LEN, check_order_lines};
use shipshape_types::{CountryCode, InvalidValue, Money, Quantity, ShippingAddress, Sku};

pub const MAX_CUSTOMER_ID_LEN: usize = 128;

/// A well-formed order request, before pricing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderRequest {
    pub customer_id: String,
    pub lines: Vec<(Sku, Quantity)>,
    pub card_token: String,
    pub address: ShippingAddress,
    pub idempotency_key: Option<String>,
}

/// A priced order line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PricedLine {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price: Money,
}

fn bounded(
    field: &str,
    value: &str,
    max: usize,
    code: &'static str,
) -> Result<String, InvalidValue> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.chars().count() > max {
        return Err(InvalidValue::new(
            code,
            format!("{field} must be 1 to {max} characters"),
        ));
    }
    // A control character has no place in a name, an address or a token,
    // and a NUL cannot even be stored in Postgres text.
    if trimmed.chars().any(char::is_control) {
        return Err(InvalidValue::new(
            code,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

fn address(a: Option<&common::Address>) -> Result<ShippingAddress, InvalidValue> {
    let a =
        a.ok_or_else(|| InvalidValue::new("invalid_address", "shipping_address is required"))?;
    let line2 = a.line2.trim();
    if line2.chars().count() > 100 {
        return Err(InvalidValue::new(
            "invalid_address",
            "line2 must be at most 100 characters",
        ));
    }
    Ok(ShippingAddress {
        name: bounded("name", &a.name, 100, "invalid_address")?,
        line1: bounded("line1", &a.line1, 100, "invalid_address")?,
        line2: line2.to_owned(),
        city: bounded("city", &a.city, 100, "invalid_address")?,
        postal_code: bounded("postal_code", &a.postal_code, 20, "invalid_address")?,
        country: CountryCode::parse(a.country.trim())?,
    })
}

/// Checks every field of a CreateOrder request placed by `customer_id`
/// (the caller's identity, already checked where it was read).
pub fn validate(
    customer_id: &str,
    request: &order::CreateOrderRequest,
) -> Result<OrderRequest, InvalidValue> {
    let customer_id = bounded(
        "customer_id",
        customer_id,
        MAX_CUSTOMER_ID_LEN,
        "invalid_customer",
    )?;
    check_order_lines(request.lines.len())?;
    let mut seen = HashSet::new();
    let mut lines = Vec::with_capacity(request.lines.len());
    for line in &request.lines {
        let sku = Sku::parse(&line.sku)?;
        if !seen.insert(sku.clone()) {
            return Err(InvalidValue::new(
                "duplicate_sku",
                format!("sku {sku} appears on more than one line"),
            ));
        }
        lines.push((sku, Quantity::new(line.quantity)?));
    }
    let card_token = bounded(
        "card_token",
        &request.card_token,
        MAX_CARD_TOKEN_LEN,
        "invalid_card_token",
    )?;
    let idempotency_key = match request.idempotency_key.as_str() {
        "" => None,
        key if key.len() <= MAX_IDEMPOTENCY_KEY_LEN
            && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Some(key.to_owned())
        }
        _ => {
            return Err(InvalidValue::new(
                "invalid_idempotency_key",
                format!(
                    "an idempotency key is 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
                ),
            ));
        }
    };
    Ok(OrderRequest {
        customer_id,
        lines,
        card_token,
        address: address(request.shipping_address.as_ref())?,
        idempotency_key,
    })
}

/// Prices every line and the total; all lines must share one currency.
pub fn price(
    lines: &[(Sku, Quantity)],
    prices: &HashMap<Sku, Money>,
) -> Result<(Vec<PricedLine>, Money), InvalidValue> {
    let mut priced = Vec::with_capacity(lines.len());
    let mut total: Option<Money> = None;
    for (sku, quantity) in lines {
        let unit_price = *prices
            .get(sku)
            .ok_or_else(|| InvalidValue::new("unknown_sku", format!("unknown sku {sku}")))?;
        let line_total = unit_price
            .times(*quantity)
            .ok_or_else(|| InvalidValue::new("amount_too_large", "order total overflows"))?;
        total = Some(match total {
            None => line_total,
            Some(t) => t.checked_add(line_total).ok_or_else(|| {
                InvalidValue::new(
                    "mixed_currencies",
                    "all lines of an order must share one currency",
                )
            })?,
        });
        priced.push(PricedLine {
            sku: sku.clone(),
            quantity: *quantity,
            unit_price,
        });
    }
    let total = total
        .ok_or_else(|| InvalidValue::new("empty_order", "an order needs at least one line"))?;
    Ok((priced, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipshape_types::Currency;
    use shipshape_types::limits::MAX_ORDER_LINES;

    fn request() -> order::CreateOrderRequest {
        order::CreateOrderRequest {
            lines: vec![order::LineRequest {
                sku: "SKU-0001".into(),
                quantity: 2,
            }],
            card_token: "tok_visa".into(),
            shipping_address: Some(ShippingAddress::example().into()),
            idempotency_key: String::new(),
        }
    }

    fn code_of(r: order::CreateOrderRequest) -> &'static str {
        validate("guest", &r).unwrap_err().code
    }

    #[test]
    fn a_complete_request_is_valid() {
        let valid = validate("guest", &request()).unwrap();
        assert_eq!(valid.lines.len(), 1);
        assert_eq!(valid.address.country.as_str(), "DE");
        assert_eq!(valid.idempotency_key, None);
    }

    #[test]
    fn each_bad_field_has_its_own_code() {
        let mut r = request();
        r.lines.clear();
        assert_eq!(code_of(r), "empty_order");
        let mut r = request();
        r.lines = (0..=MAX_ORDER_LINES)
            .map(|i| order::LineRequest {
                sku: format!("SKU-{i}"),
                quantity: 1,
            })
            .collect();
        assert_eq!(code_of(r), "too_many_items");
        let mut r = request();
        r.lines.push(r.lines[0].clone());
        assert_eq!(code_of(r), "duplicate_sku");
        let mut r = request();
        r.lines[0].quantity = 0;
        assert_eq!(code_of(r), "invalid_quantity");
        let mut r = request();
        r.lines[0].sku = "bad sku".into();
        assert_eq!(code_of(r), "invalid_sku");
        let mut r = request();
        r.card_token = " ".into();
        assert_eq!(code_of(r), "invalid_card_token");
        let mut r = request();
        r.card_token = "tok\0visa".into();
        assert_eq!(code_of(r), "invalid_card_token");
        let mut r = request();
        r.shipping_address = None;
        assert_eq!(code_of(r), "invalid_address");
        let mut r = request();
        r.shipping_address.as_mut().unwrap().country = "Germany".into();
        assert_eq!(code_of(r), "invalid_country");
        let mut r = request();
        r.idempotency_key = "has space".into();
        assert_eq!(code_of(r), "invalid_idempotency_key");
    }

    #[test]
    fn pricing_multiplies_and_sums() {
        let eur = Currency::parse("EUR").unwrap();
        let a = Sku::parse("SKU-A").unwrap();
        let b = Sku::parse("SKU-B").unwrap();
        let prices = HashMap::from([
            (a.clone(), Money::new(250, eur)),
            (b.clone(), Money::new(1000, eur)),
        ]);
        let lines = [
            (a, Quantity::new(3).unwrap()),
            (b, Quantity::new(1).unwrap()),
        ];
        let (priced, total) = price(&lines, &prices).unwrap();
        assert_eq!(priced.len(), 2);
        assert_eq!(total, Money::new(1750, eur));
    }

    #[test]
    fn pricing_rejects_unknown_skus_and_mixed_currencies() {
        let a = Sku::parse("SKU-A").unwrap();
        let b = Sku::parse("SKU-B").unwrap();
        let q = Quantity::new(1).unwrap();
        let prices = HashMap::from([
            (a.clone(), Money::new(1, Currency::parse("EUR").unwrap())),
            (b.clone(), Money::new(1, Currency::parse("USD").unwrap())),
        ]);
        let unknown = Sku::parse("SKU-C").unwrap();
        assert_eq!(
            price(&[(unknown, q)], &prices).unwrap_err().code,
            "unknown_sku"
        );
        assert_eq!(
            price(&[(a, q), (b, q)], &prices).unwrap_err().code,
            "mixed_currencies"
        );
    }
}
