//! The saga deadline: a pending order past its deadline is cancelled
//! (`timed_out`); steps that complete later compensate themselves.

use std::time::Duration;

use shipshape_runtime::{CancellationToken, tasks};
use sqlx::PgPool;
use tracing::Instrument as _;

use crate::events::{Advanced, Outcome, advance};
use crate::saga::Observation;
use crate::store;

const BATCH: i64 = 100;

/// Sweeps overdue orders every `interval` until `shutdown`.
pub async fn sweep(
    pool: PgPool,
    interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = &pool;
    tasks::every(interval, shutdown, || async move {
        loop {
            match sweep_batch(pool).await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "deadline sweep failed; retrying next interval");
                    break;
                }
            }
        }
    })
    .await
}

async fn sweep_batch(pool: &PgPool) -> sqlx::Result<usize> {
    let mut tx = pool.begin().await?;
    let overdue = store::lock_overdue(&mut tx, BATCH).await?;
    let mut outcomes = Vec::new();
    for (order_id, placed) in &overdue {
        // Part of the order's checkout: a child of the request that placed
        // it, so the cancellation and its compensations join that trace.
        let span = tracing::info_span!(
            "saga.deadline",
            otel.name = "order deadline passed",
            order_id = %order_id,
        );
        placed.adopt(&span);
        if let Advanced::Applied(Some(outcome)) =
            advance(&mut tx, *order_id, Observation::DeadlinePassed, None)
                .instrument(span)
                .await?
        {
            outcomes.push(outcome);
        }
    }
    tx.commit().await?;
    outcomes.iter().for_each(Outcome::record);
    Ok(overdue.len())
}
