//! What a check found: order counts and every violation, one line each.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use uuid::Uuid;

/// The outcome of [`crate::Checker::check`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Orders by status, and by reason for cancelled ones
    /// (`CONFIRMED`, `CANCELLED/out_of_stock`, `PENDING`, ...).
    pub orders: BTreeMap<String, u64>,
    pub violations: Vec<Violation>,
    /// Checks that could not run for want of a source (no PSP URL, no
    /// brokers), so that a clean report never overstates what was checked.
    pub skipped: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: Vec<String> = self
            .orders
            .iter()
            .map(|(status, n)| format!("{status} {n}"))
            .collect();
        let total: u64 = self.orders.values().sum();
        if counts.is_empty() {
            writeln!(f, "orders: none")?;
        } else {
            writeln!(f, "orders: {total} ({})", counts.join(", "))?;
        }
        for skipped in &self.skipped {
            writeln!(f, "not checked: {skipped}")?;
        }
        if self.violations.is_empty() {
            return writeln!(f, "no violations");
        }
        writeln!(f, "{} violations:", self.violations.len())?;
        for violation in &self.violations {
            writeln!(f, "  {violation}")?;
        }
        Ok(())
    }
}

/// One broken invariant, with the order it concerns when there is one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub order_id: Option<Uuid>,
    /// In JSON, `"kind": "stock_not_conserved"` and the kind's fields sit
    /// beside `order_id` and `detail`.
    #[serde(flatten)]
    pub kind: ViolationKind,
    /// What was found, in words, with the values that break the invariant.
    pub detail: String,
}

impl Violation {
    pub(crate) fn order(order_id: Uuid, kind: ViolationKind, detail: impl Into<String>) -> Self {
        Self {
            order_id: Some(order_id),
            kind,
            detail: detail.into(),
        }
    }

    pub(crate) fn global(kind: ViolationKind, detail: impl Into<String>) -> Self {
        Self {
            order_id: None,
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.order_id {
            Some(id) => write!(f, "order {id}: {}: {}", self.kind, self.detail),
            None => write!(f, "{}: {}", self.kind, self.detail),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ViolationKind {
    /// Still PENDING or CANCELLING.
    NotTerminal,
    /// A payment waiting for a call to the PSP (a capture or refund to be
    /// made or retried): work under way that no event shows yet.
    PaymentCallPending,
    /// `stock_received != available + reserved + sold` for the product.
    StockNotConserved { sku: String },
    /// More than one approved capture in the PSP ledger under one key.
    CapturedTwice,
    /// An approved capture under a key no payment has: money taken that no
    /// order accounts for (the PSP deduplicates by key, so this is how a
    /// second charge under a new key would show).
    CapturedWithoutPayment,
    /// A CANCELLED order whose reservation still holds or took its stock.
    CancelledHoldsStock,
    /// A CANCELLED order with money captured and not (all) refunded.
    CancelledNotRefunded,
    /// A CANCELLED order with a scheduled shipment.
    CancelledShipped,
    /// A CANCELLED order inventory never heard of: an event was lost.
    CancelledUnknownToInventory,
    /// A CONFIRMED order without its stock taken, one capture (and no
    /// refund) and one scheduled shipment.
    ConfirmedIncomplete,
    /// A consumer group has not committed every message of a partition.
    EventsUnprocessed {
        group: String,
        topic: String,
        partition: i32,
    },
    /// An event still waits in a service's outbox.
    OutboxNotEmpty { service: String },
    /// A message on the dead-letter topic that nobody explained.
    DeadLetters,
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotTerminal => f.write_str("not terminal"),
            Self::PaymentCallPending => f.write_str("payment call pending"),
            Self::StockNotConserved { sku } => write!(f, "stock of {sku} not conserved"),
            Self::CapturedTwice => f.write_str("captured twice"),
            Self::CapturedWithoutPayment => f.write_str("captured without a payment"),
            Self::CancelledHoldsStock => f.write_str("cancelled but holds stock"),
            Self::CancelledNotRefunded => f.write_str("cancelled but not refunded"),
            Self::CancelledShipped => f.write_str("cancelled but shipped"),
            Self::CancelledUnknownToInventory => f.write_str("cancelled, unknown to inventory"),
            Self::ConfirmedIncomplete => f.write_str("confirmed but incomplete"),
            Self::EventsUnprocessed {
                group,
                topic,
                partition,
            } => write!(f, "{group} behind on {topic}[{partition}]"),
            Self::OutboxNotEmpty { service } => write!(f, "{service} outbox not empty"),
            Self::DeadLetters => f.write_str("dead letter"),
        }
    }
}
