//! Makes the PSP calls payments wait for. Each call runs under a lease
//! taken in its own transaction, never inside one, so a slow PSP holds no
//! locks; a crashed call's lease expires and the call is retried with the
//! same idempotency key, so the card is never charged twice.

use std::sync::Arc;
use std::time::Duration;

use shipshape_runtime::{Backoff, CancellationToken, tasks};
use shipshape_telemetry::TraceContext;
use shipshape_types::OrderId;
use sqlx::PgPool;
use tracing::Instrument as _;

use crate::domain::{CallResult, PspCall};
use crate::psp::{Answer, PspClient};
use crate::publish::publish;
use crate::store::{self, CallRecord};

/// Before a failed PSP call is tried again by the retry sweep.
const PSP_CALL_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

pub struct Driver {
    pool: PgPool,
    psp: PspClient,
    /// How long a claimed call may take before others may retry it.
    lease_secs: f64,
}

impl Driver {
    /// `longest_call` bounds one PSP call with all its retries; a lease
    /// outlives it, so a live call is never retried behind its back.
    pub fn new(pool: PgPool, psp: PspClient, longest_call: Duration) -> Self {
        Self {
            pool,
            psp,
            lease_secs: (longest_call + Duration::from_secs(2)).as_secs_f64(),
        }
    }

    /// Drives the order's payment in the background, as a child of
    /// `decided`: the trace of the work that asked for the PSP call (the
    /// event handler itself, or, from the retry sweep, the context that
    /// work stored), so the calls join the checkout's trace.
    pub fn kick(self: &Arc<Self>, order_id: OrderId, decided: &TraceContext) {
        let driver = self.clone();
        let span = tracing::info_span!("payment.drive", order_id = %order_id);
        decided.adopt(&span);
        tokio::spawn(async move { driver.drive(order_id).await }.instrument(span));
    }

    async fn drive(&self, order_id: OrderId) {
        loop {
            match self.call_once(order_id).await {
                Ok(true) => continue,
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%order_id, %error, "payment step failed; the retry sweep picks it up");
                    return;
                }
            }
        }
    }

    /// Makes one PSP call if the payment waits for one; `true` when another
    /// call should follow at once (a capture that must now be refunded).
    async fn call_once(&self, order_id: OrderId) -> sqlx::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = store::lock_actionable(&mut tx, order_id).await? else {
            return Ok(false);
        };
        let Some(call) = row.payment.pending_call() else {
            return Ok(false);
        };
        store::claim(&mut tx, order_id, self.lease_secs, call == PspCall::Capture).await?;
        tx.commit().await?;
        let claimed_attempt = row.attempts + 1;

        let answer = self.call(&row, call).await;

        let mut tx = self.pool.begin().await?;
        let Some(mut current) = store::lock(&mut tx, order_id).await? else {
            return Ok(false);
        };
        if current.attempts != claimed_attempt {
            // Our lease ran out and another call was claimed since: the lease
            // and the uncertainty flag are now that call's. Only a decision by
            // the PSP is still news.
            let decided = matches!(
                (call, &answer.result),
                (
                    PspCall::Capture,
                    CallResult::Captured | CallResult::Declined(_)
                ) | (PspCall::Refund, CallResult::Refunded)
            );
            if !decided {
                tracing::warn!(%order_id, ?call, "superseded PSP call without a decision; ignored");
                return Ok(false);
            }
            if answer.psp_reference.is_some() {
                current.psp_reference = answer.psp_reference.clone();
            }
            let notices = current.payment.record(answer.result);
            store::save_decision(&mut tx, &current).await?;
            publish(&mut tx, &current, &notices).await?;
            tx.commit().await?;
            return Ok(false);
        }
        // The claim marked the capture uncertain in case we crashed; now the
        // answer says what is actually known.
        current.payment.capture_uncertain = row.payment.capture_uncertain;
        if answer.psp_reference.is_some() {
            current.psp_reference = answer.psp_reference.clone();
        }
        let decline_reason = match &answer.result {
            CallResult::Declined(reason) => Some(reason.clone()),
            _ => None,
        };
        let failed = answer.error.is_some();
        let notices = current.payment.record(answer.result);
        let record = CallRecord {
            decline_reason: decline_reason.as_deref(),
            error: answer.error.as_deref(),
            retry_in_secs: if failed {
                PSP_CALL_BACKOFF
                    .delay(current.attempts.max(1) as u32)
                    .as_secs_f64()
            } else {
                0.0
            },
        };
        if let Some(error) = &answer.error {
            tracing::warn!(%order_id, ?call, error, attempts = current.attempts, "PSP call failed");
        }
        store::save_answer(&mut tx, &current, &record).await?;
        publish(&mut tx, &current, &notices).await?;
        tx.commit().await?;
        Ok(!failed && current.payment.pending_call().is_some())
    }

    async fn call(&self, row: &store::PaymentRow, call: PspCall) -> Answer {
        let amount = row.amount_minor.unwrap_or_default();
        let currency = row.currency.as_deref().unwrap_or_default();
        match call {
            PspCall::Capture => {
                let token = row.card_token.as_deref().unwrap_or_default();
                self.psp
                    .capture(&row.payment_id.to_string(), amount, currency, token)
                    .await
            }
            PspCall::LookUpCapture => self.psp.look_up_capture(&row.payment_id.to_string()).await,
            PspCall::Refund => {
                let reference = row.psp_reference.as_deref().unwrap_or_default();
                let key = format!("refund-{}", row.payment_id);
                self.psp.refund(&key, reference, amount, currency).await
            }
        }
    }

    /// Retries due calls (failed ones after their backoff, expired leases)
    /// every `interval` until `shutdown`.
    pub async fn sweep(
        self: Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let driver = &self;
        tasks::every(interval, shutdown, || async move {
            let due = match driver.pool.acquire().await {
                Ok(mut conn) => store::due(&mut conn, 100).await,
                Err(e) => Err(e),
            };
            match due {
                Ok(due) => due
                    .into_iter()
                    .for_each(|(id, decided)| driver.kick(id, &decided)),
                Err(error) => tracing::warn!(%error, "payment retry sweep failed"),
            }
        })
        .await
    }
}
