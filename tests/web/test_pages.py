"""Every page renders for the roles that use it (a template error is a 500 nobody would see otherwise)."""

import pytest

from crm.demo import seed_demo
from tests.conftest import login

PAGES = ["/home", "/calls", "/calls?outcome=missed", "/missed", "/missed?state=open", "/leads", "/leads?status=new",
         "/deals", "/deals?status=won", "/contacts", "/contacts?q=495", "/companies", "/contacts/new",
         "/companies/new", "/stock", "/stock?q=BRG", "/password"]


@pytest.mark.parametrize("who", ["head", "manager1", "admin"])
async def test_every_page_renders(client, conn, who):
    await seed_demo(conn, "RU")
    await login(client, who)
    for path in PAGES:
        resp = await client.get(path)
        assert resp.status == 200, (path, await resp.text())
    for path in ("/contacts/1", "/companies/1", "/contacts/1/edit", "/companies/1/edit", "/deals/1", "/deals/1/offer"):
        resp = await client.get(path)
        assert resp.status in (200, 404), path
    assert (await client.get("/mail")).status == (403 if who == "manager1" else 200)
    admin_page = await client.get("/admin/users")
    assert admin_page.status == (200 if who == "admin" else 403)
    if who != "admin":
        assert "Not allowed" in await admin_page.text()  # a page to leave from, not a bare status line
    missing = await client.get("/contacts/999999")
    assert missing.status == 404 and "Back to the start page" in await missing.text()


API_LISTS = ["/api/contacts", "/api/companies", "/api/users", "/api/calls", "/api/leads", "/api/missed",
             "/api/deals", "/api/products", "/api/stock", "/api/tasks", "/api/openapi.json"]


@pytest.mark.parametrize("who", ["head", "manager1"])
async def test_every_api_list_answers_json(client, conn, who):
    await seed_demo(conn, "RU")
    await login(client, who)
    for path in API_LISTS:
        resp = await client.get(path)
        assert resp.status == 200, (path, await resp.text())
        assert resp.content_type == "application/json"
    assert (await client.get("/api/pbx")).status == (200 if who == "head" else 403)
