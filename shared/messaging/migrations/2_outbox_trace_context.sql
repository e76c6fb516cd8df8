-- The W3C trace context of the transaction that wrote the event (a JSON
-- object of `traceparent` and `tracestate`), so the relay publishes it in
-- that trace however much later it runs. NULL when tracing was off.
ALTER TABLE outbox ADD COLUMN trace_context jsonb;
