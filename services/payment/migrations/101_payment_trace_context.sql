-- The W3C trace context of the work that last decided the payment (a JSON
-- object of `traceparent` and `tracestate`): a PSP call the retry sweep
-- makes continues that trace. NULL when tracing was off.
ALTER TABLE payments ADD COLUMN trace_context jsonb;
