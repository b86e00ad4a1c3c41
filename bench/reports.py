"""Reports on years of data: seeds calls, contacts, leads and deals, then times each /api/reports/* for the last
365 days (p50/p99 over sequential requests) beside a bare aiohttp handler and a plain `SELECT count(*)` over the
same year of calls (and one over the year's deals), measured in the same run; prints EXPLAIN (ANALYZE) of the main
queries with --explain.

    python bench/reports.py [--calls 1000000] [--deals 20000] [--contacts 100000] [--requests 20] [--writes 2000]
                            [--explain]

The calls are bulk-loaded with the summary triggers off and the summaries rebuilt once (timed); then the call
writer's throughput (`crm.calls.save_call`, one transaction a call, new calls and amended ones) is measured with
the triggers on and off, on the full database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

MANAGERS = 20
SEED_CALLS = """
INSERT INTO calls (pbx, linkedid, direction, caller, caller_e164, callee, started_at, answered_at, ended_at, outcome,
                   answered_by, agents_rang, queue, ring_seconds, talk_seconds, user_id, contact_id)
SELECT 'lab', 'b' || g, dir, '+7916' || lpad((g % 9999999)::text, 7, '0'), '+7916' || lpad((g % 9999999)::text, 7, '0'),
       '+749511100' || (g % 4), t, CASE WHEN outcome = 'answered' THEN t + make_interval(secs => g % 40) END,
       t + make_interval(secs => g % 40 + g % 300), outcome,
       CASE WHEN outcome = 'answered' THEN (101 + g % $3)::text END,
       ARRAY[(101 + g % $3)::text, (101 + (g + 1) % $3)::text], CASE WHEN g % 3 = 0 THEN 'sales' ELSE 'service' END,
       g % 40, CASE WHEN outcome = 'answered' THEN g % 300 ELSE 0 END,
       CASE WHEN outcome = 'answered' THEN $4 + g % $3 END, CASE WHEN g % 5 = 0 THEN 1 + g % $5 END
FROM (SELECT g, $2::timestamptz - make_interval(secs => g::bigint * (3 * 365 * 86400) / $6) AS t,
             CASE WHEN g % 10 < 7 THEN 'inbound' WHEN g % 10 < 9 THEN 'outbound' ELSE 'internal' END AS dir,
             (ARRAY['answered', 'answered', 'answered', 'answered', 'answered', 'answered', 'missed', 'abandoned',
                    'busy', 'unknown'])[1 + g % 10] AS outcome
      FROM generate_series(1, $1) g) s
"""
SEED_CONTACTS = """
INSERT INTO contacts (name, manager_id, company_id)
SELECT 'Client ' || g, $2 + g % $3, NULL FROM generate_series(1, $1) g
"""
SEED_LEADS = """
INSERT INTO leads (status, source, line, manager_id, junk_reason, created_at)
SELECT (ARRAY['new', 'in_work', 'converted', 'junk'])[1 + g % 4],
       (ARRAY['phone', 'email', 'web_form', 'chat'])[1 + (g / 4) % 4], '+749511100' || (g % 4), $3 + g % $4,
       CASE WHEN g % 4 = 3 THEN 'spam' END,
       $2::timestamptz - make_interval(secs => (g::bigint * 7919) % (3 * 365 * 86400))
FROM generate_series(1, $1) g
"""
SEED_DEALS = """
INSERT INTO deals (title, contact_id, manager_id, stage, status, loss_reason, manual_amount, source, created_at,
                   stage_changed_at, closed_at, lead_id)
SELECT 'Deal ' || g, 1 + (g * 13) % $5, $3 + g % $4,
       (ARRAY['selection', 'offer', 'invoice', 'reservation', 'shipment'])[1 + g % 5],
       CASE WHEN g % 3 = 0 THEN 'won' WHEN g % 3 = 1 THEN 'lost' ELSE 'in_progress' END,
       CASE WHEN g % 3 = 1 THEN 'price' END, 1000 + g % 50000, '', t, t + interval '3 days',
       CASE WHEN g % 3 <> 2 THEN t + make_interval(days => g % 60) END, CASE WHEN g % 2 = 0 THEN g END
FROM (SELECT g, $2::timestamptz - make_interval(secs => (g::bigint * 104729) % (3 * 365 * 86400)) AS t
      FROM generate_series(1, $1) g) s
"""
SEED_HISTORY = """
INSERT INTO deal_stage_history (deal_id, stage, entered_at, left_at)
SELECT d.id, s.code, d.created_at + make_interval(days => s.position - 1),
       d.created_at + make_interval(days => s.position)
FROM deals d JOIN deal_stages s ON s.position <= 1 + d.id % 5
"""

STATS_TRIGGERS = "ALTER TABLE calls {0} TRIGGER calls_stats_insert_delete, {0} TRIGGER calls_stats_update"
# The bulk load runs with every trigger on calls off (the call viewers and webhook triggers of other features too);
# the summaries are rebuilt once after it, and the writer is then measured with all triggers on.
SEED_TRIGGERS = "ALTER TABLE calls {0} TRIGGER USER"


def call_record(n: int, started: float, outcome: str):
    from cti.calls import CallRecord, LegRecord

    answered = outcome == "answered"
    return CallRecord(
        pbx="lab", call_id=f"w{n}", direction="inbound", caller=f"+7916{n % 9999999:07d}", caller_name="",
        callee="+74951110000", started_at=started, answered_at=started + n % 40 if answered else None,
        ended_at=started + 100, outcome=outcome, reason=outcome, answered_by=str(101 + n % MANAGERS)
        if answered else None, agents_rang=(str(101 + n % MANAGERS), str(101 + (n + 1) % MANAGERS)),
        queue="sales", ring_seconds=n % 40, talk_seconds=60 if answered else 0, recording=None, transfers=(),
        talk_by_agent=(), recovered=False, originated=False,
        legs=(LegRecord(f"w{n}-1", "PJSIP/trunk-00000001", "trunk", None, started, None, started + 100, 16),))


async def writer_throughput(conn, writes: int, first: int, now: datetime) -> float:
    """Calls a second through the call writer: `writes` new calls, then half of them amended (a late CDR)."""
    from dataclasses import replace

    from crm.calls import save_call

    start = time.perf_counter()
    records = [call_record(first + n, now.timestamp() - n, "missed" if n % 4 == 0 else "answered")
               for n in range(writes)]
    for record in records:
        await save_call(conn, record)
    for record in records[::2]:
        await save_call(conn, replace(record, ring_seconds=record.ring_seconds + 1, talk_seconds=61))
    return (writes + len(records[::2])) / (time.perf_counter() - start)


async def seed(conn, calls: int, deals: int, contacts: int, now: datetime) -> dict[str, float]:
    took = {}
    start = time.perf_counter()
    await conn.execute("TRUNCATE users, calls, leads, contacts, deals RESTART IDENTITY CASCADE")
    await conn.execute("""INSERT INTO users (login, password_hash, role, extension, display_name)
        SELECT 'agent' || g, 'x', 'manager', (101 + g)::text, 'Agent ' || g FROM generate_series(0, $1 - 1) g""",
                       MANAGERS)
    await conn.execute("INSERT INTO users (login, password_hash, role, display_name) VALUES ('head', 'x', 'head', "
                       "'Head')")
    first_id = await conn.fetchval("SELECT min(id) FROM users")
    await conn.execute(SEED_CONTACTS, contacts, first_id, MANAGERS)
    batch = 250_000
    await conn.execute(SEED_TRIGGERS.format("DISABLE"))
    for offset in range(0, calls, batch):
        await conn.execute(SEED_CALLS.replace("generate_series(1, $1)", f"generate_series({offset + 1}, $1)"),
                           min(calls, offset + batch), now, MANAGERS, first_id, contacts, calls)
    await conn.execute(SEED_LEADS, deals, now, first_id, MANAGERS)
    await conn.execute(SEED_DEALS, deals, now, first_id, MANAGERS, contacts)
    await conn.execute(SEED_HISTORY)
    took["seed"] = time.perf_counter() - start
    start = time.perf_counter()
    await conn.execute("SELECT callboard_call_stats_rebuild()")
    await conn.execute(SEED_TRIGGERS.format("ENABLE"))
    took["summaries"] = time.perf_counter() - start
    start = time.perf_counter()
    await conn.execute("VACUUM ANALYZE")
    took["vacuum"] = time.perf_counter() - start
    return took


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def timed(http: aiohttp.ClientSession, url: str, requests: int, cookie: dict[str, str]) -> tuple[float, float]:
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        async with http.get(url, cookies=cookie) as resp:
            await resp.read()
            assert resp.status == 200, (url, resp.status, await resp.text())
        samples.append((time.perf_counter() - start) * 1000)
    return percentiles(samples)


async def bare_server() -> tuple[web.AppRunner, str]:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}/"


async def explain(conn, first: date, last: date, zone: str) -> None:
    from crm import reports

    period = reports.make_period(first, last, zone)
    plans = {
        "managers: offered per extension": (reports.MANAGER_OFFERED, period.start, period.end, None, None,
                                            list(reports.UNANSWERED)),
        "managers: own calls": (reports.MANAGER_OWN, period.start, period.end, None, None),
        "managers: offered per extension, whole days from the summary": (
            reports.MANAGER_OFFERED_DAYS, *reports.utc_days(period)[0], None, None, list(reports.UNANSWERED)),
        "managers: own calls, whole days from the summary": (reports.MANAGER_OWN_DAYS, *reports.utc_days(period)[0],
                                                             None, None),
        "service: lines, days and hours from the hourly summary": (reports.SERVICE_HOURS, period.start, period.end,
                                                                   None, None, None, 20, zone),
        "service without the summary (calls)": (reports.SERVICE_ALL, period.start, period.end, None, None,
                                                       None, 20, zone),
        "funnel: entered": (reports.FUNNEL_ENTERED, period.start, period.end, None, None, datetime.now(UTC)),
        "funnel: stuck": (reports.FUNNEL_STUCK, datetime.now(UTC), None, None),
        "sources: leads": (reports.SOURCES_LEADS["won"], period.start, period.end, None, None, None),
        "sources: deals": (reports.SOURCES_DEALS["won"], period.start, period.end, None, None),
        "sources: won deals and their calls": (reports.WON_TOUCHES, period.start, period.end, None, None),
        "segments: ABC": (reports.SEGMENTS_ABC["won"], period.start, period.end, None, None, zone),
        "segments: XYZ": (reports.SEGMENTS_XYZ["won"], datetime.combine(period.last, datetime.min.time()), zone,
                          None, None),
        "segments: stopped buying": (reports.SEGMENTS_STOPPED, period.end, None, None),
    }
    for title, (sql, *args) in plans.items():
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS OFF, COSTS OFF) " + sql, *args)
        print(f"\n### {title}\n")
        print("\n".join("    " + r[0] for r in rows))


async def main(args: argparse.Namespace) -> None:
    from crm import users
    from crm.db import open_database
    from crm.settings import Settings
    from web.app import create_app

    data_dir = Path(tempfile.mkdtemp(prefix="callboard-bench-"))
    now = datetime.now(UTC)
    async with open_database(os.environ.get("DATABASE_URL"), data_dir, announce=lambda t: None) as pool:
        async with pool.acquire() as conn:
            took = await seed(conn, args.calls, args.deals, args.contacts, now)
            head = await users.get_user_by_login(conn, "head")
            token, _ = await users.create_session(conn, head, "bench-secret", now)
        print(f"seeded {args.calls:,} calls, {args.contacts:,} contacts, {args.deals:,} leads and deals in "
              f"{took['seed']:.0f} s (summaries rebuilt in {took['summaries']:.0f} s, VACUUM ANALYZE "
              f"{took['vacuum']:.0f} s)")
        async with pool.acquire() as conn:
            rows = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in ("call_day_stats", "call_hour_stats")}
            print(f"summary rows: {rows}")
            writes = {}
            if args.writes:
                # Off first, and those calls deleted with the triggers still off: the summaries stay exact
                # without a rebuild (minutes at this size); then on.
                await conn.execute(STATS_TRIGGERS.format("DISABLE"))
                writes["triggers off"] = await writer_throughput(conn, args.writes, args.writes, now)
                await conn.execute("DELETE FROM calls WHERE pbx = 'lab' AND linkedid LIKE 'w%'")
                await conn.execute(STATS_TRIGGERS.format("ENABLE"))
                writes["triggers on"] = await writer_throughput(conn, args.writes, 0, now)
                await conn.execute("VACUUM ANALYZE call_day_stats, call_hour_stats, calls")
                print("call writer (save_call, new + amended): " + ", ".join(
                    f"{k} {v:.0f} calls/s" for k, v in writes.items()))
        settings = Settings(session_secret="bench-secret", data_dir=data_dir, agi_port=0, smtp_port=0)
        runner = web.AppRunner(create_app(settings, pool))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        bare_runner, bare_url = await bare_server()
        zone = settings.timezone
        last = now.date()
        first = last - timedelta(days=364)
        query = f"from={first.isoformat()}&to={last.isoformat()}"
        cookie = {"callboard_session": token}
        results = {}
        async with aiohttp.ClientSession() as http:
            results["bare aiohttp handler"] = await timed(http, bare_url, args.requests, {})
            for name in ("managers", "funnel", "sources", "service", "segments"):
                await timed(http, f"{base}/api/reports/{name}?{query}", 1, cookie)  # warm the cache
                results[f"/api/reports/{name}"] = await timed(http, f"{base}/api/reports/{name}?{query}",
                                                              args.requests, cookie)
            results["/api/reports/managers (xlsx)"] = await timed(
                http, f"{base}/api/reports/managers?{query}&format=xlsx", args.requests, cookie)
        async with pool.acquire() as conn:
            from crm.reports import make_period

            period = make_period(first, last, zone)
            samples = []
            for _ in range(args.requests):
                start = time.perf_counter()
                year_calls = await conn.fetchval("SELECT count(*) FROM calls WHERE started_at >= $1 AND "
                                                 "started_at < $2", period.start, period.end)
                samples.append((time.perf_counter() - start) * 1000)
            results["SELECT count(*) of the year's calls"] = percentiles(samples)
            samples = []
            for _ in range(args.requests):
                start = time.perf_counter()
                await conn.fetchval("SELECT count(*) FROM deals WHERE created_at >= $1 AND created_at < $2",
                                    period.start, period.end)
                samples.append((time.perf_counter() - start) * 1000)
            results["SELECT count(*) of the year's deals"] = percentiles(samples)
            if args.explain:
                await explain(conn, first, last, zone)
        await bare_runner.cleanup()
        await runner.cleanup()
    print(f"\n{year_calls:,} calls in the year {first} .. {last}; {args.requests} sequential requests each\n")
    count_p50 = results["SELECT count(*) of the year's calls"][0]
    deals_p50 = results["SELECT count(*) of the year's deals"][0]
    print(f"| {'what':40} | p50 ms | p99 ms | p50 / calls count(*) | p50 / deals count(*) |")
    print(f"|{'-' * 42}|--------|--------|----------------------|----------------------|")
    for name, (p50, p99) in results.items():
        print(f"| {name:40} | {p50:6.1f} | {p99:6.1f} | {p50 / count_p50:20.1f} | {p50 / deals_p50:20.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--deals", type=int, default=20_000)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--explain", action="store_true")
    asyncio.run(main(parser.parse_args()))
