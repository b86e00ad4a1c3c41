"""Call log in pages and API; PBX state in /readyz; the demo PBX's call control."""

import asyncio
import time
from dataclasses import replace

from crm import calls as calls_db
from crm.settings import PbxSettings
from cti.calls import CallRecord, LegRecord
from cti.simulator import AmiSimulator
from tests.conftest import csrf_headers, login
from web.app import create_app
from web.keys import TELEPHONY


def record(call_id: str, caller: str, outcome: str = "answered", answered_by: str | None = "101",
           caller_name: str = "", started: float = 1_795_448_049.0) -> CallRecord:
    return CallRecord(
        pbx="lab", call_id=call_id, direction="inbound", caller=caller, caller_name=caller_name,
        callee="+74951234567", started_at=started, answered_at=started + 2 if answered_by else None,
        ended_at=started + 65, outcome=outcome, reason=outcome, answered_by=answered_by,
        agents_rang=("101",), queue=None, ring_seconds=2, talk_seconds=63 if answered_by else 0, recording=None,
        transfers=(), talk_by_agent=(), recovered=False, originated=False,
        legs=(LegRecord(f"{call_id}-1", "PJSIP/trunk-00000001", "trunk", None, started, None, started + 65, 16),))


async def test_call_is_saved_once_and_linked_to_contact_and_manager(conn, factory):
    manager = await factory.user("manager1", extension="101")
    contact = await factory.contact("Demo Client", manager=manager, phones=["+7 495 123-45-67"])
    first = (await calls_db.save_call(conn, record("1.0", "+74951234567"))).id
    again = (await calls_db.save_call(conn, record("1.0", "+74951234567"))).id
    assert first == again
    call = await calls_db.get_call(conn, manager, first)
    assert (call.contact_id, call.user_id, call.outcome) == (contact.id, manager.id, "answered")
    assert await calls_db.count_legs(conn, first) == 1


async def test_my_calls_shows_a_managers_own_calls_only_and_escapes_caller_names(client, conn, factory):
    await factory.user("manager1", extension="101")
    await factory.user("manager2", extension="102")
    await calls_db.save_call(conn, record("1.0", "+79160000101", caller_name="<script>alert(1)</script>"))
    await calls_db.save_call(conn, record("2.0", "+79160000102", answered_by="102"))
    await login(client, "manager1")
    page = await (await client.get("/calls")).text()
    assert "+7 916 000-01-01" in page and "1 min 05 sec" not in page  # talk 63 s: 1 min 03 sec
    assert "1 min 03 sec" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert "+7 916 000-01-02" not in page
    items = (await (await client.get("/api/calls")).json())["items"]
    assert [c["call_id"] for c in items] == ["1.0"]
    other = await conn.fetchval("SELECT id FROM calls WHERE linkedid = '2.0'")
    assert (await client.get(f"/api/calls/{other}")).status == 404


async def test_calls_filter_by_outcome_and_bad_filters_are_clear(client, conn, factory):
    await factory.user("head", role="head")
    await calls_db.save_call(conn, record("1.0", "+79160000101"))
    await calls_db.save_call(conn, record("2.0", "+79160000102", outcome="missed", answered_by=None))
    await login(client, "head")
    items = (await (await client.get("/api/calls", params={"outcome": "missed"})).json())["items"]
    assert [c["call_id"] for c in items] == ["2.0"]
    resp = await client.get("/api/calls", params={"outcome": "lost"})
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "outcome"
    resp = await client.get("/api/calls", params={"day": "yesterday"})
    assert resp.status == 422


async def test_readyz_reports_a_wrong_pbx_password(settings, pool, aiohttp_client):
    sim = AmiSimulator("cti", "right-secret")
    await sim.start()
    try:
        app = create_app(replace(settings, pbxes=(PbxSettings("office", "127.0.0.1", sim.port, "cti", "wrong"),)),
                         pool)
        client = await aiohttp_client(app)
        deadline = time.monotonic() + 5
        while app[TELEPHONY].pbx_status()["office"]["state"] != "auth_failed" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        resp = await client.get("/readyz")
        body = await resp.json()
        assert resp.status == 503
        assert body["checks"]["pbx"]["office"]["state"] == "auth_failed"
        assert "wrong" not in await resp.text()
    finally:
        await sim.stop()


async def test_demo_call_control_places_a_call_that_reaches_the_log(settings, pool, factory, aiohttp_client):
    await factory.user("head", role="head")
    await factory.user("manager1", extension="101")
    app = create_app(replace(settings, demo=True), pool)
    client = await aiohttp_client(app)
    csrf = await login(client, "head")
    resp = await client.post("/api/demo/calls", headers=csrf_headers(csrf), json={
        "caller": "8 (916) 000-01-01", "extension": "101", "answer_after": 1, "talk_seconds": 3})
    assert resp.status == 202, await resp.text()
    deadline = time.monotonic() + 10
    items = []
    while not items and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        items = [c for c in (await (await client.get("/api/calls")).json())["items"] if c["caller"] == "+79160000101"]
    assert [(c["outcome"], c["answered_by"], c["talk_seconds"]) for c in items] == [("answered", "101", 3)]
    bad = await client.post("/api/demo/calls", headers=csrf_headers(csrf), json={"caller": "<script>"})
    assert bad.status == 422


async def test_demo_call_control_outside_demo_and_managers_ring_only_their_own_phone(client, factory, settings,
                                                                                      pool, aiohttp_client):
    await factory.user("manager1", extension="101")
    csrf = await login(client, "manager1")
    resp = await client.post("/api/demo/calls", headers=csrf_headers(csrf), json={"caller": "+74951234567"})
    assert resp.status == 404  # not a demo
    demo = await aiohttp_client(create_app(replace(settings, demo=True), pool))
    csrf = await login(demo, "manager1")
    other = await demo.post("/api/demo/calls", headers=csrf_headers(csrf), json={"extension": "102"})
    assert other.status == 403
    own = await demo.post("/api/demo/calls", headers=csrf_headers(csrf), json={"extension": "101"})
    assert own.status == 202
