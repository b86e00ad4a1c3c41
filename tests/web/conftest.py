"""Fixtures for tests against the whole app listening on a real port."""

import asyncio
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from crm.demo import seed_demo
from crm.settings import PbxSettings
from cti.simulator import AmiSimulator
from web.app import create_app
from web.keys import TELEPHONY


@asynccontextmanager
async def running_app(settings, pool, conn, aiohttp_server, language: str = "en"):
    """The whole app listening on a port, its PBX being the simulator; demo people seeded in `language`."""
    await seed_demo(conn, "RU", language)
    sim = AmiSimulator("cti", "secret", speed=1.0)
    await sim.start()
    app = create_app(replace(settings, pbxes=(PbxSettings("lab", "127.0.0.1", sim.port, "cti", "secret"),)), pool)
    server = await aiohttp_server(app)
    for _ in range(100):
        if app[TELEPHONY].connectors["lab"].state.state == "connected":
            break
        await asyncio.sleep(0.05)
    try:
        yield str(server.make_url("")).rstrip("/"), sim, app
    finally:
        await sim.stop()


@pytest.fixture
async def live(settings, pool, conn, aiohttp_server):
    """The whole app listening on a port, its PBX being the simulator; demo people seeded."""
    async with running_app(settings, pool, conn, aiohttp_server) as running:
        yield running


