"""Several nodes, one Redis: exactly one node consumes a PBX; when it stops, another takes over."""

import asyncio
import time
from dataclasses import replace

import pytest

from crm.settings import PbxSettings
from cti.ami import AmiConnector
from cti.service import QuietNotifier, TelephonyService
from cti.simulator import AmiSimulator
from tests.web.test_scale_out import REDIS_URL, redis_reachable

pytestmark = pytest.mark.skipif(not redis_reachable(), reason=f"no Redis at {REDIS_URL}")


async def until(check, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.05)


async def test_one_node_consumes_and_another_takes_over(settings, pool):
    import redis.asyncio as aioredis

    sim = AmiSimulator("cti", "secret")
    await sim.start()
    pbx = PbxSettings(f"lease-test-{time.time_ns()}", "127.0.0.1", sim.port, "cti", "secret")
    node_settings = replace(settings, redis_url=REDIS_URL, pbxes=(pbx,))

    def factory(pbx_settings, sink):
        return AmiConnector(pbx_settings, sink, min_backoff=0.05)

    first = TelephonyService(node_settings, pool, QuietNotifier(), connector_factory=factory)
    second = TelephonyService(node_settings, pool, QuietNotifier(), connector_factory=factory)
    client = aioredis.from_url(REDIS_URL)
    try:
        await first.start()
        await until(lambda: first.pbx_status()[pbx.name]["state"] == "connected")
        await second.start()
        await asyncio.sleep(0.5)
        assert second.pbx_status()[pbx.name]["state"] == "standby"
        assert sim.logins == 1  # only one node reads the PBX: no doubled popups or calls
        # Routing on the standby node leaves an unknown caller's lead to the holder's call pipeline.
        assert first.sees_calls(pbx.name) and second.sees_calls(pbx.name) and second.sees_calls()
        # The holder shares agent states, so routing on the standby node knows a busy phone.
        sim.place_call("79160000101", "101", 0.3, 3.0)
        await until(lambda: second.agent_state("101", pbx.name) == "in_call")
        await first.stop()
        await until(lambda: second.pbx_status()[pbx.name]["state"] == "connected", timeout=15)
        assert second.sees_calls(pbx.name)
        assert sim.logins == 2
    finally:
        await second.stop()
        await client.delete(f"callboard:lease:{pbx.name}")
        await client.aclose()
        await sim.stop()
