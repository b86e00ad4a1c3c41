"""The task pages: my overdue / today / upcoming tasks, the week calendar, the head's team view with overdue counts,
the create and edit forms (a stale edit says so), and nobody sees or edits a colleague's task."""

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from crm import tasks as tasks_db
from tests.conftest import csrf_headers, login


def _section(page: str, name: str) -> str:
    start = page.index(f'<section id="{name}">')
    return page[start:page.index("</section>", start)]


def _week(page: str) -> dict[str, list[str]]:
    """Each calendar column's day and the texts of its tasks, in order."""
    week = page[page.index('<div class="week">'):]
    columns = re.findall(r'data-day="([\d-]+)">(.*?)</div>', week, re.S)
    return {day: [" ".join(re.sub(r"<[^>]+>", " ", a).split()) for a in re.findall(r"<a [^>]*>(.*?)</a>", body, re.S)]
            for day, body in columns}


async def test_my_tasks_overdue_today_upcoming(client, conn, factory, settings):
    manager = await factory.user("manager1", extension="101")
    other = await factory.user("manager2", extension="102")
    zone = ZoneInfo(settings.timezone)
    now = datetime.now(UTC)
    tomorrow = datetime.combine(now.astimezone(zone).date() + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    await tasks_db.create_task(conn, manager, "Late one", now - timedelta(hours=2))
    await tasks_db.create_task(conn, manager, "Later today", now + (tomorrow - now) / 2)
    await tasks_db.create_task(conn, manager, "Next week", now + timedelta(days=8))
    await tasks_db.create_task(conn, other, "Not mine", now - timedelta(hours=1))
    await login(client, "manager1")
    page = await (await client.get("/tasks")).text()
    assert "Late one" in _section(page, "overdue") and "overdue" in _section(page, "overdue")
    assert "Later today" in _section(page, "today") and "Late one" not in _section(page, "today")
    assert "Next week" in _section(page, "upcoming")
    assert "Not mine" not in page and 'id="team"' not in page  # a manager has no team view


async def test_the_week_calendar_places_tasks_by_day_and_time(client, conn, factory, settings):
    manager = await factory.user("manager1", extension="101")
    zone = ZoneInfo(settings.timezone)
    await tasks_db.create_task(conn, manager, "Call Anna", datetime(2026, 12, 8, 10, 0, tzinfo=zone))
    await tasks_db.create_task(conn, manager, "Send the offer", datetime(2026, 12, 13, 18, 30, tzinfo=zone))
    await tasks_db.create_task(conn, manager, "Early call", datetime(2026, 12, 8, 8, 15, tzinfo=zone))
    finished = await tasks_db.create_task(conn, manager, "Visit", datetime(2026, 12, 7, 9, 0, tzinfo=zone))
    await tasks_db.complete_task(conn, manager, finished.id, datetime.now(UTC))
    await tasks_db.create_task(conn, manager, "Next Monday", datetime(2026, 12, 14, 9, 0, tzinfo=zone))
    await tasks_db.create_task(conn, manager, "Late Sunday before", datetime(2026, 12, 6, 23, 30, tzinfo=zone))
    await login(client, "manager1")
    page = await (await client.get("/tasks?week=2026-12-09")).text()  # any day of the week shows Monday to Sunday
    assert _week(page) == {
        "2026-12-07": ["9:00 AM Visit"], "2026-12-08": ["8:15 AM Early call", "10:00 AM Call Anna"],
        "2026-12-09": [], "2026-12-10": [], "2026-12-11": [], "2026-12-12": [],
        "2026-12-13": ["6:30 PM Send the offer"]}
    assert 'class="week-task done"' in page  # the done one is shown, struck through
    assert 'href="/tasks?week=2026-11-30#week"' in page and 'href="/tasks?week=2026-12-14#week"' in page
    assert "Mon 7 Dec" in page and "Sun 13 Dec" in page


async def test_the_head_sees_the_teams_overdue_counts_and_filters_by_manager(client, conn, factory):
    await factory.user("head", role="head")
    first = await factory.user("manager1", extension="101")
    second = await factory.user("manager2", extension="102")
    now = datetime.now(UTC)
    for hours in (-30, -2, 5):
        await tasks_db.create_task(conn, first, f"First {hours}", now + timedelta(hours=hours))
    await tasks_db.create_task(conn, second, "Second soon", now + timedelta(hours=1))
    closed = await tasks_db.create_task(conn, second, "Second closed", now - timedelta(hours=3))
    await tasks_db.complete_task(conn, second, closed.id, now)
    await login(client, "head")
    page = await (await client.get("/tasks")).text()
    table = page[page.index('id="team-load"'):page.index("</table>", page.index('id="team-load"'))]
    rows = re.findall(r'data-user="(\d+)"><td><a [^>]*>([^<]*)</a></td><td>(\d+)</td><td>(\d+)</td>', table)
    assert {(int(u), name, int(o), int(late)) for u, name, o, late in rows} >= {
        (first.id, "Manager1", 3, 2), (second.id, "Manager2", 1, 0)}
    assert rows[0][1] == "Manager1"  # most overdue first
    assert "First -2" in page and "Second soon" in page  # everyone's tasks, with whose they are
    only_second = await (await client.get(f"/tasks?manager={second.id}")).text()
    assert "Second soon" in only_second and "First -2" not in _section(only_second, "overdue")


async def test_create_from_a_card_with_a_reminder_and_edit_with_a_version(client, conn, factory, settings):
    manager = await factory.user("manager1", extension="101")
    other = await factory.user("manager2", extension="102")
    anna = await factory.contact("Anna Petrova", manager=manager)
    boris = await factory.contact("Boris", manager=other)
    csrf = await login(client, "manager1")
    card = await (await client.get(f"/contacts/{anna.id}")).text()
    assert f'href="/tasks?contact_id={anna.id}#new"' in card
    form = await (await client.get(f"/tasks?contact_id={anna.id}")).text()
    assert "Anna Petrova" in form and f'name="contact_id" value="{anna.id}"' in form
    assert (await client.get(f"/tasks?contact_id={boris.id}")).status == 404  # not hers to link to
    made = await client.post("/tasks", data={"csrf_token": csrf, "title": "Call about the offer",
                                             "due_at": "2030-03-05T11:00", "remind": "15", "contact_id": anna.id},
                             allow_redirects=False)
    assert made.status == 302 and made.headers["Location"].startswith("/tasks?week=2030-03-05")
    row = await conn.fetchrow("SELECT id, contact_id, due_at, remind_at, version FROM tasks WHERE title = $1",
                              "Call about the offer")
    zone = ZoneInfo(settings.timezone)
    assert (row["contact_id"], row["due_at"], row["remind_at"]) == (
        anna.id, datetime(2030, 3, 5, 11, 0, tzinfo=zone), datetime(2030, 3, 5, 10, 45, tzinfo=zone))
    edit = await (await client.get(f"/tasks/{row['id']}")).text()
    assert 'name="version" value="1"' in edit and '<option value="15" selected>' in edit
    # Someone saves first (the API, another tab); this form's save is refused and says so, showing their change.
    theirs = await client.patch(f"/api/tasks/{row['id']}", headers=csrf_headers(csrf),
                                json={"title": "Call about the new offer", "version": 1})
    assert theirs.status == 200
    stale = await client.post(f"/tasks/{row['id']}", data={
        "csrf_token": csrf, "version": "1", "title": "My old idea", "due_at": "2030-03-05T11:00", "remind": "15"})
    assert stale.status == 409
    text = await stale.text()
    assert "Someone changed this task while you were editing it" in text and "Call about the new offer" in text
    saved = await client.post(f"/tasks/{row['id']}", data={
        "csrf_token": csrf, "version": "2", "title": "Call about the new offer", "due_at": "2030-03-06T09:30:00",
        "remind": ""}, allow_redirects=False)
    assert saved.status == 302
    assert await conn.fetchval("SELECT remind_at FROM tasks WHERE id = $1", row["id"]) is None
    done = await client.post(f"/tasks/{row['id']}/done", data={"csrf_token": csrf, "next": "/tasks"},
                             allow_redirects=False)
    assert (done.status, done.headers["Location"]) == (302, "/tasks")


async def test_a_manager_cannot_see_or_edit_a_colleagues_task(client, conn, factory):
    await factory.user("manager1", extension="101")
    other = await factory.user("manager2", extension="102")
    theirs = await tasks_db.create_task(conn, other, "Secret plan", datetime.now(UTC) + timedelta(hours=1))
    csrf = await login(client, "manager1")
    assert (await client.get(f"/tasks/{theirs.id}")).status == 404
    form = {"csrf_token": csrf, "version": "1", "title": "Mine now", "due_at": "2030-01-01T10:00", "remind": ""}
    assert (await client.post(f"/tasks/{theirs.id}", data=form)).status == 404
    assert (await client.patch(f"/api/tasks/{theirs.id}", headers=csrf_headers(csrf),
                               json={"title": "Mine now"})).status == 404
    assert (await client.post(f"/tasks/{theirs.id}/done", data={"csrf_token": csrf})).status == 404
    page = await (await client.get(f"/tasks?manager={other.id}")).text()  # the filter is the head's only
    assert "Secret plan" not in page
    assert await conn.fetchval("SELECT title FROM tasks WHERE id = $1", theirs.id) == "Secret plan"
    # A manager gives tasks to themselves only.
    given = await client.post("/tasks", data={"csrf_token": csrf, "title": "x", "due_at": "2030-01-01T10:00",
                                              "remind": "0", "assignee_id": other.id})
    assert given.status == 403
