-- The order timeline: every saga step of every order, one row per event,
-- a read model made from the events (see src/timeline.rs). Written in the
-- transaction that applies or emits the event, and rebuilt from the topics
-- when emptied. No foreign key to orders: a rebuild must not be blocked by
-- the saga's locks on them.
CREATE TABLE order_timeline (
    event_id           UUID    PRIMARY KEY,
    -- Increases with every row; a stream resumes after the last it sent.
    sequence           BIGINT  GENERATED ALWAYS AS IDENTITY UNIQUE,
    order_id           UUID    NOT NULL,
    event_type         TEXT    NOT NULL,
    service            TEXT    NOT NULL,
    occurred_at_micros BIGINT  NOT NULL,
    detail             TEXT    NOT NULL,
    compensation       BOOLEAN NOT NULL,
    -- The W3C trace id the event travelled in; NULL when tracing was off.
    trace_id           TEXT
);

CREATE INDEX order_timeline_by_order ON order_timeline (order_id, sequence);
