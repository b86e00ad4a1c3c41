"""Login, sessions, throttling, CSRF, API tokens and what each role may see."""

from crm import users
from tests.conftest import csrf_headers, login, post_login


async def test_login_page_is_served(client):
    resp = await client.get("/login")
    assert resp.status == 200
    assert 'name="password"' in await resp.text()


async def test_pages_need_a_session(client):
    resp = await client.get("/contacts", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith("/login")
    resp = await client.get("/api/contacts")
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthorized"


async def test_wrong_password_is_refused(client, factory):
    await factory.user("manager1", extension="101")
    resp = await post_login(client, "manager1", "nope")
    assert resp.status == 401
    assert "Wrong login or password" in await resp.text()
    assert (await client.get("/api/contacts")).status == 401


async def test_login_is_throttled_after_repeated_failures(client, factory):
    await factory.user("manager1")
    for _ in range(users.THROTTLE_MAX_FAILURES):
        resp = await post_login(client, "manager1", "bad")
        assert resp.status == 401
    # Even the right password is refused while throttled.
    resp = await post_login(client, "manager1", "manager1")
    assert resp.status == 429


async def test_open_redirect_after_login_is_refused(client, factory):
    await factory.user("manager1")
    resp = await post_login(client, "manager1", "manager1", next="//evil.example/")
    assert resp.headers["Location"] == "/"


async def test_logout_ends_the_session(client, factory):
    await factory.user("manager1")
    csrf = await login(client, "manager1")
    resp = await client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
    assert resp.status == 302
    assert (await client.get("/api/contacts")).status == 401


async def test_state_change_without_csrf_token_is_rejected(client, factory):
    await factory.user("manager1")
    csrf = await login(client, "manager1")
    body = {"name": "New Person", "phones": ["+7 916 555-44-33"]}
    resp = await client.post("/api/contacts", json=body)
    assert resp.status == 403
    assert "CSRF" in (await resp.json())["error"]["message"]
    resp = await client.post("/contacts/new", data={"name": "Form Person"}, allow_redirects=False)
    assert resp.status == 403
    resp = await client.post("/api/contacts", json=body, headers=csrf_headers("wrong"))
    assert resp.status == 403
    resp = await client.post("/api/contacts", json=body, headers=csrf_headers(csrf))
    assert resp.status == 201, await resp.text()


async def test_api_token_authenticates_without_csrf(client, factory, conn):
    admin = await factory.user("admin", role="admin")
    await users.add_api_token(conn, admin.id, "secret-token", "test")
    resp = await client.post("/api/contacts", json={"name": "Token Made"},
                             headers={"Authorization": "Bearer secret-token"})
    assert resp.status == 201, await resp.text()
    resp = await client.get("/api/contacts", headers={"Authorization": "Bearer wrong-token"})
    assert resp.status == 401


async def test_manager_cannot_see_another_managers_client(client, factory):
    manager1 = await factory.user("manager1", extension="101")
    manager2 = await factory.user("manager2", extension="102")
    theirs = await factory.contact("Their Client", manager=manager2, phones=["+7 916 222-33-44"])
    unassigned = await factory.contact("Nobody's Client")
    await factory.contact("My Client", manager=manager1)
    csrf = await login(client, "manager1")
    assert (await client.get(f"/api/contacts/{theirs.id}")).status == 404
    assert (await client.get(f"/contacts/{theirs.id}")).status == 404
    resp = await client.put(f"/api/contacts/{theirs.id}", json={"name": "Stolen"}, headers=csrf_headers(csrf))
    assert resp.status == 404
    names = [c["name"] for c in (await (await client.get("/api/contacts")).json())["items"]]
    assert names == ["My Client", "Nobody's Client"]
    # Searching by their phone reveals nothing either.
    found = (await (await client.get("/api/contacts", params={"q": "89162223344"})).json())["items"]
    assert found == []
    assert (await client.get(f"/api/contacts/{unassigned.id}")).status == 200


async def test_head_sees_every_client(client, factory):
    manager2 = await factory.user("manager2")
    await factory.user("head", role="head")
    theirs = await factory.contact("Their Client", manager=manager2)
    await login(client, "head")
    assert (await client.get(f"/api/contacts/{theirs.id}")).status == 200


async def test_manager_cannot_assign_a_client_to_someone_else(client, factory):
    await factory.user("manager1")
    manager2 = await factory.user("manager2")
    csrf = await login(client, "manager1")
    resp = await client.post("/api/contacts", json={"name": "X", "manager_id": manager2.id},
                             headers=csrf_headers(csrf))
    assert resp.status == 403


async def test_only_admin_creates_users(client, factory):
    await factory.user("manager1")
    csrf = await login(client, "manager1")
    body = {"login": "newbie", "password": "pw1234", "role": "manager", "display_name": "Newbie"}
    assert (await client.post("/api/users", json=body, headers=csrf_headers(csrf))).status == 403
