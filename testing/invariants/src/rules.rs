//! The invariants over the databases and the PSP ledger, as plain functions
//! of what was read: no I/O, so each rule is tested with hand-made states.
//!
//! Money without the PSP ledger: the payment service keeps one row per order
//! and moves it forward only on the PSP's answers, so its status stands in
//! for the ledger. A CANCELLED order's payment must not be CAPTURE_PENDING,
//! CAPTURED or REFUND_PENDING (money taken, or maybe taken, and not given
//! back); a CONFIRMED order's must be CAPTURED. A second charge of one
//! payment cannot show in that table; only the ledger reveals it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use uuid::Uuid;

use crate::ledger::Ledger;
use crate::report::{Violation, ViolationKind};
use crate::snapshot::{OutboxRow, Snapshot};

/// Payment states in which money is (or may be) held.
const HOLDING_MONEY: &[&str] = &["CAPTURE_PENDING", "CAPTURED", "REFUND_PENDING"];

/// Orders by status, and by reason for cancelled ones.
pub(crate) fn order_counts(snapshot: &Snapshot) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for order in &snapshot.orders {
        let key = match &order.reason {
            Some(reason) => format!("{}/{reason}", order.status),
            None => order.status.clone(),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// Work under way that leaves neither an outbox row nor consumer lag: an
/// order not yet terminal (waiting for an event or for its deadline sweep),
/// a payment whose PSP call is yet to be made or retried after a backoff.
/// Until there is none, the system is not quiet.
pub(crate) fn in_flight(snapshot: &Snapshot) -> Vec<Violation> {
    let orders = snapshot
        .orders
        .iter()
        .filter(|order| !matches!(order.status.as_str(), "CONFIRMED" | "CANCELLED"))
        .map(|order| {
            Violation::order(
                order.order_id,
                ViolationKind::NotTerminal,
                format!("status {}", order.status),
            )
        });
    let payments = snapshot
        .payments
        .iter()
        .filter(|(_, payment)| {
            matches!(
                payment.status.as_str(),
                "CAPTURE_PENDING" | "REFUND_PENDING"
            )
        })
        .map(|(order_id, payment)| {
            Violation::order(
                *order_id,
                ViolationKind::PaymentCallPending,
                format!("payment {} is {}", payment.payment_id, payment.status),
            )
        });
    orders.chain(payments).collect()
}

/// Every invariant over the databases (and the ledger, when there is one).
pub(crate) fn violations(snapshot: &Snapshot, ledger: Option<&Ledger>) -> Vec<Violation> {
    let mut found = Vec::new();
    for order in &snapshot.orders {
        found.extend(check_order(snapshot, ledger, order.order_id, &order.status));
    }
    found.extend(stock(snapshot));
    if let Some(ledger) = ledger {
        found.extend(double_captures(snapshot, ledger));
        found.extend(captures_without_payment(snapshot, ledger));
    }
    found.extend(outbox(&snapshot.outbox));
    found
}

fn check_order(
    snapshot: &Snapshot,
    ledger: Option<&Ledger>,
    id: Uuid,
    status: &str,
) -> Vec<Violation> {
    let reservation = snapshot.reservations.get(&id);
    let payment = snapshot.payments.get(&id);
    let shipment = snapshot.shipments.get(&id).map(String::as_str);
    let (captures, refunds) = match (ledger, payment) {
        (Some(ledger), Some(payment)) => ledger.for_payment(payment.payment_id),
        _ => (0, 0),
    };
    let payment_status = payment.map(|p| p.status.as_str());
    match status {
        "CONFIRMED" => {
            let mut missing = Vec::new();
            match reservation {
                Some(r) if r.status == "COMMITTED" => {
                    let ordered = snapshot.order_lines.get(&id);
                    if ordered != Some(&r.lines) {
                        missing.push(format!(
                            "reserved {:?} but ordered {:?}",
                            r.lines,
                            ordered.cloned().unwrap_or_default()
                        ));
                    }
                }
                other => missing.push(format!(
                    "reservation {}, not COMMITTED",
                    other.map_or("missing", |r| r.status.as_str())
                )),
            }
            if payment_status != Some("CAPTURED") {
                missing.push(format!(
                    "payment {}, not CAPTURED",
                    payment_status.unwrap_or("missing")
                ));
            }
            if ledger.is_some() && (captures, refunds) != (1, 0) {
                missing.push(format!(
                    "the PSP ledger holds {captures} captures and {refunds} refunds, not 1 and 0"
                ));
            }
            if shipment != Some("SCHEDULED") {
                missing.push(format!(
                    "shipment {}, not SCHEDULED",
                    shipment.unwrap_or("missing")
                ));
            }
            if missing.is_empty() {
                Vec::new()
            } else {
                vec![Violation::order(
                    id,
                    ViolationKind::ConfirmedIncomplete,
                    missing.join("; "),
                )]
            }
        }
        "CANCELLED" => {
            let mut found = Vec::new();
            match reservation.map(|r| r.status.as_str()) {
                Some("REJECTED" | "RELEASED") => {}
                Some(other) => found.push(Violation::order(
                    id,
                    ViolationKind::CancelledHoldsStock,
                    format!("reservation {other}"),
                )),
                None => found.push(Violation::order(
                    id,
                    ViolationKind::CancelledUnknownToInventory,
                    "inventory has no reservation (rejected or released) for it",
                )),
            }
            let table_holds = payment_status.is_some_and(|s| HOLDING_MONEY.contains(&s));
            if table_holds || refunds < captures {
                let ledger_part = match ledger {
                    Some(_) => format!(", the PSP ledger {captures} captures, {refunds} refunds"),
                    None => String::new(),
                };
                found.push(Violation::order(
                    id,
                    ViolationKind::CancelledNotRefunded,
                    format!(
                        "payment {}{ledger_part}",
                        payment_status.unwrap_or("missing")
                    ),
                ));
            }
            if shipment == Some("SCHEDULED") {
                found.push(Violation::order(
                    id,
                    ViolationKind::CancelledShipped,
                    "shipment SCHEDULED",
                ));
            }
            found
        }
        other => vec![Violation::order(
            id,
            ViolationKind::NotTerminal,
            format!("status {other}"),
        )],
    }
}

/// Per product: every unit received is available, held by a RESERVED
/// reservation or sold to a COMMITTED one.
fn stock(snapshot: &Snapshot) -> Vec<Violation> {
    let mut reserved: HashMap<&str, i64> = HashMap::new();
    let mut sold: HashMap<&str, i64> = HashMap::new();
    for reservation in snapshot.reservations.values() {
        let bucket = match reservation.status.as_str() {
            "RESERVED" => &mut reserved,
            "COMMITTED" => &mut sold,
            _ => continue,
        };
        for (sku, quantity) in &reservation.lines {
            *bucket.entry(sku).or_default() += quantity;
        }
    }
    snapshot
        .products
        .iter()
        .filter_map(|p| {
            let held = reserved.get(p.sku.as_str()).copied().unwrap_or(0);
            let gone = sold.get(p.sku.as_str()).copied().unwrap_or(0);
            (p.stock_received != p.available + held + gone).then(|| {
                Violation::global(
                    ViolationKind::StockNotConserved { sku: p.sku.clone() },
                    format!(
                        "received {} != available {} + reserved {held} + sold {gone}",
                        p.stock_received, p.available
                    ),
                )
            })
        })
        .collect()
}

/// More than one approved capture under one payment's key.
fn double_captures(snapshot: &Snapshot, ledger: &Ledger) -> Vec<Violation> {
    let mut charges: BTreeMap<&str, usize> = BTreeMap::new();
    for key in &ledger.approved_captures {
        *charges.entry(key).or_default() += 1;
    }
    let order_of: HashMap<String, Uuid> = snapshot
        .payments
        .iter()
        .map(|(order_id, p)| (p.payment_id.to_string(), *order_id))
        .collect();
    charges
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(key, n)| Violation {
            order_id: order_of.get(key).copied(),
            kind: ViolationKind::CapturedTwice,
            detail: format!("payment {key} captured {n} times"),
        })
        .collect()
}

/// Approved captures under a key that is no payment's.
fn captures_without_payment(snapshot: &Snapshot, ledger: &Ledger) -> Vec<Violation> {
    let known: HashSet<String> = snapshot
        .payments
        .values()
        .map(|p| p.payment_id.to_string())
        .collect();
    let unknown: BTreeSet<&str> = ledger
        .approved_captures
        .iter()
        .map(String::as_str)
        .filter(|key| !known.contains(*key))
        .collect();
    unknown
        .into_iter()
        .map(|key| Violation {
            order_id: None,
            kind: ViolationKind::CapturedWithoutPayment,
            detail: format!("the PSP captured under key {key}, which is no payment's"),
        })
        .collect()
}

/// Each event still waiting to be published; outbox rows are keyed by
/// order id.
pub(crate) fn outbox(rows: &[OutboxRow]) -> Vec<Violation> {
    rows.iter()
        .map(|row| Violation {
            order_id: row.message_key.parse().ok(),
            kind: ViolationKind::OutboxNotEmpty {
                service: row.service.to_owned(),
            },
            detail: format!("an event for {} not yet published", row.topic),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Order, Payment};

    /// A CANCELLED order whose payment row says REFUNDED, with a refund-free
    /// ledger holding `captures` approved captures of its payment.
    fn cancelled_with_captures(captures: usize) -> (Snapshot, Ledger, Uuid) {
        let order_id = Uuid::new_v4();
        let payment_id = Uuid::new_v4();
        let mut snapshot = Snapshot::default();
        snapshot.orders.push(Order {
            order_id,
            status: "CANCELLED".into(),
            reason: Some("shipping_failed".into()),
        });
        snapshot.reservations.insert(
            order_id,
            crate::snapshot::Reservation {
                status: "RELEASED".into(),
                lines: BTreeMap::new(),
            },
        );
        snapshot.payments.insert(
            order_id,
            Payment {
                payment_id,
                status: "REFUNDED".into(),
            },
        );
        let ledger = Ledger {
            approved_captures: vec![payment_id.to_string(); captures],
            refunds: Vec::new(),
        };
        (snapshot, ledger, order_id)
    }

    fn kinds(found: &[Violation]) -> Vec<(Option<Uuid>, ViolationKind)> {
        found.iter().map(|v| (v.order_id, v.kind.clone())).collect()
    }

    #[test]
    fn two_approved_captures_of_one_payment_are_reported_with_the_order() {
        let (snapshot, mut ledger, id) = cancelled_with_captures(2);
        // Refunded twice too, so only the double charge is wrong.
        ledger.refunds = vec![format!("refund-{}", snapshot.payments[&id].payment_id); 2];
        assert_eq!(
            kinds(&violations(&snapshot, Some(&ledger))),
            [(Some(id), ViolationKind::CapturedTwice)]
        );
    }

    #[test]
    fn a_capture_the_payment_table_forgot_is_caught_by_the_ledger() {
        let (snapshot, ledger, id) = cancelled_with_captures(1);
        assert_eq!(violations(&snapshot, None), []);
        assert_eq!(
            kinds(&violations(&snapshot, Some(&ledger))),
            [(Some(id), ViolationKind::CancelledNotRefunded)]
        );
    }

    #[test]
    fn orders_and_payment_calls_under_way_are_in_flight() {
        let (mut snapshot, _, settled) = cancelled_with_captures(1);
        assert_eq!(kinds(&in_flight(&snapshot)), []);

        let pending = Uuid::new_v4();
        snapshot.orders.push(Order {
            order_id: pending,
            status: "PENDING".into(),
            reason: None,
        });
        if let Some(payment) = snapshot.payments.get_mut(&settled) {
            payment.status = "REFUND_PENDING".into();
        }
        assert_eq!(
            kinds(&in_flight(&snapshot)),
            [
                (Some(pending), ViolationKind::NotTerminal),
                (Some(settled), ViolationKind::PaymentCallPending),
            ]
        );
    }

    #[test]
    fn a_capture_under_an_unknown_key_is_reported() {
        let (snapshot, mut ledger, id) = cancelled_with_captures(1);
        ledger.refunds = vec![format!("refund-{}", snapshot.payments[&id].payment_id)];
        ledger.approved_captures.push(Uuid::new_v4().to_string());
        assert_eq!(
            kinds(&violations(&snapshot, Some(&ledger))),
            [(None, ViolationKind::CapturedWithoutPayment)]
        );
    }

    #[test]
    fn a_refunded_capture_is_fine() {
        let (snapshot, mut ledger, id) = cancelled_with_captures(1);
        ledger.refunds = vec![format!("refund-{}", snapshot.payments[&id].payment_id)];
        assert_eq!(violations(&snapshot, Some(&ledger)), []);
    }
}
