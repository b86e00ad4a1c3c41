"""Tasks: callbacks (closed by the missed-call board), replies to e-mails, stuck deals, follow-ups."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from crm import paging
from crm.errors import Conflict, NotFound
from crm.users import User


@dataclass(frozen=True, slots=True)
class Task:
    id: int
    kind: str
    title: str
    assignee_id: int | None
    assignee_name: str | None
    due_at: datetime
    state: str
    missed_caller_id: int | None
    mail_message_id: int | None
    deal_id: int | None
    contact_id: int | None

    def overdue(self, now: datetime) -> bool:
        return self.state == "open" and now > self.due_at


_TASK_SELECT = """
SELECT t.id, t.kind, t.title, t.assignee_id, u.display_name AS assignee_name, t.due_at, t.state,
       t.missed_caller_id, t.mail_message_id, t.deal_id, m.contact_id
FROM tasks t LEFT JOIN users u ON u.id = t.assignee_id LEFT JOIN mail_messages m ON m.id = t.mail_message_id
"""
# A manager sees tasks assigned to them and unassigned ones; head and admin see all.
LIST_OPEN = _TASK_SELECT + """
WHERE t.state = 'open' AND ($1::bigint IS NULL OR t.assignee_id = $1 OR t.assignee_id IS NULL)
  AND (t.due_at, t.id) > ($3::timestamptz, $4::bigint)
ORDER BY t.due_at, t.id LIMIT $2
"""
GET_TASK = _TASK_SELECT + "WHERE t.id = $1 AND ($2::bigint IS NULL OR t.assignee_id = $2 OR t.assignee_id IS NULL)"
CLOSE_TASK = "UPDATE tasks SET state = 'done', closed_at = $2, closed_by = $3 WHERE id = $1 AND state = 'open'"


def _scope(viewer: User) -> int | None:
    return None if viewer.sees_everything else viewer.id


async def list_open_tasks(conn: asyncpg.Connection, viewer: User, limit: int = 100,
                          after: str | None = None) -> list[Task]:
    """Soonest due first; `after` is the cursor of the previous page's last task (crm.paging)."""
    key = paging.decode(after, (datetime, int)) or (datetime.min.replace(tzinfo=UTC), 0)
    return [Task(**dict(r)) for r in await conn.fetch(LIST_OPEN, _scope(viewer), limit, *key)]


def task_key(task: Task) -> tuple[datetime, int]:
    return task.due_at, task.id


async def complete_task(conn: asyncpg.Connection, viewer: User, task_id: int, now: datetime) -> Task:
    """Reply and follow-up tasks are closed by hand; a callback closes itself when the customer is reached."""
    row = await conn.fetchrow(GET_TASK, task_id, _scope(viewer))
    if row is None:
        raise NotFound("task")
    task = Task(**dict(row))
    if task.kind == "callback":
        raise Conflict("a callback closes when the customer is reached, or from the missed-call board")
    if task.state != "open":
        raise Conflict("the task is already closed")
    await conn.execute(CLOSE_TASK, task_id, now, viewer.id)
    return Task(**{**dict(row), "state": "done"})
