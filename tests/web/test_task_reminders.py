"""Task reminders pushed live at their time: exactly once, to the assignee only, with several nodes racing, after a
restart, re-armed by an edit that moves them, never for a task already done."""

import asyncio
import time
from datetime import UTC, datetime, timedelta

from crm import tasks as tasks_db
from tests.conftest import csrf_headers, login
from tests.web.live import SocketUser, session_cookie
from web.app import create_app
from web.keys import REMINDERS


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


async def _socket(base_url: str, login_name: str) -> SocketUser:
    user = SocketUser()
    await user.connect(base_url, await session_cookie(base_url, login_name))
    return user


async def test_a_reminder_reaches_its_assignee_once_at_its_time(client, factory, conn):
    await factory.user("manager1", extension="101")
    await factory.user("manager2", extension="102")
    base_url = str(client.make_url("")).rstrip("/")
    mine, theirs = await _socket(base_url, "manager1"), await _socket(base_url, "manager2")
    try:
        h = csrf_headers(await login(client, "manager1"))
        due = datetime.now(UTC) + timedelta(seconds=1.5)
        resp = await client.post("/api/tasks", headers=h, json={"title": "Call Anna back", "due_at": _iso(due)})
        assert resp.status == 201, await resp.text()
        task = await resp.json()
        assert task["remind_at"] == task["due_at"]  # no remind_at given: reminded at the due time
        reminder = await mine.wait_for("reminder", timeout=6)
        arrived = datetime.now(UTC)
        # At its time, not before, and not at the job's 30 s cap: the create woke the job.
        assert due - timedelta(milliseconds=50) <= arrived < due + timedelta(seconds=1.5)
        assert {k: reminder[k] for k in ("task_id", "title", "kind", "url")} == {
            "task_id": task["id"], "title": "Call Anna back", "kind": "follow_up", "url": f"/tasks/{task['id']}"}
        await asyncio.sleep(1.0)
        assert len(mine.events("reminder")) == 1 and theirs.events("reminder") == []
        assert await conn.fetchval("SELECT reminded_at IS NOT NULL FROM tasks WHERE id = $1", task["id"])
        # A page opened later shows it too (the browser remembers what it showed).
        recent = (await (await client.get("/api/tasks/reminders")).json())["items"]
        assert [r["task_id"] for r in recent] == [task["id"]]
    finally:
        await mine.close()
        await theirs.close()


async def test_two_nodes_racing_send_each_reminder_once(settings, pool, conn, factory, aiohttp_server):
    manager = await factory.user("manager1", extension="101")
    nodes = [await aiohttp_server(create_app(settings, pool)) for _ in range(2)]
    urls = [str(node.make_url("")).rstrip("/") for node in nodes]
    sockets = [await _socket(url, "manager1") for url in urls]  # the same person, one tab on each node
    try:
        past = datetime.now(UTC) - timedelta(seconds=1)
        ids = [(await tasks_db.create_task(conn, manager, f"Task {n}", past, remind_at=past)).id for n in range(30)]
        for node in nodes:
            node.app[REMINDERS].wake(past)
        deadline = time.monotonic() + 8
        while sum(len(s.events("reminder")) for s in sockets) < len(ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        got = [r["task_id"] for s in sockets for r in s.events("reminder")]
        assert sorted(got) == sorted(ids)  # every one, none twice
    finally:
        for s in sockets:
            await s.close()


async def test_two_claims_at_once_take_disjoint_reminders(pool, conn, factory):
    manager = await factory.user("manager1", extension="101")
    past = datetime.now(UTC) - timedelta(minutes=1)
    ids = {(await tasks_db.create_task(conn, manager, f"Task {n}", past, remind_at=past)).id for n in range(10)}
    release = asyncio.Event()

    async def claim() -> list[int]:
        async with pool.acquire() as other, other.transaction():
            got = [r.id for r in await tasks_db.claim_due_reminders(other, datetime.now(UTC), 6)]
            await release.wait()  # both hold their claims at the same time
            return got

    first, second = asyncio.create_task(claim()), asyncio.create_task(claim())
    await asyncio.sleep(0.3)
    release.set()
    a, b = await first, await second
    assert not set(a) & set(b) and set(a) | set(b) == ids
    assert await tasks_db.claim_due_reminders(conn, datetime.now(UTC)) == []


async def test_a_reminder_due_while_the_server_was_down_is_sent_at_start(settings, pool, conn, factory,
                                                                          aiohttp_server, aiohttp_client):
    manager = await factory.user("manager1", extension="101")
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    task = await tasks_db.create_task(conn, manager, "Send the contract", long_ago + timedelta(minutes=1),
                                      remind_at=long_ago)
    later = await tasks_db.create_task(conn, manager, "Not yet", datetime.now(UTC) + timedelta(hours=1))
    client = await aiohttp_client(create_app(settings, pool))
    for _ in range(100):
        if await conn.fetchval("SELECT reminded_at FROM tasks WHERE id = $1", task.id):
            break
        await asyncio.sleep(0.05)
    await login(client, "manager1")
    recent = (await (await client.get("/api/tasks/reminders")).json())["items"]
    assert [r["task_id"] for r in recent] == [task.id]
    assert await conn.fetchval("SELECT reminded_at FROM tasks WHERE id = $1", later.id) is None


async def test_an_edit_that_moves_the_reminder_arms_it_again(client, factory):
    await factory.user("manager1", extension="101")
    base_url = str(client.make_url("")).rstrip("/")
    mine = await _socket(base_url, "manager1")
    try:
        h = csrf_headers(await login(client, "manager1"))
        now = datetime.now(UTC)
        task = await (await client.post("/api/tasks", headers=h, json={
            "title": "Ask for the payment", "due_at": _iso(now + timedelta(hours=1)),
            "remind_at": _iso(now)})).json()
        await mine.wait_for("reminder", timeout=6)
        moved = await client.patch(f"/api/tasks/{task['id']}", headers=h, json={
            "remind_at": _iso(datetime.now(UTC) + timedelta(seconds=1)), "version": task["version"]})
        assert moved.status == 200, await moved.text()
        deadline = time.monotonic() + 6
        while len(mine.events("reminder")) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert [r["task_id"] for r in mine.events("reminder")] == [task["id"], task["id"]]
        # Moving the due time moves the reminder with it (it stays "an hour before").
        edited = await (await client.patch(f"/api/tasks/{task['id']}", headers=h, json={
            "due_at": "2030-01-10T12:00:00+00:00", "remind_at": "2030-01-10T11:00:00+00:00"})).json()
        shifted = await (await client.patch(f"/api/tasks/{task['id']}", headers=h, json={
            "due_at": "2030-01-11T15:00:00+00:00", "version": edited["version"]})).json()
        assert shifted["remind_at"] == "2030-01-11T14:00:00+00:00"
        cleared = await (await client.patch(f"/api/tasks/{task['id']}", headers=h, json={"remind_at": None})).json()
        assert cleared["remind_at"] is None
        bad = await client.patch(f"/api/tasks/{task['id']}", headers=h, json={"remind_at": "soon"})
        assert bad.status == 422 and (await bad.json())["error"]["field"] == "remind_at"
    finally:
        await mine.close()


async def test_a_task_done_before_its_reminder_is_not_reminded(client, factory, conn):
    await factory.user("manager1", extension="101")
    base_url = str(client.make_url("")).rstrip("/")
    mine = await _socket(base_url, "manager1")
    try:
        h = csrf_headers(await login(client, "manager1"))
        due = datetime.now(UTC) + timedelta(seconds=1)
        done = await (await client.post("/api/tasks", headers=h, json={"title": "Done early",
                                                                       "due_at": _iso(due)})).json()
        kept = await (await client.post("/api/tasks", headers=h, json={"title": "Still open",
                                                                       "due_at": _iso(due)})).json()
        assert (await client.post(f"/api/tasks/{done['id']}/done", headers=h)).status == 200
        await mine.wait_for("reminder", timeout=6)
        await asyncio.sleep(0.5)
        assert [r["task_id"] for r in mine.events("reminder")] == [kept["id"]]
        assert await conn.fetchval("SELECT reminded_at FROM tasks WHERE id = $1", done["id"]) is None
    finally:
        await mine.close()


async def test_openapi_documents_remind_at(client):
    paths = (await (await client.get("/api/openapi.json")).json())["paths"]
    for path, method in (("/api/tasks", "post"), ("/api/tasks/{id}", "patch")):
        operation = paths[path][method]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert "remind_at" in operation["summary"] and schema["properties"]["remind_at"]["format"] == "date-time"
    assert paths["/api/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "title", "due_at"]
    assert "/api/tasks/reminders" in paths
