"""Popups while the database is slow: screen-pop latency (AMI event leaving the simulator → popup at
the ringing client) with a normal database, then with every write to `calls` held 0.5 s by a
pg_sleep trigger, each beside a bare socket.io emit at the same rate measured in the same run.

    python bench/slow_db_popups.py [--clients 200] [--cps 10] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web  # noqa: E402

from bench.screenpop import FIRST_EXTENSION, bare_baseline, finish, start_clients, wait_connected  # noqa: E402

SLOW_TRIGGER = """
CREATE OR REPLACE FUNCTION bench_slow_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$;
CREATE TRIGGER bench_slow_calls BEFORE INSERT OR UPDATE ON calls FOR EACH ROW EXECUTE FUNCTION bench_slow_write();
"""


async def place_calls(sim, rng: random.Random, clients: int, cps: float, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        extension = str(FIRST_EXTENSION + rng.randrange(clients))
        sim.play(sim.writer.answered(f"7916{rng.randrange(10**7):07d}", "", extension, 1.0, 1.0))
        await asyncio.sleep(1 / cps)


async def callboard_runs(clients: int, cps: float, seconds: float) -> dict[str, dict]:
    from crm import users
    from crm.db import open_database
    from crm.settings import PbxSettings, Settings
    from cti.simulator import AmiSimulator
    from web.app import create_app
    from web.keys import TELEPHONY

    data_dir = Path(tempfile.mkdtemp(prefix="callboard-bench-"))
    results = {}
    async with open_database(os.environ.get("DATABASE_URL"), data_dir, announce=lambda t: None) as pool:
        cookies = []
        async with pool.acquire() as conn:
            await conn.execute("TRUNCATE users, calls, leads RESTART IDENTITY CASCADE")
            await conn.execute("""INSERT INTO users (login, password_hash, role, extension, display_name)
                SELECT 'agent' || g, 'x', 'manager', ($1 + g)::text, 'Agent ' || g
                FROM generate_series(0, $2 - 1) g""", FIRST_EXTENSION, clients)
            for user in await users.list_users(conn):
                token, _ = await users.create_session(conn, user, "bench", datetime.now(UTC))
                cookies.append(token)
        for phase in ("normal", "slow"):
            if phase == "slow":
                async with pool.acquire() as conn:
                    await conn.execute(SLOW_TRIGGER)
            sim = AmiSimulator("cti", "secret", seed=3)
            await sim.start()
            settings = Settings(data_dir=data_dir / phase, session_secret="bench", agi_port=0, smtp_port=0,
                                pbxes=(PbxSettings("bench", "127.0.0.1", sim.port, "cti", "secret"),))
            app = create_app(settings, pool)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 18093).start()
            while app[TELEPHONY].connectors["bench"].state.state != "connected":
                await asyncio.sleep(0.05)
            process = start_clients("http://127.0.0.1:18093", cookies, seconds)
            await wait_connected(process)
            caller = asyncio.create_task(place_calls(sim, random.Random(2), clients, cps, seconds))
            result = await finish(process)
            caller.cancel()
            telephony = app[TELEPHONY]
            result["saved"], result["waiting"] = telephony.saved_calls, telephony.writer.waiting
            await runner.cleanup()  # the slow phase leaves its unwritten calls in its spool
            await sim.stop()
            results[phase] = result
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--cps", type=float, default=10)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    base = asyncio.run(bare_baseline(args.clients, args.cps, args.seconds))
    ours = asyncio.run(callboard_runs(args.clients, args.cps, args.seconds))
    print(f"{'bare socket.io emit':34}: {base['popups']} popups, p50 {base['p50_ms']:.1f} ms, "
          f"p99 {base['p99_ms']:.1f} ms")
    for phase, r in ours.items():
        label = "callboard, normal database" if phase == "normal" else "callboard, calls writes +0.5 s each"
        print(f"{label:34}: {r['popups']} popups, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; "
              f"calls saved {r['saved']}, waiting in the writer at the end {r['waiting']}")
    print(f"p99 slow / normal: {ours['slow']['p99_ms'] / ours['normal']['p99_ms']:.2f}x")


if __name__ == "__main__":
    main()
