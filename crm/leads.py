"""Leads: requests from people who are not clients yet; one open lead per person; notifications."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from crm import paging
from crm.contacts import PartyInput, clean_email, create_party
from crm.errors import Conflict, Forbidden, NotFound, ValidationError
from crm.phones import format_phone
from crm.users import User

OPEN_STATUSES = ("new", "in_work", "qualified")
STATUSES = (*OPEN_STATUSES, "converted", "junk")
SOURCES = ("phone", "email", "web_form", "chat", "manual")


@dataclass(frozen=True, slots=True)
class Lead:
    id: int
    status: str
    source: str
    phone_e164: str | None
    email: str | None
    name: str
    company_name: str
    first_message: str
    line: str
    manager_id: int | None
    manager_name: str | None
    junk_reason: str | None
    contact_id: int | None
    company_id: int | None
    created_at: datetime
    updated_at: datetime

    @property
    def title(self) -> str:
        if self.name:
            return self.name
        if self.phone_e164:
            return format_phone(self.phone_e164)
        return self.email or f"Lead #{self.id}"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


_LEAD_SELECT = """
SELECT l.id, l.status, l.source, l.phone_e164, l.email, l.name, l.company_name, l.first_message, l.line,
       l.manager_id, u.display_name AS manager_name, l.junk_reason, l.contact_id, l.company_id, l.created_at,
       l.updated_at
FROM leads l LEFT JOIN users u ON u.id = l.manager_id
"""
# A manager sees the leads assigned to them; head and admin see all.
GET_LEAD = _LEAD_SELECT + "WHERE l.id = $1 AND ($2::bigint IS NULL OR l.manager_id = $2)"
OPEN_LEAD_BY_PHONE = _LEAD_SELECT + "WHERE l.phone_e164 = $1 AND l.status IN ('new', 'in_work', 'qualified')"
OPEN_LEAD_BY_EMAIL = _LEAD_SELECT + "WHERE l.email = $1 AND l.status IN ('new', 'in_work', 'qualified')"
LIST_LEADS = _LEAD_SELECT + """
WHERE ($1::bigint IS NULL OR l.manager_id = $1)
  AND ($2::text IS NULL OR l.status = $2)
  AND ($3::text IS NULL OR l.source = $3)
  AND ((l.status = 'new'), l.created_at, l.id) < ($6::boolean, $7::timestamptz, $8::bigint)
ORDER BY (l.status = 'new') DESC, l.created_at DESC, l.id DESC LIMIT $4 OFFSET $5
"""
# ON CONFLICT on the partial unique index: a second call from the same number finds the open lead.
INSERT_PHONE_LEAD = """
INSERT INTO leads (source, phone_e164, name, first_message, line)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (phone_e164) WHERE phone_e164 IS NOT NULL AND status IN ('new', 'in_work', 'qualified') DO NOTHING
RETURNING id
"""
INSERT_EMAIL_LEAD = """
INSERT INTO leads (source, email, name, company_name, first_message, line, phone_e164)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (email) WHERE email IS NOT NULL AND status IN ('new', 'in_work', 'qualified') DO NOTHING
RETURNING id
"""
INSERT_MANUAL_LEAD = """
INSERT INTO leads (source, phone_e164, email, name, company_name, first_message, manager_id, status)
VALUES ('manual', $1, $2, $3, $4, $5, $6, CASE WHEN $6::bigint IS NULL THEN 'new' ELSE 'in_work' END)
RETURNING id
"""
INSERT_ANONYMOUS_LEAD = """
INSERT INTO leads (source, name, company_name, first_message) VALUES ($1, $2, $3, $4) RETURNING id
"""
# Every change of a lead claims its row first, so two clicks (or a click and the head's assignment)
# run one after the other and the second sees what the first did.
LOCK_LEAD = "SELECT id FROM leads WHERE id = $1 AND ($2::bigint IS NULL OR manager_id = $2) FOR UPDATE"
ASSIGN_LEAD = """
UPDATE leads SET manager_id = $2, status = CASE WHEN status = 'new' THEN 'in_work' ELSE status END,
       updated_at = now()
WHERE id = $1
"""
SET_STATUS = "UPDATE leads SET status = $2, updated_at = now() WHERE id = $1"
JUNK_LEAD = "UPDATE leads SET status = 'junk', junk_reason = $2, updated_at = now() WHERE id = $1"
CONVERT_LEAD = """
UPDATE leads SET status = 'converted', contact_id = $2, company_id = $3, updated_at = now() WHERE id = $1
"""
# The lead's history becomes the contact's: its calls, e-mails and form messages now belong to the contact.
MOVE_CALLS = "UPDATE calls SET contact_id = $2, company_id = coalesce(company_id, $3) WHERE lead_id = $1"
MOVE_MAIL = "UPDATE mail_messages SET contact_id = $2, company_id = coalesce(company_id, $3) WHERE lead_id = $1"
# …and so do the mail sent to it, its notes and its tasks (they keep lead_id: the lead's card still shows them).
MOVE_OUTGOING = "UPDATE outgoing_mail SET contact_id = $2, company_id = coalesce(company_id, $3) WHERE lead_id = $1"
MOVE_NOTES = "UPDATE notes SET contact_id = $2 WHERE lead_id = $1 AND contact_id IS NULL"
MOVE_TASKS = """
UPDATE tasks SET contact_id = coalesce(contact_id, $2), company_id = coalesce(company_id, $3) WHERE lead_id = $1"""
# Junk needs no callback: its open missed-caller rows are resolved and their callback tasks cancelled.
RESOLVE_JUNK_MISSED = """
UPDATE missed_callers SET state = 'resolved', resolved_at = $2, resolved_by = $3, resolution = 'not_needed'
WHERE lead_id = $1 AND state <> 'resolved'
RETURNING id
"""
CANCEL_CALLBACKS = """
UPDATE tasks SET state = 'cancelled', closed_at = $2, closed_by = $3
WHERE missed_caller_id = ANY($1::bigint[]) AND state = 'open'
"""
ACTIVE_HEADS = "SELECT id FROM users WHERE role = 'head' AND active"
USER_ROLE = "SELECT role FROM users WHERE id = $1 AND active"
INSERT_NOTIFICATION = """
INSERT INTO notifications (user_id, kind, text, lead_id, call_id) VALUES ($1, $2, $3, $4, $5)
"""
LIST_NOTIFICATIONS = """
SELECT id, kind, text, lead_id, call_id, created_at FROM notifications
WHERE user_id = $1 AND read_at IS NULL ORDER BY created_at DESC, id DESC LIMIT $2
"""
MARK_READ = "UPDATE notifications SET read_at = now() WHERE user_id = $1 AND id = ANY($2::bigint[])"


@dataclass(frozen=True, slots=True)
class NewLead:
    """Told live to the head of sales (the stored notification is written with the lead)."""

    lead_id: int
    text: str


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    kind: str
    text: str
    lead_id: int | None
    call_id: int | None
    created_at: datetime


def _lead(row: asyncpg.Record) -> Lead:
    return Lead(**dict(row))


def _scope(viewer: User) -> int | None:
    return None if viewer.sees_everything else viewer.id


async def get_lead(conn: asyncpg.Connection, viewer: User, lead_id: int) -> Lead:
    row = await conn.fetchrow(GET_LEAD, lead_id, _scope(viewer))
    if row is None:
        raise NotFound("lead")
    return _lead(row)


async def list_leads(conn: asyncpg.Connection, viewer: User, status: str | None = None, source: str | None = None,
                     limit: int = 100, offset: int = 0, after: str | None = None) -> list[Lead]:
    """New leads first, then newest; `after` is the cursor of the previous page's last lead (crm.paging)."""
    key = paging.decode(after, (bool, datetime, int)) or (True, datetime.max.replace(tzinfo=UTC), 0)
    if status is not None and status not in STATUSES:
        raise ValidationError("status", f"one of {', '.join(STATUSES)}")
    if source is not None and source not in SOURCES:
        raise ValidationError("source", f"one of {', '.join(SOURCES)}")
    return [_lead(r) for r in await conn.fetch(LIST_LEADS, _scope(viewer), status, source, limit, offset, *key)]


def lead_key(lead: Lead) -> tuple[bool, datetime, int]:
    """Where a lead sits in the inbox: the `after` cursor of the page it ends."""
    return lead.status == "new", lead.created_at, lead.id


async def _get_or_create(conn: asyncpg.Connection, insert: str, insert_args: tuple, find_open: str, key: str,
                         announce: str) -> tuple[Lead, bool]:
    """Insert unless an open lead holds `key` (the partial unique index decides), else return that one."""
    async with conn.transaction():
        lead_id = await conn.fetchval(insert, *insert_args)
        if lead_id is None:
            row = await conn.fetchrow(find_open, key)
            if row is not None:
                return _lead(row), False
            raise Conflict("the open lead for this person changed meanwhile; try again")
        lead = _lead(await conn.fetchrow(GET_LEAD, lead_id, None))
        await notify_heads(conn, "new_lead", announce, lead.id)
        return lead, True


# A manager reached the lead on the phone: it is being worked on now (and theirs if nobody had it).
REACHED_LEAD = """
UPDATE leads SET status = CASE WHEN status = 'new' THEN 'in_work' ELSE status END,
                 manager_id = coalesce(manager_id, $2), updated_at = now()
WHERE id = $1 AND status IN ('new', 'in_work')"""


async def lead_called_back(conn: asyncpg.Connection, e164: str, reached: bool, user_id: int | None) -> int | None:
    """An outgoing call to a number with an open lead: the lead's id (the call joins its history); a call
    that reached the person moves a new lead into work."""
    row = await conn.fetchrow(OPEN_LEAD_BY_PHONE, e164)
    if row is None:
        return None
    if reached:
        await conn.execute(REACHED_LEAD, row["id"], user_id)
    return row["id"]


async def get_or_create_phone_lead(conn: asyncpg.Connection, e164: str, line: str, name: str = "",
                                   first_message: str = "", source: str = "phone") -> tuple[Lead, bool]:
    """The open lead of this number, created (and the heads told) if there is none."""
    what = "call" if source == "phone" else source.replace("_", " ")
    return await _get_or_create(conn, INSERT_PHONE_LEAD, (source, e164, name[:200], first_message[:2000], line[:64]),
                                OPEN_LEAD_BY_PHONE, e164, f"New lead: {what} from {format_phone(e164)}")


async def get_or_create_email_lead(conn: asyncpg.Connection, source: str, email: str, name: str, company_name: str,
                                   first_message: str, line: str = "", phone_e164: str | None = None
                                   ) -> tuple[Lead, bool]:
    """The open lead of this address, created (and the heads told) if there is none."""
    if source not in SOURCES:
        raise ValidationError("source", f"one of {', '.join(SOURCES)}")
    email = email.strip().lower()
    return await _get_or_create(
        conn, INSERT_EMAIL_LEAD, (source, email, name[:200], company_name[:200], first_message[:2000], line[:64],
                                  phone_e164),
        OPEN_LEAD_BY_EMAIL, email, f"New lead ({source.replace('_', ' ')}): {name or email}")


async def create_lead_without_address(conn: asyncpg.Connection, source: str, name: str, company_name: str,
                                      first_message: str) -> Lead:
    """A request with neither phone nor e-mail (a form left half empty) still reaches the CRM."""
    lead_id = await conn.fetchval(INSERT_ANONYMOUS_LEAD, source, name[:200], company_name[:200],
                                  first_message[:2000])
    await notify_heads(conn, "new_lead", f"New lead ({source.replace('_', ' ')}) without a phone or e-mail",
                       lead_id)
    return _lead(await conn.fetchrow(GET_LEAD, lead_id, None))


async def notify_heads(conn: asyncpg.Connection, kind: str, text: str, lead_id: int | None = None,
                       call_id: int | None = None) -> None:
    heads = [row["id"] for row in await conn.fetch(ACTIVE_HEADS)]
    if heads:
        await conn.executemany(INSERT_NOTIFICATION, [(h, kind, text, lead_id, call_id) for h in heads])


async def list_notifications(conn: asyncpg.Connection, user: User, limit: int = 50) -> list[Notification]:
    return [Notification(**dict(r)) for r in await conn.fetch(LIST_NOTIFICATIONS, user.id, limit)]


async def mark_notifications_read(conn: asyncpg.Connection, user: User, ids: list[int]) -> None:
    await conn.execute(MARK_READ, user.id, ids)


def _require_open(lead: Lead) -> None:
    if not lead.is_open:
        raise Conflict(f"the lead is already {lead.status}")


async def _claim(conn: asyncpg.Connection, viewer: User, lead_id: int) -> Lead:
    """Lock the lead for the caller's transaction; read it as it is now; it must still be open."""
    if await conn.fetchval(LOCK_LEAD, lead_id, _scope(viewer)) is None:
        raise NotFound("lead")
    lead = await get_lead(conn, viewer, lead_id)
    _require_open(lead)
    return lead


async def assign_lead(conn: asyncpg.Connection, viewer: User, lead_id: int, manager_id: int) -> Lead:
    if not viewer.sees_everything:
        raise Forbidden("only the head of sales assigns leads")
    if await conn.fetchval(USER_ROLE, manager_id) not in ("manager", "head"):
        raise ValidationError("manager_id", "no active manager with this id")
    async with conn.transaction():
        await _claim(conn, viewer, lead_id)
        await conn.execute(ASSIGN_LEAD, lead_id, manager_id)
    return await get_lead(conn, viewer, lead_id)


async def set_lead_status(conn: asyncpg.Connection, viewer: User, lead_id: int, status: str) -> Lead:
    """in work ↔ qualified; 'converted' and 'junk' have their own functions."""
    if status not in ("in_work", "qualified"):
        raise ValidationError("status", "only in_work or qualified here; use convert or junk")
    async with conn.transaction():
        lead = await _claim(conn, viewer, lead_id)
        if lead.manager_id is None:
            raise Conflict("assign the lead to a manager first")
        await conn.execute(SET_STATUS, lead_id, status)
    return await get_lead(conn, viewer, lead_id)


async def junk_lead(conn: asyncpg.Connection, viewer: User, lead_id: int, reason: str, now: datetime | None = None
                    ) -> Lead:
    """Junk with a reason; nobody is left to call it back."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("reason", "say why the lead is junk")
    now = now or datetime.now(UTC)
    async with conn.transaction():
        await _claim(conn, viewer, lead_id)
        await conn.execute(JUNK_LEAD, lead_id, reason[:500])
        rows = await conn.fetch(RESOLVE_JUNK_MISSED, lead_id, now, viewer.id or None)
        if rows:
            await conn.execute(CANCEL_CALLBACKS, [r["id"] for r in rows], now, viewer.id or None)
    return await get_lead(conn, viewer, lead_id)


async def convert_lead(conn: asyncpg.Connection, viewer: User, lead_id: int, contact_name: str,
                       company_name: str, region: str) -> Lead:
    """Make a contact (and a company, if named) of the lead; its calls and mail move to the contact."""
    system = User(0, "system", "admin", None, "system", True)  # rights were checked on the lead
    async with conn.transaction():
        lead = await _claim(conn, viewer, lead_id)
        manager_id = lead.manager_id or (None if viewer.sees_everything else viewer.id)
        company_id = None
        company_name = (company_name or lead.company_name or "").strip()
        if company_name:
            company = await create_party(conn, system, "company", PartyInput(name=company_name, manager_id=manager_id),
                                         region)
            company_id = company.id
        contact = await create_party(conn, system, "contact", PartyInput(
            name=(contact_name or lead.name or lead.title).strip(), manager_id=manager_id, company_id=company_id,
            phones=[(lead.phone_e164, "")] if lead.phone_e164 else [], emails=[lead.email] if lead.email else [],
            notes=lead.first_message), region)
        await conn.execute(CONVERT_LEAD, lead_id, contact.id, company_id)
        await conn.execute(MOVE_CALLS, lead_id, contact.id, company_id)
        await conn.execute(MOVE_MAIL, lead_id, contact.id, company_id)
        await conn.execute(MOVE_OUTGOING, lead_id, contact.id, company_id)
        await conn.execute(MOVE_NOTES, lead_id, contact.id)
        await conn.execute(MOVE_TASKS, lead_id, contact.id, company_id)
    return await get_lead(conn, viewer, lead_id)


async def create_manual_lead(conn: asyncpg.Connection, viewer: User, name: str, phone_e164: str | None,
                             email: str | None, company_name: str, message: str) -> Lead:
    if not (name or phone_e164 or email):
        raise ValidationError("name", "give at least a name, a phone or an e-mail")
    manager_id = None if viewer.sees_everything else viewer.id
    try:
        lead_id = await conn.fetchval(INSERT_MANUAL_LEAD, phone_e164, clean_email(email) or None, name[:200],
                                      company_name[:200], message[:2000], manager_id)
    except asyncpg.UniqueViolationError as exc:
        raise Conflict("this person already has an open lead") from exc
    if manager_id is None:
        await notify_heads(conn, "new_lead", f"New lead: {name or phone_e164 or email}", lead_id)
    return await get_lead(conn, viewer, lead_id)
