//! Paging through a customer's orders: the page size and the opaque token
//! that says where the next page starts. Keyset paging (after the last
//! order's creation time and id, newest first), so a page costs the same
//! however deep it is, and orders placed meanwhile neither repeat nor skip
//! entries.

use chrono::{DateTime, Utc};
use shipshape_types::InvalidValue;
use uuid::Uuid;

pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

/// The creation times a token we issued can carry, in microseconds since
/// 1970: from then to the end of year 9999. Postgres stores a narrower range
/// than chrono parses; a token outside it made the query fail ("timestamp
/// out of range"), which read as a database outage and opened the gateway's
/// circuit breaker for every customer.
const ISSUED_MICROS: std::ops::RangeInclusive<i64> = 0..=253_402_300_799_999_999;

/// Where a page starts: after this order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub order_id: Uuid,
}

impl Cursor {
    /// The token a client sends back for the next page.
    pub fn token(&self) -> String {
        format!(
            "{}.{}",
            self.created_at.timestamp_micros(),
            self.order_id.simple()
        )
    }

    fn parse(token: &str) -> Option<Self> {
        let (micros, id) = token.split_once('.')?;
        if id.len() != 32 {
            return None;
        }
        let micros: i64 = micros.parse().ok()?;
        if !ISSUED_MICROS.contains(&micros) {
            return None;
        }
        Some(Self {
            created_at: DateTime::from_timestamp_micros(micros)?,
            order_id: Uuid::try_parse(id).ok()?,
        })
    }
}

/// One page's request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub size: u32,
    pub after: Option<Cursor>,
}

impl Page {
    /// From a ListOrders request: size 0 is the default; an empty token is
    /// the first page.
    pub fn from_request(size: i32, token: &str) -> Result<Self, InvalidValue> {
        let size = match size {
            0 => DEFAULT_PAGE_SIZE,
            1..=100 => size as u32,
            _ => {
                return Err(InvalidValue::new(
                    "invalid_page_size",
                    format!("page size must be 1 to {MAX_PAGE_SIZE}, not {size}"),
                ));
            }
        };
        let after = match token {
            "" => None,
            token => Some(Cursor::parse(token).ok_or_else(|| {
                InvalidValue::new("invalid_page_token", "the page token is not one we issued")
            })?),
        };
        Ok(Self { size, after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_sizes_are_bounded() {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_micros(1_764_650_000_123_456).unwrap(),
            order_id: Uuid::now_v7(),
        };
        let page = Page::from_request(5, &cursor.token()).unwrap();
        assert_eq!(page.size, 5);
        assert_eq!(page.after, Some(cursor));
        assert_eq!(Page::from_request(0, "").unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(Page::from_request(100, "").unwrap().size, 100);
        for size in [-1, 101, i32::MAX] {
            assert_eq!(
                Page::from_request(size, "").unwrap_err().code,
                "invalid_page_size"
            );
        }
    }

    #[test]
    fn tokens_at_the_ends_of_the_range_round_trip() {
        for micros in [*ISSUED_MICROS.start(), *ISSUED_MICROS.end()] {
            let cursor = Cursor {
                created_at: DateTime::from_timestamp_micros(micros).unwrap(),
                order_id: Uuid::nil(),
            };
            assert_eq!(
                Page::from_request(1, &cursor.token()).unwrap().after,
                Some(cursor)
            );
        }
    }

    #[test]
    fn tokens_we_did_not_issue_are_refused() {
        for token in [
            "x",
            "12.34",
            "abc.0193c5c0a3a07cc1b1a5d6b8e0f1a2b3",
            "1.0193c5c0-a3a0-7cc1-b1a5-d6b8e0f1a2b3",
            "99999999999999999999.0193c5c0a3a07cc1b1a5d6b8e0f1a2b3",
            // Parseable, but outside what Postgres stores (issue 16).
            "-210866803200000001.00000000000000000000000000000000",
            "9223372036854775807.0193c5c0a3a07cc1b1a5d6b8e0f1a2b3",
            "-1.0193c5c0a3a07cc1b1a5d6b8e0f1a2b3",
            "253402300800000000.0193c5c0a3a07cc1b1a5d6b8e0f1a2b3",
        ] {
            assert_eq!(
                Page::from_request(0, token).unwrap_err().code,
                "invalid_page_token",
                "{token}"
            );
        }
    }

    /// Property, over 200,000 tokens from a fixed seed: whatever a client
    /// sends as a page token, parsing never panics, and a token it accepts
    /// carries a time Postgres can store and compare (issue 16: a parsed
    /// but unstorable time failed the query as if the database were down).
    #[test]
    fn any_token_is_refused_or_within_the_databases_range() {
        // Postgres's timestamptz range in microseconds since 1970: from
        // 4714 BC; its upper end (294276 AD) lies beyond i64 at this epoch.
        const POSTGRES_MICROS: std::ops::RangeInclusive<i64> = -210_866_803_200_000_000..=i64::MAX;
        let mut rng = fastrand::Rng::with_seed(16);
        let edges = [
            i64::MIN,
            i64::MAX,
            0,
            -1,
            *POSTGRES_MICROS.start() - 1,
            *POSTGRES_MICROS.start(),
            *ISSUED_MICROS.end(),
            *ISSUED_MICROS.end() + 1,
        ];
        let mut accepted = 0;
        for _ in 0..200_000 {
            let micros = match rng.u8(0..4) {
                0 => rng.i64(..),
                1 => edges[rng.usize(..edges.len())].saturating_add(rng.i64(-2..=2)),
                2 => rng.i64(ISSUED_MICROS),
                _ => rng.i64(-10_000_000_000_000_000..10_000_000_000_000_000),
            };
            let id: String = (0..32).map(|_| rng.digit(16)).collect();
            let token = match rng.u8(0..8) {
                0 => format!("{micros}.{id}"),
                1 => format!("{micros}{}{id}", rng.char(..)),
                2 => format!("+{micros}.{id}"),
                3 => format!("{micros}.{}", &id[..rng.usize(0..32)]),
                4 => (0..rng.usize(0..60)).map(|_| rng.char(..)).collect(),
                _ => format!("{micros}.{id}"),
            };
            let Ok(page) = Page::from_request(0, &token) else {
                continue;
            };
            if let Some(cursor) = page.after {
                accepted += 1;
                let micros = cursor.created_at.timestamp_micros();
                assert!(POSTGRES_MICROS.contains(&micros), "{token:?} → {micros}");
                assert!(ISSUED_MICROS.contains(&micros), "{token:?} → {micros}");
            }
        }
        assert!(
            accepted > 20_000,
            "only {accepted} tokens accepted: the generator is off"
        );
    }
}
