"""The routing API for the dialplan (HTTP and FastAGI) and click-to-call, against real parts."""

import asyncio
import time
from dataclasses import replace

import pytest

from crm import users
from crm.demo import seed_demo
from crm.settings import PbxSettings
from cti import events as ev
from cti.agi import start_agi_server
from cti.simulator import AmiSimulator
from tests.conftest import csrf_headers, login
from web.app import create_app
from web.keys import ROUTER, TELEPHONY
from web.routing import Router

OFFLINE_PBX = PbxSettings("lab", "127.0.0.1", 1, "u", "p")  # never connects; its tracker holds states


@pytest.fixture
async def people(factory, conn):
    manager1 = await factory.user("manager1", extension="101")
    gone = await factory.user("gone", extension="109")
    await users.update_user(conn, gone.id, "manager", "109", "Gone", False)
    no_phone = await factory.user("nophone")
    await factory.user("head", role="head")
    return {
        "known": await factory.contact("Known", manager=manager1, phones=["+7 495 123-45-67"]),
        "orphan": await factory.contact("Orphan", phones=["+7 495 000-00-01"]),
        "inactive": await factory.contact("Of Gone", manager=gone, phones=["+7 495 000-00-02"]),
        "no_extension": await factory.contact("Of Nophone", manager=no_phone, phones=["+7 495 000-00-03"]),
    }


@pytest.fixture
async def routed(settings, pool, people, aiohttp_client):
    app = create_app(replace(settings, pbxes=(OFFLINE_PBX,), routing_fallback="sales"), pool)
    client = await aiohttp_client(app)
    return app, client


async def route(client, caller: str, **params) -> dict:
    resp = await client.get("/api/route", params={"caller": caller, "did": "74951234567", "token": "route-token",
                                                  **params}, headers={"Accept": "application/json"})
    assert resp.status == 200, await resp.text()
    return await resp.json()


def set_device(app, device: str, state: str) -> None:
    app[TELEPHONY].trackers["lab"].handle(ev.DeviceStateChanged(time.time(), device, state))


async def test_routing_decision_table(routed, people):
    app, client = routed
    cases = {
        "74951234567": ("101", "manager", "assigned_manager", people["known"].id),
        "+7 495 000-00-01": ("sales", "fallback", "no_manager", people["orphan"].id),
        "74950000002": ("sales", "fallback", "manager_inactive", people["inactive"].id),
        "74950000003": ("sales", "fallback", "manager_has_no_extension", people["no_extension"].id),
        "anonymous": ("sales", "fallback", "withheld_caller", None),
        "": ("sales", "fallback", "withheld_caller", None),
        "<script>": ("sales", "fallback", "withheld_caller", None),
    }
    for caller, (target, kind, reason, contact_id) in cases.items():
        body = await route(client, caller)
        assert (body["target"], body["kind"], body["reason"], body["contact_id"]) == (target, kind, reason,
                                                                                      contact_id), caller
    set_device(app, "PJSIP/101", "INUSE")
    assert (await route(client, "74951234567"))["reason"] == "manager_busy"
    set_device(app, "PJSIP/101", "UNAVAILABLE")
    assert (await route(client, "74951234567"))["reason"] == "manager_unavailable"
    set_device(app, "PJSIP/101", "NOT_INUSE")
    resp = await client.get("/api/route", params={"caller": "74951234567", "token": "route-token"})
    assert (resp.content_type, await resp.text()) == ("text/plain", "101")


async def test_unknown_caller_gets_the_fallback_and_one_lead_whatever_the_repeats(routed, conn):
    _, client = routed
    first = await route(client, "79169998877")
    second = await route(client, "+7 916 999-88-77")
    assert (first["kind"], first["reason"]) == ("fallback", "unknown_caller")
    # The answer does not wait for the lead (issue 18): it is written in the background.
    assert first["lead_id"] is None and second["lead_id"] is None
    await _until(lambda: conn.fetchval("SELECT count(*) FROM leads WHERE phone_e164 = '+79169998877'"))
    assert await conn.fetchval("SELECT count(*) FROM leads WHERE phone_e164 = '+79169998877'") == 1
    assert await conn.fetchval("SELECT count(*) FROM leads") == 1  # withheld callers never make leads


async def _until(probe, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not await probe() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def test_token_and_allowlist(settings, pool, people, aiohttp_client):
    client = await aiohttp_client(create_app(settings, pool))
    for params, headers in (({}, {}), ({"token": "wrong"}, {}), ({}, {"X-Callboard-Token": "nope"})):
        resp = await client.get("/api/route", params={"caller": "74951234567", **params}, headers=headers)
        assert resp.status == 403
    ok = await client.get("/api/route", params={"caller": "74951234567"}, headers={"X-Callboard-Token": "route-token"})
    assert await ok.text() == "101"
    bearer = await client.get("/api/route", params={"caller": "74951234567"},
                              headers={"Authorization": "Bearer route-token"})
    assert await bearer.text() == "101"
    fenced = await aiohttp_client(create_app(replace(settings, routing_allowlist=("10.0.0.0/8",)), pool))
    resp = await fenced.get("/api/route", params={"caller": "74951234567", "token": "route-token"})
    assert resp.status == 403


class SlowRouter(Router):
    """A lookup that takes half a second, as a locked table or a slow disk would."""

    async def _lookup(self, caller, did, pbx, caller_name=""):
        await asyncio.sleep(0.5)
        return await super()._lookup(caller, did, pbx, caller_name)


async def test_a_slow_lookup_answers_the_fallback_within_the_deadline(routed, conn):
    app, _ = routed
    router = SlowRouter(replace(app[ROUTER].settings, routing_deadline_ms=50), app[ROUTER].pool, None)
    started = time.perf_counter()
    decision = await router.route("79161230000", "74951234567")
    elapsed = time.perf_counter() - started
    assert (decision.target, decision.reason) == ("sales", "timeout")
    assert elapsed < 0.3
    # The lookup went on in the background: the unknown caller still became a lead.
    await asyncio.sleep(0.7)
    assert await conn.fetchval("SELECT count(*) FROM leads WHERE phone_e164 = '+79161230000'") == 1


async def test_demo_token_routes_demo_client_to_manager1(settings, pool, conn, aiohttp_client):
    await seed_demo(conn, "RU")
    client = await aiohttp_client(create_app(replace(settings, demo=True, routing_token=""), pool))
    resp = await client.get("/api/route", params={"caller": "74951234567", "did": "74952000000",
                                                  "token": "demo-token"})
    assert await resp.text() == "101"


async def agi_request(port: int, caller: str, token: str = "route-token") -> dict[str, str]:
    """A small AGI client playing Asterisk's side: send the environment, answer each command."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"agi_network: yes\nagi_network_script: route\nagi_request: agi://127.0.0.1/route\n"
                 f"agi_channel: PJSIP/trunk-00000001\nagi_callerid: {caller}\nagi_dnid: 74951234567\n"
                 f"agi_arg_1: {token}\n\n".encode())
    variables = {}
    while line := await reader.readline():
        command = line.decode().strip()
        assert command.startswith("SET VARIABLE "), command
        _, _, name, value = command.split(" ", 3)
        variables[name] = value.strip('"')
        writer.write(b"200 result=1\n")
    writer.close()
    return variables


async def test_fastagi_door_sets_the_channel_variables(routed, people):
    app, _ = routed
    server = await start_agi_server(app[ROUTER].route, "route-token", (), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        known = await agi_request(port, "74951234567")
        unknown = await agi_request(port, "anonymous")
        # A peer that connects and leaves at once must not hang the server.
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        again = await agi_request(port, "74951234567")
    finally:
        server.close()
    assert known == {"CALLBOARD_TARGET": "101", "CALLBOARD_KIND": "manager",
                     "CALLBOARD_CONTACT": str(people["known"].id), "CALLBOARD_REASON": "assigned_manager"}
    assert unknown == {"CALLBOARD_TARGET": "sales", "CALLBOARD_KIND": "fallback", "CALLBOARD_CONTACT": "",
                       "CALLBOARD_REASON": "withheld_caller"}
    assert again == known


async def test_click_to_call_rings_the_manager_then_logs_an_outbound_call(settings, pool, people, conn,
                                                                          aiohttp_client):
    sim = AmiSimulator("cti", "secret", speed=1.0)
    sim.originate_timing = (0.2, 0.3, 1.2)
    await sim.start()
    try:
        app = create_app(replace(settings, pbxes=(PbxSettings("lab", "127.0.0.1", sim.port, "cti", "secret"),)),
                         pool)
        client = await aiohttp_client(app)
        deadline = time.monotonic() + 5
        while app[TELEPHONY].connectors["lab"].state.state != "connected" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        csrf = await login(client, "manager1")
        resp = await client.post("/api/calls", headers=csrf_headers(csrf),
                                 json={"number": "8 (495) 123-45-67", "contact_id": people["known"].id})
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["extension"] == "101"
        deadline = time.monotonic() + 8
        while app[TELEPHONY].saved_calls < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        row = await conn.fetchrow("SELECT direction, caller, callee, outcome, user_id, contact_id FROM calls")
        manager = await users.get_user_by_login(conn, "manager1")
        assert tuple(row) == ("outbound", "101", "+74951234567", "answered", manager.id, people["known"].id)
        bad = await client.post("/api/calls", headers=csrf_headers(csrf), json={"number": "call me"})
        assert bad.status == 422
    finally:
        await sim.stop()


async def test_click_to_call_errors_are_clear(routed, settings, pool, people, aiohttp_client):
    _, client = routed
    csrf = await login(client, "manager1")
    resp = await client.post("/api/calls", headers=csrf_headers(csrf), json={"number": "+7 495 123-45-67"})
    assert resp.status == 503 and "not connected" in (await resp.json())["error"]["message"]
    other = await aiohttp_client(create_app(settings, pool))
    csrf = await login(other, "nophone")
    resp = await other.post("/api/calls", headers=csrf_headers(csrf), json={"number": "+7 495 123-45-67"})
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "extension"
