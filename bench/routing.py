"""Routing API benchmark: 1,000,000 contacts; req/s and latency of GET /api/route against a bare
aiohttp handler measured in the same run; the lookup alone.

The servers run in this process; the load comes from a second process on loopback
(this same file with --load), open-loop at a steady rate, then closed-loop for the maximum.

    python bench/routing.py [--contacts 1000000] [--rate 1000] [--seconds 10]
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

async def run_load(url: str, rate: float, seconds: float, concurrency: int, contacts: int) -> dict:
    rng = random.Random(1)
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one() -> None:
            nonlocal errors
            caller = f"7916{rng.randrange(1, contacts + 1):07d}"
            started = time.perf_counter()
            try:
                async with session.get(url, params={"caller": caller, "did": "74951234567", "token": TOKEN}) as r:
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


def load_from_subprocess(url: str, rate: float, seconds: float, contacts: int, concurrency: int = 64) -> dict:
    result = subprocess.run([sys.executable, __file__, "--load", url, "--rate", str(rate), "--seconds",
                             str(seconds), "--contacts", str(contacts), "--concurrency", str(concurrency)],
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
    from crm.settings import Settings
    from web.app import create_app
    from web.keys import ROUTER

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
        settings = Settings(database_url=database_url, data_dir=data_dir, session_secret="x", routing_token=TOKEN,
                            agi_port=0, routing_deadline_ms=250)
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
                await router._lookup(caller, "74951234567", None)
                lookups.append(time.perf_counter() - started)
            import psutil

            rss_mb = psutil.Process().memory_info().rss / 1e6
            loop = asyncio.get_running_loop()
            run = loop.run_in_executor
            base_steady = await run(None, load_from_subprocess, "http://127.0.0.1:18082/api/route", args.rate,
                                    args.seconds, args.contacts)
            ours_steady = await run(None, load_from_subprocess, "http://127.0.0.1:18081/api/route", args.rate,
                                    args.seconds, args.contacts)
            base_max = await run(None, load_from_subprocess, "http://127.0.0.1:18082/api/route", 0,
                                 args.seconds, args.contacts, 32)
            ours_max = await run(None, load_from_subprocess, "http://127.0.0.1:18081/api/route", 0,
                                 args.seconds, args.contacts, 32)
        finally:
            await runner.cleanup()
            await bare.cleanup()
    print(f"{args.contacts:,} contacts; routing index ready {index_seconds:.1f} s after start-up, "
          f"{rss_mb:.0f} MB RSS; lookup p50 {statistics.median(lookups) * 1000:.3f} ms, "
          f"p99 {percentile(lookups, 0.99) * 1000:.3f} ms")
    for name, base, ours in (("steady", base_steady, ours_steady), ("maximum", base_max, ours_max)):
        print(f"{name:8} bare aiohttp: {base['rps']:8.0f} req/s p50 {base['p50_ms']:.2f} ms p99 {base['p99_ms']:.2f} ms"
              f" | /api/route: {ours['rps']:8.0f} req/s p50 {ours['p50_ms']:.2f} ms p99 {ours['p99_ms']:.2f} ms"
              f" errors {ours['errors']} | ratio {ours['rps'] / base['rps']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        print(json.dumps(asyncio.run(run_load(args.load, args.rate, args.seconds, args.concurrency,
                                              args.contacts))))
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
