//! Per-client rate limiting: every client has a token bucket, so one busy
//! client cannot spend the capacity that all clients share. A request takes
//! a token; tokens come back at a steady rate up to a burst; a request that
//! finds the bucket empty is answered `429` with `Retry-After`.
//!
//! Who is a client: see [`crate::client`]. Without a customer or an
//! address, every such request shares one bucket.
//!
//! Memory is bounded: a bucket that has refilled completely is the same as no
//! bucket, so such buckets are dropped periodically, and at most
//! [`MAX_CLIENTS`] are kept. Clients that arrive while the table is full
//! share one overflow bucket until room frees up; a flood from many random
//! addresses then competes for a single client's allowance instead of
//! growing the table or evicting the buckets of clients already being
//! limited.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use crate::client::{ClientKey, ClientKeys};
use crate::error::ApiError;
use crate::http_metrics;

/// Most clients tracked at once. A bucket takes well under a hundred bytes,
/// so the table stays within a few megabytes however many addresses send.
pub const MAX_CLIENTS: usize = 65_536;

/// How often buckets that have refilled are dropped. Sweeping walks the whole
/// table under the lock, so it runs at most this often, not per request.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// One token in credits. A bucket refills `per_second` credits every
/// nanosecond, which is `per_second` tokens a second, in integers: the
/// refill is exact for any rate, with no rounding to accumulate.
const CREDITS_PER_TOKEN: u64 = 1_000_000_000;

/// Token buckets for every client seen recently.
#[derive(Debug)]
pub struct RateLimiter {
    /// Credits added per nanosecond: the rate in tokens per second.
    refill_per_nano: u64,
    /// A full bucket, in credits.
    capacity: u64,
    max_clients: usize,
    keys: ClientKeys,
    clients: Mutex<Clients>,
}

#[derive(Debug)]
struct Clients {
    buckets: HashMap<ClientKey, Bucket>,
    /// Shared by the clients that arrive while `buckets` is full.
    overflow: Bucket,
    last_sweep: Instant,
}

#[derive(Debug)]
struct Bucket {
    credits: u64,
    /// When `credits` was last brought up to date.
    updated: Instant,
}

impl Bucket {
    fn full(capacity: u64, now: Instant) -> Self {
        Self {
            credits: capacity,
            updated: now,
        }
    }

    /// The credits the bucket holds at `now`.
    fn credits_at(&self, refill_per_nano: u64, capacity: u64, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.updated).as_nanos();
        let refilled = u128::from(self.credits)
            .saturating_add(elapsed.saturating_mul(u128::from(refill_per_nano)))
            .min(u128::from(capacity));
        u64::try_from(refilled).unwrap_or(capacity)
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, refill_per_nano: u64, capacity: u64, now: Instant) -> Result<(), Duration> {
        let credits = self.credits_at(refill_per_nano, capacity, now);
        // Never move `updated` backwards: callers may pass slightly older
        // instants than a concurrent request already used.
        self.updated = self.updated.max(now);
        if let Some(left) = credits.checked_sub(CREDITS_PER_TOKEN) {
            self.credits = left;
            Ok(())
        } else {
            self.credits = credits;
            let missing = CREDITS_PER_TOKEN - credits;
            Err(Duration::from_nanos(missing.div_ceil(refill_per_nano)))
        }
    }
}

impl RateLimiter {
    /// Buckets of `burst` tokens that refill at `per_second`, for at most
    /// `max_clients` clients at once.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32, max_clients: usize) -> Self {
        let now = Instant::now();
        let capacity = u64::from(burst.get()) * CREDITS_PER_TOKEN;
        Self {
            refill_per_nano: u64::from(per_second.get()),
            capacity,
            max_clients,
            keys: ClientKeys::new(),
            clients: Mutex::new(Clients {
                buckets: HashMap::new(),
                overflow: Bucket::full(capacity, now),
                last_sweep: now,
            }),
        }
    }

    /// Spends one of `key`'s tokens at `now`, or says how long until one is
    /// available.
    fn check(&self, key: ClientKey, now: Instant) -> Result<(), Duration> {
        // A panic cannot leave a bucket half-updated (every update is one
        // assignment), so a poisoned lock still guards sound data.
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(clients.last_sweep) >= SWEEP_INTERVAL {
            clients.sweep(self.refill_per_nano, self.capacity, now);
        }
        let Clients {
            buckets, overflow, ..
        } = &mut *clients;
        let room = buckets.len() < self.max_clients;
        let bucket = match buckets.entry(key) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) if room => entry.insert(Bucket::full(self.capacity, now)),
            Entry::Vacant(_) => overflow,
        };
        bucket.take(self.refill_per_nano, self.capacity, now)
    }

    #[cfg(test)]
    fn tracked_clients(&self) -> usize {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .buckets
            .len()
    }
}

impl Clients {
    /// Drops the buckets that have refilled: a new one would be the same.
    fn sweep(&mut self, refill_per_nano: u64, capacity: u64, now: Instant) {
        self.buckets
            .retain(|_, bucket| bucket.credits_at(refill_per_nano, capacity, now) < capacity);
        self.last_sweep = now;
    }
}

/// Whole seconds to wait, rounded up and at least one, as `Retry-After`
/// wants: a client that retries sooner would only be refused again.
fn retry_after_secs(wait: Duration) -> u32 {
    let secs = wait
        .as_nanos()
        .div_ceil(u128::from(CREDITS_PER_TOKEN))
        .max(1);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// Middleware: lets a request through if its client has a token, otherwise
/// answers `429` with `Retry-After`.
pub async fn limit(
    State(limiter): State<Arc<RateLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let key = limiter.keys.of(&request);
    match limiter.check(key, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let retry_after_secs = retry_after_secs(wait);
            metrics::counter!(http_metrics::RATE_LIMITED).increment(1);
            tracing::debug!(retry_after_secs, "client is over its rate limit");
            ApiError::rate_limited(retry_after_secs).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn per_second(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    fn limiter(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(per_second(rate), per_second(burst), MAX_CLIENTS)
    }

    fn client(n: u8) -> ClientKey {
        ClientKey::Address(IpAddr::from([192, 0, 2, n]))
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_allowed_then_refused() {
        let limiter = limiter(10, 5);
        let now = Instant::now();
        for i in 0..5 {
            assert_eq!(limiter.check(client(1), now), Ok(()), "request {i}");
        }
        assert_eq!(
            limiter.check(client(1), now),
            Err(Duration::from_millis(100))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_come_back_at_exactly_the_rate() {
        // 3 a second does not divide a second into whole nanoseconds: the
        // refill must still not drift.
        let limiter = limiter(3, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check(client(1), start), Ok(()));
        }
        // One nanosecond short of a token, then exactly one token.
        let token = Duration::from_nanos(333_333_334);
        tokio::time::advance(token - Duration::from_nanos(1)).await;
        assert_eq!(
            limiter.check(client(1), Instant::now()),
            Err(Duration::from_nanos(1))
        );
        tokio::time::advance(Duration::from_nanos(1)).await;
        assert_eq!(limiter.check(client(1), Instant::now()), Ok(()));

        // Over ten seconds, polled every millisecond, exactly 30 pass.
        let start = Instant::now();
        let passed = (1..=10_000)
            .filter(|ms| {
                let now = start + Duration::from_millis(*ms);
                limiter.check(client(1), now).is_ok()
            })
            .count();
        assert_eq!(passed, 30);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_client_saves_up_no_more_than_the_burst() {
        let limiter = limiter(3, 3);
        tokio::time::advance(Duration::from_secs(60)).await;
        let now = Instant::now();
        let passed = (0..100)
            .filter(|_| limiter.check(client(1), now).is_ok())
            .count();
        assert_eq!(passed, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_whole_seconds_rounded_up() {
        let limiter = limiter(1, 1);
        let now = Instant::now();
        assert_eq!(limiter.check(client(1), now), Ok(()));
        let wait = limiter.check(client(1), now).expect_err("empty");
        assert_eq!(wait, Duration::from_secs(1));
        assert_eq!(retry_after_secs(wait), 1);

        tokio::time::advance(Duration::from_millis(400)).await;
        let wait = limiter.check(client(1), Instant::now()).expect_err("empty");
        assert_eq!(wait, Duration::from_millis(600));
        assert_eq!(retry_after_secs(wait), 1);

        assert_eq!(retry_after_secs(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2_001)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn clients_have_their_own_buckets() {
        let limiter = limiter(1, 2);
        let now = Instant::now();
        for _ in 0..2 {
            assert_eq!(limiter.check(client(1), now), Ok(()));
        }
        assert!(limiter.check(client(1), now).is_err());
        assert_eq!(limiter.check(client(2), now), Ok(()));
        assert_eq!(limiter.check(ClientKey::Unknown, now), Ok(()));
        assert_eq!(limiter.check(ClientKey::Customer(7), now), Ok(()));
        assert!(limiter.check(client(1), now).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_stays_bounded_and_forgets_refilled_buckets() {
        let limiter = RateLimiter::new(per_second(1), per_second(2), 3);
        let now = Instant::now();
        for n in 1..=3 {
            assert_eq!(limiter.check(client(n), now), Ok(()));
        }
        assert_eq!(limiter.tracked_clients(), 3);

        // Newcomers share the overflow bucket rather than grow the table.
        assert_eq!(limiter.check(client(4), now), Ok(()));
        assert_eq!(limiter.check(client(5), now), Ok(()));
        assert!(limiter.check(client(6), now).is_err());
        assert_eq!(limiter.tracked_clients(), 3);
        // Clients already tracked keep their own allowance.
        assert_eq!(limiter.check(client(1), now), Ok(()));

        // Once the sweep runs, refilled buckets go and newcomers get room.
        tokio::time::advance(SWEEP_INTERVAL).await;
        assert_eq!(limiter.check(client(6), Instant::now()), Ok(()));
        assert_eq!(limiter.tracked_clients(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_keeps_buckets_that_still_owe_tokens() {
        let limiter = RateLimiter::new(per_second(1), per_second(100), MAX_CLIENTS);
        let start = Instant::now();
        for _ in 0..100 {
            assert_eq!(limiter.check(client(1), start), Ok(()));
        }
        // 10 s refills 10 of the 100 tokens: forgetting the bucket now would
        // hand the client a fresh burst.
        tokio::time::advance(SWEEP_INTERVAL).await;
        assert_eq!(limiter.check(client(2), Instant::now()), Ok(()));
        assert_eq!(limiter.tracked_clients(), 2);
    }
}
