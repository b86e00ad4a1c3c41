-- Money: contracts, invoices numbered per year, payments (from bank statements or by hand) allocated to
-- invoices; receivables are queries over these.

CREATE TABLE contracts (
    id bigserial PRIMARY KEY,
    number text NOT NULL CHECK (length(btrim(number)) > 0),
    signed_on date NOT NULL,
    company_id bigint NOT NULL REFERENCES companies (id),
    kind text NOT NULL CHECK (kind IN ('supply', 'service')),
    valid_until date,
    prepayment_percent integer NOT NULL DEFAULT 0 CHECK (prepayment_percent BETWEEN 0 AND 100),
    deferral_days integer NOT NULL DEFAULT 0 CHECK (deferral_days BETWEEN 0 AND 365),
    notes text NOT NULL DEFAULT '',
    created_by bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    version integer NOT NULL DEFAULT 1,
    CHECK (valid_until IS NULL OR valid_until >= signed_on)
);
CREATE UNIQUE INDEX contracts_number_uniq ON contracts (company_id, lower(number));
CREATE INDEX contracts_valid_idx ON contracts (valid_until);

-- The signed scan, apart from the row so lists never read it.
CREATE TABLE contract_scans (
    contract_id bigint PRIMARY KEY REFERENCES contracts (id) ON DELETE CASCADE,
    file_name text NOT NULL,
    content_type text NOT NULL,
    content bytea NOT NULL,
    uploaded_by bigint REFERENCES users (id) ON DELETE SET NULL,
    uploaded_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE deals ADD COLUMN contract_id bigint REFERENCES contracts (id) ON DELETE SET NULL;

-- One row per year, claimed (locked) by the transaction that issues an invoice: numbers have no gaps and
-- never repeat; a cancelled invoice keeps its number.
CREATE TABLE invoice_counters (
    year integer PRIMARY KEY,
    last_number integer NOT NULL CHECK (last_number >= 0)
);

CREATE TABLE invoices (
    id bigserial PRIMARY KEY,
    year integer NOT NULL,
    number integer NOT NULL CHECK (number > 0),
    issued_on date NOT NULL,
    due_on date NOT NULL,
    deal_id bigint NOT NULL REFERENCES deals (id),
    contract_id bigint REFERENCES contracts (id) ON DELETE SET NULL,
    company_id bigint REFERENCES companies (id) ON DELETE SET NULL,
    contact_id bigint REFERENCES contacts (id) ON DELETE SET NULL,
    buyer text NOT NULL,
    buyer_tax_id text NOT NULL DEFAULT '',
    vat_percent integer CHECK (vat_percent BETWEEN 0 AND 99),  -- NULL: no VAT (the seller does not pay it)
    prices_include_vat boolean NOT NULL,
    net numeric(14, 2) NOT NULL,
    vat numeric(14, 2) NOT NULL,
    total numeric(14, 2) NOT NULL CHECK (total > 0),
    paid numeric(14, 2) NOT NULL DEFAULT 0 CHECK (paid >= 0 AND paid <= total),
    state text NOT NULL DEFAULT 'issued' CHECK (state IN ('issued', 'partly_paid', 'paid', 'cancelled')),
    overdue_flagged_at timestamptz,
    created_by bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    cancelled_at timestamptz,
    cancelled_by bigint REFERENCES users (id) ON DELETE SET NULL,
    UNIQUE (year, number),
    CHECK (issued_on <= due_on)
);
CREATE INDEX invoices_deal_idx ON invoices (deal_id);
CREATE INDEX invoices_company_idx ON invoices (company_id);
CREATE INDEX invoices_open_idx ON invoices (due_on) WHERE state IN ('issued', 'partly_paid');

CREATE TABLE invoice_items (
    id bigserial PRIMARY KEY,
    invoice_id bigint NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    deal_item_id bigint REFERENCES deal_items (id) ON DELETE SET NULL,
    position integer NOT NULL,
    sku text NOT NULL,
    name text NOT NULL,
    unit text NOT NULL,
    quantity numeric(14, 3) NOT NULL CHECK (quantity > 0),
    price numeric(14, 2) NOT NULL CHECK (price >= 0),
    amount numeric(14, 2) NOT NULL,
    UNIQUE (invoice_id, position)
);
CREATE INDEX invoice_items_deal_item_idx ON invoice_items (deal_item_id);

CREATE TABLE bank_statements (
    id bigserial PRIMARY KEY,
    file_name text NOT NULL,
    account text NOT NULL,
    date_from date,
    date_to date,
    encoding text NOT NULL,
    format_version text NOT NULL,
    documents integer NOT NULL,
    uploaded_by bigint REFERENCES users (id) ON DELETE SET NULL,
    uploaded_at timestamptz NOT NULL DEFAULT now()
);

-- Incoming payments only: what clients paid us. The unique key is what identifies a payment order in any
-- statement (and in one typed by hand), so importing the same statement twice adds nothing.
CREATE TABLE payments (
    id bigserial PRIMARY KEY,
    statement_id bigint REFERENCES bank_statements (id) ON DELETE SET NULL,
    source text NOT NULL CHECK (source IN ('statement', 'manual')),
    doc_number text NOT NULL,
    doc_date date NOT NULL,
    received_on date NOT NULL,
    amount numeric(14, 2) NOT NULL CHECK (amount > 0),
    payer_name text NOT NULL DEFAULT '',
    payer_inn text NOT NULL DEFAULT '',
    payer_account text NOT NULL DEFAULT '',
    purpose text NOT NULL DEFAULT '',
    company_id bigint REFERENCES companies (id) ON DELETE SET NULL,
    allocated numeric(14, 2) NOT NULL DEFAULT 0 CHECK (allocated >= 0 AND allocated <= amount),
    dismissed boolean NOT NULL DEFAULT false,  -- not for an invoice (a refund, a loan): leaves the to-match list
    created_by bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (doc_date, doc_number, amount, payer_account)
);
CREATE INDEX payments_to_match_idx ON payments (received_on) WHERE allocated < amount AND NOT dismissed;

CREATE TABLE payment_allocations (
    id bigserial PRIMARY KEY,
    payment_id bigint NOT NULL REFERENCES payments (id) ON DELETE CASCADE,
    invoice_id bigint NOT NULL REFERENCES invoices (id),
    amount numeric(14, 2) NOT NULL CHECK (amount > 0),
    matched_by text NOT NULL CHECK (matched_by IN ('number', 'inn_amount', 'manual')),
    created_by bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (payment_id, invoice_id)
);
CREATE INDEX payment_allocations_invoice_idx ON payment_allocations (invoice_id);

-- An overdue invoice gives its manager one task.
ALTER TABLE tasks DROP CONSTRAINT tasks_kind_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_kind_check
    CHECK (kind IN ('callback', 'follow_up', 'reply', 'stuck_deal', 'overdue_invoice'));
ALTER TABLE tasks ADD COLUMN invoice_id bigint REFERENCES invoices (id) ON DELETE CASCADE;
CREATE UNIQUE INDEX tasks_one_overdue_uniq ON tasks (invoice_id) WHERE kind = 'overdue_invoice';
