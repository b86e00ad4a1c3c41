"""The missed-call board's rules: merge repeats, callback deadlines in working hours, auto-resolve."""

from datetime import UTC, datetime, time, timedelta

import pytest

from crm import errors
from crm import missed as missed_db
from crm.calls import save_call
from crm.workhours import WorkingHours, parse_days, parse_hours
from tests.web.test_calls import record

HOURS = WorkingHours("Europe/Moscow", time(9), time(18), frozenset({0, 1, 2, 3, 4}))
# Monday 2026-11-23 12:00 Moscow = 09:00 UTC.
MONDAY_NOON = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_deadline_counts_working_hours_only():
    assert HOURS.add(MONDAY_NOON, timedelta(hours=2)) == datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
    # 17:30 Moscow + 2 h → next day 10:30 Moscow.
    late = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
    assert HOURS.add(late, timedelta(hours=2)) == datetime(2026, 11, 24, 7, 30, tzinfo=UTC)
    # Friday evening → Monday morning.
    friday = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)  # 19:00 Moscow
    assert HOURS.add(friday, timedelta(hours=2)) == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert not HOURS.is_open(friday) and HOURS.is_open(MONDAY_NOON)


def test_working_hours_settings_parse_or_say_why():
    assert parse_hours("08:30-17:00") == (time(8, 30), time(17))
    assert parse_days("1-5,7") == frozenset({0, 1, 2, 3, 4, 6})
    for bad in ("18:00-09:00", "nine to five"):
        with pytest.raises(ValueError):
            parse_hours(bad)
    with pytest.raises(ValueError):
        parse_days("0-8")


def missed_call(call_id: str, caller: str, started: datetime, outcome: str = "missed", reason: str = "no_answer"):
    base = record(call_id, caller, outcome=outcome, answered_by=None, started=started.timestamp())
    from dataclasses import replace
    return replace(base, reason=reason)


async def test_repeats_merge_into_one_row_with_one_callback_task_for_the_manager(conn, factory):
    manager = await factory.user("manager1", extension="101")
    await factory.contact("Client", manager=manager, phones=["+7 916 000-01-01"])
    for i in range(3):
        saved = await save_call(conn, missed_call(f"m{i}", "+79160000101", MONDAY_NOON + timedelta(minutes=i)),
                                hours=HOURS)
    again = await save_call(conn, missed_call("m2", "+79160000101", MONDAY_NOON + timedelta(minutes=2)),
                            hours=HOURS)
    assert again.missed_updates == []  # the same call saved twice is not a fourth try
    rows = await missed_db.list_rows(conn, manager, MONDAY_NOON + timedelta(hours=1), timedelta(days=7))
    assert [(r.tries, r.state, r.manager_id, r.contact_name, r.last_reason) for r in rows] == [
        (3, "open", manager.id, "Client", "no_answer")]
    task = await conn.fetchrow("SELECT kind, assignee_id, due_at, state FROM tasks")
    assert tuple(task) == ("callback", manager.id, datetime(2026, 11, 23, 11, 0, tzinfo=UTC), "open")
    assert saved.missed_updates[0].kind == "missed"
    assert await conn.fetchval("SELECT count(*) FROM notifications WHERE user_id = $1", manager.id) == 1


async def test_an_answered_callback_resolves_the_row_and_records_the_time(conn, factory):
    manager = await factory.user("manager1", extension="101")
    await save_call(conn, missed_call("m1", "+79160000101", MONDAY_NOON), hours=HOURS)
    callback = record("c1", "101", started=(MONDAY_NOON + timedelta(minutes=30)).timestamp())
    from dataclasses import replace
    callback = replace(callback, direction="outbound", callee="+79160000101", caller="101")
    saved = await save_call(conn, callback, hours=HOURS)
    assert [u.kind for u in saved.missed_updates] == ["resolved"]
    row = await conn.fetchrow("SELECT state, resolution, resolved_by, seconds_to_callback FROM missed_callers")
    assert tuple(row) == ("resolved", "reached_outbound", manager.id, 30 * 60 + 2)
    assert await conn.fetchval("SELECT state FROM tasks") == "done"
    # A later miss of the same number opens a new row.
    await save_call(conn, missed_call("m2", "+79160000101", MONDAY_NOON + timedelta(hours=1)), hours=HOURS)
    assert await conn.fetchval("SELECT count(*) FROM missed_callers WHERE state = 'open'") == 1


async def test_a_later_answered_inbound_call_resolves_too_and_answered_calls_never_open_rows(conn, factory):
    await factory.user("manager1", extension="101")
    await save_call(conn, missed_call("m1", "+79160000101", MONDAY_NOON, "abandoned", "abandoned_while_ringing"),
                    hours=HOURS)
    await save_call(conn, record("a1", "+79160000101", started=(MONDAY_NOON + timedelta(minutes=5)).timestamp()),
                    hours=HOURS)
    row = await conn.fetchrow("SELECT state, resolution, last_reason FROM missed_callers")
    assert tuple(row) == ("resolved", "reached_inbound", "abandoned_while_ringing")
    await save_call(conn, record("a2", "+79160000199", started=MONDAY_NOON.timestamp()), hours=HOURS)
    assert await conn.fetchval("SELECT count(*) FROM missed_callers") == 1


async def test_outside_working_hours_and_withheld_callers(conn, factory):
    await factory.user("head", role="head")
    sunday = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    await save_call(conn, missed_call("s1", "+79160000101", sunday), hours=HOURS)
    await save_call(conn, missed_call("w1", "anonymous", sunday), hours=HOURS)
    rows = await conn.fetch("SELECT caller_e164, last_reason, due_at, manager_id FROM missed_callers")
    assert [tuple(r) for r in rows] == [("+79160000101", "outside_working_hours",
                                         datetime(2026, 11, 23, 8, 0, tzinfo=UTC), None)]
    # Nobody's client: the head is told, the task waits for an assignee.
    assert await conn.fetchval("SELECT count(*) FROM notifications WHERE kind = 'callback'") == 1


async def test_manual_resolve_and_who_sees_what(conn, factory):
    head = await factory.user("head", role="head")
    manager1 = await factory.user("manager1", extension="101")
    manager2 = await factory.user("manager2", extension="102")
    await factory.contact("Theirs", manager=manager2, phones=["+7 916 000-02-02"])
    await save_call(conn, missed_call("t1", "+79160000202", MONDAY_NOON), hours=HOURS)
    await save_call(conn, missed_call("u1", "+79160000303", MONDAY_NOON), hours=HOURS)
    now = MONDAY_NOON + timedelta(hours=1)
    mine = await missed_db.list_rows(conn, manager1, now, timedelta(days=7))
    assert [r.caller_e164 for r in mine] == ["+79160000303"]  # unassigned only, not manager2's client
    theirs = (await missed_db.list_rows(conn, head, now, timedelta(days=7), manager_id=manager2.id))[0]
    with pytest.raises(errors.NotFound):
        await missed_db.resolve_by_hand(conn, manager1, theirs.id, "spam", now)
    with pytest.raises(errors.ValidationError):
        await missed_db.resolve_by_hand(conn, head, theirs.id, "because", now)
    await missed_db.resolve_by_hand(conn, head, theirs.id, "wrong_number", now)
    assert await conn.fetchval("SELECT state FROM tasks WHERE missed_caller_id = $1", theirs.id) == "cancelled"
    figures = await missed_db.figures(conn, head, now, timedelta(days=7), "Europe/Moscow")
    assert (figures.callers, figures.missed_calls, figures.called_back_percent) == (2, 2, 0.0)
