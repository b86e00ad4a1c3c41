"""Missed callers: one board row per number and line while open, a callback task each, closed when
the customer is reached (an answered call either way) or by hand with a reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from crm import paging
from crm.errors import Forbidden, NotFound, ValidationError
from crm.leads import notify_heads
from crm.phones import format_phone
from crm.users import User
from crm.workhours import WorkingHours

MISSED_OUTCOMES = frozenset({"missed", "abandoned", "busy"})
# The first is what the board offers by default: the usual reason, never "spam" (one careless click
# would mark a customer as spam).
MANUAL_RESOLUTIONS = ("reached_another_way", "not_needed", "wrong_number", "spam")
STATES = ("open", "in_progress", "resolved")
# The call model's reasons → what the board shows.
REASONS = {"no_answer": "no_answer", "no_agent_available": "no_answer", "busy": "busy",
           "abandoned_in_queue": "abandoned_in_queue", "abandoned_while_ringing": "abandoned_while_ringing",
           "abandoned_before_routing": "abandoned_in_queue"}


@dataclass(frozen=True, slots=True)
class MissedUpdate:
    """What changed on the board, for live pushes."""

    row_id: int
    manager_id: int | None
    kind: str  # missed / resolved / assigned / in_progress
    task_assignee_id: int | None = None


@dataclass(frozen=True, slots=True)
class MissedRow:
    id: int
    caller_e164: str
    line: str
    state: str
    tries: int
    first_missed_at: datetime
    last_missed_at: datetime
    last_reason: str
    contact_id: int | None
    contact_name: str | None
    company_id: int | None
    company_name: str | None
    lead_id: int | None
    lead_name: str | None
    manager_id: int | None
    manager_name: str | None
    due_at: datetime
    resolved_at: datetime | None
    resolved_by_name: str | None
    resolution: str | None
    seconds_to_callback: int | None

    @property
    def display(self) -> str:
        return format_phone(self.caller_e164)

    @property
    def who(self) -> str:
        return self.contact_name or self.company_name or self.lead_name or "New lead"

    def overdue(self, now: datetime) -> bool:
        return self.state != "resolved" and now > self.due_at

    def waiting_seconds(self, now: datetime) -> int:
        end = self.resolved_at or now
        return max(0, int((end - self.first_missed_at).total_seconds()))


@dataclass(frozen=True, slots=True)
class BoardFigures:
    missed_calls: int
    missed_today: int
    callers: int
    called_back_percent: float | None
    median_seconds: float | None
    p90_seconds: float | None
    within_deadline_percent: float | None
    per_day: list[tuple[str, int]]
    per_line: list[tuple[str, int]]
    per_manager: list[tuple[str, int]]


UPSERT_MISSED = """
INSERT INTO missed_callers AS m (caller_e164, line, tries, first_missed_at, last_missed_at, last_reason,
                                 contact_id, company_id, lead_id, manager_id, due_at)
VALUES ($1, $2, 1, $3, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (caller_e164, line) WHERE state <> 'resolved' DO UPDATE SET
    tries = m.tries + 1, last_missed_at = greatest(m.last_missed_at, EXCLUDED.last_missed_at),
    last_reason = EXCLUDED.last_reason, contact_id = coalesce(m.contact_id, EXCLUDED.contact_id),
    company_id = coalesce(m.company_id, EXCLUDED.company_id), lead_id = coalesce(m.lead_id, EXCLUDED.lead_id),
    manager_id = coalesce(m.manager_id, EXCLUDED.manager_id)
RETURNING id, manager_id, (xmax = 0) AS inserted
"""
CALL_ALREADY_COUNTED = "SELECT missed_caller_id IS NOT NULL FROM calls WHERE id = $1"
LINK_CALL = "UPDATE calls SET missed_caller_id = $2 WHERE id = $1"
INSERT_TASK = """
INSERT INTO tasks (kind, title, assignee_id, due_at, missed_caller_id) VALUES ('callback', $1, $2, $3, $4)
ON CONFLICT (missed_caller_id) WHERE kind = 'callback' DO NOTHING
"""
INSERT_NOTIFICATION = "INSERT INTO notifications (user_id, kind, text, call_id) VALUES ($1, $2, $3, $4)"
# Reached: every open row of the number missed before the answered call closes, with the time it took.
RESOLVE_REACHED = """
UPDATE missed_callers SET state = 'resolved', resolved_at = $2, resolved_by = $3, resolution = $4,
       seconds_to_callback = greatest(0, extract(epoch FROM $2 - first_missed_at))::int
WHERE caller_e164 = $1 AND state <> 'resolved' AND first_missed_at <= $2
RETURNING id, manager_id
"""
RESOLVE_BY_HAND = """
UPDATE missed_callers SET state = 'resolved', resolved_at = $2, resolved_by = $3, resolution = $4
WHERE id = $1 AND state <> 'resolved'
RETURNING id, manager_id
"""
CLOSE_TASKS = """
UPDATE tasks SET state = $2, closed_at = $3, closed_by = $4
WHERE missed_caller_id = ANY($1::bigint[]) AND state = 'open'
"""
MARK_IN_PROGRESS = """
UPDATE missed_callers SET state = 'in_progress', manager_id = coalesce(manager_id, $2)
WHERE caller_e164 = $1 AND state = 'open' RETURNING id, manager_id
"""
ASSIGN = "UPDATE missed_callers SET manager_id = $2 WHERE id = $1 AND state <> 'resolved' RETURNING id"
ASSIGN_TASK = "UPDATE tasks SET assignee_id = $2 WHERE missed_caller_id = $1 AND state = 'open'"
_ROW_SELECT = """
SELECT m.id, m.caller_e164, m.line, m.state, m.tries, m.first_missed_at, m.last_missed_at, m.last_reason,
       m.contact_id, ct.name AS contact_name, m.company_id, co.name AS company_name, m.lead_id,
       nullif(l.name, '') AS lead_name, m.manager_id, u.display_name AS manager_name, m.due_at, m.resolved_at,
       rb.display_name AS resolved_by_name, m.resolution, m.seconds_to_callback
FROM missed_callers m
LEFT JOIN contacts ct ON ct.id = m.contact_id
LEFT JOIN companies co ON co.id = m.company_id
LEFT JOIN leads l ON l.id = m.lead_id
LEFT JOIN users u ON u.id = m.manager_id
LEFT JOIN users rb ON rb.id = m.resolved_by
"""
# Open rows never expire from the board; resolved ones stay for the window. The page is one range of
# missed_board_key_idx (0028) read backwards, between two keys (list_rows): the lower one (false, since, 0)
# is "open, or resolved within the window", so years of resolved rows are never walked.
LIST_ROWS = _ROW_SELECT + """
WHERE ($1::bigint IS NULL OR m.manager_id = $1 OR m.manager_id IS NULL)
  AND ($2::bigint IS NULL OR m.manager_id = $2)
  AND ($3::text IS NULL OR m.line = $3)
  AND ($4::text IS NULL OR m.state = $4)
  AND ((m.state <> 'resolved'), m.last_missed_at, m.id) >= ($5::boolean, $6::timestamptz, $7::bigint)
  AND ((m.state <> 'resolved'), m.last_missed_at, m.id) < ($8::boolean, $9::timestamptz, $10::bigint)
ORDER BY (m.state <> 'resolved') DESC, m.last_missed_at DESC, m.id DESC
LIMIT $11
"""
GET_ROW = _ROW_SELECT + "WHERE m.id = $1 AND ($2::bigint IS NULL OR m.manager_id = $2 OR m.manager_id IS NULL)"
FIGURES = """
WITH rows AS (
    SELECT * FROM missed_callers m
    WHERE m.last_missed_at >= $1 AND ($2::bigint IS NULL OR m.manager_id = $2 OR m.manager_id IS NULL)
)
SELECT count(*) AS callers,
       count(*) FILTER (WHERE resolution LIKE 'reached_%') AS reached,
       count(*) FILTER (WHERE resolution LIKE 'reached_%' AND resolved_at <= due_at) AS in_time,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds_to_callback) AS median_seconds,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY seconds_to_callback) AS p90_seconds
FROM rows
"""
MISSED_CALLS_PER_DAY = """
SELECT to_char(c.started_at AT TIME ZONE $3, 'YYYY-MM-DD') AS day, count(*) AS n
FROM calls c JOIN missed_callers m ON m.id = c.missed_caller_id
WHERE c.started_at >= $1 AND ($2::bigint IS NULL OR m.manager_id = $2 OR m.manager_id IS NULL)
GROUP BY 1 ORDER BY 1 DESC
"""
MISSED_PER_LINE = """
SELECT m.line, sum(m.tries) AS n FROM missed_callers m
WHERE m.last_missed_at >= $1 AND ($2::bigint IS NULL OR m.manager_id = $2 OR m.manager_id IS NULL)
GROUP BY 1 ORDER BY 2 DESC
"""
MISSED_PER_MANAGER = """
SELECT coalesce(u.display_name, 'unassigned') AS manager, sum(m.tries) AS n
FROM missed_callers m LEFT JOIN users u ON u.id = m.manager_id
WHERE m.last_missed_at >= $1 AND ($2::bigint IS NULL OR m.manager_id = $2 OR m.manager_id IS NULL)
GROUP BY 1 ORDER BY 2 DESC
"""


def _row(record: asyncpg.Record) -> MissedRow:
    return MissedRow(**dict(record))


def _scope(viewer: User) -> int | None:
    return None if viewer.sees_everything else viewer.id


async def record_call(conn: asyncpg.Connection, call_id: int, direction: str, outcome: str, reason: str,
                      caller_e164: str | None, callee: str, started_at: datetime, answered_at: datetime | None,
                      user_id: int | None, contact_id: int | None, company_id: int | None, lead_id: int | None,
                      manager_id: int | None, hours: WorkingHours, callback_delay: timedelta
                      ) -> list[MissedUpdate]:
    """Apply one saved call to the board. Idempotent: the same call twice changes nothing more."""
    if direction == "inbound" and outcome in MISSED_OUTCOMES and caller_e164:
        if await conn.fetchval(CALL_ALREADY_COUNTED, call_id):
            return []
        shown_reason = REASONS.get(reason, reason) if hours.is_open(started_at) else "outside_working_hours"
        due = hours.add(started_at, callback_delay)
        row = await conn.fetchrow(UPSERT_MISSED, caller_e164, callee, started_at, shown_reason, contact_id,
                                  company_id, lead_id, manager_id, due)
        await conn.execute(LINK_CALL, call_id, row["id"])
        if not row["inserted"]:
            return [MissedUpdate(row["id"], row["manager_id"], "missed")]
        text = f"Call back {format_phone(caller_e164)}"
        await conn.execute(INSERT_TASK, text, row["manager_id"], due, row["id"])
        if row["manager_id"] is not None:
            await conn.execute(INSERT_NOTIFICATION, row["manager_id"], "callback", text, call_id)
        else:
            await notify_heads(conn, "callback", f"{text} (nobody assigned)", call_id=call_id)
        return [MissedUpdate(row["id"], row["manager_id"], "missed", row["manager_id"])]
    reached = caller_e164 if direction == "inbound" else (callee if callee.startswith("+") else None)
    if outcome == "answered" and answered_at is not None and reached and direction != "internal":
        resolution = "reached_inbound" if direction == "inbound" else "reached_outbound"
        rows = await conn.fetch(RESOLVE_REACHED, reached, answered_at, user_id, resolution)
        if rows:
            await conn.execute(CLOSE_TASKS, [r["id"] for r in rows], "done", answered_at, user_id)
        return [MissedUpdate(r["id"], r["manager_id"], "resolved") for r in rows]
    return []


async def list_rows(conn: asyncpg.Connection, viewer: User, now: datetime, window: timedelta,
                    manager_id: int | None = None, line: str | None = None, state: str | None = None,
                    limit: int = 500, after: str | None = None) -> list[MissedRow]:
    """Open rows first, then the most recently missed; `after` is the previous page's cursor (crm.paging)."""
    key = paging.decode(after, (bool, datetime, int)) or (True, datetime.max.replace(tzinfo=UTC), 0)
    if state is not None and state not in STATES:
        raise ValidationError("state", f"one of {', '.join(STATES)}")
    # The range of the index the rows can be in: a state filter narrows it to the open or the resolved part.
    lowest: tuple[bool, datetime, int] = (False, now - window, 0)
    if state == "resolved":
        key = min(key, (False, datetime.max.replace(tzinfo=UTC), 0))
    elif state is not None:
        lowest = (True, datetime.min.replace(tzinfo=UTC), 0)
    rows = await conn.fetch(LIST_ROWS, _scope(viewer), manager_id, line or None, state, *lowest, *key, limit)
    return [_row(r) for r in rows]


def row_key(row: MissedRow) -> tuple[bool, datetime, int]:
    """Where a row sits on the board: the `after` cursor of the page it ends."""
    return row.state != "resolved", row.last_missed_at, row.id


async def resolve_by_hand(conn: asyncpg.Connection, viewer: User, row_id: int, resolution: str,
                          now: datetime) -> MissedUpdate:
    if resolution not in MANUAL_RESOLUTIONS:
        raise ValidationError("reason", f"one of {', '.join(MANUAL_RESOLUTIONS)}")
    if await conn.fetchrow(GET_ROW, row_id, _scope(viewer)) is None:
        raise NotFound("missed caller")
    async with conn.transaction():
        row = await conn.fetchrow(RESOLVE_BY_HAND, row_id, now, viewer.id, resolution)
        if row is None:
            raise ValidationError("state", "already resolved")
        await conn.execute(CLOSE_TASKS, [row_id], "cancelled" if resolution != "reached_another_way" else "done",
                           now, viewer.id)
    return MissedUpdate(row_id, row["manager_id"], "resolved")


async def assign_row(conn: asyncpg.Connection, viewer: User, row_id: int, manager_id: int) -> MissedUpdate:
    if not viewer.sees_everything:
        raise Forbidden("only the head of sales assigns callbacks")
    async with conn.transaction():
        if await conn.fetchval(ASSIGN, row_id, manager_id) is None:
            raise NotFound("open missed caller")
        await conn.execute(ASSIGN_TASK, row_id, manager_id)
    return MissedUpdate(row_id, manager_id, "assigned", manager_id)


async def mark_in_progress(conn: asyncpg.Connection, caller_e164: str, user: User) -> list[MissedUpdate]:
    """Someone is calling the customer back now."""
    rows = await conn.fetch(MARK_IN_PROGRESS, caller_e164, user.id)
    return [MissedUpdate(r["id"], r["manager_id"], "in_progress") for r in rows]


async def figures(conn: asyncpg.Connection, viewer: User, now: datetime, window: timedelta,
                  timezone: str) -> BoardFigures:
    since = now - window
    scope = _scope(viewer)
    summary = await conn.fetchrow(FIGURES, since, scope)
    per_day = [(r["day"], r["n"]) for r in await conn.fetch(MISSED_CALLS_PER_DAY, since, scope, timezone)]
    today = now.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d")
    callers = summary["callers"]
    return BoardFigures(
        missed_calls=sum(n for _, n in per_day),
        missed_today=dict(per_day).get(today, 0),
        callers=callers,
        called_back_percent=100.0 * summary["reached"] / callers if callers else None,
        median_seconds=summary["median_seconds"],
        p90_seconds=summary["p90_seconds"],
        within_deadline_percent=100.0 * summary["in_time"] / callers if callers else None,
        per_day=per_day,
        per_line=[(r["line"], r["n"]) for r in await conn.fetch(MISSED_PER_LINE, since, scope)],
        per_manager=[(r["manager"], r["n"]) for r in await conn.fetch(MISSED_PER_MANAGER, since, scope)],
    )


# The board's live delta: the rows a change touched, in the viewer's scope (filters are the page's, in web/).
GET_ROWS = _ROW_SELECT + """WHERE m.id = ANY($1::bigint[])
  AND ($2::bigint IS NULL OR m.manager_id = $2 OR m.manager_id IS NULL)
ORDER BY m.state = 'resolved', m.last_missed_at DESC, m.id DESC
"""


async def get_rows(conn: asyncpg.Connection, viewer: User, row_ids: list[int]) -> list[MissedRow]:
    return [_row(r) for r in await conn.fetch(GET_ROWS, row_ids, _scope(viewer))]
