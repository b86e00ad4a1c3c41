-- The missed-call board (one row per caller and line while open) and tasks (callbacks first).

CREATE TABLE missed_callers (
    id bigserial PRIMARY KEY,
    caller_e164 text NOT NULL,
    line text NOT NULL DEFAULT '',
    state text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'in_progress', 'resolved')),
    tries integer NOT NULL DEFAULT 0,
    first_missed_at timestamptz NOT NULL,
    last_missed_at timestamptz NOT NULL,
    last_reason text NOT NULL DEFAULT '',
    contact_id bigint REFERENCES contacts (id) ON DELETE SET NULL,
    company_id bigint REFERENCES companies (id) ON DELETE SET NULL,
    lead_id bigint REFERENCES leads (id) ON DELETE SET NULL,
    manager_id bigint REFERENCES users (id) ON DELETE SET NULL,
    due_at timestamptz NOT NULL,
    resolved_at timestamptz,
    resolved_by bigint REFERENCES users (id) ON DELETE SET NULL,
    resolution text,
    seconds_to_callback integer,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- One open row per caller and line: repeats merge into it.
CREATE UNIQUE INDEX missed_open_uniq ON missed_callers (caller_e164, line) WHERE state <> 'resolved';
CREATE INDEX missed_caller_idx ON missed_callers (caller_e164) WHERE state <> 'resolved';
CREATE INDEX missed_last_idx ON missed_callers (last_missed_at DESC);

ALTER TABLE calls ADD COLUMN missed_caller_id bigint REFERENCES missed_callers (id) ON DELETE SET NULL;

CREATE TABLE tasks (
    id bigserial PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('callback', 'follow_up')),
    title text NOT NULL,
    assignee_id bigint REFERENCES users (id) ON DELETE SET NULL,
    due_at timestamptz NOT NULL,
    state text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'done', 'cancelled')),
    missed_caller_id bigint REFERENCES missed_callers (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    closed_at timestamptz,
    closed_by bigint REFERENCES users (id) ON DELETE SET NULL,
    note text NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX tasks_one_callback_uniq ON tasks (missed_caller_id) WHERE kind = 'callback';
CREATE INDEX tasks_assignee_idx ON tasks (assignee_id, due_at) WHERE state = 'open';
