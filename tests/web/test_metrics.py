"""Prometheus /metrics: parsed with prometheus-client's own parser; protected by an allowlist and a token."""

import asyncio
from dataclasses import replace

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import login
from web.app import create_app


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_of_the_whole_service(live):
    base, sim, app = live
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            resp = await http.get(f"{base}/api/route", params={"caller": "+74951234567", "token": "route-token"})
            assert resp.status == 200, await resp.text()
        assert (await http.get(f"{base}/contacts/12345")).status == 200  # the login page, after a redirect
        resp = await http.get(f"{base}/metrics")
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        found = samples(await resp.text())
    assert found[("callboard_pbx_up", (("pbx", "lab"),))] == 1
    assert found[("callboard_pbx_state", (("pbx", "lab"), ("state", "connected")))] == 1
    assert found[("callboard_pbx_state", (("pbx", "lab"), ("state", "disconnected")))] == 0
    assert found[("callboard_ami_events_total", (("pbx", "lab"),))] > 0
    assert found[("callboard_calls_in_progress", (("pbx", "lab"),))] == 0
    assert found[("callboard_writer_backlog", ())] == 0
    assert found[("callboard_routing_duration_seconds_count", ())] == 3
    assert found[("callboard_http_requests_total", (("method", "GET"), ("route", "/api/route"),
                                                    ("status", "200")))] == 3
    # Ids never become labels: the route's pattern does.
    assert found[("callboard_http_requests_total", (("method", "GET"), ("route", "/{section}/{party_id}"),
                                                    ("status", "302")))] == 1
    assert found[("callboard_calls_today", (("outcome", "answered"),))] == 0
    assert ("callboard_socket_connections", ()) in found and ("callboard_login_failures_last_hour", ()) in found
    # A call that rings 101: its popup's delay (from the PBX's event) lands in the histogram.
    sim.place_call("74951234567", "101", 0.5, 0.5)
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            found = samples(await (await http.get(f"{base}/metrics")).text())
            if found.get(("callboard_popup_delay_seconds_count", ()), 0) >= 1:
                break
            await asyncio.sleep(0.05)
    assert found[("callboard_popup_delay_seconds_count", ())] >= 1
    assert found[("callboard_popup_delay_seconds_sum", ())] < 5


async def test_allowlist_and_token(settings, pool, aiohttp_client, factory):
    client = await aiohttp_client(create_app(replace(settings, metrics_allowlist=("10.9.0.0/16",)), pool))
    assert (await client.get("/metrics")).status == 403
    client = await aiohttp_client(create_app(replace(settings, metrics_token="scrape-me"), pool))
    assert (await client.get("/metrics")).status == 403
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 403
    resp = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert resp.status == 200
    assert ("callboard_login_failures_last_hour", ()) in samples(await resp.text())
    # A session is no way in either, and the page is not behind the login.
    await factory.user("admin", role="admin")
    await login(client, "admin")
    assert (await client.get("/metrics")).status == 403
