//! Shipping decisions, free of I/O.

use std::collections::HashSet;

use shipshape_types::{CountryCode, text_enum};

text_enum! {
    #[derive(Default)]
    pub enum ShipmentStatus {
        /// Waiting for the address and the payment.
        #[default]
        Waiting => "WAITING",
        Scheduled => "SCHEDULED",
        Failed => "FAILED",
        /// The order was cancelled; nothing leaves the warehouse.
        Cancelled => "CANCELLED",
    }
}

/// What shipping knows of one order.
/// A new one knows nothing yet: waiting, with every fact false.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shipment {
    pub status: ShipmentStatus,
    /// The destination, once OrderPlaced was seen.
    pub destination: Option<CountryCode>,
    pub paid: bool,
    pub cancelled: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Scheduled { carrier: &'static str },
    Failed { reason: &'static str },
}

/// The countries shipping delivers to.
#[derive(Clone, Debug)]
pub struct Coverage {
    served: HashSet<CountryCode>,
}

impl Coverage {
    pub fn new(countries: impl IntoIterator<Item = CountryCode>) -> Self {
        Self {
            served: countries.into_iter().collect(),
        }
    }

    /// Parses a comma-separated list such as `DE,FR,US`.
    pub fn parse(list: &str) -> Result<Self, shipshape_types::InvalidValue> {
        let countries = list
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(CountryCode::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(countries))
    }

    fn carrier(&self, country: CountryCode) -> Option<&'static str> {
        if !self.served.contains(&country) {
            return None;
        }
        Some(match country.as_str() {
            "US" | "CA" | "MX" => "ups",
            "GB" | "IE" => "royal-mail",
            _ => "dhl",
        })
    }
}

impl Shipment {
    /// Moves the shipment as far as its facts allow. Only a paid order with a
    /// known destination ships; a cancelled one never does, and a shipment
    /// scheduled before the cancellation arrived is called off.
    pub fn settle(&mut self, coverage: &Coverage) -> Option<Notice> {
        use ShipmentStatus::*;
        match (self.status, self.destination) {
            (Waiting | Scheduled, _) if self.cancelled => {
                self.status = Cancelled;
                None
            }
            (Waiting, Some(country)) if self.paid => match coverage.carrier(country) {
                Some(carrier) => {
                    self.status = Scheduled;
                    Some(Notice::Scheduled { carrier })
                }
                None => {
                    self.status = Failed;
                    Some(Notice::Failed {
                        reason: "unsupported_destination",
                    })
                }
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coverage() -> Coverage {
        Coverage::parse("DE, FR,US").unwrap()
    }

    fn to(country: &str) -> Shipment {
        Shipment {
            destination: Some(CountryCode::parse(country).unwrap()),
            ..Shipment::default()
        }
    }

    #[test]
    fn ships_once_paid_with_a_served_destination() {
        let mut s = to("DE");
        assert_eq!(s.settle(&coverage()), None);
        s.paid = true;
        assert_eq!(
            s.settle(&coverage()),
            Some(Notice::Scheduled { carrier: "dhl" })
        );
        assert_eq!(s.settle(&coverage()), None, "scheduled once");
    }

    #[test]
    fn payment_before_address_waits_for_it() {
        let mut s = Shipment {
            paid: true,
            ..Shipment::default()
        };
        assert_eq!(s.settle(&coverage()), None);
        s.destination = CountryCode::parse("US").ok();
        assert_eq!(
            s.settle(&coverage()),
            Some(Notice::Scheduled { carrier: "ups" })
        );
    }

    #[test]
    fn unserved_destinations_fail() {
        let mut s = Shipment {
            paid: true,
            ..to("AQ")
        };
        assert_eq!(
            s.settle(&coverage()),
            Some(Notice::Failed {
                reason: "unsupported_destination"
            })
        );
        assert_eq!(s.status, ShipmentStatus::Failed);
    }

    #[test]
    fn cancellation_stops_or_calls_off_the_shipment() {
        let mut s = Shipment {
            cancelled: true,
            paid: true,
            ..to("DE")
        };
        assert_eq!(s.settle(&coverage()), None);
        assert_eq!(s.status, ShipmentStatus::Cancelled);
        let mut s = Shipment {
            paid: true,
            ..to("DE")
        };
        s.settle(&coverage());
        s.cancelled = true;
        assert_eq!(s.settle(&coverage()), None);
        assert_eq!(s.status, ShipmentStatus::Cancelled);
    }

    #[test]
    fn bad_country_lists_are_rejected() {
        assert!(Coverage::parse("DE,Germany").is_err());
    }
}
