//! The idempotent-consumer half of exactly-once effects.

use sqlx::PgConnection;
use uuid::Uuid;

/// Records `event_id` as processed inside the caller's transaction. Returns
/// `false` when it was already recorded: the caller must then skip the
/// effect. A concurrent delivery of the same event waits on the primary key
/// until the first transaction ends, so only one of them sees `true`.
pub async fn first_delivery(
    conn: &mut PgConnection,
    event_id: Uuid,
    event_type: &str,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "INSERT INTO inbox (event_id, event_type) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(event_type)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}
