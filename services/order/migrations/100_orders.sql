CREATE TABLE orders (
    order_id            UUID PRIMARY KEY,
    customer_id         TEXT   NOT NULL,
    status              TEXT   NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLING', 'CANCELLED')),
    cancellation_reason TEXT CHECK (cancellation_reason IN
                            ('out_of_stock', 'payment_declined', 'shipping_failed', 'timed_out')),
    -- What the order has observed of the other services' steps.
    stock_state         TEXT   NOT NULL CHECK (stock_state IN ('UNKNOWN', 'RESERVED', 'REJECTED', 'RELEASED')),
    payment_state       TEXT   NOT NULL CHECK (payment_state IN
                            ('UNKNOWN', 'CAPTURED', 'DECLINED', 'REFUNDED', 'VOIDED')),
    shipment_state      TEXT   NOT NULL CHECK (shipment_state IN ('UNKNOWN', 'SCHEDULED', 'FAILED')),
    total_minor         BIGINT NOT NULL,
    currency            TEXT   NOT NULL,
    shipping_address    JSONB  NOT NULL,
    idempotency_key     TEXT,
    -- The encoded request, to tell a retry from a reuse of the key.
    request_fingerprint BYTEA,
    deadline_at         TIMESTAMPTZ NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at        TIMESTAMPTZ
);

CREATE UNIQUE INDEX orders_idempotency_key ON orders (customer_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX orders_pending_deadline ON orders (deadline_at) WHERE status = 'PENDING';

CREATE TABLE order_lines (
    order_id         UUID    NOT NULL REFERENCES orders (order_id),
    position         INTEGER NOT NULL,
    sku              TEXT    NOT NULL,
    quantity         BIGINT  NOT NULL CHECK (quantity > 0),
    unit_price_minor BIGINT  NOT NULL,
    PRIMARY KEY (order_id, position)
);
