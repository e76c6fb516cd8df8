//! The payment provider's own record of money movements (`GET
//! /admin/ledger` on the PSP simulator): the only place a second charge of
//! one payment could show, since the payment service keeps one row per
//! order.

use serde_json::Value;
use uuid::Uuid;

use crate::{Error, Result};

/// Approved captures and refunds, by idempotency key: the payment id for a
/// capture, `refund-<payment id>` for its refund (as the payment service
/// sends them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    pub approved_captures: Vec<String>,
    pub refunds: Vec<String>,
}

impl Ledger {
    /// Reads the ledger from the PSP at `psp_url`.
    pub async fn fetch(http: &reqwest::Client, psp_url: &str) -> Result<Self> {
        let url = format!("{}/admin/ledger", psp_url.trim_end_matches('/'));
        let failed = |source| Error::Ledger {
            url: url.clone(),
            source,
        };
        let body: Value = http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(failed)?
            .json()
            .await
            .map_err(failed)?;
        Ok(Self::from_json(&body))
    }

    /// The ledger in the PSP's JSON: `{"captures": [{"idempotency_key",
    /// "status"}, ...], "refunds": [{"idempotency_key"}, ...]}`. Declined
    /// captures took no money, so only approved ones are kept.
    pub fn from_json(body: &Value) -> Self {
        let keys = |field: &str, approved_only: bool| -> Vec<String> {
            body[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| !approved_only || e["status"] == "approved")
                .filter_map(|e| e["idempotency_key"].as_str().map(str::to_owned))
                .collect()
        };
        Self {
            approved_captures: keys("captures", true),
            refunds: keys("refunds", false),
        }
    }

    /// `(approved captures, refunds)` made for a payment.
    pub fn for_payment(&self, payment_id: Uuid) -> (usize, usize) {
        let key = payment_id.to_string();
        let refund_key = format!("refund-{key}");
        (
            self.approved_captures.iter().filter(|k| **k == key).count(),
            self.refunds.iter().filter(|k| **k == refund_key).count(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_approved_captures_and_every_refund() {
        let payment = Uuid::new_v4();
        let body = json!({
            "captures": [
                {"idempotency_key": payment.to_string(), "status": "approved", "psp_reference": "r1"},
                {"idempotency_key": "other", "status": "declined", "reason": "card_declined"},
            ],
            "refunds": [{"idempotency_key": format!("refund-{payment}")}],
        });
        let ledger = Ledger::from_json(&body);
        assert_eq!(ledger.approved_captures, [payment.to_string()]);
        assert_eq!(ledger.for_payment(payment), (1, 1));
        assert_eq!(ledger.for_payment(Uuid::new_v4()), (0, 0));
    }
}
