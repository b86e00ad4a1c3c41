"""Stopping the real server process with browsers connected: it exits within 5 s, and the routing door
answers until its listener closes."""

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from crm import users
from tests.web.live import SocketUser, session_cookie

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
async def server(database_dsn, conn, tmp_path):
    """`python run.py` on free ports against the test database, a manager and a head to log in."""
    for login, role, extension in (("manager1", "manager", "101"), ("head", "head", "100")):
        await users.create_user(conn, login, login, role, extension, login.title())
    port, agi_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLBOARD_", "DATABASE_URL", "REDIS_URL"))}
    env.update(DATABASE_URL=database_dsn, CALLBOARD_PORT=str(port), CALLBOARD_AGI_PORT=str(agi_port),
               CALLBOARD_SMTP_PORT="0", CALLBOARD_ROUTING_TOKEN="route-token", CALLBOARD_DATA_DIR=str(tmp_path))
    process = await asyncio.create_subprocess_exec(sys.executable, "run.py", cwd=ROOT, env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    output = b""
    async with asyncio.timeout(30):
        while b"is serving on" not in output:
            line = await process.stdout.readline()
            assert line, output.decode(errors="replace")
            output += line
    yield process, base_url, agi_port
    if process.returncode is None:
        process.kill()
        await process.wait()


async def test_sigterm_with_browsers_connected_exits_within_5_seconds(server):
    process, base_url, _ = server
    sockets = [SocketUser() for _ in range(4)]
    for user, login in zip(sockets, ("manager1", "manager1", "head", "head"), strict=True):
        await user.connect(base_url, await session_cookie(base_url, login))
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        await process.wait()
    took = time.monotonic() - started
    for user in sockets:
        await user.close()
    assert took < 5, f"the server took {took:.1f} s to stop"
    assert process.returncode == 0


async def test_the_routing_door_answers_while_the_server_stops(server):
    process, base_url, _ = server
    user = SocketUser()
    await user.connect(base_url, await session_cookie(base_url, "manager1"))
    answers: list[int] = []

    async def ask_routing() -> None:
        async with aiohttp.ClientSession() as http:
            while process.returncode is None:
                try:
                    resp = await http.get(f"{base_url}/api/route", params={"caller": "79160000000",
                                                                           "token": "route-token"})
                    answers.append(resp.status)
                except aiohttp.ClientConnectionError:
                    return  # the listener is closed: from here on Asterisk's CURL() goes to the queue
                await asyncio.sleep(0.02)

    asker = asyncio.create_task(ask_routing())
    await asyncio.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        await process.wait()
    await asker
    await user.close()
    # Every question asked before the listener closed got its answer, none a 5xx.
    assert answers and set(answers) == {200}, answers
