"""Every page and list API at scale, for the head and for a manager, beside /healthz in the same run.

Seeds 1,000,000 contacts with phones, 100,000 companies, 5,000,000 calls, 200,000 missed callers, 50,000
leads, 20,000 deals and open tasks with COPY (CSV generated here, streamed), in an embedded PostgreSQL;
then requests every page and list `--requests` times per role, each beside a /healthz request, and prints
the p50 and p99 of each with its ratio to /healthz.

    python bench/scale.py [--scale 1.0] [--requests 5] [--data-dir /tmp/callboard-scale] [--only /missed /calls]

--scale multiplies every volume (0.05 for a quick look); --data-dir keeps the seeded database for a rerun;
--explain prints the plans of the hot queries (docs/PERFORMANCE.md) instead of timing the pages.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

MANAGERS = 20
VOLUME = {"contacts": 1_000_000, "companies": 100_000, "calls": 5_000_000, "missed": 200_000, "leads": 50_000,
          "deals": 20_000, "tasks": 20_000}
SURNAMES = ("Иванов", "Петров", "Сидоров", "Кузнецов", "Смирнов", "Попов", "Волков", "Соколов", "Лебедев", "Козлов")
NAMES = ("Сергей", "Анна", "Дмитрий", "Ольга", "Алексей", "Мария", "Игорь", "Елена")
YEARS = 3 * 365 * 86400


def phone(contact: int) -> str:
    return f"+7916{contact:07d}"


async def csv_rows(count: int, row: Callable[[int], str], batch: int = 20_000) -> AsyncIterator[bytes]:
    """CSV lines for rows 1..count, in chunks for COPY."""
    for first in range(1, count + 1, batch):
        yield "".join(row(g) for g in range(first, min(count, first + batch - 1) + 1)).encode()
        await asyncio.sleep(0)


async def seed(conn, volume: dict[str, int], now: datetime) -> float:
    started = time.perf_counter()
    contacts, companies, calls = volume["contacts"], volume["companies"], volume["calls"]
    ts = now.timestamp()

    def at(seconds_ago: float) -> str:
        return datetime.fromtimestamp(ts - seconds_ago, UTC).isoformat()

    await conn.execute("TRUNCATE users, companies, contacts, calls, leads, missed_callers, deals, tasks "
                       "RESTART IDENTITY CASCADE")
    await conn.execute(f"""INSERT INTO users (login, password_hash, role, extension, display_name)
        SELECT 'manager' || g, 'x', 'manager', (100 + g)::text, 'Менеджер ' || g FROM generate_series(1, {MANAGERS}) g;
        INSERT INTO users (login, password_hash, role, display_name) VALUES ('head', 'x', 'head', 'Руководитель')""")
    # A bulk load: no per-row triggers (change notices, call_viewers: filled below in one statement).
    await conn.execute("SET session_replication_role = replica")
    tables = {
        "companies": (("name", "manager_id"), companies,
                      lambda g: f"ООО «{SURNAMES[g % 10]} и партнёры {g}»,{1 + g % MANAGERS}\n"),
        "contacts": (("name", "company_id", "manager_id"), contacts,
                     lambda g: f"{SURNAMES[g % 10]} {NAMES[g % 8]} {g},{1 + g % companies if g % 3 == 0 else ''},"
                               f"{1 + g % MANAGERS if g % 7 else ''}\n"),
        "phones": (("contact_id", "e164", "raw"), contacts, lambda g: f"{g},{phone(g)},{phone(g)}\n"),
        "emails": (("contact_id", "email"), contacts, lambda g: f"{g},c{g}@example.ru\n"),
        "calls": (("pbx", "linkedid", "direction", "caller", "caller_e164", "callee", "started_at", "ended_at",
                   "outcome", "ring_seconds", "talk_seconds", "user_id", "contact_id", "company_id"), calls,
                  lambda g: (f"lab,s{g},inbound,{phone(1 + g * 7 % contacts)},{phone(1 + g * 7 % contacts)},100,"
                             f"{at(g * YEARS / calls)},{at(g * YEARS / calls - 60)},"
                             f"{'answered' if g % 4 else 'missed'},5,{55 if g % 4 else 0},"
                             f"{1 + g % MANAGERS if g % 4 else ''},{1 + g * 7 % contacts},"
                             f"{1 + g * 7 % contacts % companies if g % 3 == 0 else ''}\n")),
        "missed_callers": (("caller_e164", "line", "tries", "first_missed_at", "last_missed_at", "last_reason",
                            "contact_id", "manager_id", "due_at", "state"), volume["missed"],
                           lambda g: f"+7936{g:07d},74950000000,{1 + g % 3},{at(g * 60)},{at(g * 60)},no_answer,"
                                     f"{1 + g % contacts if g % 2 == 0 else ''},"
                                     f"{1 + g % MANAGERS if g % 2 == 0 else ''},"
                                     f"{at(g * 60 - 7200)},{'open' if g % 5 else 'resolved'}\n"),
        "leads": (("status", "source", "phone_e164", "name", "manager_id", "created_at"), volume["leads"],
                  lambda g: f"{('new', 'in_work', 'converted')[g % 3]},phone,+7926{g:07d},Лид {g},"
                            f"{1 + g % MANAGERS if g % 3 else ''},{at(g * 600)}\n"),
        "deals": (("title", "contact_id", "manager_id", "stage", "status", "created_at", "stage_changed_at"),
                  volume["deals"],
                  lambda g: f"Сделка {g},{1 + g * 13 % contacts},{1 + g % MANAGERS},"
                            f"{('selection', 'offer', 'invoice', 'reservation', 'shipment')[g % 5]},in_progress,"
                            f"{at(g * 3600)},{at(g * 1800)}\n"),
        "tasks": (("kind", "title", "due_at", "assignee_id", "contact_id"), volume["tasks"],
                  lambda g: f"follow_up,Перезвонить {g},{at(g * 600 - 86400 * 7)},{1 + g % MANAGERS},"
                            f"{1 + g * 11 % contacts}\n"),
    }
    for table, (columns, count, row) in tables.items():
        step = time.perf_counter()
        await conn.copy_to_table(table, source=csv_rows(count, row), columns=columns, format="csv")
        print(f"  COPY {table}: {count:,} rows in {time.perf_counter() - step:.0f} s", file=sys.stderr, flush=True)
    await conn.execute("RESET session_replication_role")
    step = time.perf_counter()
    await conn.execute("""INSERT INTO call_viewers (user_id, started_at, call_id)
       SELECT DISTINCT v.user_id, c.started_at, c.id FROM calls c
       LEFT JOIN contacts ct ON ct.id = c.contact_id LEFT JOIN companies co ON co.id = c.company_id
       CROSS JOIN LATERAL (VALUES (c.user_id), (ct.manager_id), (co.manager_id)) AS v (user_id)
       WHERE v.user_id IS NOT NULL""")
    print(f"  call_viewers in {time.perf_counter() - step:.0f} s", file=sys.stderr, flush=True)
    await conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


async def own_ids(conn, user_id: int | None, contacts: int, companies: int) -> tuple[int, int]:
    """A contact and a company from the middle of the tables that this user sees (a manager: his own; timing
    someone else's card would time the 404 page)."""
    pick = "SELECT min(id) FROM {} WHERE id >= $1 AND ($2::bigint IS NULL OR manager_id = $2)"
    return (await conn.fetchval(pick.format("contacts"), max(1, contacts // 2), user_id),
            await conn.fetchval(pick.format("companies"), max(1, companies // 2), user_id))


async def explain(conn, now: datetime) -> None:
    """The plans of the hot list queries (docs/PERFORMANCE.md), with the parameters the pages use."""
    from datetime import timedelta

    from crm import contacts, deals, leads, missed

    end, start, week = datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC), now - timedelta(days=7)
    hot = {
        "missed board, first page (head)": (missed.LIST_ROWS, (None, None, None, None, False, week, 0, True, end, 0,
                                                               51)),
        "missed board, first page (manager)": (missed.LIST_ROWS, (3, None, None, None, False, week, 0, True, end, 0,
                                                                  51)),
        "missed board, resolved only (head)": (missed.LIST_ROWS, (None, None, None, "resolved", False, week, 0,
                                                                  False, end, 0, 51)),
        "missed board, calls per day (head)": (missed.MISSED_CALLS_PER_DAY, (week, None, "Europe/Moscow")),
        "deals in progress (head)": (deals.LIST_DEALS, (None, "in_progress", None, None, -(2 ** 31), start, 0,
                                                        501)),
        "deals in progress (manager)": (deals.LIST_DEALS, (3, "in_progress", None, None, -(2 ** 31), start, 0,
                                                           501)),
        "leads inbox (manager)": (leads.LIST_LEADS, (3, None, None, 51, 0, True, end, 0)),
        "contacts, a common surname (head)": (contacts.SEARCH_CONTACTS, ("Петров", None, None, None, 51, 0, "", 0)),
    }
    for name, (sql, params) in hot.items():
        await conn.fetch(sql, *params)  # a running server's cache, not a cold start's
        plan = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + sql, *params)
        print(f"\n### {name}\n```\n" + "\n".join(r[0] for r in plan) + "\n```")


def pages(contact: int, company: int) -> list[str]:
    return ["/home", "/contacts", "/contacts?q=Петров", "/contacts?q=%2B7%20916%20" + f"{contact:07d}"[:3],
            f"/contacts?q=8%20(916)%20{contact:07d}", f"/contacts?q={contact % 10000:04d}",
            f"/companies/{company}", f"/contacts/{contact}", "/companies", "/missed", "/leads", "/deals", "/calls",
            "/mail", "/api/calls", "/api/contacts", "/api/contacts?q=Петров", "/api/companies", "/api/leads",
            "/api/missed", "/api/deals", "/api/tasks"]


async def timed(http: aiohttp.ClientSession, url: str, cookie: dict) -> tuple[float, int, int]:
    started = time.perf_counter()
    async with http.get(url, cookies=cookie, allow_redirects=False) as response:
        body = await response.read()
    return (time.perf_counter() - started) * 1000, response.status, len(body)


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def main(args: argparse.Namespace) -> None:
    from crm import users
    from crm.db import open_database
    from crm.settings import Settings
    from web.app import create_app

    volume = {name: max(10, int(count * args.scale)) for name, count in VOLUME.items()}
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="callboard-scale-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    async with open_database(os.environ.get("DATABASE_URL"), data_dir, announce=lambda t: None) as pool:
        async with pool.acquire() as conn:
            if await conn.fetchval("SELECT count(*) FROM calls") != volume["calls"]:
                took = await seed(conn, volume, now)
                print(f"seeded {', '.join(f'{v:,} {k}' for k, v in volume.items())} in {took:.0f} s", flush=True)
            if args.explain:
                await explain(conn, now)
                return
            sessions = {}
            for login in ("head", "manager3"):
                user = await users.get_user_by_login(conn, login)
                ids = await own_ids(conn, None if user.sees_everything else user.id, volume["contacts"],
                                    volume["companies"])
                sessions[login] = ((await users.create_session(conn, user, "bench-secret", now))[0], pages(*ids))
        settings = Settings(session_secret="bench-secret", data_dir=data_dir, agi_port=0, smtp_port=0,
                            routing_cache=False)
        runner = web.AppRunner(create_app(settings, pool), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        results = []
        async with aiohttp.ClientSession() as http:
            for role, (token, paths) in sessions.items():
                cookie = {"callboard_session": token}
                for path in [p for p in paths if not args.only or any(part in p for part in args.only)]:
                    await timed(http, base + path, cookie)  # warm: plans cached, pages in memory
                    samples, health = [], []
                    for _ in range(args.requests):
                        health.append((await timed(http, base + "/healthz", {}))[0])
                        took, status, size = await timed(http, base + path, cookie)
                        samples.append(took)
                    results.append((role, path, status, size, samples, health))
                    print(f"{role:8} {path:45} {status} {statistics.median(samples):7.1f} ms", file=sys.stderr,
                          flush=True)
        await runner.cleanup()
    print(f"\n{args.requests} requests each, one /healthz request before each\n")
    print("| role | page or API | status | KB | p50 ms | p99 ms | /healthz p50 ms | p50 / healthz |")
    print("|---|---|---|---|---|---|---|---|")
    for role, path, status, size, samples, health in results:
        p50, h50 = statistics.median(samples), statistics.median(health)
        print(f"| {role} | `{path}` | {status} | {size / 1024:.0f} | {p50:.1f} | {p(samples, 0.99):.1f} | "
              f"{h50:.1f} | {p50 / h50:.0f}× |")
    over = [(role, path) for role, path, _, _, samples, _ in results
            if statistics.median(samples) > 100 or p(samples, 0.99) > 250]
    print(f"\nover 100 ms p50 or 250 ms p99: {over or 'none'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--data-dir")
    parser.add_argument("--explain", action="store_true", help="print the hot queries' plans instead of timing")
    parser.add_argument("--only", nargs="*", help="time only the pages whose address contains one of these")
    asyncio.run(main(parser.parse_args()))
