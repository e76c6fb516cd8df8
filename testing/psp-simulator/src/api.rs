//! The HTTP handlers: the `/v1` API the payment service calls, and the
//! `/admin` routes tests use to inject faults and audit what was charged.
//!
//! Every `/v1` request meets the injected faults in the same order: an
//! injected error answers without processing; otherwise the ledger decides
//! at once (so a charge is made even if the caller gives up waiting), a new
//! decision is journaled before it is kept, and the answer waits out the
//! latency, the slow card's delay, or — for a lost response — longer than
//! any caller will wait.
//!
//! Whatever a caller sent (an idempotency key, or an error quoting one) is
//! logged with `?` (Debug), which escapes newlines and control characters,
//! so that no request can forge a log line.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::faults::{Faults, Plan};
use crate::journal::Entry;
use crate::ledger::{CaptureOutcome, CaptureRequest, LedgerView, RefundOutcome, RefundRequest};
use crate::{Error, Psp};

/// How long a lost answer is held back. Callers time out long before; a
/// held answer is still sent if the simulator shuts down first, because by
/// then nobody is waiting for it and the truth is the better thing to send.
const LOST_RESPONSE_HOLD: Duration = Duration::from_secs(300);

pub async fn capture(
    State(psp): State<Psp>,
    body: Result<Json<CaptureRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<CaptureOutcome>), Error> {
    let Json(request) = body?;
    let key = request.idempotency_key.clone();
    let plan = psp.faults().plan();
    let captured = plan.admit().and_then(|()| {
        psp.ledger().capture(request, now_micros(), |record| {
            psp.journal(&Entry::Capture(record.clone()))
        })
    });

    let mut delay = plan.latency;
    if let Ok(captured) = &captured {
        tracing::info!(
            ?key,
            outcome = ?captured.outcome,
            replayed = captured.replayed,
            lose_response = plan.lose_response,
            "capture"
        );
        if captured.answer_slowly {
            delay += psp.slow_card_delay();
        }
    }
    hold_answer(&psp, plan, delay, captured.is_ok()).await;

    let captured = captured.inspect_err(|error| tracing::info!(?key, ?error, "capture refused"))?;
    let status = match captured.outcome {
        CaptureOutcome::Approved { .. } => StatusCode::OK,
        CaptureOutcome::Declined { .. } => StatusCode::PAYMENT_REQUIRED,
    };
    Ok((status, Json(captured.outcome)))
}

/// What was decided under a capture's idempotency key: the same answer the
/// capture gave, or 404 when no capture was ever processed under it.
pub async fn find_capture(
    State(psp): State<Psp>,
    Path(key): Path<String>,
) -> Result<(StatusCode, Json<CaptureOutcome>), Error> {
    let plan = psp.faults().plan();
    let found = plan.admit().map(|()| psp.ledger().find_capture(&key));
    psp.sleep(plan.latency).await;
    match found? {
        Some(outcome @ CaptureOutcome::Approved { .. }) => Ok((StatusCode::OK, Json(outcome))),
        Some(outcome) => Ok((StatusCode::PAYMENT_REQUIRED, Json(outcome))),
        None => Err(Error::NoCaptureUnderKey(key)),
    }
}

pub async fn refund(
    State(psp): State<Psp>,
    body: Result<Json<RefundRequest>, JsonRejection>,
) -> Result<Json<RefundOutcome>, Error> {
    let Json(request) = body?;
    let key = request.idempotency_key.clone();
    let plan = psp.faults().plan();
    let refunded = plan.admit().and_then(|()| {
        psp.ledger().refund(request, now_micros(), |record| {
            psp.journal(&Entry::Refund(record.clone()))
        })
    });

    if let Ok(refunded) = &refunded {
        tracing::info!(
            ?key,
            outcome = ?refunded.outcome,
            replayed = refunded.replayed,
            lose_response = plan.lose_response,
            "refund"
        );
    }
    hold_answer(&psp, plan, plan.latency, refunded.is_ok()).await;

    let refunded = refunded.inspect_err(|error| tracing::info!(?key, ?error, "refund refused"))?;
    Ok(Json(refunded.outcome))
}

/// Only a processed request can lose its answer; one that was refused has
/// nothing a caller could be wrong about.
async fn hold_answer(psp: &Psp, plan: Plan, delay: Duration, processed: bool) {
    let delay = if plan.lose_response && processed {
        delay + LOST_RESPONSE_HOLD
    } else {
        delay
    };
    psp.sleep(delay).await;
}

pub async fn get_faults(State(psp): State<Psp>) -> Json<Faults> {
    Json(*psp.faults())
}

pub async fn put_faults(
    State(psp): State<Psp>,
    body: Result<Json<Faults>, JsonRejection>,
) -> Result<Json<Faults>, Error> {
    let Json(faults) = body?;
    let faults = faults.validated()?;
    *psp.faults() = faults;
    tracing::info!(?faults, "faults set");
    Ok(Json(faults))
}

pub async fn ledger(State(psp): State<Psp>) -> Json<LedgerView> {
    let view = psp.ledger().view();
    Json(view)
}

pub async fn not_found() -> Error {
    Error::RouteNotFound
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}
