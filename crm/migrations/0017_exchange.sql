-- Data in and out: scoped API tokens, 1C ids of products, webhooks with a durable delivery outbox, an outgoing mail
-- queue, and the state of the exchange with 1C.

-- API tokens: a scope (read-only, full, or only the routing door) and the last characters, to tell them apart.
ALTER TABLE api_tokens ADD COLUMN scope text NOT NULL DEFAULT 'full' CHECK (scope IN ('read', 'full', 'routing'));
ALTER TABLE api_tokens ADD COLUMN hint text NOT NULL DEFAULT '';
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);
