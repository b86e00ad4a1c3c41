"""Faults against the whole server: PostgreSQL cut while calls end then `kill -9` and a restart; Redis
killed under two nodes. Calls placed by the simulator over TCP, counted in a real PostgreSQL."""

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from crm.demo import seed_demo
from crm.settings import PbxSettings
from cti.simulator import AmiSimulator
from tests.cti.faults import REDIS_SERVER, DbProxy, RedisServer, free_port, until
from web.app import create_app
from web.keys import TELEPHONY

ROOT = Path(__file__).resolve().parent.parent.parent


async def readyz(base_url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base_url}/readyz") as resp:
            return resp.status, await resp.json()


def start_callboard(proxy: DbProxy, sim: AmiSimulator, data_dir: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": proxy.dsn, "CALLBOARD_DATA_DIR": str(data_dir),
           "CALLBOARD_PORT": str(port), "CALLBOARD_SMTP_PORT": "0", "CALLBOARD_AGI_PORT": "0",
           "CALLBOARD_SESSION_SECRET": "s" * 32, "CALLBOARD_PBX": f"ami://cti:secret@127.0.0.1:{sim.port}/lab",
           "CALLBOARD_WORKING_HOURS": "00:00-23:59", "CALLBOARD_WORKING_DAYS": "1-7"}
    env.pop("REDIS_URL", None)
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), "serve"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_reading(base_url: str, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            status, body = await readyz(base_url)
            if status == 200 and body["checks"]["pbx"]["lab"]["reading"]:
                return
        except (aiohttp.ClientError, OSError):
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("Callboard did not start reading the PBX in time")


async def test_database_down_while_calls_end_then_kill_9_and_restart_saves_every_call_once(
        database_dsn, conn, tmp_path):
    await seed_demo(conn, "RU")
    proxy = DbProxy(database_dsn)
    await proxy.start()
    sim = AmiSimulator("cti", "secret", seed=21, speed=4.0)
    await sim.start()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = start_callboard(proxy, sim, tmp_path / "data", port)
    try:
        await wait_reading(base_url)
        # Five calls while all is well, then PostgreSQL goes away and ten more end: four of them
        # missed from one number (one board row, four tries, one callback task).
        await asyncio.gather(*(sim.place_call(f"7916100000{i}", "101", 0.5, 1.0) for i in range(5)))
        await asyncio.sleep(1.0)
        assert await conn.fetchval("SELECT count(*) FROM calls") == 5
        proxy.cut()
        await asyncio.gather(*(sim.place_call(f"7916200000{i}", "102", 0.5, 1.0) for i in range(6)),
                             *(sim.place_call("74959990000", "101", None, ring_timeout=1.0) for _ in range(4)))
        await asyncio.sleep(1.0)  # the last events are through the consumer and into the spool
        status, body = await readyz(base_url)
        assert (status, body["checks"]["database"].startswith("unreachable")) == (503, True)
        assert body["checks"]["writer"]["waiting"] >= 10
        server.send_signal(signal.SIGKILL)
        server.wait()

        proxy.restore()
        server = start_callboard(proxy, sim, tmp_path / "data", port)
        await wait_reading(base_url)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while await conn.fetchval("SELECT count(*) FROM calls") < 15 and loop.time() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        rows = await conn.fetch("SELECT caller, count(*) AS n FROM calls GROUP BY caller ORDER BY caller")
        assert [(r["caller"], r["n"]) for r in rows] == (
            [("+74959990000", 4)] + [(f"+7916100000{i}", 1) for i in range(5)]
            + [(f"+7916200000{i}", 1) for i in range(6)])
        board = await conn.fetch("SELECT caller_e164, tries, (SELECT count(*) FROM tasks t WHERE "
                                 "t.missed_caller_id = m.id) AS tasks FROM missed_callers m")
        assert [tuple(r) for r in board] == [("+74959990000", 4, 1)]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        await sim.stop()
        await proxy.stop()


@pytest.mark.skipif(REDIS_SERVER is None, reason="no redis-server binary")
async def test_redis_down_the_holder_keeps_logging_calls_and_readyz_tells_the_truth(
        settings, pool, conn, tmp_path, aiohttp_client):
    await seed_demo(conn, "RU")
    redis = RedisServer(tmp_path)
    redis.start()
    sim = AmiSimulator("cti", "secret", seed=22, speed=4.0)
    await sim.start()
    node_settings = replace(settings, redis_url=redis.url,
                            pbxes=(PbxSettings("lab", "127.0.0.1", sim.port, "cti", "secret"),))
    try:
        holder_app = create_app(node_settings, pool)
        holder = await aiohttp_client(holder_app)
        await until(lambda: holder_app[TELEPHONY].pbx_status()["lab"]["reading"], what="the first node reads")
        standby_app = create_app(node_settings, pool)
        standby = await aiohttp_client(standby_app)
        await until(lambda: standby_app[TELEPHONY].leases["lab"].redis_ok, what="the second node asked Redis")
        resp = await standby.get("/readyz")
        assert (resp.status, (await resp.json())["checks"]["redis"]) == (200, "ok")

        redis.kill()
        await asyncio.gather(*(sim.place_call(f"7916300000{i}", "101", 0.3, 0.5) for i in range(6)))
        await until(lambda: holder_app[TELEPHONY].saved_calls >= 6, timeout=15, what="six calls logged")
        assert await conn.fetchval("SELECT count(*) FROM calls") == 6
        assert standby_app[TELEPHONY].saved_calls == 0

        resp = await holder.get("/readyz")
        body = await resp.json()
        assert (resp.status, body["checks"]["redis"], body["checks"]["pbx"]["lab"]["reading"]) == (
            200, "unreachable", True)
        await until(lambda: standby_app[TELEPHONY].redis_status() == "unreachable", what="standby notices")
        resp = await standby.get("/readyz")
        body = await resp.json()
        assert (resp.status, body["checks"]["redis"], body["checks"]["pbx"]["lab"]["state"],
                body["checks"]["pbx"]["lab"]["reading"]) == (503, "unreachable", "standby", False)
    finally:
        redis.kill()
        await sim.stop()
