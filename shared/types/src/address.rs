//! Where an order goes: the gateway reads it from the client, the order
//! service stores it with the order, shipping labels carry it.

use serde::{Deserialize, Serialize};
use shipshape_proto::common;

use crate::CountryCode;

/// A shipping address, already checked by whoever read it (each edge has
/// its own rules for messages and lengths).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippingAddress {
    pub name: String,
    pub line1: String,
    /// Empty when there is no second line.
    pub line2: String,
    pub city: String,
    pub postal_code: String,
    pub country: CountryCode,
}

impl From<ShippingAddress> for common::Address {
    fn from(a: ShippingAddress) -> Self {
        common::Address {
            name: a.name,
            line1: a.line1,
            line2: a.line2,
            city: a.city,
            postal_code: a.postal_code,
            country: a.country.to_string(),
        }
    }
}

#[cfg(any(test, feature = "testing"))]
impl ShippingAddress {
    /// Ada Lovelace in Berlin: the address a test sends when the address is
    /// not what it tests.
    pub fn example() -> Self {
        ShippingAddress {
            name: "Ada Lovelace".into(),
            line1: "1 Main St".into(),
            line2: String::new(),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: CountryCode::parse("DE").expect("DE is assigned"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_country_is_stored_as_its_code_and_read_back_as_stored() {
        let address = ShippingAddress::example();
        let json = serde_json::to_value(&address).expect("serializable");
        assert_eq!(json["country"], "DE");
        assert_eq!(
            serde_json::from_value::<ShippingAddress>(json.clone()).expect("readable"),
            address
        );
        // An order stored under looser rules stays readable.
        let mut unassigned = json.clone();
        unassigned["country"] = "XX".into();
        let read = serde_json::from_value::<ShippingAddress>(unassigned).expect("readable");
        assert_eq!(read.country.as_str(), "XX");
        for garbage in ["de", "DEU", "", "D1"] {
            let mut bad = json.clone();
            bad["country"] = garbage.into();
            assert!(
                serde_json::from_value::<ShippingAddress>(bad).is_err(),
                "{garbage}"
            );
        }
    }
}
