"""Payment reminders: which overdue invoices a reminder to a client lists, where it goes, and that an invoice is
reminded of once a day (a double click or two people at once queue one e-mail)."""

from __future__ import annotations

from datetime import date

import asyncpg

from crm.errors import Conflict, NotFound, ValidationError
from crm.invoices import Invoice, overdue_invoices
from crm.users import User

# One row per invoice and day; the second writer of the same key waits for the first and then inserts nothing.
CLAIM = """
INSERT INTO payment_reminders (invoice_id, sent_on, user_id) SELECT unnest($1::bigint[]), $2, $3
ON CONFLICT (invoice_id, sent_on) DO NOTHING RETURNING invoice_id
"""
RECORD_MAIL = "UPDATE payment_reminders SET outgoing_id = $3 WHERE invoice_id = ANY($1::bigint[]) AND sent_on = $2"
# The client's address: the company's first e-mail, else the invoice's contact's, else a contact of the company.
CLIENT_EMAIL = """
SELECT coalesce((SELECT e.email FROM emails e WHERE e.company_id = $1 ORDER BY e.id LIMIT 1),
                (SELECT e.email FROM emails e WHERE e.contact_id = $2 ORDER BY e.id LIMIT 1),
                (SELECT e.email FROM emails e JOIN contacts c ON c.id = e.contact_id WHERE c.company_id = $1
                 ORDER BY e.id LIMIT 1))
"""
LAST_REMINDED = """
SELECT invoice_id, max(sent_on) AS sent_on FROM payment_reminders WHERE invoice_id = ANY($1::bigint[])
GROUP BY invoice_id
"""


async def reminder_invoices(conn: asyncpg.Connection, viewer: User, today: date, company_id: int | None,
                            invoice_ids: list[int] | None) -> list[Invoice]:
    """The overdue invoices of one client the viewer sees: all of the company's, or those named (of one client)."""
    if company_id is None and not invoice_ids:
        raise ValidationError("company_id", "name the client (company_id) or the invoices (invoice_ids)")
    found = await overdue_invoices(conn, viewer, today, company_id, invoice_ids or None)
    if not found:
        raise NotFound("overdue invoice")
    if invoice_ids and {i.id for i in found} != set(invoice_ids):
        raise ValidationError("invoice_ids", "each must be an overdue invoice you see")
    if len({(i.company_id, i.contact_id if i.company_id is None else None) for i in found}) > 1:
        raise ValidationError("invoice_ids", "a reminder goes to one client: name invoices of one client")
    return found


async def client_email(conn: asyncpg.Connection, invoice: Invoice) -> str | None:
    return await conn.fetchval(CLIENT_EMAIL, invoice.company_id, invoice.contact_id)


async def claim(conn: asyncpg.Connection, invoice_ids: list[int], today: date, user_id: int | None) -> list[int]:
    """Inside the caller's transaction: the invoices not reminded of today yet, now marked as reminded."""
    claimed = [r["invoice_id"] for r in await conn.fetch(CLAIM, invoice_ids, today, user_id or None)]
    if not claimed:
        raise Conflict("a reminder about these invoices was sent today already")
    return sorted(claimed)


async def record_mail(conn: asyncpg.Connection, invoice_ids: list[int], today: date, outgoing_id: int) -> None:
    await conn.execute(RECORD_MAIL, invoice_ids, today, outgoing_id)


async def last_reminded(conn: asyncpg.Connection, invoice_ids: list[int]) -> dict[int, date]:
    return {r["invoice_id"]: r["sent_on"] for r in await conn.fetch(LAST_REMINDED, invoice_ids)}
