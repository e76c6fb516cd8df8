//! One shopper's checkout: list the products, view one, place an order and
//! poll it until it is CONFIRMED or CANCELLED, recording every request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{ErrorKind, Gateway, RequestError};
use crate::recorder::{CheckoutEnd, Endpoint, Recorder};
use crate::scenario::{Mix, Outcome, Path, ProductPicker, order_body};

/// The most units one order line may have (the API's limit).
const MAX_LINE_QUANTITY: i64 = 100;

/// What every checkout of a run shares.
pub struct Shop {
    pub gateway: Gateway,
    pub recorder: Arc<Recorder>,
    pub mix: Mix,
    pub picker: ProductPicker,
    /// The products valid checkouts buy, most popular first.
    pub skus: Vec<String>,
    /// The product out-of-stock checkouts ask too much of; never restocked.
    pub out_of_stock_sku: String,
    pub poll_interval: Duration,
    /// How long after it was placed an order may take to become terminal.
    pub order_timeout: Duration,
    /// Prefix of the run's idempotency keys, unique to the run.
    pub run_id: String,
}

/// The checkout's requests so far failed or not.
struct Attempt<'a> {
    shop: &'a Shop,
    request_failed: bool,
}

impl Attempt<'_> {
    /// Records a request that was meant to start at `sent`.
    fn record<T>(&mut self, endpoint: Endpoint, sent: Instant, result: &Result<T, RequestError>) {
        let now = Instant::now();
        let latency = now.saturating_duration_since(sent);
        let outcome = match result {
            Ok(_) => Ok(()),
            Err(error) => {
                self.request_failed = true;
                Err((error.kind, error.detail.as_str()))
            }
        };
        self.shop.recorder.request(endpoint, latency, now, outcome);
    }
}

impl Shop {
    /// Runs checkout number `index`, which was due at `due`; every latency
    /// of its first request counts from `due`, so time the generator spent
    /// getting to it is not hidden.
    pub async fn checkout(&self, index: u64, due: Instant) {
        let path = self.mix.pick(fastrand::f64());
        let end = self.run(index, due, path).await;
        self.recorder.finished(end, Instant::now());
    }

    async fn run(&self, index: u64, due: Instant, path: Path) -> CheckoutEnd {
        let mut attempt = Attempt {
            shop: self,
            request_failed: false,
        };
        let failed = |attempt: &Attempt, failure: Option<ErrorKind>| CheckoutEnd {
            path,
            outcome: None,
            saga: None,
            checkout: None,
            request_failed: attempt.request_failed,
            failure,
        };

        let listed = self.gateway.list_products().await;
        attempt.record(Endpoint::ListProducts, due, &listed);
        if listed.is_err() {
            return failed(&attempt, None);
        }

        let sku = match path {
            Path::OutOfStock => self.out_of_stock_sku.as_str(),
            _ => self.skus[self.picker.pick(fastrand::f64())].as_str(),
        };
        let sent = Instant::now();
        let viewed = self.gateway.product(sku).await;
        attempt.record(Endpoint::ViewProduct, sent, &viewed);
        let Ok(product) = viewed else {
            return failed(&attempt, None);
        };

        // Out of stock means asking for one more than there is; the run
        // checked at its start that this fits in one line.
        let quantity = match path {
            Path::OutOfStock => (product.available + 1).clamp(1, MAX_LINE_QUANTITY),
            _ => 1,
        };
        let body = order_body(path, sku, quantity);
        let sent = Instant::now();
        let placed = self
            .gateway
            .place_order(&body, &format!("{}-{index}", self.run_id))
            .await;
        attempt.record(Endpoint::PlaceOrder, sent, &placed);
        let Ok(order_id) = placed else {
            return failed(&attempt, None);
        };
        self.recorder.placed();

        // Every placed order is followed until it is terminal or its time is
        // up: an order left PENDING is a failure of the system, not of the
        // load test, and must be counted.
        let placed_at = Instant::now();
        let order = loop {
            tokio::time::sleep(self.poll_interval).await;
            let sent = Instant::now();
            let polled = self.gateway.order(&order_id).await;
            attempt.record(Endpoint::PollOrder, sent, &polled);
            if let Ok(order) = polled
                && order.is_terminal()
            {
                break order;
            }
            if placed_at.elapsed() >= self.order_timeout {
                return failed(&attempt, Some(ErrorKind::NotTerminal));
            }
        };
        let outcome = Outcome {
            status: order.status.clone(),
            reason: order.cancellation_reason.clone(),
        };
        let failure = (outcome != path.expected()).then_some(ErrorKind::UnexpectedOutcome);
        CheckoutEnd {
            path,
            saga: order.saga_latency(),
            checkout: Some(due.elapsed()),
            outcome: Some(outcome),
            request_failed: attempt.request_failed,
            failure,
        }
    }
}
