-- Leads (requests from people who are not clients yet), notifications, and calls linked to leads.

CREATE TABLE leads (
    id bigserial PRIMARY KEY,
    status text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'in_work', 'qualified', 'converted', 'junk')),
    source text NOT NULL CHECK (source IN ('phone', 'email', 'web_form', 'chat', 'manual')),
    phone_e164 text CHECK (phone_e164 ~ '^\+[1-9][0-9]{6,14}$'),
    email text CHECK (email = lower(email)),
    name text NOT NULL DEFAULT '',
    company_name text NOT NULL DEFAULT '',
    first_message text NOT NULL DEFAULT '',
    line text NOT NULL DEFAULT '',
    manager_id bigint REFERENCES users (id) ON DELETE SET NULL,
    junk_reason text,
    contact_id bigint REFERENCES contacts (id) ON DELETE SET NULL,
    company_id bigint REFERENCES companies (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'junk' OR junk_reason IS NOT NULL)
);
-- One open lead per person across channels: a repeat call or e-mail attaches to it.
CREATE UNIQUE INDEX leads_open_phone_uniq ON leads (phone_e164)
    WHERE phone_e164 IS NOT NULL AND status IN ('new', 'in_work', 'qualified');
CREATE UNIQUE INDEX leads_open_email_uniq ON leads (email)
    WHERE email IS NOT NULL AND status IN ('new', 'in_work', 'qualified');
CREATE INDEX leads_status_idx ON leads (status, created_at DESC);
CREATE INDEX leads_manager_idx ON leads (manager_id, created_at DESC);

ALTER TABLE calls ADD COLUMN lead_id bigint REFERENCES leads (id) ON DELETE SET NULL;
CREATE INDEX calls_lead_idx ON calls (lead_id, started_at DESC);

CREATE TABLE notifications (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind text NOT NULL,
    text text NOT NULL,
    lead_id bigint REFERENCES leads (id) ON DELETE CASCADE,
    call_id bigint REFERENCES calls (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    read_at timestamptz
);
CREATE INDEX notifications_user_idx ON notifications (user_id, created_at DESC) WHERE read_at IS NULL;
