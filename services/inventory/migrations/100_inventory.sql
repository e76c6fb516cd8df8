CREATE TABLE products (
    sku            TEXT PRIMARY KEY,
    name           TEXT   NOT NULL,
    description    TEXT   NOT NULL,
    price_minor    BIGINT NOT NULL CHECK (price_minor > 0),
    currency       TEXT   NOT NULL,
    -- Units that can be reserved now.
    available      BIGINT NOT NULL CHECK (available >= 0),
    -- Every unit ever put into stock: stock is conserved when this equals
    -- available + units held by RESERVED + units sold to COMMITTED orders.
    stock_received BIGINT NOT NULL CHECK (stock_received >= 0),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One per order: all lines are reserved or none.
CREATE TABLE reservations (
    order_id   UUID PRIMARY KEY,
    status     TEXT NOT NULL CHECK (status IN ('RESERVED', 'REJECTED', 'RELEASED', 'COMMITTED')),
    reason     TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE reservation_lines (
    order_id UUID   NOT NULL REFERENCES reservations (order_id),
    sku      TEXT   NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);

-- The demo catalog. SKU-0019 and SKU-0020 are deliberately scarce so the
-- out-of-stock path of the saga can be reached on purpose.
INSERT INTO products (sku, name, description, price_minor, currency, available, stock_received) VALUES
    ('SKU-0001', 'Espresso beans 1 kg',       'Dark roast, whole beans',                    2490, 'EUR', 500, 500),
    ('SKU-0002', 'Filter coffee 500 g',       'Light roast, ground for pour-over',          1290, 'EUR', 500, 500),
    ('SKU-0003', 'Ceramic pour-over dripper', 'Size 02, white',                             2199, 'EUR', 500, 500),
    ('SKU-0004', 'Paper filters (100)',       'Unbleached, size 02',                         499, 'EUR', 500, 500),
    ('SKU-0005', 'Burr grinder',              'Hand grinder with steel burrs',              8900, 'EUR', 500, 500),
    ('SKU-0006', 'Gooseneck kettle',          '1 l, stainless steel',                       4950, 'EUR', 500, 500),
    ('SKU-0007', 'Digital scale',             '0.1 g resolution with timer',                2999, 'EUR', 500, 500),
    ('SKU-0008', 'Travel mug',                '350 ml, vacuum insulated',                   1999, 'EUR', 500, 500),
    ('SKU-0009', 'Espresso cups (2)',         'Double-walled glass, 80 ml',                 1599, 'EUR', 500, 500),
    ('SKU-0010', 'Milk frother',              'Handheld, battery powered',                  1450, 'EUR', 500, 500),
    ('SKU-0011', 'French press',              '8 cups, borosilicate glass',                 3290, 'EUR', 500, 500),
    ('SKU-0012', 'Cold brew bottle',          '1 l with mesh filter',                       2790, 'EUR', 500, 500),
    ('SKU-0013', 'Loose-leaf green tea',      'Sencha, 100 g',                               990, 'EUR', 500, 500),
    ('SKU-0014', 'Tea infuser',               'Stainless steel mesh',                        690, 'EUR', 500, 500),
    ('SKU-0015', 'Chai spice blend',          'Cardamom, cinnamon, ginger, 80 g',            850, 'EUR', 500, 500),
    ('SKU-0016', 'Cleaning tablets (50)',     'For espresso machines',                      1190, 'EUR', 500, 500),
    ('SKU-0017', 'Knock box',                 'For spent espresso pucks',                   2450, 'EUR', 500, 500),
    ('SKU-0018', 'Barista apron',             'Waxed canvas',                               3900, 'EUR', 500, 500),
    ('SKU-0019', 'Limited edition print',     'Signed, numbered: only five exist',          9900, 'EUR',   5,   5),
    ('SKU-0020', 'Vintage grinder',           'Restored 1960s hand grinder: sold out',     15900, 'EUR',   0,   0);
