"""Rules the admin pages keep: new users get real passwords; a password change logs out the other browsers."""

from tests.conftest import csrf_headers, login


async def test_a_new_user_needs_eight_characters_of_password_on_the_page_and_in_the_api(client, factory, conn):
    await factory.user("admin", role="admin")
    csrf = await login(client, "admin")
    page = await client.post("/admin/users/new", data={
        "csrf_token": csrf, "login": "petrov", "display_name": "Pyotr Petrov", "role": "manager", "password": "abcde"})
    assert page.status == 422
    api = await client.post("/api/users", headers=csrf_headers(csrf), json={
        "login": "petrov", "display_name": "Pyotr Petrov", "role": "manager", "password": "abcde"})
    assert api.status == 422, await api.text()
    assert (await api.json())["error"]["field"] == "password"
    assert await conn.fetchval("SELECT count(*) FROM users WHERE login = 'petrov'") == 0


async def test_changing_my_password_logs_out_my_other_browsers_but_not_this_one(client, factory, aiohttp_client):
    await factory.user("manager1", extension="101", password="old-password")
    other = await aiohttp_client(client.server)  # a second browser on the same server
    await login(other, "manager1", "old-password")
    assert (await other.get("/calls")).status == 200
    csrf = await login(client, "manager1", "old-password")
    ok = await client.post("/password", data={"csrf_token": csrf, "current": "old-password",
                                               "new": "new-password-1", "repeat": "new-password-1"})
    assert ok.status == 200
    assert (await client.get("/calls")).status == 200
    assert (await other.get("/calls", allow_redirects=False)).status in (302, 401)
