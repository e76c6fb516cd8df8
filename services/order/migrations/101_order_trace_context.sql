-- The W3C trace context of the request that placed the order (a JSON object
-- of `traceparent` and `tracestate`): the deadline sweep continues that
-- trace when it cancels the order. NULL when tracing was off.
ALTER TABLE orders ADD COLUMN trace_context jsonb;
