"""Deals and stock through the JSON API: access rules, reservation state, movements."""

from tests.conftest import csrf_headers, login


async def test_deal_api_flow_and_access(client, factory):
    await factory.user("head", role="head")
    await factory.user("manager1", extension="101")
    await factory.user("manager2", extension="102")
    csrf = await login(client, "head")
    product = await (await client.post("/api/products", headers=csrf_headers(csrf), json={
        "sku": "BRG-1", "name": "Bearing", "price": "450", "made_in_house": False})).json()
    resp = await client.post("/api/stock/movements", headers=csrf_headers(csrf),
                             json={"product_id": product["id"], "kind": "receipt", "quantity": 3})
    assert (await resp.json())["available"] == "3.000"
    await client.post("/logout", data={"csrf_token": csrf})
    csrf = await login(client, "manager1")
    deal = await (await client.post("/api/deals", headers=csrf_headers(csrf), json={"title": "Bearings"})).json()
    body = await (await client.post(f"/api/deals/{deal['id']}/items", headers=csrf_headers(csrf),
                                    json={"sku": "BRG-1", "quantity": 5})).json()
    assert body["amount"] == "2250.00"
    body = await (await client.post(f"/api/deals/{deal['id']}/stage", headers=csrf_headers(csrf),
                                    json={"stage": "reservation"})).json()
    assert [(i["reserved"], i["ordered"]) for i in body["items"]] == [("3.000", "2.000")]
    stock_body = await (await client.get("/api/stock")).json()
    assert stock_body["items"][0]["available"] == "0.000"
    bad = await client.post(f"/api/deals/{deal['id']}/close", headers=csrf_headers(csrf),
                            json={"status": "lost", "reason": "whatever"})
    assert bad.status == 422
    # Managers cannot move stock; another manager cannot see the deal.
    refused = await client.post("/api/stock/movements", headers=csrf_headers(csrf),
                                json={"product_id": product["id"], "kind": "receipt", "quantity": 1})
    assert refused.status == 403
    await client.post("/logout", data={"csrf_token": csrf})
    await login(client, "manager2")
    assert (await client.get(f"/api/deals/{deal['id']}")).status == 404
    assert (await (await client.get("/api/deals")).json())["items"] == []
