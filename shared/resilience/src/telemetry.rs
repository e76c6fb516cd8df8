//! The metrics every layer records through the `metrics` facade, each
//! labelled with `downstream`. Whoever installed a recorder collects them
//! (in Shipshape processes, `shipshape_runtime::metrics` renders them at
//! `/metrics`).

/// Gauge: the breaker's state, 0 closed, 1 open, 2 half-open.
pub const BREAKER_STATE: &str = "shipshape_breaker_state";
/// Counter: breaker state changes, labelled `from` and `to`.
pub const BREAKER_TRANSITIONS: &str = "shipshape_breaker_transitions_total";
/// Counter: calls refused because the breaker was open (or half-open with
/// every probe slot taken).
pub const BREAKER_REJECTIONS: &str = "shipshape_breaker_rejections_total";
/// Gauge: calls holding a bulkhead permit.
pub const BULKHEAD_IN_USE: &str = "shipshape_bulkhead_in_use";
/// Counter: calls refused because the bulkhead stayed full.
pub const BULKHEAD_REJECTIONS: &str = "shipshape_bulkhead_rejections_total";
/// Counter: retries made (first attempts are not counted).
pub const RETRIES: &str = "shipshape_retries_total";
/// Counter: retries wanted but refused by the retry budget.
pub const RETRY_BUDGET_EXHAUSTED: &str = "shipshape_retry_budget_exhausted_total";
/// Counter: attempts cut off by the per-call timeout.
pub const CALL_TIMEOUTS: &str = "shipshape_call_timeouts_total";

/// Makes `downstream`'s series of the counter `name` exist at 0 (or leaves
/// its count as it is), so dashboards and alerts see it before the first
/// event: a rate over a series that appears only with its first retry reads
/// as "no data" instead of 0.
pub(crate) fn register_counter(name: &'static str, downstream: &'static str) {
    metrics::counter!(name, "downstream" => downstream).increment(0);
}

/// Registers the help text of every metric above with the installed
/// recorder, so `/metrics` explains them. Call it once after installing the
/// recorder; recording works without it.
pub fn describe() {
    metrics::describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker state per downstream: 0 closed, 1 open, 2 half-open"
    );
    metrics::describe_counter!(
        BREAKER_TRANSITIONS,
        "Circuit breaker state changes per downstream, by from and to state"
    );
    metrics::describe_counter!(
        BREAKER_REJECTIONS,
        "Calls failed fast because the downstream's circuit breaker was open"
    );
    metrics::describe_gauge!(
        BULKHEAD_IN_USE,
        "Calls in flight to the downstream, holding a bulkhead permit"
    );
    metrics::describe_counter!(
        BULKHEAD_REJECTIONS,
        "Calls refused because the downstream's bulkhead stayed full"
    );
    metrics::describe_counter!(RETRIES, "Retries of failed idempotent calls");
    metrics::describe_counter!(
        RETRY_BUDGET_EXHAUSTED,
        "Retries not made because the downstream's retry budget was spent"
    );
    metrics::describe_counter!(
        CALL_TIMEOUTS,
        "Call attempts that got no answer within the per-call timeout"
    );
}
