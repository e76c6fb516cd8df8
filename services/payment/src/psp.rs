//! HTTP client of the external payment service provider (PSP).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::CallResult;

pub struct PspClient {
    http: reqwest::Client,
    base_url: String,
}

#[derive(Serialize)]
struct CaptureRequest<'a> {
    idempotency_key: &'a str,
    amount_minor: i64,
    currency: &'a str,
    card_token: &'a str,
}

#[derive(Serialize)]
struct RefundRequest<'a> {
    idempotency_key: &'a str,
    psp_reference: &'a str,
    amount_minor: i64,
    currency: &'a str,
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
    fn failed(result: CallResult, error: String) -> Self {
        Self {
            result,
            psp_reference: None,
            error: Some(error),
        }
    }
}

impl PspClient {
    pub fn new(base_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(1))
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }

    pub async fn capture(
        &self,
        idempotency_key: &str,
        amount_minor: i64,
        currency: &str,
        card_token: &str,
    ) -> Answer {
        let body = CaptureRequest {
            idempotency_key,
            amount_minor,
            currency,
            card_token,
        };
        let sent = self
            .http
            .post(format!("{}/v1/captures", self.base_url))
            .json(&body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return transport_failure(e),
        };
        let status = response.status();
        match status.as_u16() {
            200 => match response.json::<Approved>().await {
                Ok(approved) => Answer {
                    result: CallResult::Captured,
                    psp_reference: Some(approved.psp_reference),
                    error: None,
                },
                Err(e) => Answer::failed(CallResult::Unknown, format!("unreadable approval: {e}")),
            },
            402 => {
                let reason = response
                    .json::<Declined>()
                    .await
                    .map_or_else(|_| "declined".to_owned(), |d| d.reason);
                Answer {
                    result: CallResult::Declined(reason),
                    psp_reference: None,
                    error: None,
                }
            }
            // The PSP refuses the card details themselves: a decline.
            400 => Answer {
                result: CallResult::Declined("invalid_payment_details".to_owned()),
                psp_reference: None,
                error: None,
            },
            503 => Answer::failed(CallResult::NotProcessed, "PSP unavailable (503)".to_owned()),
            _ => Answer::failed(CallResult::Unknown, format!("PSP answered {status}")),
        }
    }

    /// What the PSP decided under a capture's idempotency key.
    pub async fn look_up_capture(&self, idempotency_key: &str) -> Answer {
        let sent = self
            .http
            .get(format!("{}/v1/captures/{idempotency_key}", self.base_url))
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            // Whatever happened to a lookup, nothing was charged by it.
            Err(e) => return Answer::failed(CallResult::NotProcessed, e.to_string()),
        };
        match response.status().as_u16() {
            404 => Answer {
                result: CallResult::NeverCaptured,
                psp_reference: None,
                error: None,
            },
            200 => match response.json::<Approved>().await {
                Ok(approved) => Answer {
                    result: CallResult::Captured,
                    psp_reference: Some(approved.psp_reference),
                    error: None,
                },
                Err(e) => {
                    Answer::failed(CallResult::NotProcessed, format!("unreadable lookup: {e}"))
                }
            },
            402 => Answer {
                result: CallResult::Declined(
                    response
                        .json::<Declined>()
                        .await
                        .map_or_else(|_| "declined".to_owned(), |d| d.reason),
                ),
                psp_reference: None,
                error: None,
            },
            status => Answer::failed(
                CallResult::NotProcessed,
                format!("PSP answered {status} to a lookup"),
            ),
        }
    }

    pub async fn refund(
        &self,
        idempotency_key: &str,
        psp_reference: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Answer {
        let body = RefundRequest {
            idempotency_key,
            psp_reference,
            amount_minor,
            currency,
        };
        let sent = self
            .http
            .post(format!("{}/v1/refunds", self.base_url))
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().as_u16() == 200 => Answer {
                result: CallResult::Refunded,
                psp_reference: None,
                error: None,
            },
            Ok(r) if r.status().as_u16() == 503 => {
                Answer::failed(CallResult::NotProcessed, "PSP unavailable (503)".to_owned())
            }
            Ok(r) => Answer::failed(CallResult::Unknown, format!("PSP answered {}", r.status())),
            Err(e) => transport_failure(e),
        }
    }
}

/// A request that never connected was not processed; any other transport
/// failure (timeout, reset) leaves the outcome unknown.
fn transport_failure(error: reqwest::Error) -> Answer {
    let result = if error.is_connect() {
        CallResult::NotProcessed
    } else {
        CallResult::Unknown
    };
    Answer::failed(result, error.to_string())
}
