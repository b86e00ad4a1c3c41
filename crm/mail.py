"""E-mail intake rules: store raw first, parse (forms, chat transcripts, plain mail), match the
person, then add to their history or to a lead. Nothing here knows SMTP."""

from __future__ import annotations

import asyncio
import email
import html
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parseaddr

import asyncpg
import phonenumbers

from crm import paging
from crm.deals import open_deal_of_contact
from crm.errors import NotFound
from crm.leads import (
    OPEN_LEAD_BY_EMAIL,
    OPEN_LEAD_BY_PHONE,
    create_lead_without_address,
    get_or_create_email_lead,
    get_or_create_phone_lead,
    notify_heads,
)
from crm.matching import find_caller
from crm.users import User
from crm.workhours import WorkingHours

logger = logging.getLogger(__name__)

MAX_ATTACHMENTS = 50
MAX_PARTS = 500

# Field labels of website forms and chat widgets, lower-case, without the colon.
DEFAULT_LABELS: dict[str, tuple[str, ...]] = {
    "name": ("имя", "name", "ваше имя", "your name", "фио", "контактное лицо", "visitor", "посетитель"),
    "phone": ("телефон", "phone", "тел", "номер телефона", "phone number", "мобильный", "tel"),
    "email": ("e-mail", "email", "почта", "электронная почта", "эл. почта", "mail"),
    "message": ("сообщение", "message", "комментарий", "comment", "вопрос", "question", "текст", "text"),
    "company": ("компания", "company", "организация", "organization"),
}
CHAT_MARKERS = ("jivo", "jivosite", "чат", "chat", "transcript", "offline message", "оффлайн сообщение",
                "офлайн сообщение", "сообщение из чата")
_LABEL_RE = re.compile(r"^\s*([^\n:]{1,40}?)\s*:\s*(.*)$")
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CHAT_LINE_RE = re.compile(r"^\s*(?:\[?\d{1,2}:\d{2}(?::\d{2})?\]?\s*)?([^:\n]{1,40}):\s+(.+)$")


@dataclass(slots=True)
class ParsedMail:
    kind: str  # web_form / chat / email
    subject: str
    sender_email: str | None
    sender_name: str
    text: str
    name: str = ""
    phones: list[str] = field(default_factory=list)
    email: str | None = None
    company: str = ""
    message: str = ""
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)


class _TextFromHtml:
    """HTML to readable text with the stdlib only: tags out, breaks kept, entities decoded."""

    @staticmethod
    def convert(markup: str) -> str:
        markup = re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>", " ", markup)
        markup = re.sub(r"(?i)<br\s*/?>|</p\s*>|</div\s*>|</tr\s*>|</li\s*>|</h\d\s*>", "\n", markup)
        markup = re.sub(r"(?s)<[^>]*>", " ", markup)
        text = html.unescape(markup)
        lines = [re.sub(r"[ \t\xa0]+", " ", line).strip() for line in text.splitlines()]
        return "\n".join(line for line in lines if line)


def _decode_part(part: Message) -> str:
    payload = part.get_payload(decode=True) or b""
    for charset in (part.get_content_charset() or "utf-8", "utf-8", "cp1251", "koi8-r"):
        try:
            return payload.decode(charset)
        except (LookupError, UnicodeDecodeError):
            continue  # an unknown or lying charset: try the ones Russian mail really uses
    return payload.decode("utf-8", "replace")


def _header(message: Message, name: str) -> str:
    value = message.get(name)
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))
    except (HeaderParseError, LookupError, UnicodeDecodeError, ValueError):
        return str(value)


def parse_message(raw: bytes, region: str, labels: dict[str, tuple[str, ...]] | None = None) -> ParsedMail:
    """Raises ValueError (or RecursionError for absurd nesting) when the message cannot be read.

    Parsed with policy compat32, not policy.default: the default policy's header objects made the
    intake ~16x slower (measured with bench/mail_intake.py), and the few headers we need are
    decoded here explicitly (RFC 2047 words, RFC 2231 file names).
    """
    labels = labels or DEFAULT_LABELS
    message = email.message_from_bytes(raw, policy=policy.compat32)
    if message.defects and not message.keys():
        raise ValueError(f"not a mail message: {message.defects[0]!r}")
    subject = _header(message, "subject")[:500]
    sender_name, sender_email = parseaddr(_header(message, "from"))
    reply_to = getaddresses([_header(message, "reply-to")])
    plain, markup, attachments = [], [], []
    for count, part in enumerate(message.walk()):
        if count > MAX_PARTS:
            raise ValueError(f"more than {MAX_PARTS} MIME parts")
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        disposition = part.get_content_disposition()
        filename = part.get_filename()
        if disposition == "attachment" or (filename and disposition != "inline"):
            if len(attachments) >= MAX_ATTACHMENTS:
                raise ValueError(f"more than {MAX_ATTACHMENTS} attachments")
            data = part.get_payload(decode=True) or b""
            name = str(make_header(decode_header(filename))) if filename else "attachment"
            attachments.append((_safe_filename(name), content_type, data))
        elif content_type == "text/plain":
            plain.append(_decode_part(part))
        elif content_type == "text/html":
            markup.append(_TextFromHtml.convert(_decode_part(part)))
    text = "\n".join(plain).strip() or "\n".join(markup).strip()
    parsed = ParsedMail("email", subject, sender_email.lower() or None, sender_name, text[:100_000],
                        attachments=attachments)
    fields = _labelled_fields(text, labels)
    haystack = f"{subject}\n{text[:2000]}".lower()
    is_chat = any(marker in haystack for marker in CHAT_MARKERS)
    if is_chat:
        parsed.kind = "chat"
    elif len(fields) >= 2 and ("phone" in fields or "email" in fields or "message" in fields):
        parsed.kind = "web_form"
    parsed.name = fields.get("name", "") or ("" if parsed.kind != "email" else sender_name)
    parsed.company = fields.get("company", "")
    parsed.message = fields.get("message", "") or (_chat_messages(text, labels) if is_chat else text)
    form_email = _EMAIL_RE.search(fields.get("email", ""))
    if form_email:
        parsed.email = form_email.group(0).lower()
    elif parsed.kind == "email":
        parsed.email = parsed.sender_email
    elif reply_to and reply_to[0][1]:
        parsed.email = reply_to[0][1].lower()
    parsed.phones = _phones(fields.get("phone", "") or (text if parsed.kind == "email" else ""), region)
    if not parsed.phones and parsed.kind != "email":
        parsed.phones = _phones(text, region)
    parsed.message = parsed.message.strip()[:20_000]
    texts = (parsed.subject, parsed.sender_name, parsed.sender_email or "", parsed.text, parsed.name,
             parsed.company, parsed.message, *(name for name, _, _ in parsed.attachments))
    if any("\x00" in text for text in texts):
        # PostgreSQL text cannot hold NUL: filed as unparsed (raw bytes kept) rather than lost in an error.
        raise ValueError("the message text contains NUL bytes")
    return parsed


def _labelled_fields(text: str, labels: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """'Телефон: +7 …' lines → {'phone': '+7 …'}; a message field may run over several lines."""
    fields: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        match = _LABEL_RE.match(line)
        key = None
        if match:
            label = match.group(1).strip().lower().strip("*").strip()
            key = next((k for k, names in labels.items() if label in names), None)
        if key is not None:
            current = key
            if key not in fields:
                fields[key] = match.group(2).strip()
            else:
                current = None
        elif current == "message" and line.strip():
            fields["message"] = (fields["message"] + "\n" + line.strip()).strip()
        else:
            current = None if not line.strip() else current
    return {k: v for k, v in fields.items() if v}


def _chat_messages(text: str, labels: dict[str, tuple[str, ...]]) -> str:
    """The conversation lines ('[14:02:11] Пётр: …'), without the visitor's card fields."""
    known = {name for names in labels.values() for name in names}
    lines = [m.group(0).strip() for m in map(_CHAT_LINE_RE.match, text.splitlines())
             if m and m.group(1).strip().lower() not in known]
    return "\n".join(lines) or text


def _phones(text: str, region: str) -> list[str]:
    found: list[str] = []
    for match in phonenumbers.PhoneNumberMatcher(text[:20_000], region):
        e164 = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
        if e164 not in found:
            found.append(e164)
    return found[:5]


def _safe_filename(name: str) -> str:
    """Only a base name, no path parts or control characters."""
    name = re.sub(r"[\x00-\x1f/\\]", "_", name).strip().lstrip(".")
    return name[:200] or "attachment"


# ------------------------------------------------------------------ storage

INSERT_RAW = """
INSERT INTO mail_messages (peer, envelope_from, envelope_to, raw) VALUES ($1, $2, $3, $4) RETURNING id
"""
MARK_UNPARSED = "UPDATE mail_messages SET status = 'unparsed', error = $2 WHERE id = $1"
MARK_PARSED = """
UPDATE mail_messages SET status = 'parsed', error = NULL, kind = $2, subject = $3, sender_email = $4,
       sender_name = $5, text_body = $6, extracted = $7, contact_id = $8, company_id = $9, lead_id = $10
WHERE id = $1
"""
INSERT_ATTACHMENT = """
INSERT INTO mail_attachments (message_id, filename, content_type, size, data) VALUES ($1, $2, $3, $4, $5)
"""
ATTACH_DEAL = "UPDATE mail_messages SET deal_id = $2 WHERE id = $1"
PARTY_BY_EMAIL = """
SELECT e.contact_id, coalesce(c.company_id, e.company_id) AS company_id,
       coalesce(c.manager_id, co.manager_id) AS manager_id
FROM emails e LEFT JOIN contacts c ON c.id = e.contact_id
LEFT JOIN companies co ON co.id = coalesce(c.company_id, e.company_id)
WHERE e.email = $1 ORDER BY e.contact_id IS NULL, e.id LIMIT 1
"""
ATTACH_EMAIL_TO_LEAD = "UPDATE leads SET email = coalesce(email, $2), updated_at = now() WHERE id = $1"
INSERT_REPLY_TASK = """
INSERT INTO tasks (kind, title, assignee_id, due_at, mail_message_id) VALUES ('reply', $1, $2, $3, $4)
"""
INSERT_NOTIFICATION = "INSERT INTO notifications (user_id, kind, text, lead_id) VALUES ($1, $2, $3, $4)"
MAILBOX_OF = "SELECT lower(envelope_to[1]) FROM mail_messages WHERE id = $1"
RULE_MANAGER_OF_LEAD = "SELECT manager_id FROM leads WHERE id = $1 AND auto_assigned"
LIST_PARTY_MAIL = """
SELECT m.id, m.received_at, m.kind, m.subject, m.sender_email, m.sender_name, left(m.text_body, 2000) AS text,
       (SELECT coalesce(json_agg(json_build_object('id', a.id, 'filename', a.filename, 'size', a.size)
                                 ORDER BY a.id), '[]') FROM mail_attachments a WHERE a.message_id = m.id)
         AS attachments
FROM mail_messages m
WHERE (m.contact_id = $1 OR ($2::bigint IS NOT NULL AND m.company_id = $2) OR ($3::bigint IS NOT NULL AND
       m.lead_id = $3) OR ($5::bigint IS NOT NULL AND m.deal_id = $5))
ORDER BY m.received_at DESC LIMIT $4
"""
LIST_RECENT = """
SELECT id, received_at, peer, envelope_from, status, error, kind, subject, sender_email, lead_id, contact_id,
       length(raw) AS size
FROM mail_messages WHERE (received_at, id) < ($2::timestamptz, $3::bigint)
ORDER BY received_at DESC, id DESC LIMIT $1
"""
# An attachment is visible to whoever may see the contact, company or lead the message belongs to.
GET_ATTACHMENT = """
SELECT a.filename, a.content_type, a.data FROM mail_attachments a
JOIN mail_messages m ON m.id = a.message_id
LEFT JOIN contacts c ON c.id = m.contact_id
LEFT JOIN companies co ON co.id = m.company_id
LEFT JOIN leads l ON l.id = m.lead_id
WHERE a.id = $1 AND a.message_id = $2
  AND ($3::bigint IS NULL OR c.manager_id = $3 OR co.manager_id = $3 OR l.manager_id = $3
       OR (m.contact_id IS NOT NULL AND c.manager_id IS NULL))
"""


@dataclass(frozen=True, slots=True)
class IntakeResult:
    message_id: int
    status: str  # parsed / unparsed
    kind: str | None = None
    contact_id: int | None = None
    lead_id: int | None = None
    lead_created: bool = False
    notify_user_id: int | None = None
    lead_manager_id: int | None = None  # the manager a distribution rule gave the new lead
    error: str | None = None


async def store_raw(conn: asyncpg.Connection, raw: bytes, peer: str, envelope_from: str,
                    envelope_to: list[str]) -> int:
    """First thing, before any parsing: the bytes as received."""
    return await conn.fetchval(INSERT_RAW, peer[:100], envelope_from[:320], envelope_to, raw)


async def mark_unparsed(conn: asyncpg.Connection, message_id: int, error: str) -> None:
    """Kept raw, shown on the mail page with the reason: never lost silently."""
    await conn.execute(MARK_UNPARSED, message_id, error[:1000])


async def process_stored(conn: asyncpg.Connection, message_id: int, raw: bytes, region: str,
                         reply_within_hours: int = 4, now: datetime | None = None,
                         hours: WorkingHours | None = None) -> IntakeResult:
    """Parse, match, file. A message that cannot be read stays stored as 'unparsed' with the reason."""
    try:
        # MIME parsing is CPU work (a big form or attachment takes tens of ms): off the event loop.
        parsed = await asyncio.to_thread(parse_message, raw, region)
    except (ValueError, RecursionError, LookupError, TypeError, IndexError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:1000]
        logger.warning("mail %d stored unparsed: %s", message_id, error)
        await conn.execute(MARK_UNPARSED, message_id, error)
        return IntakeResult(message_id, "unparsed", error=error)
    async with conn.transaction():
        contact_id = company_id = manager_id = lead_id = None
        lead_created = False
        party = await conn.fetchrow(PARTY_BY_EMAIL, parsed.email) if parsed.email else None
        if party is not None:
            contact_id, company_id, manager_id = party["contact_id"], party["company_id"], party["manager_id"]
        else:
            for phone in parsed.phones:
                match = await find_caller(conn, phone, region)
                if match is not None:
                    contact_id, company_id, manager_id = match.contact_id, match.company_id, match.manager_id
                    break
        lead_manager_id = None
        if contact_id is None and company_id is None:
            # The mailbox written to (or form:<key>, chat:<key>) is the lead's line: distribution rules use it.
            line = await conn.fetchval(MAILBOX_OF, message_id) or ""
            lead_id, lead_created = await _lead_for(conn, parsed, line)
            if lead_created:
                lead_manager_id = await conn.fetchval(RULE_MANAGER_OF_LEAD, lead_id)
        extracted = {"name": parsed.name, "phones": parsed.phones, "email": parsed.email,
                     "company": parsed.company, "message": parsed.message[:2000]}
        await conn.execute(MARK_PARSED, message_id, parsed.kind, parsed.subject, parsed.sender_email,
                           parsed.sender_name[:200], parsed.text, json.dumps(extracted, ensure_ascii=False),
                           contact_id, company_id, lead_id)
        deal_id = await open_deal_of_contact(conn, contact_id)
        if deal_id is not None:
            await conn.execute(ATTACH_DEAL, message_id, deal_id)
        for filename, content_type, data in parsed.attachments:
            await conn.execute(INSERT_ATTACHMENT, message_id, filename, content_type, len(data), data)
        notify = None
        if contact_id is not None or company_id is not None:
            title = f"Reply: {parsed.subject or parsed.name or parsed.email or 'message'}"[:200]
            # Within N hours the office is open: Saturday night's mail is due Monday morning, not at 02:25.
            due = (hours or WorkingHours()).add(now or datetime.now().astimezone(), timedelta(hours=reply_within_hours))
            await conn.execute(INSERT_REPLY_TASK, title, manager_id, due, message_id)
            text = f"New {parsed.kind.replace('_', ' ')} from {parsed.name or parsed.email or 'a client'}"
            if manager_id is not None:
                await conn.execute(INSERT_NOTIFICATION, manager_id, "mail", text, None)
                notify = manager_id
            else:
                await notify_heads(conn, "mail", text)
    return IntakeResult(message_id, "parsed", parsed.kind, contact_id, lead_id, lead_created, notify,
                        lead_manager_id=lead_manager_id)


async def _lead_for(conn: asyncpg.Connection, parsed: ParsedMail, line: str = "") -> tuple[int, bool]:
    """One open lead per person across channels: a phone already on a call's lead wins."""
    for phone in parsed.phones:
        row = await conn.fetchrow(OPEN_LEAD_BY_PHONE, phone)
        if row is not None:
            if parsed.email:
                await conn.execute(ATTACH_EMAIL_TO_LEAD, row["id"], parsed.email)
            return row["id"], False
    if parsed.email:
        row = await conn.fetchrow(OPEN_LEAD_BY_EMAIL, parsed.email)
        if row is not None:
            return row["id"], False
    source = {"web_form": "web_form", "chat": "chat"}.get(parsed.kind, "email")
    message = parsed.message or parsed.subject
    if parsed.email:
        lead, created = await get_or_create_email_lead(conn, source, parsed.email, parsed.name, parsed.company,
                                                       message, line, phone_e164=(parsed.phones or [None])[0])
    elif parsed.phones:
        lead, created = await get_or_create_phone_lead(conn, parsed.phones[0], line, parsed.name, message, source)
    else:
        lead = await create_lead_without_address(conn, source, parsed.name, parsed.company, message, line)
        created = True
    return lead.id, created


async def list_party_mail(conn: asyncpg.Connection, contact_id: int | None, company_id: int | None,
                          lead_id: int | None = None, limit: int = 50, deal_id: int | None = None) -> list[dict]:
    rows = await conn.fetch(LIST_PARTY_MAIL, contact_id, company_id, lead_id, limit, deal_id)
    return [{**dict(r), "attachments": json.loads(r["attachments"])} for r in rows]


async def list_recent(conn: asyncpg.Connection, limit: int = 100, after: str | None = None) -> list[dict]:
    """Newest first; `after` is the cursor of the previous page's last message (crm.paging)."""
    key = paging.decode(after, (datetime, int)) or (datetime.max.replace(tzinfo=UTC), 0)
    return [dict(r) for r in await conn.fetch(LIST_RECENT, limit, *key)]


def message_key(message: dict) -> tuple[datetime, int]:
    return message["received_at"], message["id"]


async def get_attachment(conn: asyncpg.Connection, viewer: User, message_id: int,
                         attachment_id: int) -> tuple[str, str, bytes]:
    row = await conn.fetchrow(GET_ATTACHMENT, attachment_id, message_id,
                              None if viewer.sees_everything else viewer.id)
    if row is None:
        raise NotFound("attachment")
    return row["filename"], row["content_type"], row["data"]
