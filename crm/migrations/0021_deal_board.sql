-- Deals edited after creation and shown on a board: a version (a stale edit answers 409 instead of overwriting),
-- the expected close date, the items' total kept on the row (the board sums and filters 100k deals by amount
-- without adding up their items each time), stage rules and automatic tasks the admin sets per stage, and a
-- note on the stage history (the reason given for winning a deal with items unshipped).

ALTER TABLE deals ADD COLUMN version integer NOT NULL DEFAULT 1;
ALTER TABLE deals ADD COLUMN expected_close_on date;
ALTER TABLE deals ADD COLUMN items_amount numeric NOT NULL DEFAULT 0;
UPDATE deals d SET items_amount = t.total
FROM (SELECT deal_id, sum(quantity * price) AS total FROM deal_items GROUP BY deal_id) t WHERE t.deal_id = d.id;

-- Every writer of deal_items keeps the total right, whoever it is (deals, invoices, imports).
CREATE FUNCTION callboard_deal_items_amount() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE deals SET items_amount = coalesce(
            (SELECT sum(quantity * price) FROM deal_items WHERE deal_id = OLD.deal_id), 0) WHERE id = OLD.deal_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE deals SET items_amount = coalesce(
            (SELECT sum(quantity * price) FROM deal_items WHERE deal_id = NEW.deal_id), 0) WHERE id = NEW.deal_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER deal_items_amount AFTER INSERT OR UPDATE OR DELETE ON deal_items
    FOR EACH ROW EXECUTE FUNCTION callboard_deal_items_amount();

-- The board: a column's newest cards, and its count and sum, per stage of the deals in progress.
CREATE INDEX deals_board_idx ON deals (stage, created_at DESC) WHERE status = 'in_progress';
CREATE INDEX deals_board_manager_idx ON deals (manager_id, stage, created_at DESC) WHERE status = 'in_progress';

-- Stage rules (admin): what a deal needs to enter a stage, directly or by skipping over it (see docs/design.md).
ALTER TABLE deal_stages ADD COLUMN requires_items boolean NOT NULL DEFAULT false;
ALTER TABLE deal_stages ADD COLUMN requires_contract boolean NOT NULL DEFAULT false;
ALTER TABLE deal_stages ADD COLUMN skippable boolean NOT NULL DEFAULT true;
UPDATE deal_stages SET requires_items = true WHERE code IN ('reservation', 'shipment', 'installation', 'service');

ALTER TABLE deal_stage_history ADD COLUMN note text NOT NULL DEFAULT '';

-- Automatic tasks: entering `stage` gives the deal's manager a task due in `due_days` working days.
CREATE TABLE deal_stage_tasks (
    id bigserial PRIMARY KEY,
    stage text NOT NULL REFERENCES deal_stages (code) ON DELETE CASCADE,
    title text NOT NULL CHECK (length(btrim(title)) BETWEEN 1 AND 200),
    due_days integer NOT NULL CHECK (due_days BETWEEN 0 AND 365),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deal_stage_tasks_stage_idx ON deal_stage_tasks (stage);
ALTER TABLE tasks ADD COLUMN stage_task_id bigint REFERENCES deal_stage_tasks (id) ON DELETE SET NULL;
-- One open task per rule and deal: moving back and forth does not pile them up.
CREATE UNIQUE INDEX tasks_stage_task_once ON tasks (deal_id, stage_task_id)
    WHERE state = 'open' AND stage_task_id IS NOT NULL;
