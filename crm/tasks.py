"""Tasks: callbacks (closed by the missed-call board), replies to e-mails, stuck deals, follow-ups; their reminders."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from crm import paging
from crm.errors import Conflict, Forbidden, NotFound, ValidationError
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
    company_id: int | None = None
    lead_id: int | None = None
    note: str = ""
    version: int = 1
    remind_at: datetime | None = None
    about: str | None = None  # the name of what it is about (contact, company, deal or lead), on the task pages

    def overdue(self, now: datetime) -> bool:
        return self.state == "open" and now > self.due_at


_TASK_SELECT = """
SELECT t.id, t.kind, t.title, t.assignee_id, u.display_name AS assignee_name, t.due_at, t.state,
       t.missed_caller_id, t.mail_message_id, t.deal_id, coalesce(t.contact_id, m.contact_id) AS contact_id,
       t.company_id, t.lead_id, t.note, t.version, t.remind_at
FROM tasks t LEFT JOIN users u ON u.id = t.assignee_id LEFT JOIN mail_messages m ON m.id = t.mail_message_id
"""
# A manager sees tasks assigned to them and unassigned ones; head and admin see all.
LIST_OPEN = _TASK_SELECT + """
WHERE t.state = 'open' AND ($1::bigint IS NULL OR t.assignee_id = $1 OR t.assignee_id IS NULL)
  AND (t.due_at, t.id) > ($3::timestamptz, $4::bigint)
ORDER BY t.due_at, t.id LIMIT $2
"""
GET_TASK = _TASK_SELECT + "WHERE t.id = $1 AND ($2::bigint IS NULL OR t.assignee_id = $2 OR t.assignee_id IS NULL)"
CLOSE_TASK = """
UPDATE tasks SET state = 'done', closed_at = $2, closed_by = $3, version = version + 1
WHERE id = $1 AND state = 'open'"""
INSERT_TASK = """
INSERT INTO tasks (kind, title, assignee_id, due_at, note, contact_id, company_id, deal_id, lead_id, remind_at)
VALUES ('follow_up', $1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id"""
# An edit claims the row first: two saves at once run one after the other, and the second sees the version.
LOCK_TASK = """
SELECT version FROM tasks WHERE id = $1 AND ($2::bigint IS NULL OR assignee_id = $2 OR assignee_id IS NULL)
FOR UPDATE"""
UPDATE_TASK = """
UPDATE tasks SET title = $2, assignee_id = $3, due_at = $4, note = $5, state = $6,
       closed_at = CASE WHEN $6 = 'open' THEN NULL ELSE coalesce(closed_at, $7) END,
       closed_by = CASE WHEN $6 = 'open' THEN NULL ELSE coalesce(closed_by, $8) END,
       remind_at = $9, reminded_at = CASE WHEN remind_at IS DISTINCT FROM $9 THEN NULL ELSE reminded_at END,
       version = version + 1
WHERE id = $1"""
ASSIGNABLE = "SELECT 1 FROM users WHERE id = $1 AND active"
STATES = ("open", "done", "cancelled")


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


def _title(value: object) -> str:
    title = value.strip() if isinstance(value, str) else ""
    if not title or len(title) > 200:
        raise ValidationError("title", "1 to 200 characters")
    return title


def _note(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 5000 or "\x00" in value:
        raise ValidationError("note", "text up to 5000 characters")
    return value


async def _assignee(conn: asyncpg.Connection, viewer: User, assignee_id: object) -> int:
    """A manager gives tasks to themselves; the head and admin to anyone active."""
    if assignee_id is None:
        return viewer.id
    if isinstance(assignee_id, bool) or not isinstance(assignee_id, int) or not 0 < assignee_id < 2**63:
        raise ValidationError("assignee_id", "a user's id")
    if assignee_id != viewer.id and not viewer.sees_everything:
        raise Forbidden("a manager assigns tasks to themselves; ask the head to give one to a colleague")
    if await conn.fetchval(ASSIGNABLE, assignee_id) is None:
        raise ValidationError("assignee_id", "not an active user")
    return assignee_id


async def get_task(conn: asyncpg.Connection, viewer: User, task_id: int) -> Task:
    row = await conn.fetchrow(GET_TASK, task_id, _scope(viewer))
    if row is None:
        raise NotFound("task")
    return Task(**dict(row))


async def create_task(conn: asyncpg.Connection, viewer: User, title: object, due_at: datetime, *,
                      assignee_id: object = None, note: object = "", contact_id: int | None = None,
                      company_id: int | None = None, deal_id: int | None = None, lead_id: int | None = None,
                      remind_at: datetime | None = None) -> Task:
    """A follow-up a person sets: about a contact, company, deal or lead the viewer may see (checked by the
    caller with the usual getters, which answer NotFound otherwise); reminded at `remind_at` (None: never)."""
    async with conn.transaction():
        task_id = await conn.fetchval(INSERT_TASK, _title(title), await _assignee(conn, viewer, assignee_id),
                                      due_at, _note(note), contact_id, company_id, deal_id, lead_id, remind_at)
        return await _read(conn, task_id)


async def _read(conn: asyncpg.Connection, task_id: int) -> Task:
    """A task just written, read back whoever it is assigned to now (the writer was allowed to write it)."""
    return Task(**dict(await conn.fetchrow(GET_TASK, task_id, None)))


async def update_task(conn: asyncpg.Connection, viewer: User, task_id: int, changes: dict, now: datetime,
                      version: int | None = None) -> Task:
    """Edit title, due time, reminder, assignee, note or state; with `version`, an edit over a newer one is refused.
    Moving the due time moves the reminder with it (still "15 min before"); a reminder moved is armed again."""
    async with conn.transaction():
        current_version = await conn.fetchval(LOCK_TASK, task_id, _scope(viewer))
        if current_version is None:
            raise NotFound("task")
        if version is not None and version != current_version:
            raise Conflict("someone changed this task meanwhile; reload it to see their change")
        task = await get_task(conn, viewer, task_id)
        state = changes.get("state", task.state)
        if state not in STATES:
            raise ValidationError("state", "open, done or cancelled")
        if task.kind == "callback" and state != task.state:
            raise Conflict("a callback closes when the customer is reached, or from the missed-call board")
        assignee = task.assignee_id if "assignee_id" not in changes else await _assignee(
            conn, viewer, changes["assignee_id"])
        due_at = changes.get("due_at", task.due_at)
        if "remind_at" in changes:
            remind_at = changes["remind_at"]
        else:
            remind_at = None if task.remind_at is None else task.remind_at + (due_at - task.due_at)
        await conn.execute(UPDATE_TASK, task_id, _title(changes.get("title", task.title)), assignee, due_at,
                           _note(changes.get("note", task.note)), state, now, viewer.id or None, remind_at)
        return await _read(conn, task_id)


# ------------------------------------------------------------------ the task pages

_ABOUT = """
SELECT t.id, t.kind, t.title, t.assignee_id, u.display_name AS assignee_name, t.due_at, t.state,
       t.missed_caller_id, t.mail_message_id, t.deal_id, coalesce(t.contact_id, m.contact_id) AS contact_id,
       t.company_id, t.lead_id, t.note, t.version, t.remind_at,
       coalesce(c.name, co.name, d.title, nullif(l.name, ''), l.phone_e164, l.email) AS about
FROM tasks t LEFT JOIN users u ON u.id = t.assignee_id LEFT JOIN mail_messages m ON m.id = t.mail_message_id
LEFT JOIN contacts c ON c.id = coalesce(t.contact_id, m.contact_id) LEFT JOIN companies co ON co.id = t.company_id
LEFT JOIN deals d ON d.id = t.deal_id LEFT JOIN leads l ON l.id = t.lead_id
"""
# $1: the viewer's scope (NULL: everyone's), $2: only this assignee's (NULL: any), then a due window and the states.
LIST_TASKS = _ABOUT + """
WHERE ($1::bigint IS NULL OR t.assignee_id = $1 OR t.assignee_id IS NULL) AND ($2::bigint IS NULL OR t.assignee_id = $2)
  AND t.due_at >= $3 AND t.due_at < $4 AND t.state = ANY($5::text[])
ORDER BY t.due_at, t.id LIMIT $6"""
GET_TASK_ABOUT = _ABOUT + "WHERE t.id = $1 AND ($2::bigint IS NULL OR t.assignee_id = $2 OR t.assignee_id IS NULL)"
# Open and overdue tasks per person (the head's view of the team); people without open tasks are listed with 0.
TEAM_LOAD = """
SELECT u.id AS user_id, u.display_name AS name, count(t.id) AS open,
       count(t.id) FILTER (WHERE t.due_at < $1) AS overdue
FROM users u LEFT JOIN tasks t ON t.assignee_id = u.id AND t.state = 'open'
WHERE u.active AND (u.role IN ('manager', 'head') OR t.id IS NOT NULL)
GROUP BY u.id, u.display_name ORDER BY count(t.id) FILTER (WHERE t.due_at < $1) DESC, u.display_name"""

EVER = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))


@dataclass(frozen=True, slots=True)
class TeamLoad:
    user_id: int
    name: str
    open: int
    overdue: int


async def list_tasks(conn: asyncpg.Connection, viewer: User, *, assignee_id: int | None = None,
                     due: tuple[datetime, datetime] = EVER, states: tuple[str, ...] = ("open",),
                     limit: int = 500) -> list[Task]:
    """The viewer's tasks (or one assignee's, for the head), soonest first, with what each is about."""
    rows = await conn.fetch(LIST_TASKS, _scope(viewer), assignee_id, due[0], due[1], list(states), limit)
    return [Task(**dict(r)) for r in rows]


async def get_task_about(conn: asyncpg.Connection, viewer: User, task_id: int) -> Task:
    row = await conn.fetchrow(GET_TASK_ABOUT, task_id, _scope(viewer))
    if row is None:
        raise NotFound("task")
    return Task(**dict(row))


async def team_load(conn: asyncpg.Connection, now: datetime) -> list[TeamLoad]:
    """Open and overdue tasks per person, most overdue first (for the head and admin; the caller checks)."""
    return [TeamLoad(**dict(r)) for r in await conn.fetch(TEAM_LOAD, now)]


# ------------------------------------------------------------------ reminders

# Only reminders someone can receive: an unassigned task has nobody to remind (and must not keep the job awake).
_ARMED = "state = 'open' AND reminded_at IS NULL AND remind_at IS NOT NULL AND assignee_id IS NOT NULL"
NEXT_REMINDER = f"SELECT min(remind_at) FROM tasks WHERE {_ARMED}"
# SKIP LOCKED: several nodes (or a second job) claim disjoint reminders instead of waiting for each other, and a row
# marked sent in a committed transaction is never claimed again.
CLAIM_REMINDERS = f"""
UPDATE tasks SET reminded_at = $1
WHERE id IN (SELECT id FROM tasks WHERE {_ARMED} AND remind_at <= $1 ORDER BY remind_at LIMIT $2
             FOR UPDATE SKIP LOCKED)
RETURNING id, title, kind, assignee_id, due_at, remind_at, contact_id, company_id, deal_id, lead_id"""
RECENT_REMINDERS = """
SELECT id, title, kind, assignee_id, due_at, remind_at, contact_id, company_id, deal_id, lead_id FROM tasks
WHERE assignee_id = $1 AND state = 'open' AND reminded_at >= $2 ORDER BY remind_at"""


@dataclass(frozen=True, slots=True)
class Reminder:
    """A reminder that went out (or is going out) to a task's assignee."""

    id: int
    title: str
    kind: str
    assignee_id: int
    due_at: datetime
    remind_at: datetime
    contact_id: int | None
    company_id: int | None
    deal_id: int | None
    lead_id: int | None


async def next_reminder_at(conn: asyncpg.Connection) -> datetime | None:
    return await conn.fetchval(NEXT_REMINDER)


async def claim_due_reminders(conn: asyncpg.Connection, now: datetime, limit: int = 100) -> list[Reminder]:
    """Marks due reminders sent and answers them; the caller sends them inside its transaction (see web.tasks)."""
    return [Reminder(**dict(r)) for r in await conn.fetch(CLAIM_REMINDERS, now, limit)]


async def recent_reminders(conn: asyncpg.Connection, user: User, now: datetime,
                           window: timedelta = timedelta(minutes=30)) -> list[Reminder]:
    """Reminders sent to `user` lately for tasks still open: a page opened after the push shows them too."""
    return [Reminder(**dict(r)) for r in await conn.fetch(RECENT_REMINDERS, user.id, now - window)]
