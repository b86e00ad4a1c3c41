-- Tasks people create and edit: what they are about (contact, company, lead; deal exists), and a version so
-- that a stale edit is refused rather than silently overwriting someone else's.
ALTER TABLE tasks ADD COLUMN version integer NOT NULL DEFAULT 1;
ALTER TABLE tasks ADD COLUMN contact_id bigint REFERENCES contacts (id) ON DELETE CASCADE;
ALTER TABLE tasks ADD COLUMN company_id bigint REFERENCES companies (id) ON DELETE CASCADE;
ALTER TABLE tasks ADD COLUMN lead_id bigint REFERENCES leads (id) ON DELETE CASCADE;
CREATE INDEX tasks_contact_idx ON tasks (contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX tasks_company_idx ON tasks (company_id) WHERE company_id IS NOT NULL;
CREATE INDEX tasks_lead_idx ON tasks (lead_id) WHERE lead_id IS NOT NULL;
