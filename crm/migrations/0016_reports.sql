-- Reports: when a deal was won or lost (kept by a trigger, so every writer of deals.status sets it), and the
-- indexes that let the report queries read a year out of years of calls and deals without a sequential scan.

ALTER TABLE deals ADD COLUMN closed_at timestamptz;
UPDATE deals SET closed_at = updated_at WHERE status <> 'in_progress';

-- The time of the write that changed the status (crm.deals sets updated_at to its `now`); reopening clears it.
CREATE FUNCTION callboard_deal_closed_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.closed_at := CASE WHEN NEW.status = 'in_progress' THEN NULL ELSE coalesce(NEW.updated_at, now()) END;
    RETURN NEW;
END $$;
CREATE TRIGGER deals_closed_at BEFORE UPDATE OF status ON deals
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION callboard_deal_closed_at();

-- Calls need nothing new: calls_started_idx serves the date range, and calls arrive in time order, so its heap
-- reads are sequential (a covering index was measured and not chosen by the planner; see docs/REPORTS.md).
CREATE INDEX deals_created_idx ON deals (created_at);
CREATE INDEX deals_closed_idx ON deals (closed_at) WHERE closed_at IS NOT NULL;
CREATE INDEX leads_created_idx ON leads (created_at);
CREATE INDEX deal_stage_history_entered_idx ON deal_stage_history (entered_at);
CREATE INDEX missed_first_idx ON missed_callers (first_missed_at);
CREATE INDEX tasks_due_idx ON tasks (due_at);
CREATE INDEX mail_messages_deal_idx ON mail_messages (deal_id, received_at) WHERE deal_id IS NOT NULL;
CREATE INDEX calls_deal_idx ON calls (deal_id, started_at) WHERE deal_id IS NOT NULL;
