//! Order timelines live: one Postgres `LISTEN` per process hears of every
//! row [`timeline::record`] commits (from any replica sharing the database),
//! and each open stream reads its order's new rows when its order is named.

use std::time::Duration;

use shipshape_proto::order::OrderTimeline;
use shipshape_runtime::{Backoff, CancellationToken};
use shipshape_types::OrderId;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use crate::timeline;

/// Notifications a slow stream may fall behind by before it is told it
/// lagged (and then reads its order anyway).
const NEWS_CAPACITY: usize = 1024;
/// A stream reads its order this often even without news: a notification
/// sent while the listener was reconnecting is lost.
const POLL_INTERVAL: Duration = Duration::from_secs(5);
const RECONNECT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Which orders' timelines have grown, for every stream in this process.
#[derive(Clone)]
pub struct TimelineNews {
    sender: broadcast::Sender<OrderId>,
}

impl Default for TimelineNews {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(NEWS_CAPACITY).0,
        }
    }
}

impl TimelineNews {
    pub fn subscribe(&self) -> broadcast::Receiver<OrderId> {
        self.sender.subscribe()
    }

    /// Listens on [`timeline::CHANNEL`] until `shutdown`, passing on each
    /// order id heard; reconnects when the connection is lost.
    pub async fn listen(self, pool: PgPool, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut failures = 0;
        while !shutdown.is_cancelled() {
            let error = tokio::select! {
                _ = shutdown.cancelled() => break,
                error = self.relay(&pool, &mut failures) => error,
            };
            failures += 1;
            let backoff = RECONNECT_BACKOFF.delay(failures);
            tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64,
                "timeline listener lost; streams poll until it is back");
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
        Ok(())
    }

    /// Passes on what one connection hears, until it fails; a connection
    /// that listens resets `failures`.
    async fn relay(&self, pool: &PgPool, failures: &mut u32) -> sqlx::Error {
        let mut listener = match PgListener::connect_with(pool).await {
            Ok(listener) => listener,
            Err(error) => return error,
        };
        if let Err(error) = listener.listen(timeline::CHANNEL).await {
            return error;
        }
        *failures = 0;
        loop {
            match listener.recv().await {
                Ok(notification) => {
                    if let Ok(order_id) = notification.payload().parse() {
                        // No receiver means no stream is open: nothing to do.
                        let _ = self.sender.send(order_id);
                    }
                }
                Err(error) => return error,
            }
        }
    }
}

/// Sends `first` (already read for `order_id`: its entries after
/// `after`), then whatever is recorded for the order after it, to
/// `sender`, until the receiver goes away or `shutdown`. `news` was
/// subscribed before `first` was read, so nothing recorded in between is
/// missed.
pub async fn follow(
    pool: PgPool,
    order_id: OrderId,
    after: i64,
    first: OrderTimeline,
    mut news: broadcast::Receiver<OrderId>,
    sender: mpsc::Sender<Result<OrderTimeline, Status>>,
    shutdown: CancellationToken,
) {
    let mut after = first
        .entries
        .iter()
        .map(|e| e.sequence)
        .max()
        .unwrap_or(after)
        .max(after);
    if sender.send(Ok(first)).await.is_err() {
        return;
    }
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.reset();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sender.closed() => return,
            _ = poll.tick() => {}
            heard = news.recv() => match heard {
                Ok(id) if id != order_id => continue,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
        let read = async {
            let mut conn = pool.acquire().await?;
            timeline::load(&mut conn, order_id, after).await
        };
        let update = match read.await {
            Ok(Some((_, update))) => update,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, %order_id, "timeline stream could not read its order");
                continue;
            }
        };
        let Some(newest) = update.entries.iter().map(|e| e.sequence).max() else {
            continue;
        };
        after = newest;
        if sender.send(Ok(update)).await.is_err() {
            return;
        }
    }
}
