"""Leads: requests from people who are not clients yet; one open lead per person; notifications."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from crm import leadrules, paging
from crm.contacts import PartyInput, clean_email, create_party
from crm.errors import Conflict, Forbidden, NotFound, ValidationError
from crm.phones import format_phone, parse_phone
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
    version: int = 1
    rule_id: int | None = None  # the distribution rule that gave it its manager (while nobody else has)
    auto_assigned: bool = False

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
       l.updated_at, l.version, l.rule_id, l.auto_assigned
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
VALUES ($7, $1, $2, $3, $4, $5, $6, CASE WHEN $6::bigint IS NULL THEN 'new' ELSE 'in_work' END)
RETURNING id
"""
INSERT_ANONYMOUS_LEAD = """
INSERT INTO leads (source, name, company_name, first_message, line) VALUES ($1, $2, $3, $4, $5) RETURNING id
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
    manager_id: int | None = None  # given by a distribution rule: told live too


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


async def _placed(conn: asyncpg.Connection, lead_id: int, announce: str) -> Lead:
    """The one place every new lead goes through, inside the transaction that created it: the heads' stored
    notification, then the distribution rules (crm.leadrules), so nobody ever sees it without the manager a rule
    gives it; the lead as it is now."""
    await notify_heads(conn, "new_lead", announce, lead_id)
    await leadrules.distribute(conn, lead_id)
    return _lead(await conn.fetchrow(GET_LEAD, lead_id, None))


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
        return await _placed(conn, lead_id, announce), True


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
                                      first_message: str, line: str = "") -> Lead:
    """A request with neither phone nor e-mail (a form left half empty) still reaches the CRM."""
    async with conn.transaction():
        lead_id = await conn.fetchval(INSERT_ANONYMOUS_LEAD, source, name[:200], company_name[:200],
                                      first_message[:2000], line[:64])
        return await _placed(conn, lead_id,
                             f"New lead ({source.replace('_', ' ')}) without a phone or e-mail")


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


class DuplicateLead(Conflict):
    """The phone or e-mail belongs to an open lead already: that lead is shown instead of a second one."""

    def __init__(self, lead_id: int, manager_name: str | None) -> None:
        super().__init__("this person already has an open lead")
        self.lead_id = lead_id
        self.manager_name = manager_name


async def _open_lead_of(conn: asyncpg.Connection, phone_e164: str | None, email: str | None,
                        other_than: int | None = None) -> Lead | None:
    for query, key in ((OPEN_LEAD_BY_PHONE, phone_e164), (OPEN_LEAD_BY_EMAIL, email)):
        if key:
            row = await conn.fetchrow(query, key)
            if row is not None and row["id"] != other_than:
                return _lead(row)
    return None


def _lead_fields(name: object, email: object, company_name: object, message: object) -> tuple[str, str | None, str,
                                                                                                  str]:
    for field, value in (("name", name), ("email", email), ("company_name", company_name), ("message", message)):
        if value is not None and not isinstance(value, str):
            raise ValidationError(field, "must be text")
    return ((name or "").strip()[:200], clean_email(email) or None, (company_name or "").strip()[:200],
            (message or "").strip()[:2000])


async def create_manual_lead(conn: asyncpg.Connection, viewer: User, name: str, phone_e164: str | None,
                             email: str | None, company_name: str, message: str, source: str = "manual") -> Lead:
    """A lead entered by hand. A manager who enters it keeps it (they are talking to the person); entered by the
    head or an admin, the distribution rules place it like any other new lead. A phone or e-mail of an open lead
    raises DuplicateLead naming that lead: one open lead per person."""
    name, email, company_name, message = _lead_fields(name, email, company_name, message)
    if not (name or phone_e164 or email):
        raise ValidationError("name", "give at least a name, a phone or an e-mail")
    if source not in SOURCES:
        raise ValidationError("source", f"one of {', '.join(SOURCES)}")
    manager_id = None if viewer.sees_everything else viewer.id
    async with conn.transaction():
        existing = await _open_lead_of(conn, phone_e164, email)
        if existing is not None:
            raise DuplicateLead(existing.id, existing.manager_name)
        try:
            async with conn.transaction():
                lead_id = await conn.fetchval(INSERT_MANUAL_LEAD, phone_e164, email, name, company_name, message,
                                              manager_id, source)
        except asyncpg.UniqueViolationError:
            # Entered at the same moment by someone else (or filed by a call): show theirs.
            existing = await _open_lead_of(conn, phone_e164, email)
            if existing is None:
                raise Conflict("this person already has an open lead") from None
            raise DuplicateLead(existing.id, existing.manager_name) from None
        if manager_id is None:
            await _placed(conn, lead_id, f"New lead: {name or phone_e164 or email}")
    return await get_lead(conn, viewer, lead_id)


# An edit by hand claims the row and checks the version it was made over; it counts as working the lead.
LOCK_FOR_EDIT = """
SELECT version FROM leads WHERE id = $1 AND ($2::bigint IS NULL OR manager_id = $2) FOR UPDATE
"""
EDIT_LEAD = """
UPDATE leads SET name = $2, phone_e164 = $3, email = $4, company_name = $5, first_message = $6,
       touched_at = now(), updated_at = now()
WHERE id = $1
"""
EDITABLE = ("name", "phone", "email", "company_name", "first_message")


async def update_lead(conn: asyncpg.Connection, viewer: User, lead_id: int, changes: dict, region: str = "RU",
                      version: int | None = None) -> Lead:
    """Edit an open lead's name, phone, e-mail, company name or first message (only what `changes` holds); with
    `version`, an edit over a newer one is refused (Conflict). A manager edits only their own leads."""
    async with conn.transaction():
        current_version = await conn.fetchval(LOCK_FOR_EDIT, lead_id, _scope(viewer))
        if current_version is None:
            raise NotFound("lead")
        if version is not None and version != current_version:
            raise Conflict("someone changed this lead meanwhile; reload it to see their change")
        lead = await get_lead(conn, viewer, lead_id)
        _require_open(lead)
        phone = lead.phone_e164
        if "phone" in changes:
            raw = changes["phone"]
            if raw is not None and not isinstance(raw, str):
                raise ValidationError("phone", "must be text")
            phone = parse_phone(raw, region).e164 if raw and raw.strip() else None
        name, email, company_name, message = _lead_fields(
            changes.get("name", lead.name), changes.get("email", lead.email),
            changes.get("company_name", lead.company_name), changes.get("first_message", lead.first_message))
        existing = await _open_lead_of(conn, phone if phone != lead.phone_e164 else None,
                                       email if email != lead.email else None, other_than=lead_id)
        if existing is not None:
            raise DuplicateLead(existing.id, existing.manager_name)
        if not (name or phone or email):
            raise ValidationError("name", "give at least a name, a phone or an e-mail")
        await conn.execute(EDIT_LEAD, lead_id, name, phone, email, company_name, message)
        return await get_lead(conn, viewer, lead_id)
