-- One checkout as a monolith would write it: every row the saga's services
-- write for a confirmed order of one unit, with the same status changes,
-- in a single transaction (pgbench runs this file; see baseline.rs).
--
-- order service:     order PENDING with its line, later CONFIRMED
-- inventory service: price read, stock row locked and decremented,
--                    reservation RESERVED with its line, later COMMITTED
-- payment service:   payment CAPTURE_PENDING, then CAPTURED
-- shipping service:  shipment SCHEDULED
--
-- Not included: the call to the payment provider (an external service in
-- both designs) and the outbox/inbox rows that only the event-driven design
-- needs.
\set product random(1, 18)
BEGIN;
SELECT gen_random_uuid() AS order_id, gen_random_uuid() AS payment_id,
       gen_random_uuid() AS shipment_id,
       'SKU-' || lpad(:product::text, 4, '0') AS sku \gset
SELECT price_minor FROM products WHERE sku = :sku;
INSERT INTO orders (order_id, customer_id, status, stock_state, payment_state, shipment_state,
                    total_minor, currency, shipping_address, idempotency_key,
                    request_fingerprint, deadline_at)
VALUES (:order_id, 'guest', 'PENDING', 'UNKNOWN', 'UNKNOWN', 'UNKNOWN', 2490, 'EUR',
        '{"name": "Load Test", "line1": "1 Main St", "line2": "", "city": "Berlin", "postal_code": "10115", "country": "DE"}',
        'baseline-' || :order_id, sha256(convert_to(:order_id, 'UTF8')),
        now() + interval '30 seconds');
INSERT INTO order_lines (order_id, position, sku, quantity, unit_price_minor)
VALUES (:order_id, 0, :sku, 1, 2490);
SELECT sku, available FROM products WHERE sku = ANY(ARRAY[:sku]) ORDER BY sku FOR UPDATE;
UPDATE products SET available = available - 1, updated_at = now() WHERE sku = :sku;
INSERT INTO reservations (order_id, status) VALUES (:order_id, 'RESERVED');
INSERT INTO reservation_lines (order_id, sku, quantity) VALUES (:order_id, :sku, 1);
INSERT INTO payments (order_id, payment_id, amount_minor, currency, card_token, stock_reserved, status)
VALUES (:order_id, :payment_id, 2490, 'EUR', 'tok_visa', true, 'CAPTURE_PENDING');
UPDATE payments SET status = 'CAPTURED', attempts = 1, psp_reference = 'psp-' || :payment_id,
                    updated_at = now()
WHERE order_id = :order_id;
INSERT INTO shipments (order_id, shipment_id, country, shipping_address, paid, status, carrier)
VALUES (:order_id, :shipment_id, 'DE',
        '{"name": "Load Test", "line1": "1 Main St", "line2": "", "city": "Berlin", "postal_code": "10115", "country": "DE"}',
        true, 'SCHEDULED', 'standard');
UPDATE orders SET status = 'CONFIRMED', stock_state = 'RESERVED', payment_state = 'CAPTURED',
                  shipment_state = 'SCHEDULED', updated_at = now(), completed_at = now()
WHERE order_id = :order_id;
UPDATE reservations SET status = 'COMMITTED', updated_at = now() WHERE order_id = :order_id;
END;
