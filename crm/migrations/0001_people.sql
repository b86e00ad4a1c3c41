-- Users, sessions and tokens; companies, contacts, their phones and e-mails.

CREATE TABLE users (
    id bigserial PRIMARY KEY,
    login text NOT NULL UNIQUE CHECK (login ~ '^[a-z0-9_.-]{2,64}$'),
    password_hash text NOT NULL,
    role text NOT NULL CHECK (role IN ('manager', 'head', 'admin')),
    extension text UNIQUE CHECK (extension ~ '^[0-9]{2,6}$'),
    display_name text NOT NULL,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash text NOT NULL UNIQUE,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);

CREATE TABLE sessions (
    token_hash text PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

CREATE TABLE login_attempts (
    id bigserial PRIMARY KEY,
    login text NOT NULL,
    remote text NOT NULL,
    success boolean NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_attempts_login_idx ON login_attempts (login, at);

CREATE TABLE companies (
    id bigserial PRIMARY KEY,
    name text NOT NULL CHECK (length(btrim(name)) > 0),
    tax_id text,
    manager_id bigint REFERENCES users (id) ON DELETE SET NULL,
    notes text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX companies_manager_idx ON companies (manager_id);
CREATE INDEX companies_name_idx ON companies (lower(name) text_pattern_ops);

CREATE TABLE contacts (
    id bigserial PRIMARY KEY,
    name text NOT NULL CHECK (length(btrim(name)) > 0),
    company_id bigint REFERENCES companies (id) ON DELETE SET NULL,
    manager_id bigint REFERENCES users (id) ON DELETE SET NULL,
    notes text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contacts_manager_idx ON contacts (manager_id);
CREATE INDEX contacts_company_idx ON contacts (company_id);
CREATE INDEX contacts_name_idx ON contacts (lower(name) text_pattern_ops);

-- One table for phones of contacts and companies: one indexed E.164 column to match callers.
CREATE TABLE phones (
    id bigserial PRIMARY KEY,
    contact_id bigint REFERENCES contacts (id) ON DELETE CASCADE,
    company_id bigint REFERENCES companies (id) ON DELETE CASCADE,
    e164 text NOT NULL CHECK (e164 ~ '^\+[1-9][0-9]{6,14}$'),
    extension text CHECK (extension ~ '^[0-9]{1,6}$'),
    raw text NOT NULL,
    label text NOT NULL DEFAULT '',
    CHECK ((contact_id IS NULL) <> (company_id IS NULL))
);
CREATE UNIQUE INDEX phones_contact_uniq ON phones (contact_id, e164, coalesce(extension, '')) WHERE contact_id IS NOT NULL;
CREATE UNIQUE INDEX phones_company_uniq ON phones (company_id, e164, coalesce(extension, '')) WHERE company_id IS NOT NULL;
CREATE INDEX phones_e164_idx ON phones (e164);
-- Numbers that arrive without a country code are matched on their last N digits.
CREATE INDEX phones_suffix_idx ON phones (reverse(e164) text_pattern_ops);

CREATE TABLE emails (
    id bigserial PRIMARY KEY,
    contact_id bigint REFERENCES contacts (id) ON DELETE CASCADE,
    company_id bigint REFERENCES companies (id) ON DELETE CASCADE,
    email text NOT NULL CHECK (email = lower(email) AND email LIKE '%_@_%'),
    CHECK ((contact_id IS NULL) <> (company_id IS NULL))
);
CREATE UNIQUE INDEX emails_contact_uniq ON emails (contact_id, email) WHERE contact_id IS NOT NULL;
CREATE UNIQUE INDEX emails_company_uniq ON emails (company_id, email) WHERE company_id IS NOT NULL;
CREATE INDEX emails_email_idx ON emails (email);
