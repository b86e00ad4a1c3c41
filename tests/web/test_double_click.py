"""A double click over HTTP: two identical requests at once give the result of one."""

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from crm import leads as leads_db
from crm import stock
from tests.conftest import csrf_headers, login
from tests.crm.test_concurrency import slow_writes


async def both(client, csrf: str, path: str, body: dict) -> list[int]:
    """POST the same body twice at once; the two statuses, sorted."""
    responses = await asyncio.gather(*(client.post(path, headers=csrf_headers(csrf), json=body) for _ in range(2)))
    for resp in responses:
        assert resp.status < 500, await resp.text()
    return sorted(resp.status for resp in responses)


@pytest.fixture
async def deal(client, conn, factory):
    """manager1's deal of 5 bearings, 20 in stock; logged in as manager1. Returns (csrf, deal path, product)."""
    await factory.user("manager1", extension="101")
    product = await stock.create_product(conn, "BRG-1", "Bearing", "pcs", 100, None, False)
    await stock.receive(conn, product.id, 20, datetime.now(UTC))
    csrf = await login(client, "manager1")
    created = await (await client.post("/api/deals", headers=csrf_headers(csrf), json={"title": "Bearings"})).json()
    path = f"/api/deals/{created['id']}"
    resp = await client.post(f"{path}/items", headers=csrf_headers(csrf), json={"sku": "BRG-1", "quantity": 5})
    assert resp.status == 200, await resp.text()
    return csrf, path, product


async def line(client, path: str) -> tuple:
    (item,) = (await (await client.get(path)).json())["items"]
    return tuple(Decimal(item[k]) for k in ("reserved", "shipped", "in_production", "ordered"))


async def test_reserve_now_clicked_twice_reserves_the_line_once(client, conn, deal):
    csrf, path, product = deal
    await slow_writes(conn, "stock_movements")
    assert await both(client, csrf, f"{path}/reserve", {}) == [200, 200]
    assert await line(client, path) == (5, 0, 0, 0)
    assert (await stock.balance(conn, product.id)).available == 15


async def test_stage_change_to_reservation_clicked_twice_reserves_once(client, conn, deal):
    csrf, path, product = deal
    await slow_writes(conn, "deal_stage_history", "stock_movements")
    assert await both(client, csrf, f"{path}/stage", {"stage": "reservation"}) == [200, 200]
    assert await line(client, path) == (5, 0, 0, 0)
    history = (await (await client.get(path)).json())["history"]
    assert [(h["stage"], h["left_at"] is None) for h in history] == [("selection", False), ("reservation", True)]


async def test_ship_clicked_twice_ships_once(client, conn, deal):
    csrf, path, product = deal
    item = (await (await client.post(f"{path}/reserve", headers=csrf_headers(csrf), json={})).json())["items"][0]
    await slow_writes(conn, "stock_movements")
    assert await both(client, csrf, f"{path}/ship", {"item_id": item["id"]}) == [200, 409]
    assert await line(client, path) == (0, 5, 0, 0)
    balance = await stock.balance(conn, product.id)
    assert (balance.on_hand, balance.reserved) == (15, 0)


async def test_convert_clicked_twice_makes_one_contact_and_one_deal(client, conn, factory):
    await factory.user("head", role="head")
    lead, _ = await leads_db.get_or_create_phone_lead(conn, "+79161112233", "74951234567", "Olga")
    csrf = await login(client, "head")
    body = {"contact_name": "Olga Smirnova", "company_name": "Uralmash", "deal_title": "Reducers"}
    await slow_writes(conn, "contacts")
    assert await both(client, csrf, f"/api/leads/{lead.id}/convert", body) == [200, 409]
    assert [r["name"] for r in await conn.fetch("SELECT name FROM contacts")] == ["Olga Smirnova"]
    assert [r["name"] for r in await conn.fetch("SELECT name FROM companies")] == ["Uralmash"]
    deals = (await (await client.get("/api/deals")).json())["items"]
    assert [(d["title"], d["lead_id"]) for d in deals] == [("Reducers", lead.id)]


async def test_an_edit_from_a_stale_copy_answers_409_and_keeps_the_newer_save(client, factory):
    manager = await factory.user("manager1", extension="101")
    contact = await factory.contact("Olga", manager)
    csrf = await login(client, "manager1")
    path = f"/api/contacts/{contact.id}"
    loaded = await (await client.get(path)).json()
    saved = await client.put(path, headers=csrf_headers(csrf), json={"name": "Olga S", "version": loaded["version"]})
    assert (saved.status, (await saved.json())["version"]) == (200, loaded["version"] + 1)
    stale = await client.put(path, headers=csrf_headers(csrf), json={"name": "Olga K", "version": loaded["version"]})
    assert stale.status == 409 and "changed by someone else" in (await stale.json())["error"]["message"]
    assert (await (await client.get(path)).json())["name"] == "Olga S"
