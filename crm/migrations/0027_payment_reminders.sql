-- Payment reminders sent to clients about overdue invoices: one per invoice and company day, so a double click
-- (or two people at once) queues one e-mail; the row names the outgoing message that carried it.
CREATE TABLE payment_reminders (
    invoice_id bigint NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    sent_on date NOT NULL,
    outgoing_id bigint REFERENCES outgoing_mail (id) ON DELETE SET NULL,
    user_id bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (invoice_id, sent_on)
);
CREATE INDEX payment_reminders_outgoing_idx ON payment_reminders (outgoing_id);
