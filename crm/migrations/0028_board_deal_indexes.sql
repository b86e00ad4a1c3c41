-- Indexes the hot pages measured at scale needed (issue 18, bench/scale.py; plans in docs/PERFORMANCE.md).

-- The missed board pages on ((state <> 'resolved'), last_missed_at, id), newest first: the key its query
-- orders and compares by. 0018's index on (state = 'resolved') was never chosen (a different expression),
-- so every page sorted the whole table.
CREATE INDEX missed_board_key_idx ON missed_callers ((state <> 'resolved'), last_missed_at, id);
DROP INDEX missed_board_idx;

-- "Missed calls per day" on the board reads only the missed calls of the window, not every call.
CREATE INDEX calls_missed_started_idx ON calls (started_at) INCLUDE (missed_caller_id)
    WHERE missed_caller_id IS NOT NULL;

-- Deals list stage by stage (one index range per stage, crm.deals.LIST_DEALS), for everyone and for a
-- manager's own deals.
CREATE INDEX deals_stage_order_idx ON deals (status, stage, stage_changed_at, id);
CREATE INDEX deals_manager_stage_order_idx ON deals (manager_id, status, stage, stage_changed_at, id);
DROP INDEX deals_status_stage_idx;

-- A manager's leads inbox in inbox order.
CREATE INDEX leads_manager_inbox_idx ON leads (manager_id, (status = 'new') DESC, created_at DESC, id DESC);
