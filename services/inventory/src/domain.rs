//! Inventory decisions, free of I/O.

use std::collections::HashMap;

use shipshape_types::{InvalidValue, Quantity, Sku};

/// What happens to an order's request for stock.
#[derive(Debug, PartialEq, Eq)]
pub enum ReservationDecision {
    /// Every line can be reserved: take them all.
    Reserve,
    /// At least one line cannot: take nothing.
    Reject {
        reason: RejectReason,
        skus: Vec<Sku>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    OutOfStock,
    UnknownSku,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::OutOfStock => "out_of_stock",
            RejectReason::UnknownSku => "unknown_sku",
        }
    }
}

/// All or nothing: reserve when every requested sku exists with enough
/// units available, otherwise name the skus that stop it.
pub fn decide(requested: &[(Sku, Quantity)], available: &HashMap<Sku, i64>) -> ReservationDecision {
    let unknown: Vec<Sku> = requested
        .iter()
        .filter(|(sku, _)| !available.contains_key(sku))
        .map(|(sku, _)| sku.clone())
        .collect();
    if !unknown.is_empty() {
        return ReservationDecision::Reject {
            reason: RejectReason::UnknownSku,
            skus: unknown,
        };
    }
    let short: Vec<Sku> = requested
        .iter()
        .filter(|(sku, quantity)| available[sku] < quantity.get())
        .map(|(sku, _)| sku.clone())
        .collect();
    if short.is_empty() {
        ReservationDecision::Reserve
    } else {
        ReservationDecision::Reject {
            reason: RejectReason::OutOfStock,
            skus: short,
        }
    }
}

/// Units an operator adds to a product's stock in one restock: at least
/// one, and at most [`RestockQuantity::MAX`], a bound far above any real
/// delivery that keeps a typo from putting a near-overflow count on the
/// shelf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestockQuantity(i64);

impl RestockQuantity {
    pub const MAX: i64 = shipshape_types::limits::MAX_RESTOCK_UNITS;

    pub fn new(units: i64) -> Result<Self, InvalidValue> {
        if (1..=Self::MAX).contains(&units) {
            Ok(Self(units))
        } else {
            Err(InvalidValue::new(
                "invalid_quantity",
                format!("a restock adds 1 to {} units, not {units}", Self::MAX),
            ))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

shipshape_types::text_enum! {
    /// The life of one order's reservation.
    pub enum ReservationStatus {
        Reserved => "RESERVED",
        Rejected => "REJECTED",
        Released => "RELEASED",
        Committed => "COMMITTED",
    }
}

impl ReservationStatus {
    /// A compensation returns the units only while they are held; any later
    /// or repeated request is a no-op, so compensations may arrive in any
    /// order and any number of times.
    pub fn release(self) -> Option<ReservationStatus> {
        (self == ReservationStatus::Reserved).then_some(ReservationStatus::Released)
    }

    /// A confirmed order's units are sold.
    pub fn commit(self) -> Option<ReservationStatus> {
        (self == ReservationStatus::Reserved).then_some(ReservationStatus::Committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, units: i64) -> (Sku, Quantity) {
        (Sku::parse(sku).unwrap(), Quantity::new(units).unwrap())
    }

    fn stock(entries: &[(&str, i64)]) -> HashMap<Sku, i64> {
        entries
            .iter()
            .map(|(sku, n)| (Sku::parse(sku).unwrap(), *n))
            .collect()
    }

    #[test]
    fn reserves_only_when_every_line_fits() {
        let available = stock(&[("SKU-A", 5), ("SKU-B", 1)]);
        assert_eq!(
            decide(&[line("SKU-A", 5), line("SKU-B", 1)], &available),
            ReservationDecision::Reserve
        );
        assert_eq!(
            decide(&[line("SKU-A", 2), line("SKU-B", 2)], &available),
            ReservationDecision::Reject {
                reason: RejectReason::OutOfStock,
                skus: vec![Sku::parse("SKU-B").unwrap()],
            }
        );
    }

    #[test]
    fn unknown_skus_reject_before_stock_is_looked_at() {
        let available = stock(&[("SKU-A", 0)]);
        assert_eq!(
            decide(&[line("SKU-A", 1), line("SKU-Z", 1)], &available),
            ReservationDecision::Reject {
                reason: RejectReason::UnknownSku,
                skus: vec![Sku::parse("SKU-Z").unwrap()],
            }
        );
    }

    #[test]
    fn a_restock_adds_between_one_and_a_million_units() {
        assert_eq!(RestockQuantity::new(1).map(RestockQuantity::get), Ok(1));
        assert_eq!(
            RestockQuantity::new(RestockQuantity::MAX).map(RestockQuantity::get),
            Ok(1_000_000)
        );
        for bad in [0, -5, RestockQuantity::MAX + 1, i64::MAX] {
            let error = RestockQuantity::new(bad).expect_err("out of range");
            assert_eq!(error.code, "invalid_quantity");
        }
    }

    #[test]
    fn units_are_returned_or_sold_once_and_only_while_held() {
        use ReservationStatus::*;
        assert_eq!(Reserved.release(), Some(Released));
        assert_eq!(Reserved.commit(), Some(Committed));
        for settled in [Rejected, Released, Committed] {
            assert_eq!(settled.release(), None);
            assert_eq!(settled.commit(), None);
        }
        for status in [Reserved, Rejected, Released, Committed] {
            assert_eq!(ReservationStatus::parse(status.as_str()), Some(status));
        }
    }
}
