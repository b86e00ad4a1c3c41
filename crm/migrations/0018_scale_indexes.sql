-- Lists and search served by indexes at 1M contacts and 5M calls (issue 18): trigram indexes for
-- name and e-mail fragments, sort-order indexes for keyset pages, and who may see each call kept
-- in call_viewers so a manager's "my calls" is one index range instead of an OR over three tables.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- '%fragment%' searches (LIKE on lower(name) and on e-mails, which are stored lower-case).
CREATE INDEX contacts_name_trgm ON contacts USING gin (lower(name) gin_trgm_ops);
CREATE INDEX companies_name_trgm ON companies USING gin (lower(name) gin_trgm_ops);
CREATE INDEX emails_email_trgm ON emails USING gin (email gin_trgm_ops);
-- Lists sorted by name page on (lower(name), id) in the database collation (text_pattern_ops
-- indexes of 0001 sort bytewise and cannot serve ORDER BY lower(name)).
CREATE INDEX contacts_name_order_idx ON contacts (lower(name), id);
CREATE INDEX companies_name_order_idx ON companies (lower(name), id);
-- Phones by their last digits: 0001's phones_suffix_idx on reverse(e164) serves "ends with".

CREATE INDEX calls_started_id_idx ON calls (started_at DESC, id DESC);
DROP INDEX calls_started_idx;
CREATE INDEX leads_inbox_idx ON leads ((status = 'new') DESC, created_at DESC, id DESC);
CREATE INDEX missed_board_idx ON missed_callers ((state = 'resolved'), last_missed_at DESC, id DESC);
CREATE INDEX tasks_open_due_idx ON tasks (due_at, id) WHERE state = 'open';
CREATE INDEX mail_messages_received_id_idx ON mail_messages (received_at DESC, id DESC);
CREATE INDEX deals_status_stage_idx ON deals (status, stage_changed_at, id);

-- A manager sees a call they took or placed, and calls of their contacts and companies: one row per
-- (user, call), in list order. Kept by triggers so every writer of calls (save_call, a lead's
-- conversion) and every reassignment of a contact or company keeps it right.
CREATE TABLE call_viewers (
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    started_at timestamptz NOT NULL,
    call_id bigint NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, started_at, call_id)
);
CREATE INDEX call_viewers_call_idx ON call_viewers (call_id);

CREATE FUNCTION callboard_call_viewers(ids bigint[]) RETURNS void LANGUAGE sql AS $$
    DELETE FROM call_viewers WHERE call_id = ANY(ids);
    INSERT INTO call_viewers (user_id, started_at, call_id)
    SELECT DISTINCT v.user_id, c.started_at, c.id
    FROM calls c
    LEFT JOIN contacts ct ON ct.id = c.contact_id
    LEFT JOIN companies co ON co.id = c.company_id
    CROSS JOIN LATERAL (VALUES (c.user_id), (ct.manager_id), (co.manager_id)) AS v (user_id)
    WHERE c.id = ANY(ids) AND v.user_id IS NOT NULL;
$$;

CREATE FUNCTION callboard_call_viewers_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'calls' THEN
        PERFORM callboard_call_viewers(ARRAY[NEW.id]);
    ELSIF TG_TABLE_NAME = 'contacts' THEN
        PERFORM callboard_call_viewers(ARRAY(SELECT id FROM calls WHERE contact_id = NEW.id));
    ELSIF TG_TABLE_NAME = 'companies' THEN
        PERFORM callboard_call_viewers(ARRAY(SELECT id FROM calls WHERE company_id = NEW.id));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER calls_viewers AFTER INSERT OR UPDATE OF user_id, contact_id, company_id, started_at ON calls
    FOR EACH ROW EXECUTE FUNCTION callboard_call_viewers_trigger();
CREATE TRIGGER contacts_call_viewers AFTER UPDATE OF manager_id ON contacts
    FOR EACH ROW WHEN (OLD.manager_id IS DISTINCT FROM NEW.manager_id)
    EXECUTE FUNCTION callboard_call_viewers_trigger();
CREATE TRIGGER companies_call_viewers AFTER UPDATE OF manager_id ON companies
    FOR EACH ROW WHEN (OLD.manager_id IS DISTINCT FROM NEW.manager_id)
    EXECUTE FUNCTION callboard_call_viewers_trigger();

INSERT INTO call_viewers (user_id, started_at, call_id)
SELECT DISTINCT v.user_id, c.started_at, c.id
FROM calls c
LEFT JOIN contacts ct ON ct.id = c.contact_id
LEFT JOIN companies co ON co.id = c.company_id
CROSS JOIN LATERAL (VALUES (c.user_id), (ct.manager_id), (co.manager_id)) AS v (user_id)
WHERE v.user_id IS NOT NULL;
