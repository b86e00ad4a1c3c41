-- Lead distribution: ordered rules the head sets (a condition: channel, line/DID, mailbox or form, number prefix;
-- an action: one manager, or round robin among a set), the alert limits, and on each lead who assigned it,
-- when, whether the head was alerted, and a version for edits by hand.
CREATE TABLE lead_rules (
    id bigserial PRIMARY KEY,
    position integer NOT NULL,
    name text NOT NULL DEFAULT '',
    -- Conditions; an empty one matches every lead.
    channel text CHECK (channel IN ('phone', 'email', 'web_form', 'chat', 'manual')),
    line text NOT NULL DEFAULT '',  -- the DID dialled, the mailbox written to, or form:<key> / chat:<key>
    prefixes text[] NOT NULL DEFAULT '{}',  -- E.164 prefixes of the person's number: {+7495,+7499} is Moscow
    action text NOT NULL CHECK (action IN ('assign', 'round_robin')),
    manager_ids bigint[] NOT NULL CHECK (cardinality(manager_ids) > 0),
    last_manager_id bigint REFERENCES users (id) ON DELETE SET NULL,  -- the round robin's pointer
    active boolean NOT NULL DEFAULT true,
    CHECK (action = 'round_robin' OR cardinality(manager_ids) = 1)
);
CREATE INDEX lead_rules_position_idx ON lead_rules (position, id);

-- One row: how long a lead may wait for a manager, and for its manager, before the head is alerted (0: never).
CREATE TABLE lead_alert_limits (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    unassigned_minutes integer NOT NULL DEFAULT 15 CHECK (unassigned_minutes >= 0),
    untouched_minutes integer NOT NULL DEFAULT 60 CHECK (untouched_minutes >= 0)
);
INSERT INTO lead_alert_limits DEFAULT VALUES;

ALTER TABLE leads ADD COLUMN version integer NOT NULL DEFAULT 1;
ALTER TABLE leads ADD COLUMN assigned_at timestamptz;
ALTER TABLE leads ADD COLUMN rule_id bigint REFERENCES lead_rules (id) ON DELETE SET NULL;
ALTER TABLE leads ADD COLUMN auto_assigned boolean NOT NULL DEFAULT false;  -- by a rule, nobody has acted yet
ALTER TABLE leads ADD COLUMN touched_at timestamptz;  -- edited by hand
ALTER TABLE leads ADD COLUMN unassigned_alerted_at timestamptz;
ALTER TABLE leads ADD COLUMN untouched_alerted_at timestamptz;
UPDATE leads SET assigned_at = updated_at WHERE manager_id IS NOT NULL;

-- Whoever sets the manager (a rule, the head, the manager who answered), the clock of "untouched" starts then
-- and a new manager may be alerted about afresh; a change a person sees makes an older edit stale (version).
CREATE FUNCTION leads_keep_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.manager_id IS NOT NULL THEN
            NEW.assigned_at := coalesce(NEW.assigned_at, now());
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.manager_id IS DISTINCT FROM OLD.manager_id THEN
        NEW.assigned_at := CASE WHEN NEW.manager_id IS NULL THEN NULL ELSE now() END;
        NEW.untouched_alerted_at := NULL;
        IF NEW.rule_id IS NOT DISTINCT FROM OLD.rule_id THEN
            NEW.auto_assigned := false;  -- a person (or an answer) assigned it, not a rule
        END IF;
    END IF;
    IF (NEW.status, NEW.name, NEW.phone_e164, NEW.email, NEW.company_name, NEW.first_message, NEW.manager_id)
       IS DISTINCT FROM
       (OLD.status, OLD.name, OLD.phone_e164, OLD.email, OLD.company_name, OLD.first_message, OLD.manager_id) THEN
        NEW.version := OLD.version + 1;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER leads_keep_version BEFORE INSERT OR UPDATE ON leads FOR EACH ROW EXECUTE FUNCTION leads_keep_version();

-- The alert job's scans: open leads without a manager, and new leads with one.
CREATE INDEX leads_waiting_idx ON leads (created_at) WHERE status IN ('new', 'in_work', 'qualified');
