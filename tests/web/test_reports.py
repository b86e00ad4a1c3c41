"""Report pages and /api/reports/*: figures, filters, the manager's own view, drill-down, CSV/XLSX export read
back, bad input; the live wallboard over a real socket.io client."""

import csv
import io
from dataclasses import replace
from urllib.parse import quote

import openpyxl
import pytest

from tests.conftest import csrf_headers, login
from tests.crm.report_data import FIRST, LAST, LINE1, seed
from tests.web.live import SocketUser, session_cookie
from web.api import openapi_spec

RANGE = f"from={FIRST.isoformat()}&to={LAST.isoformat()}"
NAMES = ("managers", "funnel", "sources", "service", "segments")


@pytest.fixture
def settings(settings):
    return replace(settings, timezone="Europe/Moscow")


@pytest.mark.parametrize("name", NAMES)
async def test_the_head_sees_each_report_with_a_chart(client, conn, factory, name):
    await seed(conn, factory)
    await login(client, "head")
    resp = await client.get(f"/reports/{name}?{RANGE}")
    page = await resp.text()
    assert resp.status == 200, page
    assert "<svg" in page and "<script>" not in page.replace('<script src=', '')
    api = await client.get(f"/api/reports/{name}?{RANGE}")
    assert api.status == 200, await api.text()
    body = await api.json()
    assert (body["report"], body["from"], body["to"], body["timezone"]) == (name, "2026-03-02", "2026-03-03",
                                                                           "Europe/Moscow")


async def test_the_managers_api_gives_the_figures_and_a_manager_only_their_own(client, conn, factory):
    data = await seed(conn, factory)
    await login(client, "head")
    body = await (await client.get(f"/api/reports/managers?{RANGE}")).json()
    m1 = next(r for r in body["data"] if r["manager"] == "Manager1")
    assert (m1["inbound_offered"], m1["inbound_answered"], m1["revenue_won"], m1["avg_talk_seconds"]) == (
        4, 2, "1000.00", 126.7)
    await client.post("/logout", headers=csrf_headers(await login(client, "head")))
    await login(client, "manager2")
    mine = await (await client.get(f"/api/reports/managers?{RANGE}")).json()
    assert [r["manager"] for r in mine["data"]] == ["Manager2"]
    assert mine["filters"]["manager"] == data["m2"].id
    refused = await client.get(f"/api/reports/managers?{RANGE}&manager={data['m1'].id}")
    assert refused.status == 403, await refused.text()
    service = await (await client.get(f"/api/reports/service?{RANGE}")).json()
    assert service["data"]["total"]["offered"] == 3  # c2, c3, c6 rang manager2
    page = await (await client.get(f"/reports/managers?{RANGE}")).text()
    assert "Manager1" not in page and "Manager2" in page


async def test_drill_down_from_a_number_to_its_calls(client, conn, factory):
    data = await seed(conn, factory)
    await login(client, "head")
    page = await (await client.get(f"/reports/managers?{RANGE}")).text()
    link = f"/reports/calls?from=2026-03-02&amp;to=2026-03-03&amp;metric=inbound_answered&amp;manager={data['m1'].id}"
    assert link in page
    drill = await client.get(link.replace("&amp;", "&"))
    text = await drill.text()
    assert drill.status == 200, text
    assert text.count("data-call=") == 2
    api = await (await client.get(f"/api/reports/calls?{RANGE}&metric=offered&line={quote(LINE1)}&queue=sales")).json()
    assert sorted(c["id"] for c in api["items"]) == sorted(data["ids"][k] for k in ("c1", "c2", "c3", "c6"))
    deals = await (await client.get(f"/api/reports/deals?{RANGE}&metric=stuck&stage=offer")).json()
    assert [d["id"] for d in deals["items"]] == [data["ids"]["d3"]]


async def test_csv_and_xlsx_exports_read_back(client, conn, factory):
    await seed(conn, factory)
    await login(client, "head")
    resp = await client.get(f"/reports/managers?{RANGE}&format=csv")
    assert resp.status == 200 and resp.content_type == "text/csv"
    raw = await resp.read()
    assert raw.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=";"))
    assert rows[0][:4] == ["Manager", "Inbound offered", "Inbound answered", "Inbound missed"]
    assert rows[2][:4] == ["Manager1", "4", "2", "1"]
    assert rows[2][rows[0].index("Revenue won")] == "1000,0"
    resp = await client.get(f"/api/reports/service?{RANGE}&format=xlsx")
    assert resp.status == 200, await resp.text()
    book = openpyxl.load_workbook(io.BytesIO(await resp.read()))
    assert book.sheetnames == ["Lines and queues", "Days"]
    lines = list(book["Lines and queues"].values)
    assert lines[0][:4] == ("Line", "Queue", "Offered", "Answered")
    assert lines[1][:4] == (LINE1, "sales", 4, 2)
    days = list(book["Days"].values)
    assert [(d[0].date().isoformat() if hasattr(d[0], "date") else str(d[0]), d[1]) for d in days[1:]] == [
        ("2026-03-02", 5), ("2026-03-03", 1)]
    drill = await client.get(f"/reports/deals?{RANGE}&metric=deals_won&format=xlsx")
    assert list(openpyxl.load_workbook(io.BytesIO(await drill.read())).active.values)[1][1] == "D1"


async def test_reactivation_tasks_from_the_page_once(client, conn, factory):
    await seed(conn, factory)
    token = await login(client, "head")
    url = "/api/reports/segments/reactivate?from=2026-03-01&to=2026-03-31"
    first = await client.post(url, headers=csrf_headers(token))
    assert first.status in (200, 201), await first.text()
    second = await client.post(url, headers=csrf_headers(token))
    assert (await second.json()) == {"created": []}
    assert (await client.post(url)).status == 403  # no CSRF token


@pytest.mark.parametrize("path,status", [
    ("/api/reports/managers?from=2026-13-01", 422),
    ("/api/reports/managers?from=yesterday", 422),
    ("/api/reports/managers?from=2026-03-03&to=2026-03-02", 422),
    ("/api/reports/managers?from=1990-01-01&to=2026-03-02", 422),
    ("/api/reports/managers?manager=abc", 422),
    ("/api/reports/managers?manager=99999999999999999999", 422),
    ("/api/reports/service?sl=0", 422),
    ("/api/reports/service?format=pdf", 422),
    ("/api/reports/service?format=html", 422),
    ("/api/reports/sources?line=" + "9" * 200, 422),
    ("/api/reports/sources?source=%00", 422),
    ("/api/reports/calls?metric=everything", 422),
    ("/api/reports/calls?metric=offered&hour=25", 422),
    ("/api/reports/calls?metric=offered&day=never", 422),
    ("/api/reports/deals?metric=stuck", 422),
    ("/api/reports/nothing", 404),
    ("/reports/managers?from=2026-03-03&to=2026-03-02", 422),
])
async def test_bad_input_is_4xx(client, conn, factory, path, status):
    await seed(conn, factory)
    await login(client, "head")
    resp = await client.get(path)
    assert resp.status == status, (path, await resp.text())


async def test_reports_need_a_login_and_the_wallboard_the_head(client, conn, factory):
    await seed(conn, factory)
    assert (await client.get("/api/reports/managers")).status == 401
    await login(client, "manager1")
    assert (await client.get("/wallboard")).status == 403
    assert (await client.get("/api/wallboard")).status == 403


def test_the_report_paths_are_in_openapi():
    paths = openapi_spec()["paths"]
    for name in (*NAMES, "calls", "deals", "leads"):
        params = {p["name"] for p in paths[f"/api/reports/{name}"]["get"]["parameters"]}
        assert {"from", "to", "format"} <= params, name


async def test_the_wallboard_updates_live_while_calls_ring(live):
    base_url, sim, app = live
    head = SocketUser()
    await head.connect(base_url, await session_cookie(base_url, "head"))
    try:
        await head.client.emit("wallboard_join")
        full = await head.wait_for("wallboard", lambda m: m["full"])
        assert full["changes"]["total"]["answered"] == 0
        assert full["changes"]["agent:101"]["state"] in ("idle", "offline")
        sim.place_call("74951234567", "101", 1.5, 1.0)
        ringing = await head.wait_for("wallboard", lambda m: not m["full"] and (
            m["changes"].get("agent:101") or {}).get("state") == "ringing")
        assert set(ringing["changes"]) <= {"agent:101", "waiting", "agent:100", "agent:102"}  # a delta, not all
        await head.wait_for("wallboard", lambda m: len(m["changes"].get("waiting") or []) == 1)
        done = await head.wait_for("wallboard", lambda m: (m["changes"].get("total") or {}).get("answered") == 1,
                                   timeout=15)
        assert "agent:102" not in done["changes"]
        manager = SocketUser()
        await manager.connect(base_url, await session_cookie(base_url, "manager1"))
        try:
            await manager.client.emit("wallboard_join")
            await head.wait_for("wallboard", lambda m: (m["changes"].get("agent:101") or {}).get("state") == "idle")
            assert manager.events("wallboard") == []  # a manager does not get the wallboard
        finally:
            await manager.close()
    finally:
        await head.close()
