-- One payment per order. The row gathers what the payment service has
-- learned (order details, stock reserved, compensation asked) in whatever
-- order the events arrive; PSP calls are made from it under a lease.
CREATE TABLE payments (
    order_id          UUID PRIMARY KEY,
    payment_id        UUID    NOT NULL UNIQUE,
    amount_minor      BIGINT,
    currency          TEXT,
    card_token        TEXT,
    stock_reserved    BOOLEAN NOT NULL DEFAULT false,
    -- The order was cancelled or its shipment failed: give the money back.
    compensate        BOOLEAN NOT NULL DEFAULT false,
    status            TEXT    NOT NULL CHECK (status IN ('WAITING', 'CAPTURE_PENDING', 'CAPTURED',
                          'DECLINED', 'REFUND_PENDING', 'REFUNDED', 'VOIDED')),
    -- Some capture attempt may have charged the card without us knowing:
    -- the payment can then only end by capturing (idempotently) and refunding.
    capture_uncertain BOOLEAN NOT NULL DEFAULT false,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A PSP call is under way until then; an expired lease is taken over.
    claimed_until     TIMESTAMPTZ,
    psp_reference     TEXT,
    decline_reason    TEXT,
    last_error        TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX payments_actionable ON payments (next_attempt_at)
    WHERE status IN ('CAPTURE_PENDING', 'REFUND_PENDING');
