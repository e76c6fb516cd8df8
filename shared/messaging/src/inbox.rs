//! The idempotent-consumer half of exactly-once effects.

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::Incoming;

/// Begins the transaction that applies `message`'s effect, with the message
/// already recorded as processed in it; `None` when it was processed
/// before, and the handler must do nothing. Every handler opens its work
/// this way, so the effect and the record of it commit together.
pub async fn begin(
    pool: &PgPool,
    message: &Incoming,
) -> sqlx::Result<Option<Transaction<'static, Postgres>>> {
    let mut tx = pool.begin().await?;
    let first = first_delivery(&mut tx, message.event_id, message.event.type_name()).await?;
    Ok(first.then_some(tx))
}

/// Records `event_id` as processed inside the caller's transaction. Returns
/// `false` when it was already recorded: the caller must then skip the
/// effect. A concurrent delivery of the same event waits on the primary key
/// until the first transaction ends, so only one of them sees `true`.
async fn first_delivery(
    conn: &mut PgConnection,
    event_id: Uuid,
    event_type: &str,
) -> sqlx::Result<bool> {
    let result = sqlx::query!(
        "INSERT INTO inbox (event_id, event_type) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
        event_id,
        event_type,
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}
