-- One timeline per contact, company, lead and deal (issue 15): what a call came to (its results), notes people
-- write on a card, the audit of merged duplicates, and the indexes the timeline's branches read in time order.

-- Several results per call are allowed (a second try, a correction); the newest is shown first.
CREATE TABLE call_results (
    id bigserial PRIMARY KEY,
    call_id bigint NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    user_id bigint REFERENCES users (id) ON DELETE SET NULL,
    result text NOT NULL CHECK (result IN ('reached', 'no_answer', 'callback', 'wrong_number', 'other')),
    note text NOT NULL DEFAULT '',
    callback_at timestamptz,
    task_id bigint REFERENCES tasks (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (result <> 'callback' OR callback_at IS NOT NULL)
);
CREATE INDEX call_results_call_idx ON call_results (call_id, created_at DESC);

CREATE TABLE notes (
    id bigserial PRIMARY KEY,
    author_id bigint REFERENCES users (id) ON DELETE SET NULL,
    text text NOT NULL CHECK (length(btrim(text)) > 0),
    contact_id bigint REFERENCES contacts (id) ON DELETE CASCADE,
    company_id bigint REFERENCES companies (id) ON DELETE CASCADE,
    lead_id bigint REFERENCES leads (id) ON DELETE CASCADE,
    deal_id bigint REFERENCES deals (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(contact_id, company_id, lead_id, deal_id) > 0)
);
CREATE INDEX notes_contact_idx ON notes (contact_id, created_at DESC) WHERE contact_id IS NOT NULL;
CREATE INDEX notes_company_idx ON notes (company_id, created_at DESC) WHERE company_id IS NOT NULL;
CREATE INDEX notes_lead_idx ON notes (lead_id, created_at DESC) WHERE lead_id IS NOT NULL;
CREATE INDEX notes_deal_idx ON notes (deal_id, created_at DESC) WHERE deal_id IS NOT NULL;

-- Who merged which duplicate into which record, when, and what moved (the merged row itself is deleted).
CREATE TABLE party_merges (
    id bigserial PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('contact', 'company')),
    kept_id bigint NOT NULL,
    merged_id bigint NOT NULL,
    merged_name text NOT NULL,
    merged_data jsonb NOT NULL DEFAULT '{}',
    moved jsonb NOT NULL DEFAULT '{}',
    user_id bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX party_merges_kept_idx ON party_merges (kind, kept_id);
CREATE UNIQUE INDEX party_merges_merged_uniq ON party_merges (kind, merged_id);

-- The timeline's branches each read one index in time order (calls and mail by contact, lead and deal exist).
CREATE INDEX mail_messages_company_idx ON mail_messages (company_id, received_at DESC) WHERE company_id IS NOT NULL;
CREATE INDEX deals_contact_all_idx ON deals (contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX deals_company_idx ON deals (company_id) WHERE company_id IS NOT NULL;
CREATE INDEX deals_lead_idx ON deals (lead_id) WHERE lead_id IS NOT NULL;
CREATE INDEX tasks_deal_idx ON tasks (deal_id) WHERE deal_id IS NOT NULL;
CREATE INDEX companies_tax_id_idx ON companies (upper(tax_id)) WHERE tax_id IS NOT NULL;
