"""Issue 15 over HTTP: duplicates refused with the existing record's id (unless allowed), call results, notes, the
cards' one timeline, merges of contacts and companies (rules, audit, two at once) and their pages."""

import asyncio

from crm import calls as calls_db
from tests.conftest import csrf_headers, login
from tests.web.test_calls import record
from web.api import openapi_spec


async def test_a_duplicate_phone_email_or_inn_is_refused_with_the_existing_id_unless_allowed(client, factory):
    manager = await factory.user("manager1", extension="101")
    anna = await factory.contact("Anna", manager=manager, phones=["+7 916 111-22-33"], emails=["anna@example.com"])
    h = csrf_headers(await login(client, "manager1"))
    for body, field in (({"name": "Anna 2", "phones": ["8 (916) 111-22-33"]}, "phones"),
                        ({"name": "Anna 3", "emails": ["ANNA@example.com"]}, "emails")):
        resp = await client.post("/api/contacts", headers=h, json=body)
        assert resp.status == 409, await resp.text()
        answer = await resp.json()
        assert (answer["existing_id"], answer["field"], answer["error"]["status"]) == (anna.id, field, 409)
        made = await client.post("/api/contacts", headers=h, json={**body, "allow_duplicate": True})
        assert made.status == 201, await made.text()
    # An office line with another extension is not the same phone.
    office = await client.post("/api/contacts", headers=h, json={"name": "Reception", "phones": ["+74951234567"]})
    other_desk = await client.post("/api/contacts", headers=h, json={"name": "Desk",
                                                                     "phones": ["+7 495 123-45-67 ext. 12"]})
    assert (office.status, other_desk.status) == (201, 201)
    # Editing: adding another's e-mail is refused; the record's own values never count as duplicates.
    boris = await (await client.post("/api/contacts", headers=h, json={"name": "Boris"})).json()
    clash = await client.patch(f"/api/contacts/{boris['id']}", headers=h, json={"emails": ["anna@example.com"]})
    assert clash.status == 409 and (await clash.json())["existing_id"] == anna.id
    renamed = await client.patch(f"/api/contacts/{anna.id}", headers=h, json={"name": "Anna Petrova"})
    assert renamed.status == 200, await renamed.text()
    bad = await client.post("/api/contacts", headers=h, json={"name": "X", "allow_duplicate": "yes"})
    assert bad.status == 422
    # Companies: the tax id (INN) too.
    first = await client.post("/api/companies", headers=h, json={"name": "Uralmash", "tax_id": "6658012345"})
    second = await client.post("/api/companies", headers=h, json={"name": "Uralmash JSC", "tax_id": "6658012345"})
    assert first.status == 201 and second.status == 409
    assert (await second.json())["existing_id"] == (await first.json())["id"]


async def test_the_form_warns_of_a_duplicate_links_it_and_saves_when_told_to(client, factory):
    manager = await factory.user("manager1", extension="101")
    anna = await factory.contact("Anna", manager=manager, phones=["+7 916 111-22-33"])
    token = await login(client, "manager1")
    form = {"csrf_token": token, "name": "Anna again", "phone": "+79161112233", "manager_id": str(manager.id)}
    warned = await client.post("/contacts/new", data=form, allow_redirects=False)
    page = await warned.text()
    assert warned.status == 409 and f'href="/contacts/{anna.id}"' in page and 'name="allow_duplicate"' in page
    assert 'value="Anna again"' in page  # what was typed is kept
    saved = await client.post("/contacts/new", data={**form, "allow_duplicate": "1"}, allow_redirects=False)
    assert saved.status == 302


async def test_call_results_notes_and_the_timeline_api(client, conn, factory):
    manager = await factory.user("manager1", extension="101")
    await factory.user("manager2", extension="102")
    contact = await factory.contact("Anna", manager=manager, phones=["+7 495 123-45-67"])
    call_id = (await calls_db.save_call(conn, record("1.0", "+74951234567"))).id
    token = await login(client, "manager1")
    h = csrf_headers(token)
    written = await client.post(f"/api/calls/{call_id}/result", headers=h,
                                json={"result": "callback", "note": "after lunch", "callback_at": "2026-12-01T14:00"})
    assert written.status == 201, await written.text()
    result = await written.json()
    assert (result["result"], result["callback_at"]) == ("callback", "2026-12-01T11:00:00+00:00")  # Moscow time
    tasks = (await (await client.get("/api/tasks")).json())["items"]
    assert [(t["id"], t["contact_id"], t["assignee_id"]) for t in tasks] == [(result["task_id"], contact.id,
                                                                             manager.id)]
    for body in ({"result": "sold"}, {"result": "callback"}, {"result": "reached", "callback_at": "soon"},
                 {"result": "reached", "note": 5}):
        assert (await client.post(f"/api/calls/{call_id}/result", headers=h, json=body)).status == 422, body
    note = await client.post("/api/notes", headers=h, json={"text": "Likes pumps", "contact_id": contact.id})
    assert note.status == 201, await note.text()
    items = (await (await client.get(f"/api/contacts/{contact.id}/timeline")).json())["items"]
    assert [i["kind"] for i in items] == ["note", "task", "call"]
    (call,) = [i for i in items if i["kind"] == "call"]
    assert [r["note"] for r in call["data"]["results"]] == ["after lunch"]
    # Someone else's call and card: no result, no note, no timeline.
    await client.post("/logout", data={"csrf_token": token})
    other = csrf_headers(await login(client, "manager2"))
    assert (await client.post(f"/api/calls/{call_id}/result", headers=other, json={"result": "reached"})).status == 404
    assert (await client.post("/api/notes", headers=other, json={"text": "x", "contact_id": contact.id})).status == 404
    assert (await client.get(f"/api/contacts/{contact.id}/timeline")).status == 404


async def test_merge_api_moves_everything_checks_rights_and_writes_an_audit_entry(client, conn, factory):
    manager = await factory.user("manager1", extension="101")
    colleague = await factory.user("manager2", extension="102")
    await factory.user("head", role="head")
    kept = await factory.contact("Anna", manager=manager, phones=["+7 495 123-45-67"])
    other = await factory.contact("Anna P.", manager=manager, phones=["+7 916 555-66-77"], emails=["a@x.ru"])
    theirs = await factory.contact("Anna K.", manager=colleague)
    await calls_db.save_call(conn, record("1.0", "+79165556677"))
    h = csrf_headers(await login(client, "manager1"))
    itself = await client.post(f"/api/contacts/{kept.id}/merge", headers=h, json={"other_id": kept.id})
    assert itself.status == 400
    assert (await client.post(f"/api/contacts/{kept.id}/merge", headers=h, json={})).status == 422
    assert (await client.post(f"/api/contacts/{kept.id}/merge", headers=h,
                              json={"other_id": theirs.id})).status == 403
    merged = await client.post(f"/api/contacts/{kept.id}/merge", headers=h, json={"other_id": other.id})
    assert merged.status == 200, await merged.text()
    body = await merged.json()
    assert (body["kept_id"], body["merged_id"], body["merged_name"]) == (kept.id, other.id, "Anna P.")
    assert body["moved"] == {"calls.contact_id": 1, "emails.contact_id": 1, "phones.contact_id": 1}
    assert (await client.get(f"/api/contacts/{other.id}")).status == 404
    card = await (await client.get(f"/api/contacts/{kept.id}")).json()
    assert sorted(p["e164"] for p in card["phones"]) == ["+74951234567", "+79165556677"]
    assert card["emails"] == ["a@x.ru"]
    items = (await (await client.get(f"/api/contacts/{kept.id}/timeline")).json())["items"]
    assert [i["kind"] for i in items] == ["call"]
    again = await client.post(f"/api/contacts/{kept.id}/merge", headers=h, json={"other_id": other.id})
    assert again.status == 409


async def test_two_company_merges_at_once_one_wins(client, conn, factory):
    await factory.user("head", role="head")
    a = await factory.company("Uralmash")
    b = await factory.company("Uralmash JSC")
    c = await factory.company("UZTM")
    await factory.contact("Ivan", company_id=b.id)
    h = csrf_headers(await login(client, "head"))
    answers = await asyncio.gather(
        client.post(f"/api/companies/{a.id}/merge", headers=h, json={"other_id": b.id}),
        client.post(f"/api/companies/{c.id}/merge", headers=h, json={"other_id": b.id}))
    assert sorted(r.status for r in answers) == [200, 409]
    winner = [await r.json() for r in answers if r.status == 200][0]
    assert await conn.fetchval("SELECT company_id FROM contacts WHERE name = 'Ivan'") == winner["kept_id"]
    assert await conn.fetchval("SELECT count(*) FROM party_merges") == 1


async def test_the_cards_the_merge_page_and_the_result_page(client, conn, factory):
    manager = await factory.user("manager1", extension="101")
    kept = await factory.contact("Anna", manager=manager, phones=["+7 495 123-45-67"])
    other = await factory.contact("Anna P.", manager=manager)
    call_id = (await calls_db.save_call(conn, record("1.0", "+74951234567"))).id
    token = await login(client, "manager1")
    card = await (await client.get(f"/contacts/{kept.id}")).text()
    assert 'id="timeline"' in card and f'href="/calls/{call_id}/result' in card and "/static/timeline.js" in card
    note = await client.post("/notes", data={"csrf_token": token, "contact_id": str(kept.id), "text": "Call at 9"},
                             allow_redirects=False)
    assert note.status == 302
    assert "Call at 9" in await (await client.get(f"/contacts/{kept.id}")).text()
    merge_page = await (await client.get(f"/contacts/{kept.id}/merge", params={"q": "Anna"})).text()
    assert f'name="other_id" value="{other.id}"' in merge_page and f'value="{kept.id}"' not in merge_page
    done = await client.post(f"/contacts/{kept.id}/merge", data={"csrf_token": token, "other_id": str(other.id)},
                             allow_redirects=False)
    assert done.status == 302 and done.headers["Location"].startswith(f"/contacts/{kept.id}")
    assert "Anna P." in await (await client.get(f"/contacts/{kept.id}/merge")).text()  # the audit line
    form = await client.post(f"/calls/{call_id}/result", data={"csrf_token": token, "result": "reached",
                                                               "note": "wants a quote", "back": "//evil.example"},
                             allow_redirects=False)
    assert form.status == 302
    page = await (await client.get(form.headers["Location"])).text()
    assert "wants a quote" in page and 'href="/calls"' in page and "evil.example" not in page
    assert f'href="/deals/new?contact={kept.id}"' in page  # the deal form, the client filled in
    assert f'href="/tasks?contact_id={kept.id}#new"' in page


def test_every_new_route_is_in_openapi():
    paths = openapi_spec()["paths"]
    assert "post" in paths["/api/calls/{id}/result"] and "post" in paths["/api/notes"]
    for section in ("contacts", "companies"):
        assert "post" in paths[f"/api/{section}/{{id}}/merge"]
        assert "409" in paths[f"/api/{section}"]["post"]["responses"]
    for section in ("contacts", "companies", "leads", "deals"):
        assert "get" in paths[f"/api/{section}/{{id}}/timeline"]


async def test_converting_a_lead_with_a_deal_keeps_its_emails_and_form_messages_on_the_contact_and_the_deal(
        client, conn, factory):
    """The defect of issue 15: after conversion the lead's e-mails and form messages were not on the deal."""
    from crm import mail as mail_db

    await factory.user("head", role="head")
    for raw in (b"From: Olga <olga@example.com>\r\nSubject: Reducers\r\n\r\nNeed 5 reducers.\r\n",
                b"From: Site <robot@site.ru>\r\nSubject: Web form\r\n\r\nName: Olga\r\nE-mail: olga@example.com\r\n"
                b"Message: Call me back\r\n"):
        message_id = await mail_db.store_raw(conn, raw, "127.0.0.1", "x@example.com", ["sales@example.com"])
        await mail_db.process_stored(conn, message_id, raw, "RU")
    lead_id = await conn.fetchval("SELECT id FROM leads")
    h = csrf_headers(await login(client, "head"))
    resp = await client.post(f"/api/leads/{lead_id}/convert", headers=h,
                             json={"contact_name": "Olga", "company_name": "", "deal_title": "Reducers"})
    assert resp.status == 200, await resp.text()
    contact_id = (await resp.json())["contact_id"]
    deal_id = await conn.fetchval("SELECT id FROM deals WHERE lead_id = $1", lead_id)
    for path in (f"/api/contacts/{contact_id}/timeline", f"/api/deals/{deal_id}/timeline",
                 f"/api/leads/{lead_id}/timeline"):
        items = (await (await client.get(path)).json())["items"]
        assert sorted(i["title"] for i in items if i["kind"] == "mail") == ["Reducers", "Web form"], path
    page = await (await client.get(f"/deals/{deal_id}")).text()
    assert "Need 5 reducers." in page and "Web form" in page
