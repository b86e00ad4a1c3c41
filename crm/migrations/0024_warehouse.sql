-- The warehouse's screens (issue 15): stock per warehouse with transfers, receipts with the supplier's document,
-- write-offs with a reason, products edited with a version, production orders planned → in work → made.

-- A transfer is two movements: out of a source batch, into a copy of it in the other warehouse that keeps the
-- source's receipt and expiry dates (so FIFO and the illiquid-per-batch figure see the goods' real age).
ALTER TABLE stock_movements DROP CONSTRAINT stock_movements_kind_check;
ALTER TABLE stock_movements ADD CONSTRAINT stock_movements_kind_check
    CHECK (kind IN ('receipt', 'reservation', 'release', 'shipment', 'write_off', 'transfer_out', 'transfer_in'));
ALTER TABLE stock_movements ADD COLUMN reason text;
ALTER TABLE stock_movements ADD COLUMN document_number text;
ALTER TABLE stock_batches ADD COLUMN origin_batch_id bigint REFERENCES stock_batches (id);
-- What is left of a batch sums the movements naming it; the card's history pages newest first.
CREATE INDEX stock_movements_batch_idx ON stock_movements (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX stock_movements_history_idx ON stock_movements (product_id, created_at DESC, id DESC);

-- Products are found by a fragment of the name or SKU (trigram, as 0018 does for contacts) or by the exact
-- barcode a scanner types (its UNIQUE index); an edit carries the version it was read at.
CREATE INDEX products_name_trgm ON products USING gin (name gin_trgm_ops);
CREATE INDEX products_sku_trgm ON products USING gin (sku gin_trgm_ops);
ALTER TABLE products ADD COLUMN version integer NOT NULL DEFAULT 1;

-- Production orders: planned (was 'open') → in_work → made (was 'done'), with the day it is planned for.
ALTER TABLE production_orders DROP CONSTRAINT production_orders_status_check;
UPDATE production_orders SET status = CASE status WHEN 'open' THEN 'planned' WHEN 'done' THEN 'made' ELSE status END;
ALTER TABLE production_orders ALTER COLUMN status SET DEFAULT 'planned';
ALTER TABLE production_orders ADD CONSTRAINT production_orders_status_check
    CHECK (status IN ('planned', 'in_work', 'made', 'cancelled'));
ALTER TABLE production_orders ADD COLUMN planned_on date;
ALTER TABLE production_orders ADD COLUMN finished_at timestamptz;
ALTER TABLE supplier_orders ADD COLUMN finished_at timestamptz;
ALTER TABLE production_orders ADD COLUMN batch_id bigint REFERENCES stock_batches (id);
ALTER TABLE supplier_orders ADD COLUMN batch_id bigint REFERENCES stock_batches (id);
CREATE INDEX production_orders_status_idx ON production_orders (status, id);
CREATE INDEX supplier_orders_status_idx ON supplier_orders (status, id);
