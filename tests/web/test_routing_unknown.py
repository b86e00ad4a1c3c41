"""Unknown callers are routed without waiting for their lead to be written (issue 18)."""

import asyncio
import time
from dataclasses import replace

from crm.settings import PbxSettings
from cti.simulator import AmiSimulator
from tests.web.test_routing import OFFLINE_PBX, route
from web.app import create_app
from web.keys import ROUTER, TELEPHONY


async def _wait_for(probe, seconds: float = 5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.02)
    return await probe()


async def test_an_unknown_caller_is_answered_while_the_leads_table_is_locked(settings, pool, factory, conn,
                                                                          aiohttp_client):
    manager = await factory.user("manager1", extension="101")
    await factory.contact("Known", manager=manager, phones=["+7 495 123-45-67"])
    app = create_app(replace(settings, pbxes=(OFFLINE_PBX,), routing_fallback="sales"), pool)
    client = await aiohttp_client(app)
    assert await _wait_for(lambda: asyncio.sleep(0, app[ROUTER].index.ready))
    locker = await pool.acquire()
    try:
        tx = locker.transaction()
        await tx.start()
        # Reads go on, every write to leads waits: a slow database as far as the lead is concerned.
        await locker.execute("LOCK TABLE leads IN EXCLUSIVE MODE")
        started = time.perf_counter()
        answers = await asyncio.gather(*(route(client, number) for number in
                                         ("79169998877", "+7 916 999-88-77", "8 (916) 999-88-77",
                                          "74951234567")))
        elapsed = time.perf_counter() - started
        assert [(a["target"], a["reason"]) for a in answers] == [
            ("sales", "unknown_caller"), ("sales", "unknown_caller"), ("sales", "unknown_caller"),
            ("101", "assigned_manager")]
        assert elapsed < 0.5, elapsed
        await asyncio.sleep(0.3)
        assert await conn.fetchval("SELECT count(*) FROM leads") == 0  # still waiting for the lock
        await tx.rollback()
    finally:
        await pool.release(locker)
    count = "SELECT count(*) FROM leads WHERE phone_e164 = '+79169998877'"
    assert await _wait_for(lambda: conn.fetchval(count)) == 1
    await asyncio.sleep(0.2)
    assert await conn.fetchval("SELECT count(*) FROM leads") == 1
    assert app[ROUTER]._leads == {}


async def test_a_failed_lead_write_is_logged_and_routing_goes_on(settings, pool, conn, aiohttp_client, caplog):
    app = create_app(replace(settings, pbxes=(), routing_fallback="sales", routing_cache=False), pool)
    client = await aiohttp_client(app)
    # Every lead insert fails, as a full disk or a broken constraint would make it.
    await conn.execute("ALTER TABLE leads ADD CONSTRAINT test_refuse CHECK (false) NOT VALID")
    try:
        body = await route(client, "79160000042")
        assert (body["target"], body["reason"]) == ("sales", "unknown_caller")
        assert await _wait_for(lambda: asyncio.sleep(0, not app[ROUTER]._leads))
    finally:
        await conn.execute("ALTER TABLE leads DROP CONSTRAINT test_refuse")
    assert [r.message for r in caplog.records if "was not written" in r.message] == [
        "the lead for unknown caller +79160000042 was not written (the call pipeline retries at the call's end)"]


async def test_with_the_pbx_watched_the_call_pipeline_writes_the_unknown_callers_lead(settings, pool, conn,
                                                                                     factory, aiohttp_client):
    await factory.user("manager1", extension="101")
    sim = AmiSimulator("cti", "secret", speed=1.0)
    await sim.start()
    try:
        app = create_app(replace(settings, pbxes=(PbxSettings("lab", "127.0.0.1", sim.port, "cti", "secret"),),
                                 routing_fallback="sales"), pool)
        client = await aiohttp_client(app)
        assert await _wait_for(lambda: asyncio.sleep(0, app[ROUTER].index.ready
                                                     and app[TELEPHONY].sees_calls("lab")))
        # The dialplan asks about a call the pipeline already saw: routing itself writes nothing.
        body = await route(client, "79169998877", pbx="lab")
        assert (body["target"], body["reason"]) == ("sales", "unknown_caller")
        assert app[ROUTER]._leads == {}
        await asyncio.sleep(0.3)
        assert await conn.fetchval("SELECT count(*) FROM leads") == 0
        # The call itself makes the lead, once, and the logged call points at it.
        sim.place_call("79169998877", "101", None, caller_name="Caller", ring_timeout=0.5)
        await route(client, "79169998877", pbx="lab")  # asked again mid-call: still nothing from routing
        assert await _wait_for(lambda: conn.fetchval("SELECT lead_id FROM calls"))
        lead = await conn.fetchrow("SELECT id, phone_e164 FROM leads")
        assert lead["phone_e164"] == "+79169998877"
        assert await conn.fetchval("SELECT count(*) FROM leads") == 1
        assert await conn.fetchval("SELECT lead_id FROM calls") == lead["id"]
        # The link goes down: the router writes the next unknown caller's lead itself again.
        await sim.stop()
        assert await _wait_for(lambda: asyncio.sleep(0, not app[TELEPHONY].sees_calls("lab")))
        await route(client, "79160000042", pbx="lab")
        count = "SELECT count(*) FROM leads WHERE phone_e164 = '+79160000042'"
        assert await _wait_for(lambda: conn.fetchval(count)) == 1
    finally:
        await sim.stop()
