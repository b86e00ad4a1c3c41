"""A small hand-made data set for the reports: two days of calls, leads and deals whose figures are known."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from crm import deals

MSK = ZoneInfo("Europe/Moscow")
LINE1, LINE2 = "+74951110000", "+74952220000"
FIRST, LAST = date(2026, 3, 2), date(2026, 3, 3)  # a Monday and a Tuesday
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=MSK)


def at(day: int, hour: int, minute: int = 0, month: int = 3, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=MSK)


INSERT_CALL = """
INSERT INTO calls (pbx, linkedid, direction, caller, caller_e164, callee, started_at, answered_at, ended_at, outcome,
                   answered_by, agents_rang, queue, ring_seconds, talk_seconds, transfers, user_id)
VALUES ('lab', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) RETURNING id
"""


async def add_call(conn, linkedid: str, started: datetime, direction: str = "inbound", outcome: str = "answered",
                   answered_by: str | None = None, rang: tuple[str, ...] = (), ring: int = 0, talk: int = 0,
                   callee: str = LINE1, queue: str | None = None, user_id: int | None = None,
                   caller: str = "+79160000001", transfers: list | None = None) -> int:
    answered = started + timedelta(seconds=ring) if outcome == "answered" else None
    return await conn.fetchval(
        INSERT_CALL, linkedid, direction, caller, caller if caller.startswith("+") else None, callee, started,
        answered, started + timedelta(seconds=ring + talk), outcome, answered_by, list(rang), queue, ring, talk,
        json.dumps(transfers or []), user_id)


async def seed(conn, factory) -> dict:
    """Users, calls, leads, deals of 2 and 3 March 2026 (Moscow), with a few rows just outside."""
    head = await factory.user("head", role="head")
    m1 = await factory.user("manager1", extension="101")
    m2 = await factory.user("manager2", extension="102")
    m3 = await factory.user("manager3", extension="103")  # no calls, no deals: a row of zeros
    ids = {}
    ids["c1"] = await add_call(conn, "c1", at(2, 10), answered_by="101", rang=("101",), ring=5, talk=60,
                               queue="sales", user_id=m1.id)
    # Rang both, answered by 102, then transferred to 101: one call, answered by its first agent.
    ids["c2"] = await add_call(conn, "c2", at(2, 11), answered_by="102", rang=("101", "102"), ring=30, talk=100,
                               queue="sales", user_id=m2.id, transfers=[{"from": "102", "to": "101",
                                                                         "kind": "blind"}])
    ids["c3"] = await add_call(conn, "c3", at(2, 11, 30), outcome="missed", rang=("101", "102", "101"), ring=40,
                               queue="sales")
    ids["c4"] = await add_call(conn, "c4", at(2, 15), outcome="abandoned", ring=12, callee=LINE2, queue="sales")
    # Starts before midnight, ends after it: a call of 2 March.
    ids["c5"] = await add_call(conn, "c5", at(2, 23, 58), answered_by="101", rang=("101",), ring=10, talk=290,
                               user_id=m1.id)
    ids["c6"] = await add_call(conn, "c6", at(3, 12), outcome="unknown", rang=("102",), queue="sales")
    ids["c7"] = await add_call(conn, "c7", at(3, 14), direction="outbound", answered_by="101", ring=8, talk=30,
                               caller="101", callee="+79160000002", user_id=m1.id)
    ids["c8"] = await add_call(conn, "c8", at(3, 15), direction="outbound", outcome="busy", ring=3, caller="101",
                               callee="+79160000003", user_id=m1.id)
    # Just outside the period, on both sides.
    await add_call(conn, "before", at(1, 23, 59), answered_by="101", rang=("101",), ring=1, talk=10, user_id=m1.id)
    await add_call(conn, "after", at(4, 0, 0), answered_by="101", rang=("101",), ring=1, talk=10, user_id=m1.id)

    lead_sql = """INSERT INTO leads (status, source, phone_e164, email, line, manager_id, junk_reason, created_at)
                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id"""
    ids["l1"] = await conn.fetchval(lead_sql, "converted", "phone", "+79160000011", None, LINE1, m1.id, None,
                                    at(2, 9))
    ids["l2"] = await conn.fetchval(lead_sql, "new", "email", None, "a@example.com", "", m1.id, None, at(2, 13))
    ids["l3"] = await conn.fetchval(lead_sql, "junk", "web_form", None, "b@example.com", "", m2.id, "spam",
                                    at(3, 9))
    await conn.fetchval(lead_sql, "new", "phone", "+79160000012", None, LINE1, m1.id, None, at(20, 9, month=2))

    async def deal(title: str, manager, created: datetime, **kw) -> int:
        made = await deals.create_deal(conn, head, title, created, manager_id=manager.id, **kw)
        await conn.execute("UPDATE deals SET created_at = $2 WHERE id = $1", made.id, created)
        return made.id

    ids["d1"] = await deal("D1", m1, at(2, 10), lead_id=ids["l1"], manual_amount=1000)
    await deals.move_stage(conn, head, ids["d1"], "offer", at(2, 12))
    await deals.close_deal(conn, head, ids["d1"], "won", None, at(3, 10))
    product = await conn.fetchval("INSERT INTO products (sku, name, price) VALUES ('P', 'Pump', 100) RETURNING id")
    ids["d2"] = await deal("D2", m1, at(2, 10))
    await deals.add_item(conn, head, ids["d2"], product, 3)
    await deals.close_deal(conn, head, ids["d2"], "lost", "price", at(3, 10))
    ids["d3"] = await deal("D3", m2, at(1, 10, month=2), source="exhibition", manual_amount=500)
    await deals.move_stage(conn, head, ids["d3"], "offer", at(5, 10, month=2))  # stuck at the offer since
    ids["d4"] = await deal("D4", m2, at(3, 12))
    # Overdue: due in the period, still open; and one closed late. One closed in time is not counted.
    task_sql = """INSERT INTO tasks (kind, title, assignee_id, due_at, state, closed_at)
                  VALUES ('follow_up', 't', $1, $2, $3, $4)"""
    await conn.execute(task_sql, m1.id, at(2, 12), "open", None)
    await conn.execute(task_sql, m1.id, at(2, 12), "done", at(2, 18))
    await conn.execute(task_sql, m2.id, at(3, 12), "done", at(3, 11))
    # Missed callers: m1's, called back within the deadline; m2's, still open.
    missed_sql = """INSERT INTO missed_callers (caller_e164, line, state, tries, first_missed_at, last_missed_at,
                    manager_id, due_at, resolved_at, resolution, seconds_to_callback)
                    VALUES ($1, $2, $3, 1, $4, $4, $5, $6, $7, $8, $9)"""
    await conn.execute(missed_sql, "+79160000021", LINE1, "resolved", at(2, 11, 30), m1.id, at(2, 13, 30),
                       at(2, 12), "reached_outbound", 1800)
    await conn.execute(missed_sql, "+79160000022", LINE1, "open", at(3, 11), m2.id, at(3, 13), None, None, None)
    return {"head": head, "m1": m1, "m2": m2, "m3": m3, "ids": ids}


def utc(value: datetime) -> datetime:
    return value.astimezone(UTC)
