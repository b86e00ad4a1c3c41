"""Lead distribution through the web: the rules page and API (head only), leads entered and edited by hand
(PATCH with a version), the assignee told live, the heads alerted live about waiting leads, the home list."""

from datetime import UTC, datetime, timedelta

from crm import leadrules
from crm import leads as leads_db
from tests.conftest import csrf_headers, login
from tests.web.live import SocketUser, session_cookie


async def test_the_head_sets_rules_and_a_manager_may_not(client, conn, factory):
    await factory.user("head", role="head")
    one, two = await factory.user("manager1"), await factory.user("manager2")
    csrf = await login(client, "manager1")
    assert (await client.get("/leads/rules")).status == 403
    assert (await client.get("/api/lead-rules")).status == 403
    refused = await client.post("/api/lead-rules", headers=csrf_headers(csrf),
                                json={"action": "assign", "manager_ids": [one.id]})
    assert refused.status == 403
    await client.post("/logout", data={"csrf_token": csrf})

    csrf = await login(client, "head")
    resp = await client.post("/leads/rules", data={
        "csrf_token": csrf, "name": "Moscow", "channel": "phone", "line": "", "prefixes": "+7495, +7499",
        "action": "assign", "manager_ids": str(one.id), "active": "on"}, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    made = await client.post("/api/lead-rules", headers=csrf_headers(csrf), json={
        "name": "Everyone else", "action": "round_robin", "manager_ids": [one.id, two.id]})
    assert made.status == 201, await made.text()
    second = await made.json()
    bad = await client.post("/api/lead-rules", headers=csrf_headers(csrf), json={
        "action": "assign", "manager_ids": [one.id, two.id]})
    assert bad.status == 422 and (await bad.json())["error"]["field"] == "manager_ids"
    moved = await client.post(f"/api/lead-rules/{second['id']}/move", headers=csrf_headers(csrf), json={"up": True})
    assert [r["name"] for r in (await moved.json())["items"]] == ["Everyone else", "Moscow"]
    limits = await client.put("/api/lead-rules/limits", headers=csrf_headers(csrf),
                              json={"unassigned_minutes": 5, "untouched_minutes": 0})
    assert await limits.json() == {"unassigned_minutes": 5, "untouched_minutes": 0}
    listed = await (await client.get("/api/lead-rules")).json()
    assert [(r["name"], r["prefixes"], r["action"]) for r in listed["items"]] == [
        ("Everyone else", [], "round_robin"), ("Moscow", ["+7495", "+7499"], "assign")]
    page = await (await client.get("/leads/rules")).text()
    assert "Moscow" in page and 'value="+7495, +7499"' in page and 'id="lead-limits"' in page
    assert (await client.delete(f"/api/lead-rules/{second['id']}", headers=csrf_headers(csrf))).status == 204
    assert len((await (await client.get("/api/lead-rules")).json())["items"]) == 1


async def test_a_lead_by_hand_the_duplicate_shown_and_an_edit_over_a_newer_one_refused(client, conn, factory):
    await factory.user("head", role="head")
    await factory.user("manager1")
    await factory.user("manager2")
    called, _ = await leads_db.get_or_create_phone_lead(conn, "+79160000077", "")
    csrf = await login(client, "manager1")
    assert 'id="lead-form"' in await (await client.get("/leads/new")).text()
    resp = await client.post("/leads/new", data={"csrf_token": csrf, "name": "Oleg", "phone": "8 916 000-00-78",
                                                  "email": "", "company_name": "Uralmash", "message": "Pumps",
                                                  "source": "manual"}, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    lead_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    duplicate = await client.post("/leads/new", data={"csrf_token": csrf, "name": "Again",
                                                      "phone": "+7 916 000-00-77", "source": "manual"})
    assert duplicate.status == 409
    assert f'href="/leads/{called.id}"' in await duplicate.text()  # theirs is shown instead
    api_dup = await client.post("/api/leads", headers=csrf_headers(csrf), json={"phone": "+79160000078"})
    assert api_dup.status == 409 and (await api_dup.json())["lead_id"] == lead_id

    lead = await (await client.get(f"/api/leads/{lead_id}")).json()
    first = await client.patch(f"/api/leads/{lead_id}", headers=csrf_headers(csrf),
                               json={"company_name": "Uralmash LLC", "version": lead["version"]})
    assert first.status == 200 and (await first.json())["company_name"] == "Uralmash LLC"
    stale = await client.patch(f"/api/leads/{lead_id}", headers=csrf_headers(csrf),
                               json={"name": "Overwrite", "version": lead["version"]})
    assert stale.status == 409
    form = await client.post(f"/leads/{lead_id}/edit", data={
        "csrf_token": csrf, "version": str(lead["version"]), "name": "Stale form", "phone": "+79160000078",
        "email": "", "company_name": "", "message": ""})
    assert form.status == 409 and "someone changed this lead meanwhile" in await form.text()
    after = await (await client.get(f"/api/leads/{lead_id}")).json()
    assert (after["name"], after["company_name"]) == ("Oleg", "Uralmash LLC")  # neither stale edit landed
    page = await (await client.get(f"/leads/{lead_id}/edit")).text()
    assert f'name="version" value="{after["version"]}"' in page
    await client.post("/logout", data={"csrf_token": csrf})

    csrf = await login(client, "manager2")
    other = await client.patch(f"/api/leads/{lead_id}", headers=csrf_headers(csrf), json={"name": "Mine now"})
    assert other.status == 404
    assert (await client.get(f"/leads/{lead_id}/edit")).status == 404


async def test_the_assignee_hears_of_a_calls_lead_live_and_the_heads_of_waiting_leads(live, conn):
    from web.leadrules import alert_waiting_leads

    base_url, sim, app = live
    manager1, head = SocketUser(), SocketUser()
    await manager1.connect(base_url, await session_cookie(base_url, "manager1"))  # logged in: on duty
    await head.connect(base_url, await session_cookie(base_url, "head"))
    try:
        head_user = await conn.fetchrow("SELECT id FROM users WHERE login = 'head'")
        one = await conn.fetchval("SELECT id FROM users WHERE login = 'manager1'")
        two = await conn.fetchval("SELECT id FROM users WHERE login = 'manager2'")  # never logged in: off duty
        system = leads_db.User(head_user["id"], "head", "head", None, "Head", True)
        await leadrules.create_rule(conn, system, {"action": "round_robin", "manager_ids": [two, one]})
        sim.place_call("79165550123", "102", None, ring_timeout=0.3)  # rings 102, nobody answers
        told = await manager1.wait_for("task", lambda t: t.get("assigned"))
        lead = await conn.fetchrow("SELECT id, manager_id FROM leads WHERE phone_e164 = '+79165550123'")
        assert (told["lead_id"], lead["manager_id"]) == (lead["id"], one)
        assert await head.wait_for("task", lambda t: t.get("lead_id") == lead["id"])

        await leadrules.set_limits(conn, system, 1, 1)
        await conn.execute("UPDATE leads SET assigned_at = now() - interval '5 minutes' WHERE id = $1", lead["id"])
        found = await alert_waiting_leads(app)
        assert [w.lead_id for w in found] == [lead["id"]]
        alert = await head.wait_for("task", lambda t: t.get("waiting"))
        assert alert["lead_id"] == lead["id"] and alert["text"].startswith("Lead untouched for 5 min by Manager One")
        assert await alert_waiting_leads(app) == []  # once
        assert not [t for t in manager1.events("task") if t.get("waiting")]  # the heads' news, not the manager's
    finally:
        await manager1.close()
        await head.close()


async def test_the_heads_home_page_lists_leads_waiting(client, conn, factory):
    await factory.user("head", role="head")
    await factory.user("manager1")
    lead, _ = await leads_db.get_or_create_phone_lead(conn, "+79160000099", "")
    await conn.execute("UPDATE leads SET created_at = $2 WHERE id = $1", lead.id,
                       datetime.now(UTC) - timedelta(minutes=40))
    await login(client, "head")
    home = await (await client.get("/home")).text()
    assert 'id="leads-waiting"' in home and f'href="/leads/{lead.id}"' in home and "no manager for 40 minutes" in home
    await login(client, "manager1")
    assert 'id="leads-waiting"' not in await (await client.get("/home")).text()


def test_the_new_lead_routes_are_in_openapi():
    from web.api import openapi_spec

    paths = openapi_spec()["paths"]
    assert {"get", "post"} <= set(paths["/api/lead-rules"])
    assert {"put", "delete"} <= set(paths["/api/lead-rules/{id}"])
    assert "post" in paths["/api/lead-rules/{id}/move"] and "put" in paths["/api/lead-rules/limits"]
    assert "get" in paths["/api/leads/waiting"]
    assert {"get", "patch"} <= set(paths["/api/leads/{id}"])
    assert "409" in paths["/api/leads/{id}"]["patch"]["responses"]
