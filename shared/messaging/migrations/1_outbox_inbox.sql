-- Transactional outbox: a service writes its state change and the events it
-- causes in one transaction; the relay publishes rows in id order and deletes
-- them once the broker has acknowledged them.
CREATE TABLE outbox (
    id          BIGSERIAL PRIMARY KEY,
    topic       TEXT        NOT NULL,
    message_key TEXT        NOT NULL,
    payload     BYTEA       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Idempotent consumer: the id of every event whose effect is committed, in
-- the same transaction as the effect, so a redelivery is recognised.
CREATE TABLE inbox (
    event_id     UUID        PRIMARY KEY,
    event_type   TEXT        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
