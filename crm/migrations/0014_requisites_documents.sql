-- The company's requisites (one row, edited by admins, with a version: a stale save is refused) and the
-- documents attached to a deal (the PDF as it was sent, so the history shows what the client got).

CREATE TABLE company_requisites (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),  -- one row at most
    legal_name text NOT NULL,
    inn text NOT NULL DEFAULT '' CHECK (inn ~ '^([0-9]{10}|[0-9]{12})?$'),
    kpp text NOT NULL DEFAULT '' CHECK (kpp ~ '^([0-9]{4}[0-9A-Z]{2}[0-9]{3})?$'),
    ogrn text NOT NULL DEFAULT '' CHECK (ogrn ~ '^([0-9]{13}|[0-9]{15})?$'),
    address text NOT NULL DEFAULT '',
    bank_name text NOT NULL DEFAULT '',
    bic text NOT NULL DEFAULT '' CHECK (bic ~ '^([0-9]{9})?$'),
    settlement_account text NOT NULL DEFAULT '' CHECK (settlement_account ~ '^([0-9]{20})?$'),
    correspondent_account text NOT NULL DEFAULT '' CHECK (correspondent_account ~ '^([0-9]{20})?$'),
    director text NOT NULL DEFAULT '',
    phone text NOT NULL DEFAULT '',
    email text NOT NULL DEFAULT '',
    details text NOT NULL DEFAULT '',
    vat_rate text NOT NULL CHECK (vat_rate IN ('22', '20', '10', '0', 'none')),
    prices_include_vat boolean NOT NULL,
    logo bytea,
    logo_type text CHECK (logo_type IN ('image/png', 'image/jpeg')),
    version integer NOT NULL DEFAULT 1,
    updated_by bigint REFERENCES users (id) ON DELETE SET NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((logo IS NULL) = (logo_type IS NULL))
);

CREATE TABLE deal_documents (
    id bigserial PRIMARY KEY,
    deal_id bigint NOT NULL REFERENCES deals (id) ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind IN ('offer', 'invoice', 'contract')),
    number text NOT NULL,
    language text NOT NULL,
    amount numeric(14, 2) NOT NULL,
    pdf bytea NOT NULL,
    sha256 text NOT NULL,
    created_by bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- The same document attached twice (a double click) is one row.
CREATE UNIQUE INDEX deal_documents_once ON deal_documents (deal_id, kind, sha256);
