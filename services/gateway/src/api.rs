//! The public JSON contract and its conversions from the gRPC messages.
//! The proto types never appear in a response as they are: the JSON is
//! versioned with the URL (`/api/v1`) and the protos with their package, and
//! each may change without the other. `validation` reads the request shapes
//! here, and `routes` builds the gRPC requests from what it accepts, so this
//! module uses no other module of the gateway.

use std::fmt;

use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};
use shipshape_proto::{common, inventory, order};
use shipshape_types::{Money, OrderId, Quantity};
use utoipa::ToSchema;

// The bounds in the `#[schema(...)]` attributes below are those `validation`
// and `shipshape_types` enforce, so the OpenAPI document (`crate::openapi`)
// describes exactly what is accepted; a value outside them is a `400`.
// utoipa takes patterns only as literals. Those of the address fields: no
// control characters (Unicode `Cc`, which `char::is_control` refuses) and,
// in a required field, at least one character that is not white space.

// ---------------------------------------------------------------- requests

/// `POST /api/v1/orders`. Unknown fields are rejected rather than ignored, so
/// a client's typo (`"quantitiy"`) fails loudly instead of being dropped.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderBody {
    /// 1 to 50 lines, each sku at most once.
    #[schema(min_items = 1, max_items = 50)]
    pub items: Vec<ItemBody>,
    pub payment: PaymentBody,
    pub shipping_address: AddressBody,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemBody {
    // Plain strings and integers: the newtypes are applied by `validation`
    // so that a bad sku is `invalid_sku`, not a generic `invalid_json`.
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = "^[A-Z0-9-]{1,32}$",
        example = "SKU-0001"
    )]
    pub sku: String,
    #[schema(minimum = 1, maximum = 100)]
    pub quantity: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentBody {
    /// The PSP's token for the card: 1 to 64 characters, not blank, without
    /// control characters.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$",
        example = "tok_visa"
    )]
    pub card_token: String,
}

// The card token stands for a card; keep it out of logs.
impl fmt::Debug for PaymentBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaymentBody")
            .field("card_token", &"<redacted>")
            .finish()
    }
}

/// Free-text fields count characters, not bytes, and must not contain
/// control characters; the required ones must not be blank.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressBody {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub line1: String,
    /// Optional: absent, `null` and `""` all mean "no second line".
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub line2: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub city: String,
    #[schema(
        min_length = 1,
        max_length = 20,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    #[schema(min_length = 2, max_length = 2, pattern = "^[A-Z]{2}$", example = "DE")]
    pub country: String,
}

/// `PUT /api/v1/admin/products/{sku}/stock`: how many units to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestockBody {
    /// 1 to 1,000,000 units.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub add: i64,
}

// --------------------------------------------------------------- responses

/// An upstream message that does not fit the public contract.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MalformedResponse(String);

impl MalformedResponse {
    fn new(problem: impl Into<String>) -> Self {
        Self(problem.into())
    }
}

#[derive(Debug, PartialEq, Serialize, ToSchema)]
pub struct MoneyJson {
    /// The amount in the currency's minor unit (cents for EUR).
    pub amount_minor: i64,
    /// ISO 4217, such as `EUR`.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: String,
}

impl From<Money> for MoneyJson {
    fn from(money: Money) -> Self {
        Self {
            amount_minor: money.amount_minor,
            currency: money.currency.to_string(),
        }
    }
}

/// A required money field, checked for a well-formed currency.
fn money(field: &str, money: Option<&common::Money>) -> Result<Money, MalformedResponse> {
    let money = money.ok_or_else(|| MalformedResponse::new(format!("{field} is missing")))?;
    Money::try_from(money).map_err(|e| MalformedResponse::new(format!("{field}: {e}")))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductJson {
    #[schema(pattern = "^[A-Z0-9-]{1,32}$", example = "SKU-0001")]
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: MoneyJson,
    /// Units in stock and not reserved by an order.
    pub available: i64,
}

impl TryFrom<inventory::Product> for ProductJson {
    type Error = MalformedResponse;

    fn try_from(product: inventory::Product) -> Result<Self, Self::Error> {
        let price = money(&format!("price of {}", product.sku), product.price.as_ref())?;
        Ok(Self {
            sku: product.sku,
            name: product.name,
            description: product.description,
            price: price.into(),
            available: product.available,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductListJson {
    pub products: Vec<ProductJson>,
}

/// The answer to `POST /api/v1/orders`: the order exists, the saga decides
/// the rest; the client follows `Location` to watch it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderAcceptedJson {
    #[schema(value_type = String, format = "uuid")]
    pub order_id: OrderId,
    pub status: OrderStatus,
}

/// Where an order's checkout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Placed; stock, payment and shipping are being arranged.
    Pending,
    /// Paid and handed to shipping.
    Confirmed,
    /// Failed part way; what was done is being undone.
    Cancelling,
    /// Cancelled; `cancellation_reason` says why.
    Cancelled,
}

impl TryFrom<&order::Order> for OrderAcceptedJson {
    type Error = MalformedResponse;

    fn try_from(order: &order::Order) -> Result<Self, Self::Error> {
        Ok(Self {
            order_id: order_id(&order.order_id)?,
            status: status_name(order.status)?,
        })
    }
}

/// `GET /api/v1/orders`: the query string.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListOrdersQuery {
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

/// `GET /api/v1/orders`: one page of the caller's orders, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderListJson {
    pub orders: Vec<OrderJson>,
    /// `null` on the last page.
    #[schema(required = true)]
    pub next_page_token: Option<String>,
}

impl TryFrom<order::ListOrdersResponse> for OrderListJson {
    type Error = MalformedResponse;

    fn try_from(page: order::ListOrdersResponse) -> Result<Self, Self::Error> {
        Ok(Self {
            orders: page
                .orders
                .into_iter()
                .map(OrderJson::try_from)
                .collect::<Result<_, _>>()?,
            next_page_token: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderJson {
    #[schema(value_type = String, format = "uuid")]
    pub order_id: OrderId,
    pub status: OrderStatus,
    /// `null` unless the order is cancelled (or being cancelled).
    #[schema(required = true)]
    pub cancellation_reason: Option<String>,
    pub items: Vec<OrderItemJson>,
    pub total: MoneyJson,
    pub shipping_address: AddressJson,
    /// RFC 3339 in UTC with microseconds.
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// `null` until the order is confirmed or cancelled.
    #[schema(required = true, format = DateTime)]
    pub completed_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItemJson {
    #[schema(pattern = "^[A-Z0-9-]{1,32}$", example = "SKU-0001")]
    pub sku: String,
    #[schema(minimum = 1, maximum = 100)]
    pub quantity: i64,
    pub unit_price: MoneyJson,
    pub line_total: MoneyJson,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AddressJson {
    pub name: String,
    pub line1: String,
    /// `""` when there is no second line.
    pub line2: String,
    pub city: String,
    pub postal_code: String,
    #[schema(pattern = "^[A-Z]{2}$", example = "DE")]
    pub country: String,
}

impl From<common::Address> for AddressJson {
    fn from(address: common::Address) -> Self {
        Self {
            name: address.name,
            line1: address.line1,
            line2: address.line2,
            city: address.city,
            postal_code: address.postal_code,
            country: address.country,
        }
    }
}

impl TryFrom<order::Order> for OrderJson {
    type Error = MalformedResponse;

    fn try_from(order: order::Order) -> Result<Self, Self::Error> {
        let items = order
            .lines
            .into_iter()
            .map(|line| {
                let unit_price = money(
                    &format!("unit price of {}", line.sku),
                    line.unit_price.as_ref(),
                )?;
                // The line total is derived here rather than sent, so it can
                // never disagree with the unit price and quantity.
                let line_total = Quantity::new(line.quantity)
                    .ok()
                    .and_then(|quantity| unit_price.times(quantity))
                    .ok_or_else(|| {
                        MalformedResponse::new(format!(
                            "line {} has an impossible quantity {}",
                            line.sku, line.quantity
                        ))
                    })?;
                Ok(OrderItemJson {
                    sku: line.sku,
                    quantity: line.quantity,
                    unit_price: unit_price.into(),
                    line_total: line_total.into(),
                })
            })
            .collect::<Result<_, MalformedResponse>>()?;
        let address = order
            .shipping_address
            .ok_or_else(|| MalformedResponse::new("shipping address is missing"))?;
        Ok(Self {
            order_id: order_id(&order.order_id)?,
            status: status_name(order.status)?,
            // proto3 has no null; the empty string means "not cancelled".
            cancellation_reason: Some(order.cancellation_reason).filter(|r| !r.is_empty()),
            items,
            total: money("total", order.total.as_ref())?.into(),
            shipping_address: address.into(),
            created_at: timestamp(order.created_at_micros)?
                .ok_or_else(|| MalformedResponse::new("created_at is unset"))?,
            updated_at: timestamp(order.updated_at_micros)?
                .ok_or_else(|| MalformedResponse::new("updated_at is unset"))?,
            completed_at: timestamp(order.completed_at_micros)?,
        })
    }
}

/// `GET /api/v1/orders/{id}/timeline`: every saga step of the order so far,
/// in the order they happened, with where the order stands now.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineJson {
    #[schema(value_type = String, format = "uuid")]
    pub order_id: OrderId,
    pub status: OrderStatus,
    /// `null` unless the order is cancelled (or being cancelled).
    #[schema(required = true)]
    pub cancellation_reason: Option<String>,
    /// When the order is cancelled `timed_out` if it is still pending.
    #[schema(format = DateTime)]
    pub deadline_at: String,
    pub steps: Vec<TimelineStepJson>,
}

/// One saga step: an event a service published about the order.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineStepJson {
    /// Increases with every step recorded (across all orders): a stream
    /// resumes after the last one it sent.
    pub sequence: i64,
    #[schema(format = "uuid")]
    pub event_id: String,
    /// `OrderPlaced`, `StockReserved`, `StockRejected`, `StockReleased`,
    /// `PaymentCaptured`, `PaymentDeclined`, `PaymentRefunded`,
    /// `PaymentVoided`, `ShipmentScheduled`, `ShipmentFailed`,
    /// `OrderConfirmed` or `OrderCancelled`.
    #[schema(example = "StockReserved")]
    pub event: String,
    /// The service that did it: `order`, `inventory`, `payment` or `shipping`.
    #[schema(example = "inventory")]
    pub service: String,
    /// By the clock of the service that did it.
    #[schema(format = DateTime)]
    pub occurred_at: String,
    /// A reason, an amount or a carrier; `""` when the event says no more
    /// than its name.
    pub detail: String,
    /// True when the step undoes an earlier one (stock released, payment
    /// refunded or voided).
    pub compensation: bool,
    /// The trace it happened in (32 hex digits); `null` when tracing was off.
    /// In Jaeger, the trace's spans of this step carry the event id as
    /// `messaging.message.id`.
    #[schema(required = true, pattern = "^[0-9a-f]{32}$")]
    pub trace_id: Option<String>,
}

impl TryFrom<order::OrderTimeline> for TimelineJson {
    type Error = MalformedResponse;

    fn try_from(timeline: order::OrderTimeline) -> Result<Self, Self::Error> {
        Ok(Self {
            order_id: order_id(&timeline.order_id)?,
            status: status_name(timeline.status)?,
            cancellation_reason: Some(timeline.cancellation_reason).filter(|r| !r.is_empty()),
            deadline_at: timestamp(timeline.deadline_at_micros)?
                .ok_or_else(|| MalformedResponse::new("deadline_at is unset"))?,
            steps: timeline
                .entries
                .into_iter()
                .map(TimelineStepJson::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl TryFrom<order::TimelineEntry> for TimelineStepJson {
    type Error = MalformedResponse;

    fn try_from(entry: order::TimelineEntry) -> Result<Self, Self::Error> {
        Ok(Self {
            sequence: entry.sequence,
            event_id: entry.event_id,
            event: entry.event_type,
            service: entry.service,
            occurred_at: timestamp(entry.occurred_at_micros)?
                .ok_or_else(|| MalformedResponse::new("occurred_at is unset"))?,
            detail: entry.detail,
            compensation: entry.compensation,
            trace_id: Some(entry.trace_id).filter(|t| !t.is_empty()),
        })
    }
}

/// `POST /api/v1/admin/order-timelines/rebuild`: what the rebuild did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RebuildJson {
    /// Events read from the four topics, from their beginning.
    pub events_read: i64,
    /// Timeline steps written from them (events of unknown orders are
    /// skipped).
    pub steps_written: i64,
    pub duration_ms: i64,
}

impl From<order::RebuildOrderTimelinesResponse> for RebuildJson {
    fn from(rebuilt: order::RebuildOrderTimelinesResponse) -> Self {
        Self {
            events_read: rebuilt.events_read,
            steps_written: rebuilt.entries_written,
            duration_ms: rebuilt.duration_millis,
        }
    }
}

fn order_id(raw: &str) -> Result<OrderId, MalformedResponse> {
    raw.parse()
        .map_err(|e| MalformedResponse::new(format!("order id: {e}")))
}

/// The status as the API spells it. `UNSPECIFIED` (or a value added to the
/// proto later) is not something a client could act on.
fn status_name(raw: i32) -> Result<OrderStatus, MalformedResponse> {
    match order::OrderStatus::try_from(raw) {
        Ok(order::OrderStatus::Pending) => Ok(OrderStatus::Pending),
        Ok(order::OrderStatus::Confirmed) => Ok(OrderStatus::Confirmed),
        Ok(order::OrderStatus::Cancelling) => Ok(OrderStatus::Cancelling),
        Ok(order::OrderStatus::Cancelled) => Ok(OrderStatus::Cancelled),
        Ok(order::OrderStatus::Unspecified) | Err(_) => Err(MalformedResponse::new(format!(
            "order status {raw} is not known"
        ))),
    }
}

/// Unix microseconds as RFC 3339 in UTC with microseconds
/// (`2025-01-31T09:30:00.123456Z`); 0 is proto3's "unset" and becomes `None`.
fn timestamp(micros: i64) -> Result<Option<String>, MalformedResponse> {
    if micros == 0 {
        return Ok(None);
    }
    let at = DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| MalformedResponse::new(format!("timestamp {micros} is out of range")))?;
    Ok(Some(at.to_rfc3339_opts(SecondsFormat::Micros, true)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shipshape_types::ShippingAddress;

    const ORDER_ID: &str = "0193b6d2-7c1e-7a3b-9f00-1234567890ab";

    fn eur(amount_minor: i64) -> Option<common::Money> {
        Some(common::Money {
            amount_minor,
            currency: "EUR".into(),
        })
    }

    fn order() -> order::Order {
        order::Order {
            order_id: ORDER_ID.into(),
            customer_id: "guest".into(),
            status: order::OrderStatus::Pending as i32,
            cancellation_reason: String::new(),
            lines: vec![order::OrderLine {
                sku: "SKU-0001".into(),
                quantity: 2,
                unit_price: eur(1999),
            }],
            total: eur(3998),
            shipping_address: Some(ShippingAddress::example().into()),
            // 2025-01-31T09:30:00.000042Z
            created_at_micros: 1_738_315_800_000_042,
            updated_at_micros: 1_738_315_801_500_000,
            completed_at_micros: 0,
        }
    }

    #[test]
    fn a_pending_order_serializes_with_nulls_and_microsecond_timestamps() {
        let json = serde_json::to_value(OrderJson::try_from(order()).expect("valid order"))
            .expect("serializable");
        assert_eq!(
            json,
            json!({
                "order_id": ORDER_ID,
                "status": "PENDING",
                "cancellation_reason": null,
                "items": [{
                    "sku": "SKU-0001",
                    "quantity": 2,
                    "unit_price": {"amount_minor": 1999, "currency": "EUR"},
                    "line_total": {"amount_minor": 3998, "currency": "EUR"},
                }],
                "total": {"amount_minor": 3998, "currency": "EUR"},
                "shipping_address": {
                    "name": "Ada Lovelace",
                    "line1": "1 Main St",
                    "line2": "",
                    "city": "Berlin",
                    "postal_code": "10115",
                    "country": "DE",
                },
                "created_at": "2025-01-31T09:30:00.000042Z",
                "updated_at": "2025-01-31T09:30:01.500000Z",
                "completed_at": null,
            })
        );
    }

    #[test]
    fn a_cancelled_order_has_its_reason_and_completion_time() {
        let mut order = order();
        order.status = order::OrderStatus::Cancelled as i32;
        order.cancellation_reason = "payment_declined".into();
        order.completed_at_micros = 1_738_315_802_000_000;
        let json = serde_json::to_value(OrderJson::try_from(order).expect("valid order"))
            .expect("serializable");
        assert_eq!(json["status"], "CANCELLED");
        assert_eq!(json["cancellation_reason"], "payment_declined");
        assert_eq!(json["completed_at"], "2025-01-31T09:30:02.000000Z");
    }

    #[test]
    fn orders_the_contract_cannot_express_are_malformed() {
        let broken: [fn(&mut order::Order); 6] = [
            |o| o.status = order::OrderStatus::Unspecified as i32,
            |o| o.status = 42,
            |o| o.order_id = "not-a-uuid".into(),
            |o| o.total = None,
            |o| o.lines[0].unit_price = None,
            |o| o.created_at_micros = 0,
        ];
        for (i, breaks) in broken.into_iter().enumerate() {
            let mut order = order();
            breaks(&mut order);
            assert!(OrderJson::try_from(order).is_err(), "case {i}");
        }
    }

    #[test]
    fn accepted_order_has_id_and_current_status() {
        let mut order = order();
        order.status = order::OrderStatus::Confirmed as i32;
        let json = serde_json::to_value(OrderAcceptedJson::try_from(&order).expect("valid"))
            .expect("serializable");
        assert_eq!(json, json!({"order_id": ORDER_ID, "status": "CONFIRMED"}));
    }

    #[test]
    fn product_needs_a_price() {
        let product = inventory::Product {
            sku: "SKU-0001".into(),
            name: "Teapot".into(),
            description: "Short and stout".into(),
            price: eur(1999),
            available: 7,
        };
        let json = serde_json::to_value(ProductJson::try_from(product.clone()).expect("valid"))
            .expect("serializable");
        assert_eq!(
            json["price"],
            json!({"amount_minor": 1999, "currency": "EUR"})
        );
        assert_eq!(json["available"], 7);

        let unpriced = inventory::Product {
            price: None,
            ..product
        };
        assert!(ProductJson::try_from(unpriced).is_err());
    }

    #[test]
    fn payment_debug_output_hides_the_card_token() {
        let payment = PaymentBody {
            card_token: "tok_visa".into(),
        };
        assert!(!format!("{payment:?}").contains("tok_visa"));
    }
}
