"""Administration: only admins manage users; everybody changes their own password."""

from tests.conftest import login


async def test_admin_manages_users_and_others_are_refused(client, factory, conn):
    await factory.user("admin", role="admin")
    await factory.user("manager1", extension="101")
    csrf = await login(client, "manager1")
    assert (await client.get("/admin/users")).status == 403
    await client.post("/logout", data={"csrf_token": csrf})
    csrf = await login(client, "admin")
    resp = await client.post("/admin/users/new", allow_redirects=False, data={
        "csrf_token": csrf, "login": "petrov", "display_name": "Pyotr Petrov", "role": "manager",
        "extension": "105", "password": "long-enough"})
    assert resp.status == 302
    clash = await client.post("/admin/users/new", data={
        "csrf_token": csrf, "login": "ivanov", "display_name": "Ivanov", "role": "manager", "extension": "105",
        "password": "long-enough"})
    assert clash.status == 422 and "extension" in await clash.text()
    petrov = await conn.fetchval("SELECT id FROM users WHERE login = 'petrov'")
    resp = await client.post(f"/admin/users/{petrov}/edit", allow_redirects=False, data={
        "csrf_token": csrf, "display_name": "Pyotr Petrov", "role": "head", "extension": "105"})
    assert resp.status == 302
    assert tuple(await conn.fetchrow("SELECT role, active FROM users WHERE id = $1", petrov)) == ("head", False)


async def test_changing_my_password(client, factory):
    await factory.user("manager1", extension="101", password="old-password")
    csrf = await login(client, "manager1", "old-password")
    wrong = await client.post("/password", data={"csrf_token": csrf, "current": "nope", "new": "new-password-1",
                                                  "repeat": "new-password-1"})
    assert wrong.status == 401
    ok = await client.post("/password", data={"csrf_token": csrf, "current": "old-password",
                                               "new": "new-password-1", "repeat": "new-password-1"})
    assert ok.status == 200 and "changed" in await ok.text()
    await client.post("/logout", data={"csrf_token": csrf})
    await login(client, "manager1", "new-password-1")
