"""Tasks on the home page and /api/tasks: reply tasks are closed by hand, callbacks close themselves."""

from datetime import UTC, datetime, timedelta

from tests.conftest import csrf_headers, login


async def test_reply_and_callback_tasks(client, conn, factory):
    manager = await factory.user("manager1", extension="101")
    other = await factory.user("manager2", extension="102")
    due = datetime.now(UTC) - timedelta(hours=1)
    reply = await conn.fetchval("INSERT INTO tasks (kind, title, assignee_id, due_at) VALUES ('reply', "
                                "'Reply: price list', $1, $2) RETURNING id", manager.id, due)
    theirs = await conn.fetchval("INSERT INTO tasks (kind, title, assignee_id, due_at) VALUES ('reply', "
                                 "'Reply: not yours', $1, $2) RETURNING id", other.id, due)
    callback = await conn.fetchval("INSERT INTO tasks (kind, title, assignee_id, due_at) VALUES ('callback', "
                                   "'Call back', $1, $2) RETURNING id", manager.id, due)
    csrf = await login(client, "manager1")
    home = await (await client.get("/home")).text()
    assert "Reply: price list" in home and "Reply: not yours" not in home
    items = (await (await client.get("/api/tasks")).json())["items"]
    assert {(t["id"], t["overdue"]) for t in items} == {(reply, True), (callback, True)}
    assert (await client.post(f"/api/tasks/{callback}/done", headers=csrf_headers(csrf))).status == 409
    assert (await client.post(f"/api/tasks/{theirs}/done", headers=csrf_headers(csrf))).status == 404
    done = await client.post(f"/api/tasks/{reply}/done", headers=csrf_headers(csrf))
    assert (await done.json())["state"] == "done"
    assert [t["id"] for t in (await (await client.get("/api/tasks")).json())["items"]] == [callback]
