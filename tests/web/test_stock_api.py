"""The warehouse's API and pages: receipts with batches, FIFO write-offs, transfers keeping batch dates, stock that
never goes negative, production orders planned → in work → made, and who may do what."""

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from crm import deals, stock
from tests.conftest import csrf_headers, login
from tests.crm.test_concurrency import slow_writes

NOW = datetime.now(UTC)


@pytest.fixture
async def people(factory):
    return {"sklad": await factory.user("sklad", role="warehouse"), "head": await factory.user("head", role="head"),
            "manager1": await factory.user("manager1", extension="101"),
            "manager2": await factory.user("manager2", extension="102")}


async def as_user(client, who: str) -> dict[str, str]:
    client.session.cookie_jar.clear()
    return csrf_headers(await login(client, who))


async def post(client, headers, path: str, body: dict, status: int) -> dict:
    resp = await client.post(path, headers=headers, json=body)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_a_receipt_makes_a_batch_with_its_expiry_and_the_suppliers_document(client, conn, people):
    seal = await stock.create_product(conn, "SEAL-1", "Seal", "pcs", 10, "4600000000011", False)
    headers = await as_user(client, "sklad")
    body = await post(client, headers, "/api/stock/receipts", {"product_id": seal.id, "quantity": "12.5",
                                                                "expires_on": "2027-03-01", "document_number": "ТН-77"},
                      201)
    assert (body["on_hand"], body["warehouses"][0]["on_hand"]) == ("12.500", "12.500")
    card = await (await client.get(f"/api/products/{seal.id}")).json()
    assert [(b["id"], b["expires_on"], b["left"]) for b in card["batches"]] == [(body["batch_id"], "2027-03-01",
                                                                                 "12.500")]
    history = await (await client.get(f"/api/products/{seal.id}/movements")).json()
    assert [(m["kind"], m["quantity"], m["document_number"], m["user_name"]) for m in history["items"]] == [
        ("receipt", "12.500", "ТН-77", "Sklad")]
    # A bad date is the person's mistake, named; nothing is received.
    await post(client, headers, "/api/stock/receipts", {"product_id": seal.id, "quantity": 1,
                                                        "expires_on": "01.03.2027"}, 422)
    assert (await stock.balance(conn, seal.id)).on_hand == Decimal("12.5")


async def test_a_write_off_takes_the_oldest_batch_first_and_needs_a_reason(client, conn, people):
    bolt = await stock.create_product(conn, "BOLT", "Bolt", "pcs", 1, None, False)
    old = await stock.receive(conn, bolt.id, 5, NOW - timedelta(days=40))
    new = await stock.receive(conn, bolt.id, 5, NOW - timedelta(days=1))
    headers = await as_user(client, "sklad")
    refused = await post(client, headers, "/api/stock/writeoffs", {"product_id": bolt.id, "quantity": 1}, 422)
    assert refused["error"]["field"] == "reason"
    body = await post(client, headers, "/api/stock/writeoffs",
                      {"product_id": bolt.id, "quantity": 7, "reason": "rusted"}, 201)
    assert body["taken"] == [{"batch_id": old, "quantity": "5.000"}, {"batch_id": new, "quantity": "2.000"}]
    assert body["on_hand"] == "3.000"
    history = await (await client.get(f"/api/products/{bolt.id}/movements")).json()
    assert [(m["kind"], m["reason"]) for m in history["items"][:2]] == [("write_off", "rusted")] * 2


async def test_stock_never_goes_negative(client, conn, people):
    pump = await stock.create_product(conn, "PMP", "Pump", "pcs", 100, None, False)
    await stock.receive(conn, pump.id, 3, NOW)
    headers = await as_user(client, "sklad")
    branch = await post(client, headers, "/api/warehouses", {"name": "Branch"}, 201)
    refused = await post(client, headers, "/api/stock/writeoffs",
                         {"product_id": pump.id, "quantity": 4, "reason": "lost"}, 409)
    assert refused["error"]["message"] == "only 3 on hand"
    refused = await post(client, headers, "/api/stock/transfers", {
        "product_id": pump.id, "quantity": 1, "from_warehouse_id": branch["id"],
        "to_warehouse_id": await stock.default_warehouse(conn)}, 409)
    assert refused["error"]["message"] == "only 0 on hand in this warehouse"
    await post(client, headers, "/api/stock/writeoffs",
               {"product_id": pump.id, "quantity": 1, "reason": "lost", "warehouse_id": branch["id"]}, 409)
    await post(client, headers, "/api/stock/writeoffs", {"product_id": pump.id, "quantity": -1, "reason": "x"}, 422)
    assert (await stock.balance(conn, pump.id)).on_hand == 3
    # The card's form says why, in words, and shows the card again.
    form = await client.post(f"/stock/products/{pump.id}/writeoff", data={
        "csrf_token": headers["X-CSRF-Token"], "quantity": "5", "reason": "lost"})
    assert form.status == 409
    assert "only 3 on hand" in await form.text()


async def test_a_transfer_moves_the_oldest_batches_and_keeps_their_dates(client, conn, people):
    oil = await stock.create_product(conn, "OIL", "Oil", "l", 5, None, False)
    received = NOW - timedelta(days=200)
    first = await stock.receive(conn, oil.id, 4, received, expires_on=date(2027, 1, 31))
    await stock.receive(conn, oil.id, 6, NOW - timedelta(days=2), expires_on=date(2027, 6, 30))
    illiquid_before = {b.product_id: b.on_hand for b in await stock.illiquid(conn, NOW, 180)}
    headers = await as_user(client, "sklad")
    branch = await post(client, headers, "/api/warehouses", {"name": "Branch"}, 201)
    main = await stock.default_warehouse(conn)
    body = await post(client, headers, "/api/stock/transfers", {
        "product_id": oil.id, "quantity": 5, "from_warehouse_id": main, "to_warehouse_id": branch["id"]}, 201)
    assert [(m["from_batch_id"], m["quantity"]) for m in body["moved"]] == [(first, "4.000"), (first + 1, "1.000")]
    assert {w["id"]: w["on_hand"] for w in body["warehouses"]} == {main: "5.000", branch["id"]: "5.000"}
    assert body["on_hand"] == "10.000"  # a transfer is not a receipt: the total stays
    card = await (await client.get(f"/api/products/{oil.id}")).json()
    moved = [(b["received_at"][:10], b["expires_on"], b["left"]) for b in card["batches"]
             if b["warehouse_id"] == branch["id"]]
    assert moved == [(received.date().isoformat(), "2027-01-31", "4.000"),
                     ((NOW - timedelta(days=2)).date().isoformat(), "2027-06-30", "1.000")]
    # The illiquid figure is per batch: the moved goods are as old as they were.
    assert {b.product_id: b.on_hand for b in await stock.illiquid(conn, NOW, 180)} == illiquid_before
    # A shipment later takes the oldest batch wherever it lies.
    taken = await stock.ship(conn, oil.id, 4, NOW)
    assert [q for _, q in taken] == [4] and taken[0][0] != first
    await post(client, headers, "/api/stock/transfers", {
        "product_id": oil.id, "quantity": 1, "from_warehouse_id": main, "to_warehouse_id": main}, 422)


async def test_two_write_offs_of_the_last_units_at_once_one_succeeds(client, conn, people):
    seal = await stock.create_product(conn, "SEAL", "Seal", "set", 10, None, False)
    await stock.receive(conn, seal.id, 3, NOW)
    headers = await as_user(client, "sklad")
    await slow_writes(conn, "stock_movements")
    answers = await asyncio.gather(*[client.post("/api/stock/writeoffs", headers=headers, json={
        "product_id": seal.id, "quantity": 3, "reason": "damaged"}) for _ in range(2)])
    assert sorted(r.status for r in answers) == [201, 409]
    assert (await stock.balance(conn, seal.id)).on_hand == 0


async def test_production_orders_go_planned_in_work_made_by_the_warehouse_only(client, conn, people):
    pump = await stock.create_product(conn, "PMP-K50", "Pump K50", "pcs", 1000, None, True)
    deal = await deals.create_deal(conn, people["manager1"], "Pumps", NOW)
    await deals.add_item(conn, people["manager1"], deal.id, pump.id, 2)
    await deals.move_stage(conn, people["manager1"], deal.id, "reservation", NOW)
    other = await deals.create_deal(conn, people["manager2"], "Other pumps", NOW)
    await deals.add_item(conn, people["manager2"], other.id, pump.id, 1)
    await deals.reserve_items(conn, people["manager2"], other.id, NOW)

    headers = await as_user(client, "manager1")
    mine = (await (await client.get("/api/production-orders")).json())["items"]
    assert [(o["deal_id"], o["state"], o["quantity"]) for o in mine] == [(deal.id, "planned", "2.000")]
    order_id = mine[0]["id"]
    for body in ({"state": "in_work"}, {"state": "made"}, {"planned_on": "2026-12-01"}):
        resp = await client.patch(f"/api/production-orders/{order_id}", headers=headers, json=body)
        assert resp.status == 403, body
    page = await (await client.get("/stock/production")).text()
    assert "Pumps" in page and "Other pumps" not in page and "Start work" not in page

    headers = await as_user(client, "sklad")
    assert len((await (await client.get("/api/production-orders")).json())["items"]) == 2
    page = await (await client.get("/stock/production")).text()
    assert "Start work" in page
    path = f"/api/production-orders/{order_id}"
    resp = await client.patch(path, headers=headers, json={"planned_on": "2026-12-01"})
    assert (await resp.json())["planned_on"] == "2026-12-01"
    resp = await client.patch(path, headers=headers, json={"state": "in_work"})
    assert (await resp.json())["state"] == "in_work"
    resp = await client.patch(path, headers=headers, json={"state": "in_work"})
    assert resp.status == 409
    resp = await client.patch(path, headers=headers, json={"state": "made", "expires_on": "2030-01-01"})
    made = await resp.json()
    assert (resp.status, made["state"]) == (200, "made"), made
    items = await deals.list_items(conn, deal.id)
    assert (items[0].reserved, items[0].in_production) == (2, 0)
    card = await (await client.get(f"/api/products/{pump.id}")).json()
    assert [(b["id"], b["expires_on"]) for b in card["batches"]] == [(made["batch_id"], "2030-01-01")]
    resp = await client.patch(path, headers=headers, json={"state": "made"})
    assert resp.status == 404  # made once: the second click finds no open order
    assert (await stock.balance(conn, pump.id)).on_hand == 2


async def test_a_supplier_order_is_received_against_its_deal(client, conn, people):
    bearing = await stock.create_product(conn, "BRG", "Bearing", "pcs", 50, None, False)
    deal = await deals.create_deal(conn, people["manager1"], "Bearings", NOW)
    await deals.add_item(conn, people["manager1"], deal.id, bearing.id, 10)
    await deals.reserve_items(conn, people["manager1"], deal.id, NOW)
    headers = await as_user(client, "manager1")
    (order,) = (await (await client.get("/api/supplier-orders")).json())["items"]
    await post(client, headers, "/api/stock/receipts", {"supplier_order_id": order["id"]}, 403)
    await post(client, headers, f"/api/supplier-orders/{order['id']}/receive", {}, 403)
    headers = await as_user(client, "head")
    await post(client, headers, "/api/stock/receipts", {"supplier_order_id": order["id"], "product_id": 999}, 422)
    body = await post(client, headers, "/api/stock/receipts", {"supplier_order_id": order["id"],
                                                                "document_number": "УПД 15"}, 201)
    assert (body["on_hand"], body["reserved"]) == ("10.000", "10.000")
    received = (await (await client.get("/api/supplier-orders?state=received")).json())["items"]
    assert [(o["id"], o["state"], o["batch_id"]) for o in received] == [(order["id"], "received", body["batch_id"])]
    await post(client, headers, "/api/stock/receipts", {"supplier_order_id": order["id"]}, 404)
    assert (await stock.balance(conn, bearing.id)).on_hand == 10


async def test_who_may_move_goods(client, conn, people):
    """A manager reads stock and products; receipts, write-offs, transfers, products and warehouses are refused
    on the API and on the pages, and the buttons are not shown."""
    seal = await stock.create_product(conn, "SEAL", "Seal", "pcs", 10, None, False)
    await stock.receive(conn, seal.id, 5, NOW)
    headers = await as_user(client, "manager1")
    main = await stock.default_warehouse(conn)
    for path, body in (("/api/stock/receipts", {"product_id": seal.id, "quantity": 1}),
                       ("/api/stock/writeoffs", {"product_id": seal.id, "quantity": 1, "reason": "x"}),
                       ("/api/stock/transfers", {"product_id": seal.id, "quantity": 1, "from_warehouse_id": main,
                                                 "to_warehouse_id": main}),
                       ("/api/stock/movements", {"product_id": seal.id, "kind": "receipt", "quantity": 1}),
                       ("/api/warehouses", {"name": "Mine"}),
                       ("/api/products", {"sku": "X", "name": "X", "price": 1})):
        await post(client, headers, path, body, 403)
    resp = await client.put(f"/api/products/{seal.id}", headers=headers, json={"sku": "S", "name": "n", "version": 1})
    assert resp.status == 403
    csrf = headers["X-CSRF-Token"]
    for path in (f"/stock/products/{seal.id}/receipt", f"/stock/products/{seal.id}/writeoff", "/stock/warehouses",
                 "/stock/products/new"):
        resp = await client.post(path, data={"csrf_token": csrf, "quantity": "1", "reason": "x", "name": "n"},
                                 allow_redirects=False)
        assert resp.status == 403, path
    assert (await client.get("/stock/products/new")).status == 403
    card = await client.get(f"/stock/products/{seal.id}")
    assert card.status == 200
    text = await card.text()
    assert 'id="receipt-form"' not in text and "/edit" not in text
    assert (await stock.balance(conn, seal.id)).on_hand == 5

    headers = await as_user(client, "sklad")
    await post(client, headers, "/api/stock/writeoffs", {"product_id": seal.id, "quantity": 1, "reason": "x"}, 201)
    text = await (await client.get(f"/stock/products/{seal.id}")).text()
    assert 'id="receipt-form"' in text and 'id="writeoff-form"' in text
    headers = await as_user(client, "head")
    await post(client, headers, "/api/stock/receipts", {"product_id": seal.id, "quantity": 1}, 201)
    assert (await stock.balance(conn, seal.id)).on_hand == 5


async def test_products_are_created_edited_and_found_by_a_scanned_barcode(client, conn, people):
    headers = await as_user(client, "sklad")
    csrf = headers["X-CSRF-Token"]
    resp = await client.post("/stock/products/new", data={
        "csrf_token": csrf, "name": "Ball bearing 6205", "sku": "BRG-6205", "barcode": "4607001234567",
        "unit": "pcs", "price": "450", "made_in_house": "on"}, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    product_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    # The scanner types the digits and Enter into the search box: the card opens.
    resp = await client.get("/stock/products?q=4607001234567", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, f"/stock/products/{product_id}")
    listed = await (await client.get("/stock/products?q=bearing")).text()
    assert "Ball bearing 6205" in listed
    assert "Ball bearing" not in await (await client.get("/stock/products?q=pump")).text()
    found = await (await client.get("/api/products?q=4607001234567")).json()
    assert [p["product_id"] for p in found["items"]] == [product_id]

    resp = await client.put(f"/api/products/{product_id}", headers=headers, json={
        "sku": "BRG-6205", "name": "Bearing 6205 2RS", "unit": "pcs", "price": "470", "barcode": "4607001234567",
        "version": 1})
    assert (await resp.json())["version"] == 2, await resp.text()
    stale = await client.put(f"/api/products/{product_id}", headers=headers, json={
        "sku": "BRG-6205", "name": "Old edit", "price": "1", "version": 1})
    assert stale.status == 409
    form = await client.post(f"/stock/products/{product_id}/edit", data={
        "csrf_token": csrf, "version": "1", "name": "Old edit", "sku": "BRG-6205", "unit": "pcs", "price": "1"})
    assert form.status == 409
    assert "someone else changed this product" in await form.text()
    product = await stock.get_product(conn, product_id)
    assert (product.name, product.price, product.made_in_house) == ("Bearing 6205 2RS", 470, False)


async def test_the_card_marks_expired_batches_and_pages_its_history(client, conn, people):
    milk = await stock.create_product(conn, "MLK", "Grease", "pcs", 1, None, False)
    today = datetime.now(UTC).date()
    await stock.receive(conn, milk.id, 1, NOW - timedelta(days=30), expires_on=today - timedelta(days=1))
    await stock.receive(conn, milk.id, 1, NOW - timedelta(days=20), expires_on=today + timedelta(days=5))
    await stock.receive(conn, milk.id, 1, NOW - timedelta(days=10), expires_on=today + timedelta(days=300))
    await as_user(client, "manager1")
    text = await (await client.get(f"/stock/products/{milk.id}?limit=2")).text()
    assert text.count('<span class="badge missed">expired</span>') == 1
    assert text.count('<span class="badge ringing">expires soon</span>') == 1
    assert text.count('class="movement receipt"') == 2 and 'rel="next"' in text
    first = await (await client.get(f"/api/products/{milk.id}/movements?limit=2")).json()
    rest = await (await client.get(first["next_url"])).json()
    assert len(first["items"]) == 2 and len(rest["items"]) == 1 and rest["next"] is None
    assert len({m["id"] for m in first["items"] + rest["items"]}) == 3


async def test_the_new_doors_are_in_openapi(client, people):
    await as_user(client, "manager1")
    paths = (await (await client.get("/api/openapi.json")).json())["paths"]
    for path in ("/api/stock/receipts", "/api/stock/writeoffs", "/api/stock/transfers", "/api/products/{id}",
                 "/api/products/{id}/movements", "/api/warehouses", "/api/production-orders",
                 "/api/production-orders/{id}", "/api/supplier-orders", "/api/supplier-orders/{id}/receive"):
        assert path in paths, path
