//! The processor's books and the rules applied to them: which card tokens
//! are approved or declined, how an idempotency key turns a retry into a
//! replay of the first answer, and how much of a capture may be refunded.
//!
//! Plain data and decisions, no I/O: the HTTP layer supplies the clock and
//! the journal, and does any waiting.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;

/// What the processor does with a card, by its token. Tokens are how a
/// caller picks a scenario, as with a real processor's test cards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Card {
    Approve,
    Decline(DeclineReason),
    /// The processor is down for this card: nothing is processed, so a
    /// retry is safe, and for this token never succeeds.
    Unavailable,
    /// Approved and charged on arrival, answered only after a delay.
    Slow,
}

impl Card {
    /// Every token starting with `tok_` that is not listed here is approved.
    pub fn of(token: &str) -> Self {
        match token {
            "tok_decline" => Self::Decline(DeclineReason::CardDeclined),
            "tok_insufficient_funds" => Self::Decline(DeclineReason::InsufficientFunds),
            "tok_unavailable" => Self::Unavailable,
            "tok_slow" => Self::Slow,
            _ => Self::Approve,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    CardDeclined,
    InsufficientFunds,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CaptureRequest {
    pub idempotency_key: String,
    pub amount_minor: i64,
    pub currency: String,
    pub card_token: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct RefundRequest {
    pub idempotency_key: String,
    pub psp_reference: String,
    pub amount_minor: i64,
    pub currency: String,
}

/// The answer to a capture, exactly as the caller sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CaptureOutcome {
    Approved {
        psp_reference: String,
        amount_minor: i64,
        currency: String,
    },
    Declined {
        reason: DeclineReason,
    },
}

/// The answer to a refund, exactly as the caller sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RefundOutcome {
    Refunded {
        refund_reference: String,
        psp_reference: String,
    },
}

#[derive(Debug)]
pub struct Captured {
    pub outcome: CaptureOutcome,
    /// The key was seen before; nothing new was charged.
    pub replayed: bool,
    /// The card answers late ([`Card::Slow`]). A replay is answered at once,
    /// from the idempotency record, as real processors do.
    pub answer_slowly: bool,
}

#[derive(Debug)]
pub struct Refunded {
    pub outcome: RefundOutcome,
    pub replayed: bool,
}

/// A capture the processor decided. Declines are kept too, so that a
/// retry is declined the same way instead of being charged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRecord {
    pub idempotency_key: String,
    pub amount_minor: i64,
    pub currency: String,
    pub card_token: String,
    #[serde(flatten)]
    pub decision: Decision,
    pub at_micros: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Decision {
    Approved { psp_reference: String },
    Declined { reason: DeclineReason },
}

impl CaptureRecord {
    fn outcome(&self) -> CaptureOutcome {
        match &self.decision {
            Decision::Approved { psp_reference } => CaptureOutcome::Approved {
                psp_reference: psp_reference.clone(),
                amount_minor: self.amount_minor,
                currency: self.currency.clone(),
            },
            Decision::Declined { reason } => CaptureOutcome::Declined { reason: *reason },
        }
    }

    fn is_same_request(&self, request: &CaptureRequest) -> bool {
        self.amount_minor == request.amount_minor
            && self.currency == request.currency
            && self.card_token == request.card_token
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRecord {
    pub idempotency_key: String,
    pub refund_reference: String,
    pub psp_reference: String,
    pub amount_minor: i64,
    pub currency: String,
    pub at_micros: u64,
}

impl RefundRecord {
    fn outcome(&self) -> RefundOutcome {
        RefundOutcome::Refunded {
            refund_reference: self.refund_reference.clone(),
            psp_reference: self.psp_reference.clone(),
        }
    }

    fn is_same_request(&self, request: &RefundRequest) -> bool {
        self.psp_reference == request.psp_reference
            && self.amount_minor == request.amount_minor
            && self.currency == request.currency
    }
}

/// Everything the processor did, in the order it did it; tests read it to
/// check that no order was charged twice.
#[derive(Clone, Debug, Serialize)]
pub struct LedgerView {
    pub captures: Vec<CaptureRecord>,
    pub refunds: Vec<RefundRecord>,
}

#[derive(Debug, Default)]
pub struct Ledger {
    captures: Vec<CaptureRecord>,
    refunds: Vec<RefundRecord>,
    capture_by_key: HashMap<String, usize>,
    capture_by_reference: HashMap<String, usize>,
    refund_by_key: HashMap<String, usize>,
}

impl Ledger {
    /// The decision made under a capture's idempotency key, if any: lets a
    /// caller that never got an answer learn whether it was charged.
    pub fn find_capture(&self, idempotency_key: &str) -> Option<CaptureOutcome> {
        let &index = self.capture_by_key.get(idempotency_key)?;
        Some(self.captures[index].outcome())
    }

    /// Decides a capture, or replays the decision already made under its
    /// idempotency key. A new decision is handed to `journal` before it is
    /// kept, so that it can be made durable first; a replay is not. Nothing
    /// is recorded unless it returns `Ok`, and so not when `journal` fails.
    pub fn capture(
        &mut self,
        request: CaptureRequest,
        at_micros: u64,
        journal: impl FnOnce(&CaptureRecord) -> Result<(), Error>,
    ) -> Result<Captured, Error> {
        check_key(&request.idempotency_key)?;
        check_amount(request.amount_minor)?;
        check_currency(&request.currency)?;
        check_token(&request.card_token)?;

        if let Some(&index) = self.capture_by_key.get(&request.idempotency_key) {
            let stored = &self.captures[index];
            if !stored.is_same_request(&request) {
                return Err(Error::IdempotencyKeyReused(request.idempotency_key));
            }
            return Ok(Captured {
                outcome: stored.outcome(),
                replayed: true,
                answer_slowly: false,
            });
        }

        let card = Card::of(&request.card_token);
        let decision = match card {
            Card::Unavailable => return Err(Error::ProcessorUnavailable),
            Card::Decline(reason) => Decision::Declined { reason },
            Card::Approve | Card::Slow => Decision::Approved {
                psp_reference: format!("psp_{}", Uuid::new_v4()),
            },
        };
        let record = CaptureRecord {
            idempotency_key: request.idempotency_key,
            amount_minor: request.amount_minor,
            currency: request.currency,
            card_token: request.card_token,
            decision,
            at_micros,
        };
        journal(&record)?;
        let outcome = record.outcome();
        self.insert_capture(record);
        Ok(Captured {
            outcome,
            replayed: false,
            answer_slowly: card == Card::Slow,
        })
    }

    /// Refunds part or all of an approved capture, or replays the refund
    /// already made under its idempotency key. As with [`Self::capture`], a
    /// new refund is handed to `journal` before it is kept, and nothing is
    /// recorded unless it returns `Ok`.
    pub fn refund(
        &mut self,
        request: RefundRequest,
        at_micros: u64,
        journal: impl FnOnce(&RefundRecord) -> Result<(), Error>,
    ) -> Result<Refunded, Error> {
        check_key(&request.idempotency_key)?;
        check_amount(request.amount_minor)?;
        check_currency(&request.currency)?;
        if request.psp_reference.is_empty() {
            return Err(Error::InvalidRequest(
                "psp_reference must not be empty".to_owned(),
            ));
        }

        // Before any check against the capture, so that a retry gets the
        // first answer even though the refund itself now counts against it.
        if let Some(&index) = self.refund_by_key.get(&request.idempotency_key) {
            let stored = &self.refunds[index];
            if !stored.is_same_request(&request) {
                return Err(Error::IdempotencyKeyReused(request.idempotency_key));
            }
            return Ok(Refunded {
                outcome: stored.outcome(),
                replayed: true,
            });
        }

        let capture = self
            .capture_by_reference
            .get(&request.psp_reference)
            .map(|&index| &self.captures[index])
            .ok_or_else(|| Error::UnknownCapture(request.psp_reference.clone()))?;
        if capture.currency != request.currency {
            return Err(Error::CurrencyMismatch {
                captured: capture.currency.clone(),
                requested: request.currency,
            });
        }
        let refunded_minor: i64 = self
            .refunds
            .iter()
            .filter(|refund| refund.psp_reference == request.psp_reference)
            .map(|refund| refund.amount_minor)
            .sum();
        if refunded_minor.saturating_add(request.amount_minor) > capture.amount_minor {
            return Err(Error::RefundExceedsCapture {
                captured_minor: capture.amount_minor,
                refunded_minor,
                requested_minor: request.amount_minor,
            });
        }

        let record = RefundRecord {
            idempotency_key: request.idempotency_key,
            refund_reference: format!("rf_{}", Uuid::new_v4()),
            psp_reference: request.psp_reference,
            amount_minor: request.amount_minor,
            currency: request.currency,
            at_micros,
        };
        journal(&record)?;
        let outcome = record.outcome();
        self.insert_refund(record);
        Ok(Refunded {
            outcome,
            replayed: false,
        })
    }

    /// Takes back a capture decided before a restart, so that its key
    /// replays it. Records are restored in the order they were decided; a
    /// record whose key is already taken, or a refund of a capture the books
    /// do not hold, is refused, as the books it came from cannot have held
    /// it. Amounts are not checked again: they were checked when decided.
    pub fn restore_capture(&mut self, record: CaptureRecord) -> Result<(), Error> {
        if self.capture_by_key.contains_key(&record.idempotency_key) {
            return Err(Error::IdempotencyKeyReused(record.idempotency_key));
        }
        self.insert_capture(record);
        Ok(())
    }

    /// Takes back a refund made before a restart, after the capture it
    /// refunds; see [`Self::restore_capture`].
    pub fn restore_refund(&mut self, record: RefundRecord) -> Result<(), Error> {
        if self.refund_by_key.contains_key(&record.idempotency_key) {
            return Err(Error::IdempotencyKeyReused(record.idempotency_key));
        }
        if !self
            .capture_by_reference
            .contains_key(&record.psp_reference)
        {
            return Err(Error::UnknownCapture(record.psp_reference));
        }
        self.insert_refund(record);
        Ok(())
    }

    fn insert_capture(&mut self, record: CaptureRecord) {
        let index = self.captures.len();
        if let Decision::Approved { psp_reference } = &record.decision {
            self.capture_by_reference
                .insert(psp_reference.clone(), index);
        }
        self.capture_by_key
            .insert(record.idempotency_key.clone(), index);
        self.captures.push(record);
    }

    fn insert_refund(&mut self, record: RefundRecord) {
        self.refund_by_key
            .insert(record.idempotency_key.clone(), self.refunds.len());
        self.refunds.push(record);
    }

    pub fn view(&self) -> LedgerView {
        LedgerView {
            captures: self.captures.clone(),
            refunds: self.refunds.clone(),
        }
    }
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.trim().is_empty() {
        return Err(Error::InvalidRequest(
            "idempotency_key must not be empty".to_owned(),
        ));
    }
    Ok(())
}

fn check_amount(amount_minor: i64) -> Result<(), Error> {
    if amount_minor <= 0 {
        return Err(Error::InvalidRequest(format!(
            "amount_minor must be positive, got {amount_minor}"
        )));
    }
    Ok(())
}

fn check_currency(currency: &str) -> Result<(), Error> {
    let well_formed = currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase());
    if !well_formed {
        return Err(Error::InvalidRequest(format!(
            "currency must be three upper-case letters (ISO 4217), got {currency:?}"
        )));
    }
    Ok(())
}

fn check_token(token: &str) -> Result<(), Error> {
    match token.strip_prefix("tok_") {
        Some(rest) if !rest.is_empty() => Ok(()),
        _ => Err(Error::InvalidRequest(format!(
            "card_token must be `tok_` followed by a name, got {token:?}"
        ))),
    }
}

#[cfg(test)]
mod tests;
