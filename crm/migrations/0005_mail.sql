-- E-mail intake: every message kept raw first, then parsed; attachments; one history of interactions.

CREATE TABLE mail_messages (
    id bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    peer text NOT NULL DEFAULT '',
    envelope_from text NOT NULL DEFAULT '',
    envelope_to text[] NOT NULL DEFAULT '{}',
    raw bytea NOT NULL,
    status text NOT NULL DEFAULT 'received' CHECK (status IN ('received', 'parsed', 'unparsed')),
    error text,
    kind text CHECK (kind IN ('web_form', 'chat', 'email')),
    subject text NOT NULL DEFAULT '',
    sender_email text,
    sender_name text NOT NULL DEFAULT '',
    text_body text NOT NULL DEFAULT '',
    extracted jsonb NOT NULL DEFAULT '{}',
    contact_id bigint REFERENCES contacts (id) ON DELETE SET NULL,
    company_id bigint REFERENCES companies (id) ON DELETE SET NULL,
    lead_id bigint REFERENCES leads (id) ON DELETE SET NULL
);
CREATE INDEX mail_messages_received_idx ON mail_messages (received_at DESC);
CREATE INDEX mail_messages_contact_idx ON mail_messages (contact_id, received_at DESC);
CREATE INDEX mail_messages_lead_idx ON mail_messages (lead_id, received_at DESC);

CREATE TABLE mail_attachments (
    id bigserial PRIMARY KEY,
    message_id bigint NOT NULL REFERENCES mail_messages (id) ON DELETE CASCADE,
    filename text NOT NULL,
    content_type text NOT NULL,
    size integer NOT NULL,
    data bytea NOT NULL
);
CREATE INDEX mail_attachments_message_idx ON mail_attachments (message_id);

ALTER TABLE tasks DROP CONSTRAINT tasks_kind_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_kind_check CHECK (kind IN ('callback', 'follow_up', 'reply'));
ALTER TABLE tasks ADD COLUMN mail_message_id bigint REFERENCES mail_messages (id) ON DELETE CASCADE;
