"""What a call came to: reached, no answer, call back at … (a task for the client's manager), wrong number."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from crm.calls import get_call
from crm.errors import ValidationError
from crm.users import User

RESULTS = ("reached", "no_answer", "callback", "wrong_number", "other")
NOTE_LIMIT = 5000


@dataclass(frozen=True, slots=True)
class CallResult:
    id: int
    call_id: int
    user_id: int | None
    result: str
    note: str
    callback_at: datetime | None
    task_id: int | None
    created_at: datetime


INSERT_RESULT = """
INSERT INTO call_results (call_id, user_id, result, note, callback_at, task_id) VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, call_id, user_id, result, note, callback_at, task_id, created_at
"""
# Who calls back: the manager of the call's contact, else of its company, else of its lead, else the writer.
CALLBACK_OWNER = """
SELECT coalesce(ct.manager_id, co.manager_id, l.manager_id) AS manager_id, c.contact_id, c.company_id, c.lead_id,
       c.deal_id
FROM calls c LEFT JOIN contacts ct ON ct.id = c.contact_id LEFT JOIN companies co ON co.id = c.company_id
LEFT JOIN leads l ON l.id = c.lead_id
WHERE c.id = $1
"""
INSERT_CALLBACK_TASK = """
INSERT INTO tasks (kind, title, assignee_id, due_at, note, contact_id, company_id, lead_id, deal_id)
VALUES ('follow_up', $1, $2, $3, $4, $5, $6, $7, $8) RETURNING id
"""
LIST_RESULTS = """
SELECT id, call_id, user_id, result, note, callback_at, task_id, created_at FROM call_results
WHERE call_id = $1 ORDER BY created_at DESC, id DESC
"""


def _clean(result: object, note: object, callback_at: datetime | None) -> tuple[str, str]:
    if result not in RESULTS:
        raise ValidationError("result", f"one of {', '.join(RESULTS)}")
    if note is None:
        note = ""
    if not isinstance(note, str) or len(note) > NOTE_LIMIT or "\x00" in note:
        raise ValidationError("note", f"text up to {NOTE_LIMIT} characters")
    if result == "callback" and callback_at is None:
        raise ValidationError("callback_at", "say when to call back")
    return str(result), note.strip()


async def record_result(conn: asyncpg.Connection, viewer: User, call_id: int, result: object, note: object = "",
                        callback_at: datetime | None = None, callback_title: str = "Call back") -> CallResult:
    """Only someone who may see the call writes its result (NotFound otherwise). A time to call back makes a task
    for the manager of the call's client in the same transaction: the result never stands without its task."""
    result, note = _clean(result, note, callback_at)
    async with conn.transaction():
        call = await get_call(conn, viewer, call_id)
        task_id = None
        if callback_at is not None:
            owner = await conn.fetchrow(CALLBACK_OWNER, call.id)
            who = call.contact_name or call.company_name or call.caller_name or call.caller
            task_id = await conn.fetchval(
                INSERT_CALLBACK_TASK, f"{callback_title} {who}"[:200], owner["manager_id"] or viewer.id or None,
                callback_at, note, owner["contact_id"], owner["company_id"], owner["lead_id"], owner["deal_id"])
        row = await conn.fetchrow(INSERT_RESULT, call.id, viewer.id or None, result, note, callback_at, task_id)
    return CallResult(**dict(row))


async def list_results(conn: asyncpg.Connection, viewer: User, call_id: int) -> list[CallResult]:
    await get_call(conn, viewer, call_id)
    return [CallResult(**dict(r)) for r in await conn.fetch(LIST_RESULTS, call_id)]
