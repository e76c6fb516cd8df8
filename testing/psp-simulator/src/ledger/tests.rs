//! Tests of `ledger`.

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
