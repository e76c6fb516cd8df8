-- One per order, gathering what shipping has learned in any arrival order.
CREATE TABLE shipments (
    order_id         UUID PRIMARY KEY,
    shipment_id      UUID    NOT NULL UNIQUE,
    -- From OrderPlaced; NULL until it was seen.
    country          TEXT,
    shipping_address JSONB,
    paid             BOOLEAN NOT NULL DEFAULT false,
    cancelled        BOOLEAN NOT NULL DEFAULT false,
    status           TEXT    NOT NULL CHECK (status IN ('WAITING', 'SCHEDULED', 'FAILED', 'CANCELLED')),
    carrier          TEXT,
    failure_reason   TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
