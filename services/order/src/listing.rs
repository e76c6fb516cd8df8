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
        Some(Self {
            created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
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
    fn tokens_we_did_not_issue_are_refused() {
        for token in [
            "x",
            "12.34",
            "abc.0193c5c0a3a07cc1b1a5d6b8e0f1a2b3",
            "1.0193c5c0-a3a0-7cc1-b1a5-d6b8e0f1a2b3",
            "99999999999999999999.0193c5c0a3a07cc1b1a5d6b8e0f1a2b3",
        ] {
            assert_eq!(
                Page::from_request(0, token).unwrap_err().code,
                "invalid_page_token",
                "{token}"
            );
        }
    }
}
