"""One timeline per contact, company, lead and deal: calls (with their results), e-mails in and out, notes,
tasks set and done, deal stage changes and documents, newest first, in keyset pages; notes people write."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg

from crm import paging
from crm.errors import ValidationError
from crm.users import User

Subject = Literal["contact", "company", "lead", "deal"]
KINDS = ("call", "mail", "note", "task", "task_done", "stage", "document")


@dataclass(frozen=True, slots=True)
class Event:
    """One row of a timeline; `data` holds what its kind needs (codes, not words: the page translates)."""

    kind: str
    at: datetime
    id: int
    title: str
    text: str
    who: str | None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scope:
    """What a timeline gathers: the contacts' ids (a company's visible people too), the company, lead, deal."""

    contact_ids: tuple[int, ...] = ()
    company_id: int | None = None
    lead_id: int | None = None
    deal_id: int | None = None


# $1 contact ids, $2 company, $3 lead, $4 deal; ($5, $6, $7) the cursor (at, kind, id) the page continues
# after; $8 the page size. Each branch reads its own indexes (calls_contact_idx, calls_company_idx,
# calls_lead_idx, calls_deal_idx, mail_messages_*_idx, notes_*_idx, tasks_*_idx, deals_*_idx, …), sorts
# only its own rows and hands at most $8 of them to the union: a busy card costs its own rows, never the table.
_AFTER = "({at}, {kind}::text, {id}) < ($5::timestamptz, $6::text, $7::bigint)"
_CALLS = f"""
(SELECT 'call'::text AS kind, c.started_at AS at, c.id, c.direction AS title,
        CASE WHEN c.direction = 'outbound' THEN c.callee ELSE c.caller END AS text,
        coalesce(u.display_name, c.answered_by) AS who,
        jsonb_build_object('direction', c.direction, 'outcome', c.outcome, 'talk_seconds', c.talk_seconds,
                           'recording', c.recording IS NOT NULL AND c.talk_seconds > 0) AS data
 FROM calls c LEFT JOIN users u ON u.id = c.user_id
 WHERE (c.contact_id = ANY($1::bigint[]) OR c.company_id = $2 OR c.lead_id = $3 OR c.deal_id = $4)
   AND {_AFTER.format(at="c.started_at", kind="'call'", id="c.id")}
 ORDER BY c.started_at DESC, c.id DESC LIMIT $8)"""
_MAIL = f"""
(SELECT 'mail'::text, m.received_at, m.id, m.subject, left(m.text_body, 2000),
        coalesce(nullif(m.sender_name, ''), m.sender_email),
        jsonb_build_object('direction', m.direction, 'kind', coalesce(m.kind, 'email'))
 FROM mail_messages m
 WHERE (m.contact_id = ANY($1::bigint[]) OR m.company_id = $2 OR m.lead_id = $3 OR m.deal_id = $4)
   AND {_AFTER.format(at="m.received_at", kind="'mail'", id="m.id")}
 ORDER BY m.received_at DESC, m.id DESC LIMIT $8)"""
_NOTES = f"""
(SELECT 'note'::text, n.created_at, n.id, '', n.text, u.display_name, '{{}}'::jsonb
 FROM notes n LEFT JOIN users u ON u.id = n.author_id
 WHERE (n.contact_id = ANY($1::bigint[]) OR n.company_id = $2 OR n.lead_id = $3 OR n.deal_id = $4)
   AND {_AFTER.format(at="n.created_at", kind="'note'", id="n.id")}
 ORDER BY n.created_at DESC, n.id DESC LIMIT $8)"""
_TASK_WHERE = "(t.contact_id = ANY($1::bigint[]) OR t.company_id = $2 OR t.lead_id = $3 OR t.deal_id = $4)"
_TASKS = f"""
(SELECT 'task'::text, t.created_at, t.id, t.title, t.note, u.display_name,
        jsonb_build_object('due_at', t.due_at, 'state', t.state, 'task_kind', t.kind)
 FROM tasks t LEFT JOIN users u ON u.id = t.assignee_id
 WHERE {_TASK_WHERE} AND {_AFTER.format(at="t.created_at", kind="'task'", id="t.id")}
 ORDER BY t.created_at DESC, t.id DESC LIMIT $8)"""
_TASKS_DONE = f"""
(SELECT 'task_done'::text, t.closed_at, t.id, t.title, t.note, u.display_name,
        jsonb_build_object('state', t.state)
 FROM tasks t LEFT JOIN users u ON u.id = t.closed_by
 WHERE {_TASK_WHERE} AND t.state = 'done' AND t.closed_at IS NOT NULL
   AND {_AFTER.format(at="t.closed_at", kind="'task_done'", id="t.id")}
 ORDER BY t.closed_at DESC, t.id DESC LIMIT $8)"""
_DEAL_WHERE = "(d.id = $4 OR d.contact_id = ANY($1::bigint[]) OR d.company_id = $2 OR d.lead_id = $3)"
_STAGES = f"""
(SELECT 'stage'::text, h.entered_at, h.id, s.name, d.title, u.display_name,
        jsonb_build_object('deal_id', d.id, 'stage', h.stage)
 FROM deal_stage_history h JOIN deals d ON d.id = h.deal_id JOIN deal_stages s ON s.code = h.stage
 LEFT JOIN users u ON u.id = h.user_id
 WHERE {_DEAL_WHERE} AND {_AFTER.format(at="h.entered_at", kind="'stage'", id="h.id")}
 ORDER BY h.entered_at DESC, h.id DESC LIMIT $8)"""
_DOCUMENTS = f"""
(SELECT 'document'::text, dd.created_at, dd.id, dd.number, d.title, u.display_name,
        jsonb_build_object('deal_id', d.id, 'document_kind', dd.kind, 'amount', dd.amount::text)
 FROM deal_documents dd JOIN deals d ON d.id = dd.deal_id LEFT JOIN users u ON u.id = dd.created_by
 WHERE {_DEAL_WHERE} AND {_AFTER.format(at="dd.created_at", kind="'document'", id="dd.id")}
 ORDER BY dd.created_at DESC, dd.id DESC LIMIT $8)"""
TIMELINE = f"""
SELECT kind, at, id, title, text, who, data FROM (
{_CALLS}
UNION ALL {_MAIL}
UNION ALL {_NOTES}
UNION ALL {_TASKS}
UNION ALL {_TASKS_DONE}
UNION ALL {_STAGES}
UNION ALL {_DOCUMENTS}
) e ORDER BY at DESC, kind DESC, id DESC LIMIT $8
"""
# Details of the page's own rows only: the results of its calls, whether the viewer may play each recording
# (the rule of crm.calls.GET_CALL, which /recordings/{id} applies), the attachments of its messages.
CALL_DETAILS = """
SELECT c.id, ($2::bigint IS NULL OR c.user_id = $2 OR ct.manager_id = $2 OR co.manager_id = $2) AS allowed,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('id', r.id, 'result', r.result, 'note', r.note,
                                                     'callback_at', r.callback_at, 'who', u.display_name,
                                                     'at', r.created_at, 'task_id', r.task_id)
                                  ORDER BY r.created_at DESC, r.id DESC), '[]'::jsonb)
        FROM call_results r LEFT JOIN users u ON u.id = r.user_id WHERE r.call_id = c.id) AS results
FROM calls c LEFT JOIN contacts ct ON ct.id = c.contact_id LEFT JOIN companies co ON co.id = c.company_id
WHERE c.id = ANY($1::bigint[])
"""
MAIL_ATTACHMENTS = """
SELECT message_id, id, filename, size FROM mail_attachments WHERE message_id = ANY($1::bigint[]) ORDER BY id
"""
VISIBLE_COMPANY_CONTACTS = """
SELECT id FROM contacts WHERE company_id = $1 AND ($2::bigint IS NULL OR manager_id = $2 OR manager_id IS NULL)
"""
INSERT_NOTE = """
INSERT INTO notes (author_id, text, contact_id, company_id, lead_id, deal_id) VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, created_at
"""
CUSTOM_PLAN = "SET LOCAL plan_cache_mode = force_custom_plan"
_START = (datetime.max.replace(tzinfo=UTC), "", 0)
NOTE_LIMIT = 10_000


def event_key(event: Event) -> tuple[datetime, str, int]:
    """Where an event sits: the `after` cursor of the page it ends."""
    return event.at, event.kind, event.id


def _scope(viewer: User) -> int | None:
    return None if viewer.sees_everything else viewer.id


async def company_scope(conn: asyncpg.Connection, viewer: User, company_id: int) -> Scope:
    """A company's timeline holds its own events and those of its people the viewer may see."""
    ids = [r["id"] for r in await conn.fetch(VISIBLE_COMPANY_CONTACTS, company_id, _scope(viewer))]
    return Scope(contact_ids=tuple(ids), company_id=company_id)


async def list_timeline(conn: asyncpg.Connection, viewer: User, scope: Scope, limit: int = 50,
                        after: str | None = None) -> list[Event]:
    """Newest first; the caller has checked that the viewer may see the card the scope belongs to."""
    key = paging.decode(after, (datetime, str, int)) or _START
    async with conn.transaction():
        # A plan for these very values: a generic plan (which PostgreSQL may pick for a prepared statement after
        # five runs) cannot tell which of $1..$4 are NULL and may walk the whole calls or mail index by time.
        await conn.execute(CUSTOM_PLAN)
        rows = await conn.fetch(TIMELINE, list(scope.contact_ids), scope.company_id, scope.lead_id, scope.deal_id,
                                *key, limit)
    call_ids = [r["id"] for r in rows if r["kind"] == "call"]
    mail_ids = [r["id"] for r in rows if r["kind"] == "mail"]
    calls = {r["id"]: r for r in await conn.fetch(CALL_DETAILS, call_ids, _scope(viewer))} if call_ids else {}
    attachments: dict[int, list[dict[str, Any]]] = {}
    if mail_ids:
        for r in await conn.fetch(MAIL_ATTACHMENTS, mail_ids):
            attachments.setdefault(r["message_id"], []).append({"id": r["id"], "filename": r["filename"],
                                                                 "size": r["size"]})
    events = []
    for r in rows:
        data = _json(r["data"])
        if r["kind"] == "call":
            detail = calls.get(r["id"])
            data["playable"] = bool(detail and detail["allowed"] and data["recording"])
            data["may_write"] = bool(detail and detail["allowed"])
            data["results"] = _json(detail["results"]) if detail else []
        elif r["kind"] == "mail":
            data["attachments"] = attachments.get(r["id"], [])
        events.append(Event(r["kind"], r["at"], r["id"], r["title"] or "", r["text"] or "", r["who"], data))
    return events


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else (value if value is not None else {})


def event_json(event: Event) -> dict[str, Any]:
    return {"kind": event.kind, "at": event.at.isoformat(), "id": event.id, "title": event.title,
            "text": event.text, "who": event.who, "data": event.data}


async def add_note(conn: asyncpg.Connection, author: User, text: object, *, contact_id: int | None = None,
                   company_id: int | None = None, lead_id: int | None = None, deal_id: int | None = None) -> Event:
    """A note on a card; the caller has checked the author may see that card."""
    if not isinstance(text, str) or not text.strip() or len(text) > NOTE_LIMIT or "\x00" in text:
        raise ValidationError("text", f"1 to {NOTE_LIMIT} characters")
    if (contact_id, company_id, lead_id, deal_id) == (None, None, None, None):
        raise ValidationError("contact_id", "say what the note is about")
    row = await conn.fetchrow(INSERT_NOTE, author.id or None, text.strip(), contact_id, company_id, lead_id, deal_id)
    return Event("note", row["created_at"], row["id"], "", text.strip(), author.display_name)
