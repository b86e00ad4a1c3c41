"""Administration: only admins manage users; everybody changes their own password."""

import asyncio

from crm import users
from tests.conftest import csrf_headers, login


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
    assert clash.status == 409 and "extension" in await clash.text()
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


def _edit_form(csrf: str, version: int, **fields: str) -> dict[str, str]:
    return {"csrf_token": csrf, "version": str(version), "display_name": "Pyotr Petrov", "role": "manager",
            "extension": "105", "active": "on", **fields}


async def test_admin_gives_people_devices_and_hears_whose_a_device_is(client, factory, conn):
    await factory.user("admin", role="admin")
    ivanov = await factory.user("ivanov", extension="101")
    await users.update_user(conn, ivanov.id, "manager", "101", "Ivan Ivanov", True, devices=["SIP/150010001"])
    csrf = await login(client, "admin")
    resp = await client.post("/admin/users/new", allow_redirects=False, data={
        "csrf_token": csrf, "login": "petrov", "display_name": "Pyotr Petrov", "role": "manager",
        "extension": "105", "password": "long-enough", "devices": "sip/150010002, PJSIP/acc7001-0000003c"})
    assert resp.status == 302, await resp.text()
    petrov = await users.get_user_by_login(conn, "petrov")
    assert (petrov.devices, petrov.version) == (("PJSIP/acc7001", "SIP/150010002"), 1)
    page = await (await client.get("/admin/users")).text()
    assert '">PJSIP/acc7001\nSIP/150010002</textarea>' in page and 'name="version" value="1"' in page

    taken = await client.post(f"/admin/users/{petrov.id}/edit",
                              data=_edit_form(csrf, 1, devices="PJSIP/acc7001 SIP/150010001"))
    assert taken.status == 409
    assert "SIP/150010001 is already the device of Ivan Ivanov (ivanov)" in await taken.text()
    junk = await client.post(f"/admin/users/{petrov.id}/edit", data=_edit_form(csrf, 1, devices="Local/201@x;1"))
    assert junk.status == 422 and "Local is not one of" in await junk.text()
    assert await users.get_user(conn, petrov.id) == petrov  # refused edits changed nothing

    # Remove one device, add another: the list in the field is what the person has afterwards.
    resp = await client.post(f"/admin/users/{petrov.id}/edit", allow_redirects=False,
                             data=_edit_form(csrf, 1, devices="SIP/150010002 PJSIP/acc7002"))
    assert resp.status == 302, await resp.text()
    assert (await users.get_user(conn, petrov.id)).devices == ("PJSIP/acc7002", "SIP/150010002")
    # A second admin's form, rendered at version 1, must not undo that.
    stale = await client.post(f"/admin/users/{petrov.id}/edit", data=_edit_form(csrf, 1, devices=""))
    assert stale.status == 409 and "changed this user meanwhile" in await stale.text()
    assert (await users.get_user(conn, petrov.id)).devices == ("PJSIP/acc7002", "SIP/150010002")


async def test_api_shows_and_takes_devices_and_refuses_a_stale_version(client, factory, conn):
    await factory.user("admin", role="admin")
    await factory.user("ivanov", extension="101")
    csrf = await login(client, "admin")
    headers = csrf_headers(csrf)
    resp = await client.post("/api/users", headers=headers, json={
        "login": "petrov", "password": "long-enough", "role": "manager", "display_name": "Pyotr Petrov",
        "extension": "105", "devices": ["sip/150010002"]})
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created == {"id": created["id"], "login": "petrov", "role": "manager", "extension": "105",
                       "display_name": "Pyotr Petrov", "active": True, "version": 1, "devices": ["SIP/150010002"]}
    url = f"/api/users/{created['id']}"
    assert await (await client.get(url)).json() == created

    for body, status, field in (({"devices": "SIP/1"}, 422, "devices"), ({"devices": ["nonsense"]}, 422, "devices"),
                                ({"version": "1"}, 422, "version")):
        resp = await client.put(url, headers=headers, json=body)
        assert (resp.status, (await resp.json())["error"]["field"]) == (status, field)

    resp = await client.put(url, headers=headers, json={"version": 1, "devices": ["SIP/150010002", "PJSIP/acc7"]})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["devices"] == ["PJSIP/acc7", "SIP/150010002"]
    stale = await client.put(url, headers=headers, json={"version": 1, "devices": []})
    assert stale.status == 409
    assert "changed this user meanwhile" in (await stale.json())["error"]["message"]
    # Without `devices` an update keeps them; without `version` it is not checked.
    resp = await client.put(url, headers=headers, json={"display_name": "Pyotr I. Petrov"})
    assert await resp.json() == {**created, "display_name": "Pyotr I. Petrov", "version": 3,
                                 "devices": ["PJSIP/acc7", "SIP/150010002"]}
    listed = await (await client.get("/api/users")).json()
    assert [u["devices"] for u in listed["items"]] == [[], [], ["PJSIP/acc7", "SIP/150010002"]]


async def test_two_identical_api_updates_at_once_give_one_result(client, factory, conn):
    await factory.user("admin", role="admin")
    petrov = await factory.user("petrov", extension="105")
    csrf = await login(client, "admin")
    body = {"version": petrov.version, "role": "head", "devices": ["SIP/150010002"]}
    first, second = await asyncio.gather(
        *(client.put(f"/api/users/{petrov.id}", headers=csrf_headers(csrf), json=body) for _ in range(2)))
    assert sorted([first.status, second.status]) == [200, 409]
    now = await users.get_user(conn, petrov.id)
    assert (now.role, now.version, now.devices) == ("head", 2, ("SIP/150010002",))
