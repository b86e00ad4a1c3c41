"""The call summaries the reports read (migration 0026) always equal a recomputation from the calls: after inserts,
re-writes (a late CDR amending a call, a recovered record), moves across hours and days, deletes, concurrent
writers; and the reports read from them give the figures the calls give."""

import asyncio
from dataclasses import replace
from datetime import date, timedelta

from crm import reports
from crm.calls import save_call
from crm.reports import Filters
from tests.crm.report_data import LINE2, add_call, at, seed
from tests.web.test_calls import record

SNAPSHOT = {
    "call_day_stats": "SELECT * FROM call_day_stats ORDER BY day, direction, outcome, line, queue, user_id, ext",
    "call_hour_stats": "SELECT * FROM call_hour_stats ORDER BY hour, line, queue, outcome, ext",
}


async def summaries(conn) -> dict[str, list[dict]]:
    return {name: [dict(r) for r in await conn.fetch(sql)] for name, sql in SNAPSHOT.items()}


async def assert_summaries_match_the_calls(conn) -> None:
    kept = await summaries(conn)
    async with conn.transaction():
        await conn.execute("SELECT callboard_call_stats_rebuild()")
        recomputed = await summaries(conn)
    assert kept == recomputed
    assert kept["call_day_stats"] and kept["call_hour_stats"]  # not an empty table equal to another


async def test_inserts_rewrites_moves_and_deletes_keep_the_summaries_equal_to_the_calls(conn, factory):
    ids = (await seed(conn, factory))["ids"]
    await assert_summaries_match_the_calls(conn)
    # A late CDR amends a call: it was answered after a longer wait, by another agent, on another line and queue.
    await conn.execute("""UPDATE calls SET outcome = 'answered', answered_by = '102', agents_rang = '{101,102}',
                          ring_seconds = 55, talk_seconds = 30, callee = $2, queue = 'service' WHERE id = $1""",
                       ids["c3"], LINE2)
    await assert_summaries_match_the_calls(conn)
    # The call with the longest wait of its hour is cut short: the hour's longest wait comes from the others.
    await add_call(conn, "x1", at(2, 11, 10), answered_by="102", rang=("102",), ring=20, queue="sales")
    await conn.execute("UPDATE calls SET ring_seconds = 1 WHERE id = $1", ids["c2"])
    await assert_summaries_match_the_calls(conn)
    assert await conn.fetchval("SELECT ring_max FROM call_hour_stats WHERE hour = $1 AND outcome = 'answered' "
                               "AND ext = ''", at(2, 11)) == 20
    # A call moves to another hour and another UTC day; a linked contact changes nothing counted.
    await conn.execute("UPDATE calls SET started_at = started_at + interval '1 day 3 hours' WHERE id = $1", ids["c1"])
    await conn.execute("UPDATE calls SET deal_id = NULL, contact_id = NULL WHERE id = $1", ids["c5"])
    await assert_summaries_match_the_calls(conn)
    await conn.execute("DELETE FROM calls WHERE id = ANY($1::bigint[])", [ids["c4"], ids["c6"]])
    await assert_summaries_match_the_calls(conn)
    # The writer's path: a call saved, the same record again, then amended by a recovered-then-observed record.
    await factory.user("manager9", extension="109")
    first = record("w1", "+79160000009", answered_by="109")
    await save_call(conn, first)
    await save_call(conn, first)
    await save_call(conn, replace(first, outcome="missed", answered_by=None, ring_seconds=44, talk_seconds=0))
    await assert_summaries_match_the_calls(conn)
    assert await conn.fetchval("SELECT outcome FROM calls WHERE linkedid = 'w1'") == "missed"
    await conn.execute("TRUNCATE calls CASCADE")
    assert await summaries(conn) == {"call_day_stats": [], "call_hour_stats": []}


async def test_concurrent_writers_keep_the_summaries_exact(pool, conn, factory):
    await seed(conn, factory)

    async def writer(n: int) -> None:
        async with pool.acquire() as own:
            for i in range(15):
                call_id = await add_call(own, f"p{n}-{i}", at(2, 11, i), answered_by="101", rang=("101", "102"),
                                         ring=(n * 7 + i) % 50, talk=10 + i, queue="sales")
                if i % 3 == 0:
                    await own.execute("UPDATE calls SET outcome = 'abandoned', answered_by = NULL WHERE id = $1",
                                      call_id)
                if i % 5 == 0:
                    await own.execute("DELETE FROM calls WHERE id = $1", call_id)

    await asyncio.gather(*(writer(n) for n in range(4)))
    await assert_summaries_match_the_calls(conn)
    assert await conn.fetchval("SELECT count(*) FROM calls WHERE linkedid LIKE 'p%'") == 4 * 12


async def test_the_reports_from_the_summaries_equal_the_reports_from_the_calls(conn, factory, monkeypatch):
    seeded = await seed(conn, factory)
    for i in range(40):  # three weeks around the seed, over UTC day and hour edges
        await add_call(conn, f"m{i}", at(1, 0) + timedelta(hours=i * 13), answered_by="101" if i % 3 else None,
                       rang=("101", "102"), ring=i % 45, talk=i * 3, outcome="answered" if i % 3 else "missed",
                       queue="sales" if i % 2 else None, user_id=seeded["m1"].id if i % 3 else None)
    period = reports.make_period(date(2026, 2, 27), date(2026, 3, 20), "Europe/Moscow")
    cases = (Filters(), Filters(queue="sales"), Filters(line=LINE2), Filters(manager_id=seeded["m2"].id))
    from_summary = [await reports.service_report(conn, period, filters, 20) for filters in cases]
    managers = await reports.managers_report(conn, period, Filters(), at(21, 0))
    assert reports.utc_days(period)[0] == (date(2026, 2, 27), date(2026, 3, 20))
    monkeypatch.setattr(reports, "WITHIN_MAX", -1)  # every threshold beyond the summary: the calls answer
    assert from_summary == [await reports.service_report(conn, period, filters, 20) for filters in cases]
    assert from_summary[0]["total"]["offered"] > 30 and from_summary[0]["total"]["answered_in_time"] > 3
    # The managers report sums whole UTC days from the summary and the edges from the calls.
    assert [(r["manager"], r["inbound_offered"], r["inbound_answered"], r["inbound_missed"], r["talk_seconds"],
             r["avg_answer_seconds"]) for r in managers] == await _managers_from_calls(conn, period)


async def _managers_from_calls(conn, period) -> list[tuple]:
    rows = await conn.fetch("""
        SELECT u.display_name,
               (SELECT count(*) FROM calls c WHERE c.direction = 'inbound' AND c.started_at >= $1 AND c.started_at < $2
                  AND (c.answered_by = u.extension OR u.extension = ANY(c.agents_rang))) AS offered,
               (SELECT count(*) FROM calls c WHERE c.direction = 'inbound' AND c.outcome = 'answered'
                  AND c.user_id = u.id AND c.started_at >= $1 AND c.started_at < $2) AS answered,
               (SELECT count(*) FROM calls c WHERE c.direction = 'inbound' AND c.started_at >= $1 AND c.started_at < $2
                  AND c.outcome IN ('missed', 'abandoned', 'busy')
                  AND (c.answered_by = u.extension OR u.extension = ANY(c.agents_rang))) AS missed,
               (SELECT coalesce(sum(talk_seconds), 0) FROM calls c WHERE c.direction <> 'internal'
                  AND c.outcome = 'answered' AND c.user_id = u.id AND c.started_at >= $1 AND c.started_at < $2) AS talk,
               (SELECT round(avg(ring_seconds), 1) FROM calls c WHERE c.direction = 'inbound' AND c.outcome = 'answered'
                  AND c.user_id = u.id AND c.started_at >= $1 AND c.started_at < $2) AS wait
        FROM users u WHERE u.role IN ('manager', 'head') AND u.active ORDER BY u.display_name, u.id""",
                            period.start, period.end)
    return [(r["display_name"], r["offered"], r["answered"], r["missed"], r["talk"],
             None if r["wait"] is None else float(r["wait"])) for r in rows]
