"""Routing API benchmark: 1,000,000 contacts; req/s and latency of GET /api/route against a bare
aiohttp handler measured in the same run, with known callers only and with 30 % unknown callers —
first with the PBX's AMI link up (the call pipeline writes an unknown caller's lead, so routing writes
nothing; the simulator here places no calls), then with the link down (routing writes each lead in the
background, as in a routing-only setup); the lookup alone; the routing index's size and load time
beside the dict-of-tuples index it replaced, loaded in the same run.

The servers run in this process; the load comes from a second process on loopback
(this same file with --load), open-loop at a steady rate, then closed-loop for the maximum.

    python bench/routing.py [--contacts 1000000] [--rate 1000] [--seconds 10] [--unknown 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

TOKEN = "bench-token"
SEED_SQL = """
INSERT INTO users (login, password_hash, role, extension, display_name)
SELECT 'manager' || g, 'x', 'manager', (100 + g)::text, 'Manager ' || g FROM generate_series(1, 20) g;
INSERT INTO contacts (name, manager_id)
SELECT 'Contact ' || g, (SELECT id FROM users WHERE login = 'manager' || (1 + g % 20))
FROM generate_series(1, $1::int) g;
INSERT INTO phones (contact_id, e164, raw) SELECT id, '+7916' || lpad(id::text, 7, '0'), 'x' FROM contacts;
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


# ------------------------------------------------------------------ the load generator (2nd process)

async def run_load(url: str, rate: float, seconds: float, concurrency: int, contacts: int,
                   unknown: float = 0.0) -> dict:
    rng = random.Random(1)
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one() -> None:
            nonlocal errors
            if rng.random() < unknown:
                caller = f"7926{rng.randrange(10 ** 7):07d}"  # nobody's number: an unknown caller
            else:
                caller = f"7916{rng.randrange(1, contacts + 1):07d}"
            started = time.perf_counter()
            try:
                async with session.get(url, params={"caller": caller, "did": "74951234567", "pbx": "bench",
                                                    "token": TOKEN}) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - started)

        for _ in range(50):  # warm-up
            await one()
        latencies.clear()
        started = time.perf_counter()
        if rate > 0:
            tasks = []
            total = int(rate * seconds)
            for i in range(total):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)
        else:
            async def worker() -> None:
                while time.perf_counter() - started < seconds:
                    await one()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
            "p50_ms": percentile(latencies, 0.50) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000}


def load_from_subprocess(url: str, rate: float, seconds: float, contacts: int, concurrency: int = 64,
                         unknown: float = 0.0) -> dict:
    result = subprocess.run([sys.executable, __file__, "--load", url, "--rate", str(rate), "--seconds",
                             str(seconds), "--contacts", str(contacts), "--concurrency", str(concurrency),
                             "--unknown", str(unknown)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


# ------------------------------------------------------------------ the servers (this process)

async def bare_app() -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="101")
    app = web.Application()
    app.router.add_get("/api/route", handler)
    return app


async def serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def bench(args: argparse.Namespace) -> None:
    from crm.db import open_database
    from crm.settings import PbxSettings, Settings
    from cti.simulator import AmiSimulator
    from web.app import create_app
    from web.keys import ROUTER, TELEPHONY

    data_dir = Path(tempfile.mkdtemp(prefix="callboard-bench-"))
    database_url = os.environ.get("DATABASE_URL")
    async with open_database(database_url, data_dir, announce=lambda text: print(text, file=sys.stderr)) as pool:
        async with pool.acquire() as conn:
            count = await conn.fetchval("SELECT count(*) FROM contacts")
            if count < args.contacts:
                started = time.perf_counter()
                await conn.execute("TRUNCATE phones, contacts, users RESTART IDENTITY CASCADE")
                # A bulk load: no per-row change notices (nobody is listening yet; indexes load after).
                await conn.execute("SET session_replication_role = replica")
                await conn.execute(SEED_SQL.replace("$1::int", str(int(args.contacts))))
                await conn.execute("RESET session_replication_role")
                await conn.execute("VACUUM ANALYZE")  # or autovacuum would run during the measurement
                print(f"seeded {args.contacts:,} contacts in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            await conn.execute("TRUNCATE leads CASCADE")
        sim = AmiSimulator("cti", "secret")
        await sim.start()
        pbx = PbxSettings("bench", "127.0.0.1", sim.port, "cti", "secret")
        settings = Settings(database_url=database_url, data_dir=data_dir, session_secret="x", routing_token=TOKEN,
                            agi_port=0, routing_deadline_ms=250, pbxes=(pbx,))
        app = create_app(settings, pool)
        runner = await serve(app, 18081)
        bare = await serve(await bare_app(), 18082)
        try:
            router = app[ROUTER]
            started = time.perf_counter()
            while router.index is not None and not router.index.ready:
                await asyncio.sleep(0.1)
            index_seconds = time.perf_counter() - started
            # The lookup alone, in-process: what the deadline protects.
            rng = random.Random(2)
            lookups = []
            for _ in range(3000):
                caller = f"7916{rng.randrange(1, args.contacts + 1):07d}"
                started = time.perf_counter()
                await router.route(caller, "74951234567")
                lookups.append(time.perf_counter() - started)
            loop = asyncio.get_running_loop()
            run = loop.run_in_executor
            bare_url, ours_url = "http://127.0.0.1:18082/api/route", "http://127.0.0.1:18081/api/route"
            telephony = app[TELEPHONY]
            deadline = time.monotonic() + 10
            while not telephony.sees_calls("bench") and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            runs = {}
            leads = {}
            unknown = f"{args.unknown:.0%} unknown"
            for name, url, rate, concurrency, share in (
                    ("steady, bare aiohttp", bare_url, args.rate, 64, 0.0),
                    ("steady, known callers", ours_url, args.rate, 64, 0.0),
                    (f"steady, {unknown}, AMI up", ours_url, args.rate, 64, args.unknown),
                    ("maximum, bare aiohttp", bare_url, 0, 32, 0.0),
                    ("maximum, known callers", ours_url, 0, 32, 0.0),
                    (f"maximum, {unknown}, AMI up", ours_url, 0, 32, args.unknown),
                    ("AMI down", "", 0, 0, 0.0),
                    (f"steady, {unknown}, no AMI", ours_url, args.rate, 64, args.unknown),
                    (f"maximum, {unknown}, no AMI", ours_url, 0, 32, args.unknown)):
                if name == "AMI down":
                    async with pool.acquire() as conn:
                        leads["AMI up"] = await conn.fetchval("SELECT count(*) FROM leads")
                    await sim.stop()
                    while telephony.sees_calls("bench"):
                        await asyncio.sleep(0.1)
                    continue
                runs[name] = await run(None, load_from_subprocess, url, rate, args.seconds, args.contacts,
                                       concurrency, share)
                print(f"{name:24} {json.dumps(runs[name])}", file=sys.stderr, flush=True)
            await router.drain(30)
            async with pool.acquire() as conn:
                leads["no AMI"] = await conn.fetchval("SELECT count(*) FROM leads") - leads["AMI up"]
                sizes = await index_sizes(conn, args.suffix_digits)
        finally:
            await runner.cleanup()
            await bare.cleanup()
            await sim.stop()
    print(f"{args.contacts:,} contacts; routing index ready {index_seconds:.1f} s after start-up; lookup p50 "
          f"{statistics.median(lookups) * 1000:.3f} ms, p99 {percentile(lookups, 0.99) * 1000:.3f} ms; "
          f"leads written by routing for unknown callers: {leads['AMI up']:,} with AMI up, "
          f"{leads['no AMI']:,} without")
    print(f"index load: compact {sizes['compact_s']:.2f} s, {sizes['compact_mb']:.0f} MB "
          f"(RSS +{sizes['compact_rss_mb']:.0f} MB) | dict of tuples {sizes['dict_s']:.2f} s, "
          f"RSS +{sizes['dict_rss_mb']:.0f} MB | {sizes['dict_s'] / sizes['compact_s']:.1f}x faster, "
          f"{sizes['dict_rss_mb'] / sizes['compact_mb']:.1f}x smaller")
    for kind in ("steady", "maximum"):
        base = runs[f"{kind}, bare aiohttp"]
        print(f"{kind:8} bare aiohttp: {base['rps']:8.0f} req/s p50 {base['p50_ms']:.2f} ms "
              f"p99 {base['p99_ms']:.2f} ms")
        for name, ours in runs.items():
            if name.startswith(kind) and "bare" not in name:
                print(f"{'':9}{name[len(kind) + 2:]:26} /api/route: {ours['rps']:8.0f} req/s "
                      f"p50 {ours['p50_ms']:.2f} ms p99 {ours['p99_ms']:.2f} ms errors {ours['errors']} | "
                      f"ratio {ours['rps'] / base['rps']:.2f}x")


async def index_sizes(conn, suffix_digits: int) -> dict:
    """The compact index and the dict-of-tuples one it replaced (its load, kept here as the baseline),
    each loaded alone: seconds, and the growth of this process's resident memory."""
    import gc

    import psutil

    from crm.routing_index import RoutingIndex

    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    started = time.perf_counter()
    index = RoutingIndex(suffix_digits)
    await index.load(conn)
    sizes = {"compact_s": time.perf_counter() - started, "compact_mb": index.nbytes() / 1e6,
             "compact_rss_mb": (process.memory_info().rss - before) / 1e6}
    del index
    gc.collect()
    before = process.memory_info().rss
    started = time.perf_counter()
    by_suffix: dict[str, list[tuple]] = {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        async for row in conn.cursor(DICT_INDEX_ROWS, prefetch=10_000):
            entry = tuple(row)
            by_suffix.setdefault(entry[0][-suffix_digits:], []).append(entry)
    sizes.update(dict_s=time.perf_counter() - started, dict_rss_mb=(process.memory_info().rss - before) / 1e6)
    del by_suffix
    return sizes


# The index before issue 18: a dict keyed by the last digits of tuples of Python objects.
DICT_INDEX_ROWS = """
SELECT p.e164, p.contact_id, coalesce(ct.company_id, p.company_id) AS company_id,
       coalesce(ct.manager_id, co.manager_id) AS manager_id, ct.name AS contact_name, co.name AS company_name
FROM phones p
LEFT JOIN contacts ct ON ct.id = p.contact_id
LEFT JOIN companies co ON co.id = coalesce(ct.company_id, p.company_id)
ORDER BY p.contact_id IS NULL, p.id
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--unknown", type=float, default=0.3, help="the share of unknown callers")
    parser.add_argument("--suffix-digits", type=int, default=10)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        print(json.dumps(asyncio.run(run_load(args.load, args.rate, args.seconds, args.concurrency,
                                              args.contacts, args.unknown))))
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
