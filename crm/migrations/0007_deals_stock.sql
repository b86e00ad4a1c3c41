-- Deals with stages and items; products, warehouses, batches and stock movements; orders.

CREATE TABLE deal_stages (
    code text PRIMARY KEY,
    name text NOT NULL,
    position integer NOT NULL UNIQUE,
    normal_days integer NOT NULL CHECK (normal_days > 0),
    reserves_stock boolean NOT NULL DEFAULT false
);
INSERT INTO deal_stages (code, name, position, normal_days, reserves_stock) VALUES
    ('selection', 'Equipment selection', 1, 7, false),
    ('offer', 'Commercial offer', 2, 5, false),
    ('invoice', 'Invoice / contract', 3, 7, false),
    ('reservation', 'Reservation and production', 4, 30, true),
    ('shipment', 'Shipment', 5, 7, false),
    ('installation', 'Installation', 6, 14, false),
    ('service', 'Service', 7, 365, false);

CREATE TABLE deals (
    id bigserial PRIMARY KEY,
    title text NOT NULL CHECK (length(btrim(title)) > 0),
    contact_id bigint REFERENCES contacts (id) ON DELETE SET NULL,
    company_id bigint REFERENCES companies (id) ON DELETE SET NULL,
    lead_id bigint REFERENCES leads (id) ON DELETE SET NULL,
    manager_id bigint REFERENCES users (id) ON DELETE SET NULL,
    stage text NOT NULL REFERENCES deal_stages (code),
    status text NOT NULL DEFAULT 'in_progress' CHECK (status IN ('in_progress', 'won', 'lost')),
    loss_reason text,
    needs text NOT NULL DEFAULT '',
    legal_entity text NOT NULL DEFAULT '',
    manual_amount numeric(14, 2),
    probability integer NOT NULL DEFAULT 20 CHECK (probability BETWEEN 0 AND 100),
    source text NOT NULL DEFAULT '',
    stage_changed_at timestamptz NOT NULL DEFAULT now(),
    stuck_flagged_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'lost' OR loss_reason IS NOT NULL)
);
CREATE INDEX deals_manager_idx ON deals (manager_id, status);
CREATE INDEX deals_contact_idx ON deals (contact_id) WHERE status = 'in_progress';

CREATE TABLE deal_stage_history (
    id bigserial PRIMARY KEY,
    deal_id bigint NOT NULL REFERENCES deals (id) ON DELETE CASCADE,
    stage text NOT NULL REFERENCES deal_stages (code),
    entered_at timestamptz NOT NULL DEFAULT now(),
    left_at timestamptz,
    user_id bigint REFERENCES users (id) ON DELETE SET NULL
);
CREATE INDEX deal_stage_history_idx ON deal_stage_history (deal_id, entered_at);

CREATE TABLE products (
    id bigserial PRIMARY KEY,
    sku text NOT NULL UNIQUE,
    name text NOT NULL,
    unit text NOT NULL DEFAULT 'pcs',
    price numeric(14, 2) NOT NULL CHECK (price >= 0),
    barcode text UNIQUE,
    made_in_house boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE warehouses (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    is_default boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX warehouses_one_default ON warehouses (is_default) WHERE is_default;
INSERT INTO warehouses (name, is_default) VALUES ('Main warehouse', true);

CREATE TABLE stock_batches (
    id bigserial PRIMARY KEY,
    product_id bigint NOT NULL REFERENCES products (id),
    warehouse_id bigint NOT NULL REFERENCES warehouses (id),
    received_at timestamptz NOT NULL DEFAULT now(),
    quantity numeric(14, 3) NOT NULL CHECK (quantity > 0),
    expires_on date
);
CREATE INDEX stock_batches_fifo_idx ON stock_batches (product_id, warehouse_id, received_at, id);

CREATE TABLE deal_items (
    id bigserial PRIMARY KEY,
    deal_id bigint NOT NULL REFERENCES deals (id) ON DELETE CASCADE,
    product_id bigint NOT NULL REFERENCES products (id),
    quantity numeric(14, 3) NOT NULL CHECK (quantity > 0),
    price numeric(14, 2) NOT NULL CHECK (price >= 0)
);
CREATE INDEX deal_items_deal_idx ON deal_items (deal_id);

-- Balances are sums of movements: on hand = receipts − shipments − write-offs;
-- reserved = reservations − releases − shipments against a deal item.
CREATE TABLE stock_movements (
    id bigserial PRIMARY KEY,
    product_id bigint NOT NULL REFERENCES products (id),
    warehouse_id bigint NOT NULL REFERENCES warehouses (id),
    batch_id bigint REFERENCES stock_batches (id),
    kind text NOT NULL CHECK (kind IN ('receipt', 'reservation', 'release', 'shipment', 'write_off')),
    quantity numeric(14, 3) NOT NULL CHECK (quantity > 0),
    deal_item_id bigint REFERENCES deal_items (id) ON DELETE SET NULL,
    user_id bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stock_movements_product_idx ON stock_movements (product_id, kind, created_at);
CREATE INDEX stock_movements_item_idx ON stock_movements (deal_item_id);

CREATE TABLE production_orders (
    id bigserial PRIMARY KEY,
    deal_item_id bigint NOT NULL REFERENCES deal_items (id) ON DELETE CASCADE,
    product_id bigint NOT NULL REFERENCES products (id),
    quantity numeric(14, 3) NOT NULL CHECK (quantity > 0),
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done', 'cancelled')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE supplier_orders (
    id bigserial PRIMARY KEY,
    deal_item_id bigint NOT NULL REFERENCES deal_items (id) ON DELETE CASCADE,
    product_id bigint NOT NULL REFERENCES products (id),
    quantity numeric(14, 3) NOT NULL CHECK (quantity > 0),
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'received', 'cancelled')),
    created_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE calls ADD COLUMN deal_id bigint REFERENCES deals (id) ON DELETE SET NULL;
ALTER TABLE mail_messages ADD COLUMN deal_id bigint REFERENCES deals (id) ON DELETE SET NULL;
ALTER TABLE tasks DROP CONSTRAINT tasks_kind_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_kind_check CHECK (kind IN ('callback', 'follow_up', 'reply', 'stuck_deal'));
ALTER TABLE tasks ADD COLUMN deal_id bigint REFERENCES deals (id) ON DELETE CASCADE;
