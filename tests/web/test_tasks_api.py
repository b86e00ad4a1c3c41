"""Tasks people set: POST/PATCH /api/tasks — about what the viewer may see, assigned as roles allow, and a
stale edit (or the second of two at once) answered 409, never lost silently."""

import asyncio

from tests.conftest import csrf_headers, login


async def test_a_manager_sets_edits_and_closes_a_follow_up(client, factory):
    manager = await factory.user("manager1", extension="101")
    contact = await factory.contact("Anna", manager=manager)
    csrf = await login(client, "manager1")
    h = csrf_headers(csrf)
    resp = await client.post("/api/tasks", headers=h, json={"title": "Call Anna about the price list",
                                                            "due_at": "2026-12-01T10:00", "contact_id": contact.id})
    assert resp.status == 201, await resp.text()
    task = await resp.json()
    assert {k: task[k] for k in ("kind", "title", "assignee_id", "due_at", "state", "contact_id", "version")} == {
        # 10:00 in the company's zone (Moscow), given without a zone: 07:00 UTC.
        "kind": "follow_up", "title": "Call Anna about the price list", "assignee_id": manager.id,
        "due_at": "2026-12-01T07:00:00+00:00", "state": "open", "contact_id": contact.id, "version": 1}
    moved = await client.patch(f"/api/tasks/{task['id']}", headers=h,
                               json={"due_at": "2026-12-02T15:30:00+03:00", "note": "asked to call later",
                                     "version": 1})
    assert moved.status == 200, await moved.text()
    assert ((await moved.json())["due_at"], (await moved.json())["version"]) == ("2026-12-02T12:30:00+00:00", 2)
    stale = await client.patch(f"/api/tasks/{task['id']}", headers=h, json={"title": "Old idea", "version": 1})
    assert stale.status == 409
    done = await client.patch(f"/api/tasks/{task['id']}", headers=h, json={"state": "done"})
    assert (await done.json())["state"] == "done"
    assert task["id"] not in [t["id"] for t in (await (await client.get("/api/tasks")).json())["items"]]


async def test_roles_and_visibility(client, factory):
    await factory.user("head", role="head")
    first = await factory.user("manager1", extension="101")
    second = await factory.user("manager2", extension="102")
    theirs = await factory.contact("Boris", manager=second)
    csrf = await login(client, "manager1")
    h = csrf_headers(csrf)
    to_colleague = await client.post("/api/tasks", headers=h, json={"title": "x", "due_at": "2026-12-01T10:00",
                                                                    "assignee_id": second.id})
    assert to_colleague.status == 403
    about_theirs = await client.post("/api/tasks", headers=h, json={"title": "x", "due_at": "2026-12-01T10:00",
                                                                    "contact_id": theirs.id})
    assert about_theirs.status == 404 and "Boris" not in await about_theirs.text()
    await client.post("/logout", data={"csrf_token": csrf})
    csrf = await login(client, "head")
    given = await client.post("/api/tasks", headers=csrf_headers(csrf), json={
        "title": "Visit the plant", "due_at": "2026-12-03T09:00", "assignee_id": first.id})
    assert given.status == 201 and (await given.json())["assignee_id"] == first.id


async def test_bad_input_and_two_edits_at_once(client, factory):
    await factory.user("manager1", extension="101")
    csrf = await login(client, "manager1")
    h = csrf_headers(csrf)
    for body in ({"due_at": "2026-12-01T10:00"}, {"title": "", "due_at": "2026-12-01T10:00"},
                 {"title": "x", "due_at": "tomorrow"}, {"title": "x"}, {"title": "x" * 201, "due_at": "2026-12-01"},
                 {"title": "x", "due_at": "2026-12-01T10:00", "contact_id": "abc"},
                 {"title": "x", "due_at": "2026-12-01T10:00", "note": 5}):
        resp = await client.post("/api/tasks", headers=h, json=body)
        assert resp.status == 422, (body, resp.status, await resp.text())
    task = await (await client.post("/api/tasks", headers=h, json={"title": "x", "due_at": "2026-12-01T10:00"})).json()
    assert (await client.patch(f"/api/tasks/{task['id']}", headers=h, json={"state": "lost"})).status == 422
    assert (await client.patch("/api/tasks/999999", headers=h, json={"title": "y"})).status == 404
    both = await asyncio.gather(*(client.patch(f"/api/tasks/{task['id']}", headers=h,
                                               json={"title": title, "version": 1}) for title in ("A", "B")))
    assert sorted(r.status for r in both) == [200, 409]
