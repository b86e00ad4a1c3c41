-- Login throttle as leaky buckets: one row per key (an address, a login at an address, a login), claimed in
-- one INSERT ... ON CONFLICT DO UPDATE ... RETURNING so parallel guesses cannot all read "4 failures" at once.
CREATE TABLE login_throttle (
    key text PRIMARY KEY,
    capacity integer NOT NULL CHECK (capacity > 0),
    level double precision NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX login_attempts_success_idx ON login_attempts (login, remote, at) WHERE success;
