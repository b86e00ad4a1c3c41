-- Task reminders: when to remind the assignee (NULL: no reminder), and when the reminder went out (NULL: not yet;
-- an edit that moves remind_at clears it, so the reminder is armed again).
ALTER TABLE tasks ADD COLUMN remind_at timestamptz;
ALTER TABLE tasks ADD COLUMN reminded_at timestamptz;
-- The reminder job asks for the next one to send (MIN) and claims the due ones: only armed reminders are indexed.
CREATE INDEX tasks_remind_idx ON tasks (remind_at) WHERE state = 'open' AND reminded_at IS NULL AND remind_at IS NOT NULL;
