//! Domain newtypes. Each validates once, at the edge; past that the type is
//! the proof that the value is well formed.
#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use shipshape_proto::common;
use uuid::Uuid;

mod address;
pub mod limits;

pub use address::ShippingAddress;

/// Why a value was rejected; the `code` is stable and shown to API clients.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidValue {
    pub code: &'static str,
    pub message: String,
}

impl InvalidValue {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Identifies one order across every service and event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(Uuid);

impl OrderId {
    /// A new, time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for OrderId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl FromStr for OrderId {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| InvalidValue::new("invalid_order_id", format!("`{s}` is not a UUID")))
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A stock-keeping unit: 1 to 32 upper-case letters, digits and dashes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

impl Sku {
    pub const MAX_LEN: usize = 32;

    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let well_formed = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
        if well_formed {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidValue::new(
                "invalid_sku",
                format!("sku `{s}` must be 1-32 characters of A-Z, 0-9 and '-'"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sku {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Sku> for String {
    fn from(sku: Sku) -> Self {
        sku.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Units of one product on an order line: 1 to [`Quantity::MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Quantity(i64);

impl Quantity {
    pub const MAX: i64 = 100;

    pub fn new(units: i64) -> Result<Self, InvalidValue> {
        if (1..=Self::MAX).contains(&units) {
            Ok(Self(units))
        } else {
            Err(InvalidValue::new(
                "invalid_quantity",
                format!("quantity {units} must be between 1 and {}", Self::MAX),
            ))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = InvalidValue;

    fn try_from(units: i64) -> Result<Self, Self::Error> {
        Self::new(units)
    }
}

impl From<Quantity> for i64 {
    fn from(q: Quantity) -> Self {
        q.0
    }
}

/// An ISO 4217 currency code such as `EUR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        match s.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err(InvalidValue::new(
                "invalid_currency",
                format!("currency `{s}` must be three upper-case letters"),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount in integer minor units of one currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount_minor: i64, currency: Currency) -> Self {
        Self {
            amount_minor,
            currency,
        }
    }

    /// `self × quantity`, or `None` on overflow.
    pub fn times(self, quantity: Quantity) -> Option<Money> {
        self.amount_minor
            .checked_mul(quantity.get())
            .map(|amount_minor| Money::new(amount_minor, self.currency))
    }

    /// The sum, or `None` on overflow or mixed currencies.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        self.amount_minor
            .checked_add(other.amount_minor)
            .map(|amount_minor| Money::new(amount_minor, self.currency))
    }
}

/// ISO 4217 currencies without minor units; the others are shown with two
/// decimals (the few with three are not sold in).
const WHOLE_UNIT_CURRENCIES: [&str; 8] = ["BIF", "CLP", "ISK", "JPY", "KRW", "PYG", "UGX", "VND"];

/// The amount in the currency's major unit, for people: `49.80 EUR`,
/// `1200 JPY`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let minor = self.amount_minor;
        if WHOLE_UNIT_CURRENCIES.contains(&self.currency.as_str()) {
            return write!(f, "{minor} {}", self.currency);
        }
        let sign = if minor < 0 { "-" } else { "" };
        let minor = minor.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:02} {}",
            minor / 100,
            minor % 100,
            self.currency
        )
    }
}

impl From<Money> for common::Money {
    fn from(m: Money) -> Self {
        common::Money {
            amount_minor: m.amount_minor,
            currency: m.currency.to_string(),
        }
    }
}

impl TryFrom<&common::Money> for Money {
    type Error = InvalidValue;

    fn try_from(m: &common::Money) -> Result<Self, Self::Error> {
        Ok(Money::new(m.amount_minor, Currency::parse(&m.currency)?))
    }
}

/// An ISO 3166-1 alpha-2 country code such as `DE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CountryCode([u8; 2]);

/// Every officially assigned ISO 3166-1 alpha-2 code, sorted.
const ASSIGNED_COUNTRIES: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

impl CountryCode {
    /// `ZZ`, which ISO 3166 leaves for "unknown territory": where no
    /// address could be read. Never accepted from a client.
    pub const UNKNOWN: CountryCode = CountryCode(*b"ZZ");

    /// An officially assigned ISO 3166-1 alpha-2 code.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        match s.as_bytes() {
            [a, b] if ASSIGNED_COUNTRIES.binary_search(&s).is_ok() => Ok(Self([*a, *b])),
            _ => Err(InvalidValue::new(
                "invalid_country",
                format!("country `{s}` must be an ISO 3166-1 alpha-2 code such as DE"),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("ZZ")
    }
}

/// How a stored code reads back: any two upper-case letters. Stored rows
/// were checked when written, under the rules of their day, and an order
/// must stay readable if a code leaves ISO 3166 or older rules were looser;
/// [`CountryCode::parse`] is what checks what clients send.
impl TryFrom<String> for CountryCode {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Ok(Self([*a, *b])),
            _ => Self::parse(&s),
        }
    }
}

impl From<CountryCode> for String {
    fn from(c: CountryCode) -> Self {
        c.as_str().to_owned()
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares a fieldless enum stored as text: `as_str` gives the stored
/// word, `parse` reads it back, `ALL` lists every variant.
#[macro_export]
macro_rules! text_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_shown_in_its_major_unit() {
        let money = |amount_minor, currency| {
            Money::new(amount_minor, Currency::parse(currency).expect("currency")).to_string()
        };
        assert_eq!(money(4980, "EUR"), "49.80 EUR");
        assert_eq!(money(5, "EUR"), "0.05 EUR");
        assert_eq!(money(-250, "USD"), "-2.50 USD");
        assert_eq!(money(1200, "JPY"), "1200 JPY");
    }

    #[test]
    fn sku_accepts_catalog_codes_and_rejects_the_rest() {
        assert!(Sku::parse("SKU-0001").is_ok());
        for bad in ["", "sku-1", "SKU 1", "SKU_1", &"A".repeat(33)] {
            assert_eq!(Sku::parse(bad).unwrap_err().code, "invalid_sku", "{bad:?}");
        }
    }

    #[test]
    fn quantity_is_bounded() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(-3).is_err());
        assert!(Quantity::new(Quantity::MAX + 1).is_err());
        assert_eq!(Quantity::new(Quantity::MAX).unwrap().get(), 100);
    }

    #[test]
    fn money_arithmetic_checks_currency_and_overflow() {
        let eur = Currency::parse("EUR").unwrap();
        let usd = Currency::parse("USD").unwrap();
        let price = Money::new(1999, eur);
        assert_eq!(
            price.times(Quantity::new(3).unwrap()),
            Some(Money::new(5997, eur))
        );
        assert_eq!(price.checked_add(Money::new(1, usd)), None);
        assert_eq!(Money::new(i64::MAX, eur).checked_add(price), None);
        assert!(Currency::parse("eur").is_err());
    }

    text_enum! {
        enum Light { Red => "RED", Green => "GREEN" }
    }

    #[test]
    fn text_enums_round_trip() {
        assert_eq!(Light::ALL, [Light::Red, Light::Green]);
        for &light in Light::ALL {
            assert_eq!(Light::parse(light.as_str()), Some(light));
        }
        assert_eq!(Light::parse("BLUE"), None);
    }

    #[test]
    fn country_codes_are_assigned_iso_codes() {
        assert_eq!(CountryCode::parse("DE").unwrap().as_str(), "DE");
        assert_eq!(CountryCode::parse("AQ").unwrap().as_str(), "AQ");
        assert!(CountryCode::parse("de").is_err());
        assert!(CountryCode::parse("DEU").is_err());
        // Well formed, but not assigned (or reserved for private use).
        for unassigned in ["XX", "ZZ", "AA", "UK", "EU"] {
            assert!(CountryCode::parse(unassigned).is_err(), "{unassigned}");
        }
        assert!(ASSIGNED_COUNTRIES.is_sorted(), "binary search needs order");
        assert_eq!(CountryCode::UNKNOWN.as_str(), "ZZ");
    }
}
