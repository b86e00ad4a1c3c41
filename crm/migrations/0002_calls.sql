-- The call log: one row per call (keyed by PBX + Linkedid), its legs, and the raw AMI journal.

CREATE TABLE calls (
    id bigserial PRIMARY KEY,
    pbx text NOT NULL,
    linkedid text NOT NULL,
    direction text NOT NULL CHECK (direction IN ('inbound', 'outbound', 'internal')),
    caller text NOT NULL,
    caller_e164 text,
    caller_name text NOT NULL DEFAULT '',
    callee text NOT NULL,
    started_at timestamptz NOT NULL,
    answered_at timestamptz,
    ended_at timestamptz NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('answered', 'missed', 'abandoned', 'busy', 'failed', 'unknown')),
    reason text NOT NULL DEFAULT '',
    answered_by text,
    agents_rang text[] NOT NULL DEFAULT '{}',
    queue text,
    ring_seconds integer NOT NULL,
    talk_seconds integer NOT NULL,
    recording text,
    transfers jsonb NOT NULL DEFAULT '[]',
    talk_by_agent jsonb NOT NULL DEFAULT '{}',
    recovered boolean NOT NULL DEFAULT false,
    originated boolean NOT NULL DEFAULT false,
    user_id bigint REFERENCES users (id) ON DELETE SET NULL,
    contact_id bigint REFERENCES contacts (id) ON DELETE SET NULL,
    company_id bigint REFERENCES companies (id) ON DELETE SET NULL,
    UNIQUE (pbx, linkedid)
);
CREATE INDEX calls_started_idx ON calls (started_at DESC);
CREATE INDEX calls_user_idx ON calls (user_id, started_at DESC);
CREATE INDEX calls_caller_idx ON calls (caller_e164, started_at DESC);
CREATE INDEX calls_contact_idx ON calls (contact_id, started_at DESC);
CREATE INDEX calls_company_idx ON calls (company_id, started_at DESC);

CREATE TABLE call_legs (
    id bigserial PRIMARY KEY,
    call_id bigint NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    pbx text NOT NULL,
    uniqueid text NOT NULL,
    channel text NOT NULL,
    kind text NOT NULL,
    extension text,
    created_at timestamptz NOT NULL,
    answered_at timestamptz,
    ended_at timestamptz,
    hangup_cause integer,
    UNIQUE (pbx, uniqueid)
);
CREATE INDEX call_legs_call_idx ON call_legs (call_id);

-- Every AMI event the call model used, kept for a while so a call can be rebuilt by replay.
CREATE TABLE ami_journal (
    id bigserial PRIMARY KEY,
    pbx text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    linkedid text,
    raw text NOT NULL
);
CREATE INDEX ami_journal_call_idx ON ami_journal (pbx, linkedid);
CREATE INDEX ami_journal_received_idx ON ami_journal (received_at);
