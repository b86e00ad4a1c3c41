"""PATCH changes only what it sends: a new name keeps the phones and e-mails; a stale PATCH answers 409."""

from tests.conftest import csrf_headers, login


async def test_patching_the_name_keeps_phones_and_emails(client, factory):
    await factory.user("manager1")
    csrf = await login(client, "manager1")
    created = await (await client.post("/api/contacts", headers=csrf_headers(csrf), json={
        "name": "Anna Kuznetsova", "phones": [{"raw": "8 (495) 123-45-67 доб. 21", "label": "work"}],
        "emails": ["anna@example.com"], "notes": "prefers mornings"})).json()
    resp = await client.patch(f"/api/contacts/{created['id']}", headers=csrf_headers(csrf),
                              json={"name": "Anna Smirnova"})
    assert resp.status == 200, await resp.text()
    patched = await resp.json()
    assert {k: v for k, v in patched.items() if k != "version"} == {
        **{k: v for k, v in created.items() if k != "version"}, "name": "Anna Smirnova"}
    assert patched["version"] == created["version"] + 1
    # A PATCH that says which version it read, after someone else's save: 409, nothing overwritten.
    stale = await client.patch(f"/api/contacts/{created['id']}", headers=csrf_headers(csrf),
                               json={"notes": "evenings", "version": created["version"]})
    assert stale.status == 409
    again = await (await client.get(f"/api/contacts/{created['id']}")).json()
    assert (again["name"], again["notes"]) == ("Anna Smirnova", "prefers mornings")
