"""Bad input to the deal, lead and stock API answers 4xx with a JSON message, never 500; deals name only
people the manager may see."""

from datetime import UTC, datetime

from crm import leads as leads_db
from crm import stock
from tests.conftest import csrf_headers, login

HUGE = 10**20
NOT_JSON = object()


async def answers(client, csrf: str, cases: list[tuple]) -> list[tuple]:
    """Each case as (method, path, body, status, has a message) as the server answered it."""
    got = []
    for method, path, body, _ in cases:
        kwargs = {"headers": csrf_headers(csrf)}
        if body is NOT_JSON:
            kwargs["data"] = b"{not json"
            kwargs["headers"] = {**kwargs["headers"], "Content-Type": "application/json"}
        elif body is not None:
            kwargs["json"] = body
        resp = await client.request(method, path, **kwargs)
        error = (await resp.json()).get("error") if resp.content_type == "application/json" else None
        message = bool(error and error.get("message")) if resp.status >= 400 else True
        got.append((method, path, body if body is not NOT_JSON else "not json", resp.status, message))
    return got


async def test_bad_input_gets_a_4xx_with_a_message(client, conn, factory):
    await factory.user("head", role="head")
    manager = await factory.user("manager1", extension="101")
    product = await stock.create_product(conn, "BRG-1", "Bearing", "pcs", 100, None, False)
    await stock.receive(conn, product.id, 5, datetime.now(UTC))
    lead, _ = await leads_db.get_or_create_phone_lead(conn, "+79161112233", "74951234567", "Olga")
    csrf = await login(client, "head")
    await client.post(f"/api/leads/{lead.id}/assign", headers=csrf_headers(csrf), json={"manager_id": manager.id})
    deal = await (await client.post("/api/deals", headers=csrf_headers(csrf), json={"title": "Bearings"})).json()
    item = (await (await client.post(f"/api/deals/{deal['id']}/items", headers=csrf_headers(csrf),
                                     json={"product_id": product.id, "quantity": 2})).json())["items"][0]
    d, lead_path = f"/api/deals/{deal['id']}", f"/api/leads/{lead.id}"
    cases = [
        ("POST", "/api/deals", NOT_JSON, 400),
        ("POST", "/api/deals", [1, 2], 422),
        ("POST", "/api/deals", {}, 422),
        ("POST", "/api/deals", {"title": ["a"]}, 422),
        ("POST", "/api/deals", {"title": "x", "probability": "abc"}, 422),
        ("POST", "/api/deals", {"title": "x", "probability": 1000}, 422),
        ("POST", "/api/deals", {"title": "x", "amount": "abc"}, 422),
        ("POST", "/api/deals", {"title": "x", "amount": "1e30"}, 422),
        ("POST", "/api/deals", {"title": "x", "amount": -5}, 422),
        ("POST", "/api/deals", {"title": "x", "contact_id": "abc"}, 422),
        ("POST", "/api/deals", {"title": "x", "contact_id": HUGE}, 422),
        ("POST", "/api/deals", {"title": "x", "contact_id": 999}, 404),
        ("POST", "/api/deals", {"title": "x", "company_id": 1.5}, 422),
        ("POST", "/api/deals", {"title": "x", "lead_id": 999}, 404),
        ("POST", "/api/deals", {"title": "x", "manager_id": 999}, 422),
        ("GET", f"/api/deals/{HUGE}", None, 404),
        ("POST", f"/api/deals/{HUGE}/reserve", {}, 404),
        ("POST", "/api/deals/999/reserve", {}, 404),
        ("POST", f"{d}/items", {"product_id": product.id, "quantity": -1}, 422),
        ("POST", f"{d}/items", {"product_id": product.id, "quantity": 0}, 422),
        ("POST", f"{d}/items", {"product_id": product.id, "quantity": "abc"}, 422),
        ("POST", f"{d}/items", {"product_id": product.id, "quantity": "1e20"}, 422),
        ("POST", f"{d}/items", {"product_id": product.id, "quantity": "NaN"}, 422),
        ("POST", f"{d}/items", {"product_id": product.id, "quantity": "Infinity"}, 422),
        ("POST", f"{d}/items", {"product_id": product.id}, 422),
        ("POST", f"{d}/items", {"product_id": product.id, "quantity": 1, "price": "abc"}, 422),
        ("POST", f"{d}/items", {"product_id": product.id, "quantity": 1, "price": "NaN"}, 422),
        ("POST", f"{d}/items", {"product_id": product.id, "quantity": 1, "price": 10**15}, 422),
        ("POST", f"{d}/items", {"product_id": "x", "quantity": 1}, 422),
        ("POST", f"{d}/items", {"product_id": HUGE, "quantity": 1}, 422),
        ("POST", f"{d}/items", {"product_id": 999, "quantity": 1}, 404),
        ("POST", f"{d}/items", {"sku": "NOPE", "quantity": 1}, 422),
        ("POST", f"{d}/stage", {"stage": 5}, 422),
        ("POST", f"{d}/stage", {}, 422),
        ("POST", f"{d}/close", {"status": "lost", "reason": ["x"]}, 422),
        ("POST", f"{d}/close", {"status": {"a": 1}}, 422),
        ("POST", f"{d}/ship", {"item_id": "abc"}, 422),
        ("POST", f"{d}/ship", {"item_id": HUGE}, 422),
        ("POST", f"{d}/ship", {"item_id": item["id"]}, 409),
        ("POST", f"{d}/remove-item", {"item_id": 999}, 404),
        ("POST", f"{d}/order-done", {"kind": "x", "order_id": 1}, 422),
        ("POST", f"{d}/order-done", {"kind": "production", "order_id": 999}, 404),
        ("POST", "/api/stock/movements", {"product_id": product.id, "kind": "x", "quantity": 1}, 422),
        ("POST", "/api/stock/movements", {"product_id": product.id, "kind": "receipt", "quantity": 1e20}, 422),
        ("POST", "/api/stock/movements", {"product_id": product.id, "kind": "write_off", "quantity": 50,
                                          "reason": "broken"}, 409),
        ("POST", "/api/stock/movements", {"product_id": product.id, "kind": "write_off", "quantity": 1}, 422),
        ("POST", "/api/stock/movements", {"product_id": product.id, "kind": "shipment", "quantity": 1,
                                          "deal_item_id": 999}, 404),
        ("POST", "/api/stock/movements", {"product_id": "a", "kind": "receipt", "quantity": 1}, 422),
        ("POST", "/api/stock/movements", {"kind": "receipt", "quantity": 1}, 422),
        ("POST", "/api/stock/movements", {"product_id": 999, "kind": "receipt", "quantity": 1}, 404),
        ("GET", "/api/stock?illiquid_days=abc", None, 422),
        ("GET", "/api/stock?illiquid_days=99999999999", None, 422),
        ("POST", "/api/products", {"sku": "S1", "name": "n", "price": "abc"}, 422),
        ("POST", "/api/products", {"sku": "S1", "name": "n", "price": 1e15}, 422),
        ("POST", "/api/products", {"sku": "S1", "name": "n", "price": 1, "barcode": 5}, 422),
        ("POST", "/api/products", {"name": "n", "price": 1}, 422),
        ("POST", "/api/products", {"sku": "BRG-1", "name": "n", "price": 1}, 409),
        ("POST", "/api/leads", NOT_JSON, 400),
        ("POST", "/api/leads", {}, 422),
        ("POST", "/api/leads", {"phone": 123}, 422),
        ("POST", "/api/leads", {"phone": "abc"}, 422),
        ("POST", "/api/leads", {"name": "x", "email": ["a"]}, 422),
        ("POST", "/api/leads", {"name": "x", "email": "not an address"}, 422),
        ("POST", f"{lead_path}/assign", {"manager_id": "x"}, 422),
        ("POST", f"{lead_path}/assign", {"manager_id": HUGE}, 422),
        ("POST", f"{lead_path}/assign", {"manager_id": 999}, 422),
        ("POST", f"{lead_path}/status", {"status": ["x"]}, 422),
        ("POST", f"{lead_path}/junk", {"reason": {"a": 1}}, 422),
        ("POST", f"{lead_path}/convert", {"contact_name": "Olga", "deal_title": ["x"]}, 422),
        ("POST", f"/api/leads/{HUGE}/junk", {"reason": "x"}, 404),
        ("GET", f"/api/leads/{HUGE}", None, 404),
        ("POST", "/api/tasks/99999999999999999999/done", {}, 404),
    ]
    got = await answers(client, csrf, cases)
    expected = [(m, p, b if b is not NOT_JSON else "not json", s, True) for m, p, b, s in cases]
    assert [(g, e[3]) for g, e in zip(got, expected, strict=True) if g != e] == []  # (answer, status expected)
    # None of the refused writes changed the lead: it is still open and can be converted.
    resp = await client.post(f"{lead_path}/convert", headers=csrf_headers(csrf), json={"contact_name": "Olga"})
    assert resp.status == 200, await resp.text()


async def test_a_deal_names_only_people_the_manager_may_see(client, factory):
    await factory.user("manager1", extension="101")
    manager2 = await factory.user("manager2", extension="102")
    theirs = await factory.company("Secret Works", manager2)
    their_contact = await factory.contact("Ivan Secret", manager2, company_id=theirs.id)
    unassigned = await factory.company("Open Works")
    csrf = await login(client, "manager1")
    for body in ({"title": "x", "company_id": theirs.id}, {"title": "x", "contact_id": their_contact.id}):
        resp = await client.post("/api/deals", headers=csrf_headers(csrf), json=body)
        text = await resp.text()
        assert (resp.status, "Secret" in text) == (404, False), text
    assert (await (await client.get("/api/deals")).json())["items"] == []
    # The form refuses the same way, and shows no name either.
    resp = await client.post("/deals/new", data={"title": "x", "company_id": str(theirs.id), "csrf_token": csrf},
                             allow_redirects=False)
    assert (resp.status, "Secret" in await resp.text()) == (404, False)
    # Unassigned companies are everyone's to work with.
    resp = await client.post("/api/deals", headers=csrf_headers(csrf), json={"title": "y", "company_id": unassigned.id})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["company_id"] == unassigned.id
