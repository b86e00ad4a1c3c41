-- Contacts and companies carry a version: a save made from a stale form answers 409 instead of
-- silently overwriting what someone else saved meanwhile.

ALTER TABLE contacts ADD COLUMN version integer NOT NULL DEFAULT 1;
ALTER TABLE companies ADD COLUMN version integer NOT NULL DEFAULT 1;
