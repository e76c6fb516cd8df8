//! The shop's pages as HTML, from the API's own answers: plain functions
//! of what they show, so they are tested without a server. Every value is
//! escaped by `maud`; the little script (`shop.js`) adds the cart, the
//! checkout's submission, live availability and the live timeline.

use chrono::DateTime;
use maud::{DOCTYPE, Markup, html};
use shipshape_types::{Currency, Money};

use crate::api::{
    MoneyJson, OrderJson, OrderListJson, OrderStatus, ProductJson, TimelineJson, TimelineStepJson,
};
use crate::web::operations::{FaultsJson, OperationsJson};
use crate::web::session::{DEMO_ACCOUNTS, DemoAccount};

/// Who is looking at a page.
#[derive(Clone, Debug, Default)]
pub struct Viewer {
    /// The signed-in caller's subject; `None` when signed out.
    pub subject: Option<String>,
    pub admin: bool,
}

/// The test cards of the payment provider simulator, as the checkout
/// offers them: token, and what happens.
pub const TEST_CARDS: [(&str, &str); 4] = [
    ("tok_visa", "Approves the payment"),
    ("tok_decline", "Declines the payment"),
    ("tok_slow", "Approves after a delay"),
    ("tok_unavailable", "Never answered: the order times out"),
];

/// Every page: the head, the navigation and `main`.
fn layout(title: &str, viewer: &Viewer, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Shipshape" }
                link rel="stylesheet" href="/static/shop.css";
                script src="/static/shop.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        a.brand href="/" { "Shipshape" }
                        a href="/" { "Shop" }
                        a href="/cart" { "Cart (" span #cart-count { "0" } ")" }
                        @if viewer.subject.is_some() {
                            a href="/orders" { "My orders" }
                        }
                        @if viewer.admin {
                            a href="/operator" { "Operator" }
                        }
                        span.who {
                            @if let Some(subject) = &viewer.subject {
                                "Signed in as " strong #signed-in-as { (subject) }
                                @if viewer.admin { " (operator)" }
                                " "
                                button #sign-out type="button" { "Sign out" }
                            } @else {
                                a #sign-in-link href="/sign-in" { "Sign in" }
                            }
                        }
                    }
                }
                main #main { (main) }
            }
        }
    }
}

/// `49.80 EUR`.
fn price(money: &MoneyJson) -> String {
    Currency::parse(&money.currency)
        .map(|currency| Money::new(money.amount_minor, currency).to_string())
        .unwrap_or_else(|_| format!("{} {}", money.amount_minor, money.currency))
}

fn availability(available: i64) -> String {
    match available {
        0 => "Out of stock".to_owned(),
        n => format!("{n} in stock"),
    }
}

/// `/`: the catalog. `stale` when inventory is down and this is the last
/// good catalog.
pub fn catalog(viewer: &Viewer, products: &[ProductJson], stale: bool) -> Markup {
    layout(
        "Shop",
        viewer,
        html! {
            h1 { "Shop" }
            @if stale {
                p.notice role="status" { "Availability may be out of date: the inventory service is not answering." }
            }
            ul.products {
                @for product in products {
                    li.product data-sku=(product.sku) {
                        h2 { a href={ "/products/" (product.sku) } { (product.name) } }
                        p.description { (product.description) }
                        p.price { (price(&product.price)) }
                        p.available data-sku=(product.sku) { (availability(product.available)) }
                        button.add-to-cart type="button" data-sku=(product.sku)
                            disabled[product.available == 0] {
                            "Add to cart"
                        }
                    }
                }
            }
        },
    )
}

/// `/products/{sku}`.
pub fn product(viewer: &Viewer, product: &ProductJson) -> Markup {
    layout(
        &product.name,
        viewer,
        html! {
            article.product data-sku=(product.sku) {
                h1 { (product.name) }
                p.description { (product.description) }
                p.price { (price(&product.price)) }
                p.available data-sku=(product.sku) { (availability(product.available)) }
                label for="quantity" { "Quantity" }
                input #quantity type="number" min="1" max="100" value="1" inputmode="numeric";
                button.add-to-cart type="button" data-sku=(product.sku) data-quantity-from="quantity"
                    disabled[product.available == 0] {
                    "Add to cart"
                }
                p { a href="/" { "Back to the shop" } }
            }
        },
    )
}

/// `/cart`: filled in by the script from the cart the browser keeps.
pub fn cart(viewer: &Viewer) -> Markup {
    layout(
        "Cart",
        viewer,
        html! {
            h1 { "Cart" }
            div #cart data-empty="Your cart is empty." {
                noscript { "The cart needs JavaScript." }
            }
            p { a.button #to-checkout href="/checkout" { "Checkout" } }
        },
    )
}

/// `/checkout`: the shipping address and a test card. `idempotency_key` is
/// sent with the order, so a second submission of this form is the same
/// order, never another one.
pub fn checkout(viewer: &Viewer, idempotency_key: &str) -> Markup {
    let field = |id: &str, label: &str, autocomplete: &str, required: bool| {
        html! {
            p.field {
                label for=(id) { (label) @if !required { " (optional)" } }
                input id=(id) name=(id) type="text" autocomplete=(autocomplete) required[required];
            }
        }
    };
    layout(
        "Checkout",
        viewer,
        html! {
            h1 { "Checkout" }
            div #checkout-summary {}
            form #checkout-form data-idempotency-key=(idempotency_key) novalidate {
                fieldset {
                    legend { "Shipping address" }
                    (field("name", "Name", "name", true))
                    (field("line1", "Address", "address-line1", true))
                    (field("line2", "Address line 2", "address-line2", false))
                    (field("city", "City", "address-level2", true))
                    (field("postal_code", "Postal code", "postal-code", true))
                    p.field {
                        label for="country" { "Country (two letters, such as DE)" }
                        input #country name="country" type="text" autocomplete="country"
                            maxlength="2" required value="DE";
                    }
                }
                fieldset {
                    legend { "Payment: a test card of the payment simulator" }
                    p.field {
                        label for="card" { "Card" }
                        select #card name="card" {
                            @for (token, what) in TEST_CARDS {
                                option value=(token) { (token) ": " (what) }
                            }
                        }
                    }
                }
                p.error #form-error role="alert" {}
                button #place-order type="submit" { "Place order" }
            }
        },
    )
}

/// `/orders`: one page of the caller's orders, newest first.
pub fn orders(viewer: &Viewer, page: &OrderListJson) -> Markup {
    layout(
        "My orders",
        viewer,
        html! {
            h1 { "My orders" }
            @if page.orders.is_empty() {
                p { "No orders yet. " a href="/" { "Go shopping" } }
            } @else {
                table.orders {
                    caption { "Newest first" }
                    thead { tr { th scope="col" { "Order" } th scope="col" { "Placed" } th scope="col" { "Total" } th scope="col" { "Status" } } }
                    tbody {
                        @for order in &page.orders {
                            tr {
                                td { a href={ "/orders/" (order.order_id) } { (short_id(&order.order_id.to_string())) } }
                                td { time datetime=(order.created_at) { (order.created_at) } }
                                td { (price(&order.total)) }
                                td { (status_badge(order.status, order.cancellation_reason.as_deref())) }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = &page.next_page_token {
                p { a #next-page href={ "/orders?page_token=" (next) } { "Older orders" } }
            }
        },
    )
}

/// The last 8 hex digits of an order id: its random part (the first ones
/// of a UUIDv7 are its time, the same for orders placed together).
fn short_id(id: &str) -> &str {
    id.get(id.len().saturating_sub(8)..).unwrap_or(id)
}

fn status_name(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Pending => "PENDING",
        OrderStatus::Confirmed => "CONFIRMED",
        OrderStatus::Cancelling => "CANCELLING",
        OrderStatus::Cancelled => "CANCELLED",
    }
}

fn status_badge(status: OrderStatus, reason: Option<&str>) -> Markup {
    let name = status_name(status);
    html! {
        span.status data-status=(name) { (name) @if let Some(reason) = reason { " · " (reason) } }
    }
}

/// `/orders/{id}`: the order and its saga, step by step; the script keeps
/// the steps live.
pub fn order(
    viewer: &Viewer,
    order: &OrderJson,
    timeline: &TimelineJson,
    jaeger_ui: Option<&str>,
) -> Markup {
    let id = order.order_id.to_string();
    layout(
        &format!("Order {}", short_id(&id)),
        viewer,
        html! {
            h1 { "Order " (short_id(&id)) }
            section.order #order data-order-id=(id) aria-labelledby="summary" {
                h2 #summary { "Summary" }
                table.items {
                    thead { tr { th scope="col" { "Item" } th scope="col" { "Quantity" } th scope="col" { "Price" } } }
                    tbody {
                        @for item in &order.items {
                            tr { td { a href={ "/products/" (item.sku) } { (item.sku) } } td { (item.quantity) } td { (price(&item.line_total)) } }
                        }
                    }
                    tfoot { tr { th scope="row" colspan="2" { "Total" } td #order-total { (price(&order.total)) } } }
                }
                p { "Ship to " (order.shipping_address.name) ", " (order.shipping_address.city) ", " (order.shipping_address.country) }
            }
            section.saga aria-labelledby="saga-title" {
                h2 #saga-title { "The checkout saga" }
                div #timeline aria-live="polite" { (steps(timeline, jaeger_ui)) }
            }
        },
    )
}

/// What a step did, for people.
fn step_title(event: &str) -> &str {
    match event {
        "OrderPlaced" => "Order placed",
        "StockReserved" => "Stock reserved",
        "StockRejected" => "Stock refused",
        "StockReleased" => "Stock released",
        "PaymentCaptured" => "Payment captured",
        "PaymentDeclined" => "Payment declined",
        "PaymentRefunded" => "Payment refunded",
        "PaymentVoided" => "Payment voided",
        "ShipmentScheduled" => "Shipment scheduled",
        "ShipmentFailed" => "Shipment failed",
        "OrderConfirmed" => "Order confirmed",
        "OrderCancelled" => "Order cancelled",
        other => other,
    }
}

/// The status and the steps of a timeline: on the order page, and alone
/// (`/orders/{id}/steps`) for the script to put in its place when the
/// stream says the timeline grew.
pub fn steps(timeline: &TimelineJson, jaeger_ui: Option<&str>) -> Markup {
    let status = status_name(timeline.status);
    html! {
        p.current {
            "Status: " strong #order-status data-status=(status) { (status) }
            @if let Some(reason) = &timeline.cancellation_reason {
                " · reason " strong #cancellation-reason { (reason) }
            }
            @if matches!(timeline.status, OrderStatus::Pending) {
                " · cancelled " code { "timed_out" } " if still pending at "
                time datetime=(timeline.deadline_at) { (timeline.deadline_at) }
            }
        }
        ol.steps {
            @for step in &timeline.steps {
                (step_item(step, since(&timeline.steps, step), jaeger_ui))
            }
        }
    }
}

/// How long after the first step `step` happened: `+145 ms`, `+2.3 s`;
/// empty for the first.
fn since(steps: &[TimelineStepJson], step: &TimelineStepJson) -> String {
    let at = |s: &TimelineStepJson| DateTime::parse_from_rfc3339(&s.occurred_at).ok();
    let (Some(first), Some(this)) = (steps.first().and_then(at), at(step)) else {
        return String::new();
    };
    match (this - first).num_milliseconds() {
        0 => String::new(),
        // Negative when the services' clocks disagree by more than the gap.
        ms if ms.abs() < 1000 => format!("{ms:+} ms"),
        ms => format!("{:+.1} s", ms as f64 / 1000.0),
    }
}

/// `21:34:01.376` of an RFC 3339 time in UTC.
fn clock(rfc3339: &str) -> &str {
    rfc3339.get(11..23).unwrap_or(rfc3339)
}

fn step_item(step: &TimelineStepJson, since: String, jaeger_ui: Option<&str>) -> Markup {
    html! {
        li.step.compensation[step.compensation] data-event=(step.event) data-event-id=(step.event_id) {
            time datetime=(step.occurred_at) title=(step.occurred_at) { (clock(&step.occurred_at)) }
            " "
            span.since { (since) }
            " "
            span.service { (step.service) }
            " "
            strong.title { (step_title(&step.event)) }
            @if step.compensation { " " span.tag { "compensation" } }
            @if !step.detail.is_empty() { " " span.detail { (step.detail) } }
            @if let (Some(ui), Some(trace)) = (jaeger_ui, &step.trace_id) {
                " "
                a.trace href={ (ui.trim_end_matches('/')) "/trace/" (trace) "?uiFind=" (step.event_id) }
                    target="_blank" rel="noopener" { "trace" }
            }
        }
    }
}

/// `/sign-in`: the demo accounts, or why there are none.
pub fn sign_in(viewer: &Viewer, demo: bool, next: &str) -> Markup {
    layout(
        "Sign in",
        viewer,
        html! {
            h1 { "Sign in" }
            @if demo {
                p { "A demo: choose who you are. Each customer sees only their own orders." }
                ul.accounts data-next=(next) {
                    @for DemoAccount { subject, about, .. } in DEMO_ACCOUNTS {
                        li {
                            button.sign-in type="button" data-customer=(subject) { "Sign in as " (subject) }
                            " " (about)
                        }
                    }
                }
                p.error #form-error role="alert" {}
            } @else {
                p { "The demo sign-in is switched off here (" code { "DEMO_SIGN_IN" } "). "
                    "Sign in through your identity provider and call the API with its token." }
            }
        },
    )
}

/// `/operator`: the figures from the services' metrics, refreshed by the
/// script, and the PSP simulator's faults as a form, so a person can break
/// payment and watch the sagas compensate. `faults` is `None` without a
/// simulator configured, `Err` when it did not answer.
pub fn operator(
    viewer: &Viewer,
    figures: &OperationsJson,
    faults: Option<&Result<FaultsJson, String>>,
) -> Markup {
    let number = |value: Option<f64>, decimals: usize| {
        value.map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
    };
    layout(
        "Operator",
        viewer,
        html! {
            h1 { "Operator" }
            section aria-labelledby="figures-title" #operations {
                h2 #figures-title { "Checkouts" }
                dl.figures {
                    dt { "Checkouts per second" } dd #checkouts-per-sec { (number(figures.checkouts_per_sec, 1)) }
                    dt { "p99 response time (ms)" } dd #checkout-p99 { (number(figures.checkout_p99_ms, 0)) }
                    dt { "Window (s)" } dd #window { (number(figures.window_secs, 1)) }
                }
                h3 { "Saga outcomes in the window" }
                ul #outcomes {
                    @for (outcome, count) in &figures.outcomes {
                        li data-outcome=(outcome) { (outcome) ": " (count) }
                    }
                }
                h2 { "Breakers and bulkheads" }
                table.edges {
                    thead { tr { th scope="col" { "Process" } th scope="col" { "Calls to" } th scope="col" { "Breaker" } th scope="col" { "Bulkhead in use" } } }
                    tbody #edges {
                        @for edge in &figures.edges {
                            tr data-process=(edge.process) data-downstream=(edge.downstream) {
                                td { (edge.process) } td { (edge.downstream) }
                                td.breaker data-breaker=(edge.breaker) { (edge.breaker) }
                                td { (edge.bulkhead_in_use) }
                            }
                        }
                    }
                }
                @for process in &figures.processes {
                    @if let Some(error) = &process.error {
                        p.error { (process.name) " could not be read: " (error) }
                    }
                }
                @if figures.processes.is_empty() {
                    p.notice { "No process to read: set " code { "OPERATOR_METRICS_URLS" } " on the gateway." }
                }
            }
            section aria-labelledby="faults-title" {
                h2 #faults-title { "Break payment" }
                @match faults {
                    None => p.notice { "No PSP simulator to break: set " code { "PSP_ADMIN_URL" } " on the gateway." },
                    Some(Err(error)) => p.error { "The PSP simulator did not answer: " (error) },
                    Some(Ok(faults)) => {
                        p { "Faults the payment provider simulator injects into every payment call; the breaker on payment's calls to it opens, and orders are cancelled and compensated." }
                        form #faults-form novalidate {
                            p.field {
                                label for="latency_ms" { "Added latency (ms, 0 to 60000)" }
                                input #latency_ms name="latency_ms" type="number" min="0" max="60000" step="1" value=(faults.latency_ms);
                            }
                            p.field {
                                label for="error_rate" { "Error rate (0 to 1)" }
                                input #error_rate name="error_rate" type="number" min="0" max="1" step="0.05" value=(faults.error_rate);
                            }
                            p.field {
                                label for="lose_response_rate" { "Lost replies rate (0 to 1): charged, answer lost" }
                                input #lose_response_rate name="lose_response_rate" type="number" min="0" max="1" step="0.05" value=(faults.lose_response_rate);
                            }
                            p.error #form-error role="alert" {}
                            p.note #faults-status role="status" {}
                            button #set-faults type="submit" { "Set faults" }
                        }
                    }
                }
            }
        },
    )
}

/// A page for an error: what the API said, with the status it said it with.
pub fn problem(viewer: &Viewer, title: &str, message: &str) -> Markup {
    layout(
        title,
        viewer,
        html! {
            h1 { (title) }
            p.error #problem { (message) }
            p { a href="/" { "Back to the shop" } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AddressJson, OrderItemJson};

    fn eur(amount_minor: i64) -> MoneyJson {
        MoneyJson {
            amount_minor,
            currency: "EUR".to_owned(),
        }
    }

    fn alice() -> Viewer {
        Viewer {
            subject: Some("alice".to_owned()),
            admin: false,
        }
    }

    fn product(sku: &str, name: &str, available: i64) -> ProductJson {
        ProductJson {
            sku: sku.to_owned(),
            name: name.to_owned(),
            description: "d".to_owned(),
            price: eur(2490),
            available,
        }
    }

    #[test]
    fn the_catalog_shows_prices_stock_and_escapes_what_it_is_given() {
        let page = catalog(
            &Viewer::default(),
            &[
                product("SKU-0001", "<script>alert(1)</script>", 3),
                product("SKU-0002", "Filter", 0),
            ],
            true,
        )
        .into_string();
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!page.contains("<script>alert(1)"));
        assert!(page.contains("24.90 EUR"));
        assert!(page.contains("3 in stock"));
        assert!(page.contains("Out of stock"));
        assert!(page.contains(r#"data-sku="SKU-0002" disabled"#));
        assert!(page.contains("may be out of date"));
        assert!(page.contains(r#"id="sign-in-link""#));
    }

    #[test]
    fn every_checkout_input_has_a_label() {
        let page = checkout(&alice(), "key-1").into_string();
        for id in [
            "name",
            "line1",
            "line2",
            "city",
            "postal_code",
            "country",
            "card",
        ] {
            assert!(page.contains(&format!(r#"for="{id}""#)), "{id}");
            assert!(page.contains(&format!(r#"id="{id}""#)), "{id}");
        }
        assert!(page.contains(r#"data-idempotency-key="key-1""#));
        for (token, _) in TEST_CARDS {
            assert!(page.contains(&format!(r#"value="{token}""#)));
        }
    }

    fn step(event: &str, compensation: bool) -> TimelineStepJson {
        TimelineStepJson {
            sequence: 1,
            event_id: "0193b6d2-7c1e-7a3b-9f00-1234567890ab".to_owned(),
            event: event.to_owned(),
            service: "inventory".to_owned(),
            occurred_at: "2026-12-07T10:00:00.000000Z".to_owned(),
            detail: String::new(),
            compensation,
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned()),
        }
    }

    fn timeline(status: OrderStatus, steps: Vec<TimelineStepJson>) -> TimelineJson {
        TimelineJson {
            order_id: "0193b6d2-7c1e-7a3b-9f00-1234567890ab"
                .parse()
                .expect("order id"),
            status,
            cancellation_reason: (status == OrderStatus::Cancelled)
                .then(|| "payment_declined".to_owned()),
            deadline_at: "2026-12-07T10:00:30.000000Z".to_owned(),
            steps,
        }
    }

    #[test]
    fn steps_name_what_happened_mark_compensations_and_link_their_trace() {
        let cancelled = timeline(
            OrderStatus::Cancelled,
            vec![step("StockReserved", false), step("StockReleased", true)],
        );
        let html = steps(&cancelled, Some("http://localhost:16686/")).into_string();
        assert!(html.contains("Stock reserved"));
        assert!(html.contains(r#"class="step compensation" data-event="StockReleased""#));
        assert!(html.contains(r#"data-status="CANCELLED""#));
        assert!(html.contains("payment_declined"));
        assert!(html.contains(
            "http://localhost:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736?uiFind=0193b6d2-7c1e-7a3b-9f00-1234567890ab"
        ));
        assert!(!steps(&cancelled, None).into_string().contains("/trace/"));
        let pending = steps(&timeline(OrderStatus::Pending, vec![]), None).into_string();
        assert!(
            pending.contains("timed_out"),
            "a pending order shows its deadline"
        );
    }

    #[test]
    fn steps_show_their_clock_time_and_how_long_after_the_first_they_came() {
        let mut later = step("StockReserved", false);
        later.occurred_at = "2026-12-07T10:00:00.145000Z".to_owned();
        let mut last = step("OrderConfirmed", false);
        last.occurred_at = "2026-12-07T10:00:02.300000Z".to_owned();
        let steps = vec![step("OrderPlaced", false), later, last];
        assert_eq!(since(&steps, &steps[0]), "");
        assert_eq!(since(&steps, &steps[1]), "+145 ms");
        assert_eq!(since(&steps, &steps[2]), "+2.3 s");
        assert_eq!(clock(&steps[2].occurred_at), "10:00:02.300");
    }

    #[test]
    fn the_order_page_shows_items_total_and_the_saga() {
        let order = OrderJson {
            order_id: "0193b6d2-7c1e-7a3b-9f00-1234567890ab"
                .parse()
                .expect("order id"),
            status: OrderStatus::Confirmed,
            cancellation_reason: None,
            items: vec![OrderItemJson {
                sku: "SKU-0001".to_owned(),
                quantity: 2,
                unit_price: eur(2490),
                line_total: eur(4980),
            }],
            total: eur(4980),
            shipping_address: AddressJson {
                name: "Ada".to_owned(),
                line1: "1 Main St".to_owned(),
                line2: String::new(),
                city: "Berlin".to_owned(),
                postal_code: "10115".to_owned(),
                country: "DE".to_owned(),
            },
            created_at: "2026-12-07T10:00:00.000000Z".to_owned(),
            updated_at: "2026-12-07T10:00:01.000000Z".to_owned(),
            completed_at: None,
        };
        let page = super::order(
            &alice(),
            &order,
            &timeline(OrderStatus::Confirmed, vec![step("OrderConfirmed", false)]),
            None,
        )
        .into_string();
        assert!(page.contains("Order 567890ab"));
        assert!(page.contains("49.80 EUR"));
        assert!(page.contains("Order confirmed"));
        assert!(page.contains(r#"data-order-id="0193b6d2-7c1e-7a3b-9f00-1234567890ab""#));
    }

    #[test]
    fn the_operator_page_shows_figures_edges_and_the_fault_controls() {
        use crate::web::operations::{EdgeJson, ProcessJson};
        let figures = OperationsJson {
            window_secs: Some(2.0),
            checkouts_per_sec: Some(12.5),
            checkout_p99_ms: Some(48.2),
            outcomes: [("payment_declined".to_owned(), 3.0)].into(),
            edges: vec![EdgeJson {
                process: "payment".to_owned(),
                downstream: "psp".to_owned(),
                breaker: "open".to_owned(),
                bulkhead_in_use: 2.0,
            }],
            processes: vec![ProcessJson {
                name: "shipping".to_owned(),
                error: Some("connection refused".to_owned()),
            }],
        };
        let ops = Viewer {
            subject: Some("ops".to_owned()),
            admin: true,
        };
        let faults = Ok(FaultsJson {
            latency_ms: 250,
            error_rate: 0.5,
            lose_response_rate: 0.0,
        });
        let page = operator(&ops, &figures, Some(&faults)).into_string();
        assert!(page.contains(r#"id="checkouts-per-sec">12.5<"#), "{page}");
        assert!(page.contains(r#"id="checkout-p99">48<"#));
        assert!(page.contains(r#"data-breaker="open""#));
        assert!(page.contains("shipping could not be read: connection refused"));
        assert!(page.contains(r#"id="error_rate" name="error_rate" type="number" min="0" max="1" step="0.05" value="0.5""#));
        assert!(
            page.contains(r#"href="/operator""#),
            "operators see the link"
        );
        let first = operator(&ops, &OperationsJson::default(), None).into_string();
        assert!(first.contains(r#"id="checkouts-per-sec">–<"#));
        assert!(first.contains("PSP_ADMIN_URL"));
        assert!(
            !catalog(&alice(), &[], false)
                .into_string()
                .contains(r#"href="/operator""#)
        );
    }

    #[test]
    fn sign_in_offers_the_demo_accounts_only_when_on() {
        let on = sign_in(&Viewer::default(), true, "/orders").into_string();
        for account in DEMO_ACCOUNTS {
            assert!(on.contains(&format!(r#"data-customer="{}""#, account.subject)));
        }
        assert!(on.contains(r#"data-next="/orders""#));
        let off = sign_in(&Viewer::default(), false, "/").into_string();
        assert!(!off.contains("data-customer"));
        assert!(off.contains("DEMO_SIGN_IN"));
    }
}
