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
mod tests {
    use super::*;

    fn capture_request(key: &str, amount_minor: i64, token: &str) -> CaptureRequest {
        CaptureRequest {
            idempotency_key: key.to_owned(),
            amount_minor,
            currency: "EUR".to_owned(),
            card_token: token.to_owned(),
        }
    }

    fn refund_request(key: &str, psp_reference: &str, amount_minor: i64) -> RefundRequest {
        RefundRequest {
            idempotency_key: key.to_owned(),
            psp_reference: psp_reference.to_owned(),
            amount_minor,
            currency: "EUR".to_owned(),
        }
    }

    /// A journal that always succeeds, as when there is none.
    fn keep<T>(_: &T) -> Result<(), Error> {
        Ok(())
    }

    /// A journal that cannot be written.
    fn fail<T>(_: &T) -> Result<(), Error> {
        Err(Error::Journal("disk full".to_owned()))
    }

    /// A fresh ledger holding what `ledger` holds, as rebuilt after a restart.
    fn restored(ledger: &Ledger) -> Ledger {
        let view = ledger.view();
        let mut restored = Ledger::default();
        for record in view.captures {
            restored.restore_capture(record).expect("capture restored");
        }
        for record in view.refunds {
            restored.restore_refund(record).expect("refund restored");
        }
        restored
    }

    /// A ledger holding one approved capture of `amount_minor`, and its reference.
    fn ledger_with_capture(amount_minor: i64) -> (Ledger, String) {
        let mut ledger = Ledger::default();
        let captured = ledger
            .capture(
                capture_request("order-1", amount_minor, "tok_visa"),
                1,
                keep,
            )
            .expect("approved");
        match captured.outcome {
            CaptureOutcome::Approved { psp_reference, .. } => (ledger, psp_reference),
            other => panic!("expected an approval, got {other:?}"),
        }
    }

    #[test]
    fn approves_listed_and_unlisted_tokens() {
        let mut ledger = Ledger::default();
        for (key, token) in [
            ("a", "tok_visa"),
            ("b", "tok_mastercard"),
            ("c", "tok_amex"),
        ] {
            let captured = ledger
                .capture(capture_request(key, 1999, token), 1, keep)
                .expect("approved");
            match captured.outcome {
                CaptureOutcome::Approved {
                    psp_reference,
                    amount_minor,
                    currency,
                } => {
                    assert!(psp_reference.starts_with("psp_"));
                    assert_eq!(amount_minor, 1999);
                    assert_eq!(currency, "EUR");
                }
                other => panic!("{token}: expected an approval, got {other:?}"),
            }
            assert!(!captured.replayed);
        }
        assert_eq!(ledger.view().captures.len(), 3);
    }

    #[test]
    fn a_retry_replays_the_first_answer_and_charges_once() {
        let mut ledger = Ledger::default();
        let first = ledger
            .capture(capture_request("order-1", 1999, "tok_visa"), 1, keep)
            .expect("approved");
        let retry = ledger
            .capture(capture_request("order-1", 1999, "tok_visa"), 2, keep)
            .expect("replayed");
        assert_eq!(retry.outcome, first.outcome);
        assert!(retry.replayed);
        let captures = ledger.view().captures;
        assert_eq!(captures.len(), 1);
        assert_eq!(captures[0].at_micros, 1);
    }

    #[test]
    fn a_capture_is_found_by_its_key_only_once_decided() {
        let mut ledger = Ledger::default();
        assert_eq!(ledger.find_capture("k1"), None);
        let captured = ledger
            .capture(capture_request("k1", 500, "tok_visa"), 1, keep)
            .unwrap();
        assert_eq!(ledger.find_capture("k1"), Some(captured.outcome));
        ledger
            .capture(capture_request("k2", 500, "tok_unavailable"), 2, keep)
            .unwrap_err();
        assert_eq!(
            ledger.find_capture("k2"),
            None,
            "an unprocessed capture leaves no trace"
        );
    }

    #[test]
    fn a_key_reused_for_a_different_request_is_rejected() {
        let mut ledger = Ledger::default();
        ledger
            .capture(capture_request("order-1", 1999, "tok_visa"), 1, keep)
            .expect("approved");
        let different = [
            capture_request("order-1", 2000, "tok_visa"),
            capture_request("order-1", 1999, "tok_mastercard"),
            CaptureRequest {
                currency: "USD".to_owned(),
                ..capture_request("order-1", 1999, "tok_visa")
            },
        ];
        for request in different {
            let error = ledger.capture(request, 2, keep).expect_err("rejected");
            assert_eq!(error, Error::IdempotencyKeyReused("order-1".to_owned()));
        }
        assert_eq!(ledger.view().captures.len(), 1);
    }

    #[test]
    fn declines_are_stored_and_replayed() {
        let mut ledger = Ledger::default();
        for (token, reason) in [
            ("tok_decline", DeclineReason::CardDeclined),
            ("tok_insufficient_funds", DeclineReason::InsufficientFunds),
        ] {
            for _attempt in 0..2 {
                let captured = ledger
                    .capture(capture_request(token, 1999, token), 1, keep)
                    .expect("declined");
                assert_eq!(captured.outcome, CaptureOutcome::Declined { reason });
            }
        }
        let captures = ledger.view().captures;
        assert_eq!(captures.len(), 2);
        assert!(
            captures
                .iter()
                .all(|c| matches!(c.decision, Decision::Declined { .. }))
        );
    }

    #[test]
    fn an_unavailable_processor_records_nothing() {
        let mut ledger = Ledger::default();
        for _attempt in 0..2 {
            let error = ledger
                .capture(capture_request("order-1", 1999, "tok_unavailable"), 1, keep)
                .expect_err("unavailable");
            assert_eq!(error, Error::ProcessorUnavailable);
        }
        assert!(ledger.view().captures.is_empty());
        // The key stays free, as the request was never processed.
        ledger
            .capture(capture_request("order-1", 1999, "tok_visa"), 2, keep)
            .expect("approved");
    }

    #[test]
    fn a_slow_card_is_recorded_at_once_and_its_replay_answers_at_once() {
        let mut ledger = Ledger::default();
        let first = ledger
            .capture(capture_request("order-1", 1999, "tok_slow"), 1, keep)
            .expect("approved");
        assert!(first.answer_slowly);
        assert!(matches!(first.outcome, CaptureOutcome::Approved { .. }));
        assert_eq!(ledger.view().captures.len(), 1);
        let retry = ledger
            .capture(capture_request("order-1", 1999, "tok_slow"), 2, keep)
            .expect("replayed");
        assert!(!retry.answer_slowly);
        assert_eq!(retry.outcome, first.outcome);
    }

    #[test]
    fn malformed_captures_are_invalid() {
        let mut ledger = Ledger::default();
        let malformed = [
            capture_request("", 1999, "tok_visa"),
            capture_request("  ", 1999, "tok_visa"),
            capture_request("k", 0, "tok_visa"),
            capture_request("k", -5, "tok_visa"),
            capture_request("k", 1999, "visa"),
            capture_request("k", 1999, "tok_"),
            CaptureRequest {
                currency: "eur".to_owned(),
                ..capture_request("k", 1999, "tok_visa")
            },
            CaptureRequest {
                currency: "EURO".to_owned(),
                ..capture_request("k", 1999, "tok_visa")
            },
        ];
        for request in malformed {
            let described = format!("{request:?}");
            let error = ledger.capture(request, 1, keep).expect_err(&described);
            assert!(
                matches!(error, Error::InvalidRequest(_)),
                "{described}: {error:?}"
            );
        }
        assert!(ledger.view().captures.is_empty());
    }

    #[test]
    fn partial_refunds_add_up_to_at_most_the_capture() {
        let (mut ledger, reference) = ledger_with_capture(1000);
        ledger
            .refund(refund_request("r1", &reference, 600), 2, keep)
            .expect("refunded");
        ledger
            .refund(refund_request("r2", &reference, 400), 3, keep)
            .expect("refunded");
        let error = ledger
            .refund(refund_request("r3", &reference, 1), 4, keep)
            .expect_err("exceeds");
        assert_eq!(
            error,
            Error::RefundExceedsCapture {
                captured_minor: 1000,
                refunded_minor: 1000,
                requested_minor: 1,
            }
        );
        assert_eq!(ledger.view().refunds.len(), 2);
    }

    #[test]
    fn a_refund_larger_than_the_capture_is_rejected() {
        let (mut ledger, reference) = ledger_with_capture(1000);
        let error = ledger
            .refund(refund_request("r1", &reference, 1001), 2, keep)
            .expect_err("exceeds");
        assert!(matches!(error, Error::RefundExceedsCapture { .. }));
        assert!(ledger.view().refunds.is_empty());
    }

    #[test]
    fn a_refund_retry_replays_and_does_not_count_twice() {
        let (mut ledger, reference) = ledger_with_capture(1000);
        let first = ledger
            .refund(refund_request("r1", &reference, 1000), 2, keep)
            .expect("refunded");
        let retry = ledger
            .refund(refund_request("r1", &reference, 1000), 3, keep)
            .expect("replayed");
        assert_eq!(retry.outcome, first.outcome);
        assert!(retry.replayed);
        assert_eq!(ledger.view().refunds.len(), 1);

        let error = ledger
            .refund(refund_request("r1", &reference, 999), 4, keep)
            .expect_err("reused");
        assert_eq!(error, Error::IdempotencyKeyReused("r1".to_owned()));
    }

    #[test]
    fn refunds_of_unknown_or_declined_captures_are_rejected() {
        let (mut ledger, _) = ledger_with_capture(1000);
        let error = ledger
            .refund(refund_request("r1", "psp_nonexistent", 10), 2, keep)
            .expect_err("unknown");
        assert_eq!(error, Error::UnknownCapture("psp_nonexistent".to_owned()));

        // A decline has no reference; its key is not one either.
        ledger
            .capture(capture_request("order-2", 1000, "tok_decline"), 3, keep)
            .expect("declined");
        let error = ledger
            .refund(refund_request("r2", "order-2", 10), 4, keep)
            .expect_err("unknown");
        assert!(matches!(error, Error::UnknownCapture(_)));
        assert!(ledger.view().refunds.is_empty());
    }

    #[test]
    fn a_refund_in_another_currency_is_rejected() {
        let (mut ledger, reference) = ledger_with_capture(1000);
        let request = RefundRequest {
            currency: "USD".to_owned(),
            ..refund_request("r1", &reference, 10)
        };
        let error = ledger.refund(request, 2, keep).expect_err("mismatch");
        assert_eq!(
            error,
            Error::CurrencyMismatch {
                captured: "EUR".to_owned(),
                requested: "USD".to_owned(),
            }
        );
    }

    #[test]
    fn malformed_refunds_are_invalid() {
        let (mut ledger, reference) = ledger_with_capture(1000);
        let malformed = [
            refund_request("", &reference, 10),
            refund_request("r1", "", 10),
            refund_request("r1", &reference, 0),
            RefundRequest {
                currency: "E1R".to_owned(),
                ..refund_request("r1", &reference, 10)
            },
        ];
        for request in malformed {
            let described = format!("{request:?}");
            let error = ledger.refund(request, 2, keep).expect_err(&described);
            assert!(
                matches!(error, Error::InvalidRequest(_)),
                "{described}: {error:?}"
            );
        }
    }

    #[test]
    fn records_round_trip_through_json() {
        let (mut ledger, reference) = ledger_with_capture(1000);
        ledger
            .capture(
                capture_request("order-2", 500, "tok_insufficient_funds"),
                2,
                keep,
            )
            .expect("declined");
        ledger
            .refund(refund_request("r1", &reference, 300), 3, keep)
            .expect("refunded");
        let view = ledger.view();
        for record in &view.captures {
            let json = serde_json::to_string(record).expect("serialized");
            let back: CaptureRecord = serde_json::from_str(&json).expect(&json);
            assert_eq!(&back, record, "{json}");
        }
        let json = serde_json::to_string(&view.refunds[0]).expect("serialized");
        let back: RefundRecord = serde_json::from_str(&json).expect(&json);
        assert_eq!(back, view.refunds[0]);

        // The decision is flattened into the record, as `/admin/ledger` shows it.
        let declined = serde_json::to_value(&view.captures[1]).expect("serialized");
        assert_eq!(declined["status"], "declined");
        assert_eq!(declined["reason"], "insufficient_funds");
    }

    #[test]
    fn a_restored_ledger_replays_the_same_answers() {
        let (mut ledger, reference) = ledger_with_capture(1000);
        let refunded = ledger
            .refund(refund_request("r1", &reference, 600), 2, keep)
            .expect("refunded");
        let mut restored = restored(&ledger);
        assert_eq!(restored.view().captures, ledger.view().captures);
        assert_eq!(restored.view().refunds, ledger.view().refunds);

        let retry = restored
            .capture(capture_request("order-1", 1000, "tok_visa"), 3, fail)
            .expect("replayed without the journal");
        assert!(retry.replayed);
        assert_eq!(Some(retry.outcome), ledger.find_capture("order-1"));
        let retry = restored
            .refund(refund_request("r1", &reference, 600), 4, fail)
            .expect("replayed without the journal");
        assert!(retry.replayed);
        assert_eq!(retry.outcome, refunded.outcome);
        let error = restored
            .capture(capture_request("order-1", 999, "tok_visa"), 5, keep)
            .expect_err("reused");
        assert_eq!(error, Error::IdempotencyKeyReused("order-1".to_owned()));
    }

    #[test]
    fn a_restored_ledger_still_bounds_refunds_by_the_capture() {
        let (mut ledger, reference) = ledger_with_capture(1000);
        ledger
            .refund(refund_request("r1", &reference, 600), 2, keep)
            .expect("refunded");
        let mut restored = restored(&ledger);
        let error = restored
            .refund(refund_request("r2", &reference, 401), 3, keep)
            .expect_err("exceeds");
        assert_eq!(
            error,
            Error::RefundExceedsCapture {
                captured_minor: 1000,
                refunded_minor: 600,
                requested_minor: 401,
            }
        );
        restored
            .refund(refund_request("r2", &reference, 400), 4, keep)
            .expect("refunded");
    }

    #[test]
    fn a_restored_decline_is_replayed_as_a_decline() {
        let mut ledger = Ledger::default();
        let declined = ledger
            .capture(capture_request("order-1", 1999, "tok_decline"), 1, keep)
            .expect("declined");
        let mut restored = restored(&ledger);
        let retry = restored
            .capture(capture_request("order-1", 1999, "tok_decline"), 2, fail)
            .expect("replayed");
        assert!(retry.replayed);
        assert_eq!(
            retry.outcome,
            CaptureOutcome::Declined {
                reason: DeclineReason::CardDeclined
            }
        );
        assert_eq!(retry.outcome, declined.outcome);
        assert_eq!(restored.view().captures.len(), 1);
    }

    #[test]
    fn records_that_contradict_the_books_are_not_restored() {
        let (ledger, reference) = ledger_with_capture(1000);
        let mut restored = restored(&ledger);
        let capture = ledger.view().captures[0].clone();
        assert_eq!(
            restored.restore_capture(capture),
            Err(Error::IdempotencyKeyReused("order-1".to_owned()))
        );

        let orphan = RefundRecord {
            idempotency_key: "r1".to_owned(),
            refund_reference: "rf_1".to_owned(),
            psp_reference: "psp_nonexistent".to_owned(),
            amount_minor: 10,
            currency: "EUR".to_owned(),
            at_micros: 2,
        };
        assert_eq!(
            restored.restore_refund(orphan.clone()),
            Err(Error::UnknownCapture("psp_nonexistent".to_owned()))
        );
        let refund = RefundRecord {
            psp_reference: reference,
            ..orphan
        };
        restored.restore_refund(refund.clone()).expect("restored");
        assert_eq!(
            restored.restore_refund(refund),
            Err(Error::IdempotencyKeyReused("r1".to_owned()))
        );
        assert_eq!(restored.view().refunds.len(), 1);
    }

    #[test]
    fn nothing_is_recorded_when_the_journal_fails() {
        let (mut ledger, reference) = ledger_with_capture(1000);
        let error = ledger
            .capture(capture_request("order-2", 500, "tok_visa"), 2, fail)
            .expect_err("not journaled");
        assert!(matches!(error, Error::Journal(_)), "{error:?}");
        let error = ledger
            .refund(refund_request("r1", &reference, 500), 3, fail)
            .expect_err("not journaled");
        assert!(matches!(error, Error::Journal(_)), "{error:?}");
        assert_eq!(ledger.view().captures.len(), 1);
        assert!(ledger.view().refunds.is_empty());
        assert_eq!(ledger.find_capture("order-2"), None);

        // The key stays free, as nothing was decided under it.
        let captured = ledger
            .capture(capture_request("order-2", 500, "tok_visa"), 4, keep)
            .expect("approved");
        assert!(!captured.replayed);
    }
}
