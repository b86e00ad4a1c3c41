-- Data in and out: scoped API tokens, 1C ids of products, webhooks with a durable delivery outbox, an outgoing mail
-- queue, and the state of the exchange with 1C.

-- API tokens: a scope (read-only, full, or only the routing door) and the last characters, to tell them apart.
ALTER TABLE api_tokens ADD COLUMN scope text NOT NULL DEFAULT 'full' CHECK (scope IN ('read', 'full', 'routing'));
ALTER TABLE api_tokens ADD COLUMN hint text NOT NULL DEFAULT '';
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);

-- Webhooks: an admin subscribes a URL to events; each event becomes one delivery row per subscribed hook, written in
-- the transaction that made the change (a crash loses nothing), and a worker posts it, retrying with back-off.
CREATE TABLE webhooks (
    id bigserial PRIMARY KEY,
    url text NOT NULL CHECK (url ~ '^https?://'),
    secret text NOT NULL,
    events text[] NOT NULL CHECK (cardinality(events) > 0),
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE webhook_deliveries (
    id bigserial PRIMARY KEY,
    webhook_id bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event text NOT NULL,
    body text NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_until timestamptz,
    last_status integer,
    last_error text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_hook_idx ON webhook_deliveries (webhook_id, id DESC);

-- One delivery per active hook subscribed to the event; the body is fixed now, so a retry sends the same bytes.
CREATE FUNCTION callboard_webhook_event(event text, data jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO webhook_deliveries (webhook_id, event, body)
    SELECT w.id, event, jsonb_build_object('id', gen_random_uuid(), 'event', event, 'created_at', now(),
                                           'data', data)::text
    FROM webhooks w WHERE w.active AND event = ANY (w.events)
$$;

-- Events raised by the tables themselves: whichever code path writes the row (call writer, mail intake, pages, API),
-- the event is queued in its transaction, and the call pipeline only pays one INSERT ... SELECT on a tiny table.
CREATE FUNCTION callboard_webhook_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhooks WHERE active) THEN
        RETURN NULL;  -- no subscriber: the call writer pays one index-less look at an empty table, nothing more
    END IF;
    IF TG_TABLE_NAME = 'calls' THEN
        PERFORM callboard_webhook_event('call.ended', jsonb_build_object(
            'id', NEW.id, 'pbx', NEW.pbx, 'linkedid', NEW.linkedid, 'direction', NEW.direction, 'caller', NEW.caller,
            'caller_e164', NEW.caller_e164, 'caller_name', NEW.caller_name, 'callee', NEW.callee,
            'started_at', NEW.started_at, 'answered_at', NEW.answered_at, 'ended_at', NEW.ended_at,
            'outcome', NEW.outcome, 'reason', NEW.reason, 'answered_by', NEW.answered_by, 'queue', NEW.queue,
            'ring_seconds', NEW.ring_seconds, 'talk_seconds', NEW.talk_seconds, 'user_id', NEW.user_id,
            'contact_id', NEW.contact_id, 'company_id', NEW.company_id, 'lead_id', NEW.lead_id));
    ELSIF TG_TABLE_NAME = 'leads' THEN
        PERFORM callboard_webhook_event('lead.created', jsonb_build_object(
            'id', NEW.id, 'status', NEW.status, 'source', NEW.source, 'phone_e164', NEW.phone_e164,
            'email', NEW.email, 'name', NEW.name, 'company_name', NEW.company_name,
            'first_message', NEW.first_message, 'line', NEW.line, 'manager_id', NEW.manager_id,
            'created_at', NEW.created_at));
    ELSIF TG_TABLE_NAME = 'missed_callers' THEN
        IF TG_OP = 'INSERT' OR (NEW.state = 'resolved' AND OLD.state <> 'resolved') THEN
            PERFORM callboard_webhook_event(CASE WHEN TG_OP = 'INSERT' THEN 'missed.created' ELSE 'missed.resolved'
                                            END, jsonb_build_object(
                'id', NEW.id, 'caller_e164', NEW.caller_e164, 'line', NEW.line, 'state', NEW.state,
                'tries', NEW.tries, 'first_missed_at', NEW.first_missed_at, 'last_missed_at', NEW.last_missed_at,
                'contact_id', NEW.contact_id, 'company_id', NEW.company_id, 'lead_id', NEW.lead_id,
                'manager_id', NEW.manager_id, 'due_at', NEW.due_at, 'resolution', NEW.resolution));
        END IF;
    ELSIF TG_TABLE_NAME = 'deals' THEN
        IF NEW.stage <> OLD.stage THEN
            PERFORM callboard_webhook_event('deal.stage_changed', jsonb_build_object(
                'id', NEW.id, 'title', NEW.title, 'stage', NEW.stage, 'previous_stage', OLD.stage,
                'status', NEW.status, 'manager_id', NEW.manager_id, 'contact_id', NEW.contact_id,
                'company_id', NEW.company_id));
        END IF;
        IF NEW.status <> OLD.status AND NEW.status IN ('won', 'lost') THEN
            PERFORM callboard_webhook_event('deal.' || NEW.status, jsonb_build_object(
                'id', NEW.id, 'title', NEW.title, 'stage', NEW.stage, 'status', NEW.status,
                'loss_reason', NEW.loss_reason, 'manual_amount', NEW.manual_amount, 'manager_id', NEW.manager_id,
                'contact_id', NEW.contact_id, 'company_id', NEW.company_id));
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER calls_webhook AFTER INSERT ON calls FOR EACH ROW EXECUTE FUNCTION callboard_webhook_trigger();
CREATE TRIGGER leads_webhook AFTER INSERT ON leads FOR EACH ROW EXECUTE FUNCTION callboard_webhook_trigger();
CREATE TRIGGER missed_webhook AFTER INSERT OR UPDATE OF state ON missed_callers
    FOR EACH ROW EXECUTE FUNCTION callboard_webhook_trigger();
CREATE TRIGGER deals_webhook AFTER UPDATE OF stage, status ON deals
    FOR EACH ROW EXECUTE FUNCTION callboard_webhook_trigger();

-- Outgoing mail: built and queued in the database, sent by a worker through the configured relay, retried. A sent
-- message is copied into mail_messages (direction 'out'), so it joins the client's history beside the replies.
CREATE TABLE outgoing_mail (
    id bigserial PRIMARY KEY,
    user_id bigint REFERENCES users (id) ON DELETE SET NULL,
    sender text NOT NULL,
    recipients text[] NOT NULL CHECK (cardinality(recipients) > 0),
    subject text NOT NULL,
    text_body text NOT NULL,
    message bytea NOT NULL,
    message_id text NOT NULL UNIQUE,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_until timestamptz,
    last_error text NOT NULL DEFAULT '',
    contact_id bigint REFERENCES contacts (id) ON DELETE SET NULL,
    company_id bigint REFERENCES companies (id) ON DELETE SET NULL,
    lead_id bigint REFERENCES leads (id) ON DELETE SET NULL,
    deal_id bigint REFERENCES deals (id) ON DELETE SET NULL,
    reply_to_id bigint REFERENCES mail_messages (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz
);
CREATE INDEX outgoing_mail_due_idx ON outgoing_mail (next_attempt_at) WHERE state = 'pending';
ALTER TABLE mail_messages ADD COLUMN direction text NOT NULL DEFAULT 'in' CHECK (direction IN ('in', 'out'));
ALTER TABLE mail_messages ADD COLUMN outgoing_id bigint UNIQUE REFERENCES outgoing_mail (id) ON DELETE SET NULL;

-- Exchange with 1C (CommerceML): products keep 1C's Ид; deals handed to 1C as orders, acknowledged when 1C answers
-- success, and handed again when they change.
ALTER TABLE products ADD COLUMN external_id text UNIQUE;
CREATE TABLE onec_orders (
    deal_id bigint PRIMARY KEY REFERENCES deals (id) ON DELETE CASCADE,
    sent_at timestamptz NOT NULL,
    sent_updated_at timestamptz NOT NULL,
    sent_stage text NOT NULL,
    acknowledged_at timestamptz
);
