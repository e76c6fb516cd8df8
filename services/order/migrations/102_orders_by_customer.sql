-- no-transaction
-- ListOrders: a customer's orders, newest first, paged by (created_at,
-- order_id). Built CONCURRENTLY (outside a transaction, hence the line
-- above) so a rolling upgrade does not block CreateOrder and the saga's
-- writes while a large table is indexed. An interrupted build leaves an
-- INVALID index behind: drop it and the migration runs again.
CREATE INDEX CONCURRENTLY orders_by_customer
    ON orders (customer_id, created_at DESC, order_id DESC);
