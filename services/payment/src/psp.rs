//! HTTP client of the external payment service provider (PSP). Every call
//! goes through the resilience stack for the `psp` downstream (timeout,
//! retry, circuit breaker, bulkhead; see `shipshape-resilience`): a slow or
//! failing provider is cut off quickly instead of tying up the payment
//! service, and every call carries an idempotency key, so the stack's
//! retries can never charge or refund twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use shipshape_resilience::{Classify, Downstream, FailureClass, Idempotency, ResilienceError};
use shipshape_telemetry::TraceContext;
use tower::{ServiceBuilder, ServiceExt};
use tracing::Instrument as _;

use crate::domain::CallResult;

#[derive(Clone)]
pub struct PspClient {
    http: reqwest::Client,
    base_url: Arc<str>,
    psp: Downstream,
}

#[derive(Clone, Serialize)]
struct CaptureRequest {
    idempotency_key: String,
    amount_minor: i64,
    currency: String,
    card_token: String,
}

#[derive(Clone, Serialize)]
struct RefundRequest {
    idempotency_key: String,
    psp_reference: String,
    amount_minor: i64,
    currency: String,
}

/// One PSP call; cloned for each attempt the stack makes.
#[derive(Clone)]
enum Call {
    Capture(CaptureRequest),
    LookUpCapture { idempotency_key: String },
    Refund(RefundRequest),
}

#[derive(Deserialize)]
struct Approved {
    psp_reference: String,
}

#[derive(Deserialize)]
struct Declined {
    reason: String,
}

/// The PSP's answer, plus the capture reference when it captured.
pub struct Answer {
    pub result: CallResult,
    pub psp_reference: Option<String>,
    /// Why the call failed, for the payment's `last_error`.
    pub error: Option<String>,
}

impl Answer {
    fn decided(result: CallResult) -> Self {
        Self {
            result,
            psp_reference: None,
            error: None,
        }
    }

    fn captured(psp_reference: String) -> Self {
        Self {
            result: CallResult::Captured,
            psp_reference: Some(psp_reference),
            error: None,
        }
    }

    fn failed(result: CallResult, error: String) -> Self {
        Self {
            result,
            psp_reference: None,
            error: Some(error),
        }
    }
}

/// An attempt that got no decision from the PSP. Most are transient (worth
/// retrying, and counted against the breaker); the PSP rejecting the request
/// itself (a 4xx other than timeout or throttling) is not: repeating it
/// cannot help, and one bad payment must not trip the breaker for all.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
struct NoDecision {
    reason: String,
    class: FailureClass,
}

impl NoDecision {
    fn transient(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            class: FailureClass::Transient,
        }
    }

    /// The PSP answered `status` without deciding anything.
    fn answered(status: u16) -> Self {
        let rejected = (400..500).contains(&status) && status != 408 && status != 429;
        Self {
            reason: format!("PSP answered {status}"),
            class: if rejected {
                FailureClass::Permanent
            } else {
                FailureClass::Transient
            },
        }
    }
}

impl Classify for NoDecision {
    fn class(&self) -> FailureClass {
        self.class
    }
}

impl PspClient {
    /// A client of the PSP at `base_url`; calls go through `psp`'s stack,
    /// which also bounds each attempt's duration.
    pub fn new(base_url: &str, psp: Downstream) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').into(),
            psp,
        })
    }

    pub async fn capture(
        &self,
        idempotency_key: &str,
        amount_minor: i64,
        currency: &str,
        card_token: &str,
    ) -> Answer {
        self.call(Call::Capture(CaptureRequest {
            idempotency_key: idempotency_key.to_owned(),
            amount_minor,
            currency: currency.to_owned(),
            card_token: card_token.to_owned(),
        }))
        .await
    }

    /// What the PSP decided under a capture's idempotency key.
    pub async fn look_up_capture(&self, idempotency_key: &str) -> Answer {
        self.call(Call::LookUpCapture {
            idempotency_key: idempotency_key.to_owned(),
        })
        .await
    }

    pub async fn refund(
        &self,
        idempotency_key: &str,
        psp_reference: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Answer {
        self.call(Call::Refund(RefundRequest {
            idempotency_key: idempotency_key.to_owned(),
            psp_reference: psp_reference.to_owned(),
            amount_minor,
            currency: currency.to_owned(),
        }))
        .await
    }

    /// Makes `call` through the stack. Without a decision, the answer says
    /// whether money may have moved: `Unknown` when any attempt of a capture
    /// or refund may have reached the PSP (a timeout, a lost response), so
    /// the payment looks it up before assuming nothing happened;
    /// `NotProcessed` only when none can have (refused connections, the
    /// PSP's own 503, the breaker or bulkhead refusing to call).
    async fn call(&self, call: Call) -> Answer {
        let moves_money = !matches!(call, Call::LookUpCapture { .. });
        let maybe_processed = Arc::new(AtomicU32::new(0));
        let attempts = {
            let client = self.clone();
            let maybe_processed = maybe_processed.clone();
            ServiceBuilder::new()
                .layer(self.psp.layer(Idempotency::Idempotent))
                .service_fn(move |call: Call| {
                    let client = client.clone();
                    let maybe_processed = maybe_processed.clone();
                    async move { client.attempt(call, &maybe_processed).await }
                })
        };
        match attempts.oneshot(call).await {
            Ok(answer) => answer,
            Err(error) => {
                let uncertain = moves_money && maybe_processed.load(Ordering::Acquire) > 0;
                let result = if uncertain {
                    CallResult::Unknown
                } else {
                    CallResult::NotProcessed
                };
                let reason = match error {
                    ResilienceError::Inner(NoDecision { reason, .. }) => reason,
                    refused => refused.to_string(),
                };
                Answer::failed(result, reason)
            }
        }
    }

    /// One HTTP exchange. `maybe_processed` counts attempts that may have
    /// reached the PSP: raised before sending (the stack may abandon the
    /// attempt at any await), lowered again once the attempt is known not
    /// to have been processed.
    async fn attempt(&self, call: Call, maybe_processed: &AtomicU32) -> Result<Answer, NoDecision> {
        let (route, request) = match &call {
            Call::Capture(body) => (
                "POST /v1/captures",
                self.http
                    .post(format!("{}/v1/captures", self.base_url))
                    .json(body),
            ),
            Call::LookUpCapture { idempotency_key } => (
                "GET /v1/captures/{idempotency_key}",
                self.http
                    .get(format!("{}/v1/captures/{idempotency_key}", self.base_url)),
            ),
            Call::Refund(body) => (
                "POST /v1/refunds",
                self.http
                    .post(format!("{}/v1/refunds", self.base_url))
                    .json(body),
            ),
        };
        // One client span per attempt; the PSP continues the trace from it.
        let span = tracing::info_span!(
            "http.client",
            otel.name = route,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            peer.service = "psp",
            http.response.status_code = tracing::field::Empty,
        );
        let mut trace_headers = HeaderMap::new();
        TraceContext::of(&span).write_headers(&mut trace_headers);
        let request = request.headers(trace_headers);
        maybe_processed.fetch_add(1, Ordering::AcqRel);
        let not_processed = |reason: String| {
            maybe_processed.fetch_sub(1, Ordering::AcqRel);
            Err(NoDecision::transient(reason))
        };
        let sent = request.send().instrument(span.clone()).await;
        let status = sent.as_ref().ok().map(|response| response.status());
        if let Some(status) = status {
            span.record("http.response.status_code", status.as_u16());
        }
        if status.is_none_or(|status| status.is_server_error()) {
            span.record("otel.status_code", "ERROR");
        }
        let response = match sent {
            Ok(response) => response,
            // A request that never connected was not processed.
            Err(e) if e.is_connect() => return not_processed(e.to_string()),
            Err(e) => return Err(NoDecision::transient(e.to_string())),
        };
        let status = response.status().as_u16();
        match (&call, status) {
            (_, 503) => not_processed("PSP unavailable (503)".to_owned()),
            (Call::Capture(_) | Call::LookUpCapture { .. }, 200) => {
                match response.json::<Approved>().await {
                    Ok(approved) => Ok(Answer::captured(approved.psp_reference)),
                    Err(e) => Err(NoDecision::transient(format!("unreadable approval: {e}"))),
                }
            }
            (Call::Capture(_) | Call::LookUpCapture { .. }, 402) => {
                let reason = response
                    .json::<Declined>()
                    .await
                    .map_or_else(|_| "declined".to_owned(), |d| d.reason);
                Ok(Answer::decided(CallResult::Declined(reason)))
            }
            // The PSP refuses the card details themselves: a decline.
            (Call::Capture(_), 400) => Ok(Answer::decided(CallResult::Declined(
                "invalid_payment_details".to_owned(),
            ))),
            (Call::LookUpCapture { .. }, 404) => Ok(Answer::decided(CallResult::NeverCaptured)),
            (Call::Refund(_), 200) => Ok(Answer::decided(CallResult::Refunded)),
            (_, status) => Err(NoDecision::answered(status)),
        }
    }
}
