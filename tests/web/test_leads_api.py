"""/api/leads: the head assigns, the manager qualifies and converts; junk needs a reason."""

from crm import leads as leads_db
from tests.conftest import csrf_headers, login


async def test_lead_life_through_the_api(client, conn, factory):
    await factory.user("head", role="head")
    manager = await factory.user("manager1", extension="101")
    await factory.user("manager2", extension="102")
    first, _ = await leads_db.get_or_create_phone_lead(conn, "+79161112233", "74951234567", "Olga")
    second, _ = await leads_db.get_or_create_phone_lead(conn, "+79164445566", "74951234567")
    csrf = await login(client, "head")
    inbox = await (await client.get("/leads")).text()
    assert "Olga" in inbox and "+7 916 444-55-66" in inbox and 'id="leads-table"' in inbox
    listed = (await (await client.get("/api/leads", params={"status": "new", "source": "phone"})).json())["items"]
    assert {lead["id"] for lead in listed} == {first.id, second.id}
    assert (await client.get("/api/leads", params={"status": "maybe"})).status == 422
    resp = await client.post(f"/api/leads/{first.id}/assign", headers=csrf_headers(csrf),
                             json={"manager_id": manager.id})
    assert (await resp.json())["status"] == "in_work"
    junk = await client.post(f"/api/leads/{second.id}/junk", headers=csrf_headers(csrf), json={})
    assert junk.status == 422 and (await junk.json())["error"]["field"] == "reason"
    junk = await client.post(f"/api/leads/{second.id}/junk", headers=csrf_headers(csrf), json={"reason": "robocall"})
    assert (await junk.json())["status"] == "junk"
    await client.post("/logout", data={"csrf_token": csrf})

    csrf = await login(client, "manager1")
    assert [lead["id"] for lead in (await (await client.get("/api/leads")).json())["items"]] == [first.id]
    refused = await client.post(f"/api/leads/{first.id}/assign", headers=csrf_headers(csrf),
                                json={"manager_id": manager.id})
    assert refused.status == 403
    resp = await client.post(f"/api/leads/{first.id}/status", headers=csrf_headers(csrf),
                             json={"status": "qualified"})
    assert (await resp.json())["status"] == "qualified"
    converted = await (await client.post(f"/api/leads/{first.id}/convert", headers=csrf_headers(csrf),
                                         json={"contact_name": "Olga Smirnova", "company_name": "Uralmash",
                                               "deal_title": "Reducers"})).json()
    assert converted["status"] == "converted" and converted["contact_id"]
    contact = await (await client.get(f"/api/contacts/{converted['contact_id']}")).json()
    assert contact["phones"][0]["e164"] == "+79161112233" and contact["company_name"] == "Uralmash"
    deals = (await (await client.get("/api/deals")).json())["items"]
    assert [(d["title"], d["contact_id"], d["lead_id"]) for d in deals] == [
        ("Reducers", converted["contact_id"], first.id)]
    again = await client.post(f"/api/leads/{first.id}/junk", headers=csrf_headers(csrf), json={"reason": "x"})
    assert again.status == 409
