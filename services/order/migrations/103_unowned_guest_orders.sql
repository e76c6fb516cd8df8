-- Before customers were authenticated, every order was placed as "guest".
-- No one can prove they placed those, so they belong to no one a token can
-- name: a subject never contains a space.
UPDATE orders SET customer_id = 'unowned (placed before authentication)'
    WHERE customer_id = 'guest';
