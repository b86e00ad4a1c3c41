"""Contacts and companies through the API and the pages: create, search in any format, errors."""

from tests.conftest import csrf_headers, login


async def test_create_and_find_by_phone_typed_another_way(client, factory):
    await factory.user("manager1")
    csrf = await login(client, "manager1")
    resp = await client.post("/api/contacts", headers=csrf_headers(csrf), json={
        "name": "Anna Kuznetsova", "phones": [{"raw": "8 (495) 123-45-67 доб. 21", "label": "work"}],
        "emails": ["Anna@Example.COM"]})
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["phones"] == [{"e164": "+74951234567", "extension": "21", "raw": "8 (495) 123-45-67 доб. 21",
                                  "label": "work", "display": "+7 495 123-45-67 ext. 21"}]
    assert created["emails"] == ["anna@example.com"]
    for query in ["+7 495 1234567", "74951234567", "4951234567", "123-45-67", "anna@example", "kuzne"]:
        items = (await (await client.get("/api/contacts", params={"q": query})).json())["items"]
        assert [c["id"] for c in items] == [created["id"]], query


async def test_invalid_phone_is_a_clear_error_in_the_one_error_shape(client, factory):
    await factory.user("manager1")
    csrf = await login(client, "manager1")
    resp = await client.post("/api/contacts", headers=csrf_headers(csrf),
                             json={"name": "Bad Phone", "phones": ["call me maybe"]})
    assert resp.status == 422
    assert await resp.json() == {"error": {"status": 422, "code": "validation_error",
                                           "message": "'call me maybe' is not a phone number", "field": "phone"}}
    resp = await client.post("/api/contacts", headers=csrf_headers(csrf), data="{not json",
                             )
    assert resp.status == 400
    assert (await client.get("/api/contacts")).status == 200
    items = (await (await client.get("/api/contacts")).json())["items"]
    assert items == []


async def test_form_keeps_raw_text_after_an_error(client, factory):
    await factory.user("manager1")
    csrf = await login(client, "manager1")
    resp = await client.post("/contacts/new", data={"csrf_token": csrf, "name": "Pavel", "phone": "12-ab"})
    assert resp.status == 422
    assert 'value="12-ab"' in await resp.text()


async def test_form_creates_contact_and_card_shows_it_escaped(client, factory):
    await factory.user("manager1")
    csrf = await login(client, "manager1")
    resp = await client.post("/contacts/new", allow_redirects=False, data={
        "csrf_token": csrf, "name": "<img src=x onerror=alert(1)>", "phone": "+7 916 000-01-01",
        "phone_label": "mobile"})
    assert resp.status == 302, await resp.text()
    card = await (await client.get(resp.headers["Location"])).text()
    assert "<img src=x" not in card
    assert "&lt;img src=x onerror=alert(1)&gt;" in card
    assert "+7 916 000-01-01" in card


async def test_company_with_contacts(client, factory):
    await factory.user("head", role="head")
    csrf = await login(client, "head")
    company = await (await client.post("/api/companies", headers=csrf_headers(csrf), json={
        "name": "Volga Bearings", "tax_id": "6312555000", "phones": ["+7 846 333-44-55"]})).json()
    contact = await (await client.post("/api/contacts", headers=csrf_headers(csrf), json={
        "name": "Sergey", "company_id": company["id"]})).json()
    assert contact["company_name"] == "Volga Bearings"
    page = await (await client.get(f"/companies/{company['id']}")).text()
    assert f'/contacts/{contact["id"]}' in page
    resp = await client.put(f"/api/companies/{company['id']}", headers=csrf_headers(csrf),
                            json={"name": "Volga Bearings JSC", "tax_id": "6312555000", "phones": []})
    assert (await resp.json())["phones"] == []


async def test_openapi_describes_the_api(client):
    spec = await (await client.get("/api/openapi.json")).json()
    assert {"/api/contacts", "/api/companies/{id}", "/api/users", "/api/calls", "/api/route", "/api/leads",
            "/api/missed", "/api/missed/{id}/resolve"} <= set(spec["paths"])


async def test_health_and_readiness(client):
    assert await (await client.get("/healthz")).json() == {"status": "ok"}
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["checks"]["migrations"] == "ok"
