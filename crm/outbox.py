"""Outgoing mail: messages built and queued in the database, claimed by a sending worker, retried with back-off; a
sent one is copied into the client's mail history."""

from __future__ import annotations

import asyncio
import email
import email.parser
import email.policy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import make_msgid

import asyncpg

from crm.contacts import clean_email
from crm.errors import Forbidden, NotFound, ValidationError
from crm.users import User
from crm.webhooks import backoff

MAX_ATTEMPTS = 8
MAX_BACKOFF = timedelta(hours=2)
MAX_RECIPIENTS = 20


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    id: int
    user_id: int | None
    sender: str
    recipients: list[str]
    subject: str
    message_id: str
    state: str
    attempts: int
    last_error: str
    deal_id: int | None
    contact_id: int | None
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class DueMail:
    id: int
    sender: str
    recipients: list[str]
    message: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class Links:
    """What a message belongs to in the CRM (its history)."""

    contact_id: int | None = None
    company_id: int | None = None
    lead_id: int | None = None
    deal_id: int | None = None
    reply_to_id: int | None = None


_COLUMNS = """id, user_id, sender, recipients, subject, message_id, state, attempts, last_error, deal_id, contact_id,
created_at, sent_at"""
INSERT_MAIL = f"""
INSERT INTO outgoing_mail (user_id, sender, recipients, subject, text_body, message, message_id, contact_id,
                           company_id, lead_id, deal_id, reply_to_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {_COLUMNS}
"""
LIST_MAIL = f"""
SELECT {_COLUMNS} FROM outgoing_mail WHERE ($1::bigint IS NULL OR user_id = $1) ORDER BY id DESC LIMIT $2
"""
CLAIM_DUE = """
UPDATE outgoing_mail SET claimed_until = $1 + $3::interval, attempts = attempts + 1
WHERE id IN (SELECT id FROM outgoing_mail
             WHERE state = 'pending' AND next_attempt_at <= $1 AND (claimed_until IS NULL OR claimed_until < $1)
             ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
RETURNING id, sender, recipients, message, attempts
"""
MARK_SENT = """
UPDATE outgoing_mail SET state = 'sent', sent_at = $2, last_error = '', claimed_until = NULL
WHERE id = $1 AND state = 'pending'
RETURNING sender, recipients, subject, text_body, message, contact_id, company_id, lead_id, deal_id, user_id
"""
MARK_FAILED_ATTEMPT = """
UPDATE outgoing_mail SET state = CASE WHEN attempts >= $4 THEN 'failed' ELSE 'pending' END, next_attempt_at = $2,
       last_error = $3, claimed_until = NULL
WHERE id = $1
"""
# Into the history the pages already show (contact, company, lead and deal cards).
INSERT_HISTORY = """
INSERT INTO mail_messages (received_at, envelope_from, envelope_to, raw, status, kind, subject, sender_email,
                           sender_name, text_body, contact_id, company_id, lead_id, deal_id, direction, outgoing_id)
VALUES ($1, $2, $3, $4, 'parsed', 'email', $5, $2, $6, $7, $8, $9, $10, $11, 'out', $12)
ON CONFLICT (outgoing_id) DO NOTHING RETURNING id
"""
INSERT_ATTACHMENT = """
INSERT INTO mail_attachments (message_id, filename, content_type, size, data) VALUES ($1, $2, $3, $4, $5)
"""
USER_NAME = "SELECT display_name FROM users WHERE id = $1"
INCOMING = """
SELECT m.raw, m.subject, m.sender_email, m.contact_id, m.company_id, m.lead_id, m.deal_id,
       coalesce(c.manager_id, co.manager_id, l.manager_id) AS manager_id
FROM mail_messages m LEFT JOIN contacts c ON c.id = m.contact_id LEFT JOIN companies co ON co.id = m.company_id
LEFT JOIN leads l ON l.id = m.lead_id
WHERE m.id = $1 AND m.direction = 'in'
"""
DEAL_ADDRESS = """
SELECT d.contact_id, d.company_id, d.lead_id, d.title,
       coalesce((SELECT e.email FROM emails e WHERE e.contact_id = d.contact_id ORDER BY e.id LIMIT 1),
                (SELECT e.email FROM emails e WHERE e.company_id = d.company_id ORDER BY e.id LIMIT 1),
                (SELECT l.email FROM leads l WHERE l.id = d.lead_id)) AS email
FROM deals d WHERE d.id = $1 AND ($2::bigint IS NULL OR d.manager_id = $2)
"""


def _mail(row: asyncpg.Record) -> OutgoingMail:
    return OutgoingMail(**{**dict(row), "recipients": list(row["recipients"])})


def clean_recipients(to: object) -> list[str]:
    items = [to] if isinstance(to, str) else to
    if not isinstance(items, list) or not all(isinstance(a, str) for a in items):
        raise ValidationError("to", "one e-mail address or a list of them")
    addresses = [clean_email(a) for part in items for a in part.replace(";", ",").split(",") if a.strip()]
    if not addresses:
        raise ValidationError("to", "no address to send to")
    if len(addresses) > MAX_RECIPIENTS:
        raise ValidationError("to", f"at most {MAX_RECIPIENTS} addresses")
    return list(dict.fromkeys(addresses))


def _text(value: object, name: str, limit: int, required: bool = True) -> str:
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValidationError(name, "is required")
    if len(value) > limit or "\x00" in value:
        raise ValidationError(name, f"must be at most {limit} characters")
    return value.strip()


def build_message(sender: str, sender_name: str, recipients: Sequence[str], subject: str, text: str,
                  attachments: Sequence[Attachment], message_id: str, in_reply_to: str | None,
                  references: str | None) -> bytes:
    """The RFC 5322 message, UTF-8 where needed (CPU work for big attachments: call it in a thread)."""
    message = EmailMessage(policy=email.policy.SMTP)
    local, _, domain = sender.partition("@")
    message["From"] = Address(sender_name.replace("\n", " ")[:100], local, domain)
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject.replace("\n", " ")
    message["Message-ID"] = message_id
    message["Date"] = email.utils.formatdate(localtime=False)
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = f"{references} {in_reply_to}".strip() if references else in_reply_to
    message.set_content(text)
    for item in attachments:
        maintype, _, subtype = item.content_type.partition("/")
        if maintype == "text":  # as text, so it carries its charset (UTF-8)
            message.add_attachment(item.data.decode("utf-8", errors="replace"), subtype=subtype or "plain",
                                   filename=item.filename)
        else:
            message.add_attachment(item.data, maintype=maintype, subtype=subtype or "octet-stream",
                                   filename=item.filename)
    return message.as_bytes()


async def queue_mail(conn: asyncpg.Connection, *, user: User, sender: str, to: object, subject: object,
                     text: object, attachments: Sequence[Attachment] = (), links: Links = Links(),
                     in_reply_to: str | None = None, references: str | None = None) -> OutgoingMail:
    """Build the message and queue it; the worker sends it. The sender is the company's shared address, with the
    person's name shown."""
    if not sender:
        raise ValidationError("sender", "no sending address is configured (CALLBOARD_MAIL_FROM)")
    recipients = clean_recipients(to)
    subject_text, body = _text(subject, "subject", 500), _text(text, "text", 100_000, required=False)
    message_id = make_msgid(domain=sender.partition("@")[2] or "callboard")
    data = await asyncio.to_thread(build_message, sender, user.display_name, recipients, subject_text, body,
                                   attachments, message_id, in_reply_to, references)
    row = await conn.fetchrow(INSERT_MAIL, user.id or None, sender, recipients, subject_text, body, data, message_id,
                              links.contact_id, links.company_id, links.lead_id, links.deal_id, links.reply_to_id)
    return _mail(row)


async def list_mail(conn: asyncpg.Connection, viewer: User, limit: int = 100) -> list[OutgoingMail]:
    """What was sent or waits; a manager sees their own."""
    return [_mail(r) for r in await conn.fetch(LIST_MAIL, None if viewer.sees_everything else viewer.id, limit)]


async def claim_due(conn: asyncpg.Connection, now: datetime, limit: int = 10,
                    lease: timedelta = timedelta(minutes=5)) -> list[DueMail]:
    return [DueMail(r["id"], r["sender"], list(r["recipients"]), r["message"], r["attempts"])
            for r in await conn.fetch(CLAIM_DUE, now, limit, lease)]


def _attachments(raw: bytes) -> list[Attachment]:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    return [Attachment(part.get_filename() or "attachment", part.get_content_type(), part.get_payload(decode=True))
            for part in parsed.iter_attachments()]  # type: ignore[attr-defined]


async def mark_sent(conn: asyncpg.Connection, mail_id: int, now: datetime) -> None:
    """Sent: into the client's history with its attachments, in one transaction."""
    async with conn.transaction():
        row = await conn.fetchrow(MARK_SENT, mail_id, now)
        if row is None:
            return
        name = await conn.fetchval(USER_NAME, row["user_id"]) if row["user_id"] else ""
        history_id = await conn.fetchval(
            INSERT_HISTORY, now, row["sender"], list(row["recipients"]), row["message"], row["subject"], name or "",
            row["text_body"], row["contact_id"], row["company_id"], row["lead_id"], row["deal_id"], mail_id)
        if history_id is not None:
            for item in await asyncio.to_thread(_attachments, row["message"]):
                await conn.execute(INSERT_ATTACHMENT, history_id, item.filename, item.content_type, len(item.data),
                                   item.data)


async def mark_failed_attempt(conn: asyncpg.Connection, due: DueMail, now: datetime, error: str,
                              base_delay: float, permanent: bool = False) -> None:
    """Try again later, or give up (after MAX_ATTEMPTS, or at once when the relay refused for good)."""
    await conn.execute(MARK_FAILED_ATTEMPT, due.id, now + backoff(due.attempts, base_delay, MAX_BACKOFF), error[:500],
                       due.attempts if permanent else MAX_ATTEMPTS)


async def reply_context(conn: asyncpg.Connection, viewer: User, mail_id: int) -> tuple[dict, str | None, str | None]:
    """An incoming message to reply to: (its fields, its Message-ID, its References). Only whoever may see its
    contact, company or lead may reply."""
    row = await conn.fetchrow(INCOMING, mail_id)
    if row is None:
        raise NotFound("mail message")
    if not viewer.sees_everything and row["manager_id"] not in (None, viewer.id):
        raise Forbidden("this message belongs to another manager's client")
    if not row["sender_email"]:
        raise ValidationError("to", "the message has no sender address to reply to")
    headers = await asyncio.to_thread(email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes,
                                      row["raw"])
    message_id = (headers.get("Message-ID") or "").strip() or None
    return dict(row), message_id, (headers.get("References") or "").strip() or None


async def deal_address(conn: asyncpg.Connection, viewer: User, deal_id: int) -> dict:
    """The deal's client address (contact, else company, else lead) and its links."""
    row = await conn.fetchrow(DEAL_ADDRESS, deal_id, None if viewer.sees_everything else viewer.id)
    if row is None:
        raise NotFound("deal")
    return dict(row)
