-- Several nodes and the durable writer: each saved call carries the lease generation of the node that
-- wrote it and whether it was observed live (a recovered or backfilled record never overwrites an
-- observed one); a journal batch replayed from the spool is written once.

ALTER TABLE calls ADD COLUMN lease_generation bigint NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN observed boolean NOT NULL DEFAULT true;
UPDATE calls SET observed = NOT recovered;

CREATE TABLE ami_journal_batches (
    id text PRIMARY KEY,
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ami_journal_batches_written_idx ON ami_journal_batches (written_at);
