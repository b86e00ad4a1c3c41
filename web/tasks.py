"""Tasks people set: the API (/api/tasks), the "My tasks" pages (today, overdue, upcoming, a week calendar, the team
for the head) and the reminder job that pushes a reminder to the assignee at its time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from babel.dates import format_date, format_time

from crm import contacts as contacts_db
from crm import deals as deals_db
from crm import errors, paging
from crm import leads as leads_db
from crm import tasks as tasks_db
from crm import users as users_db
from crm.settings import Settings
from crm.users import User
from web import keys
from web.api import read_json
from web.auth import current_user
from web.deals import int_field, path_id
from web.i18n import N_, request_reader
from web.jobs import background_task
from web.paging import page_args, page_json
from web.render import render

logger = logging.getLogger(__name__)

LINKS = ("contact_id", "company_id", "deal_id", "lead_id")
# The page's reminder choices, minutes before the due time ("" = no reminder).
REMIND_CHOICES = (("", N_("No reminder")), ("0", N_("At the due time")), ("5", N_("5 minutes before")),
                  ("15", N_("15 minutes before")), ("30", N_("30 minutes before")), ("60", N_("1 hour before")),
                  ("1440", N_("1 day before")))
# The job sleeps until the next reminder, but never longer than this: a reminder set on another node (which
# cannot wake this one) still goes out within it if that node died.
REMINDER_CAP_SECONDS = 30.0
REMINDER_BATCH = 100


def _now() -> datetime:
    return datetime.now(UTC)


def _team(user: User) -> bool:
    """The head and admin see the team's tasks and give tasks to anyone."""
    return user.role in ("head", "admin")


# ------------------------------------------------------------------ the API

def task_json(t: tasks_db.Task, now: datetime) -> dict[str, Any]:
    return {"id": t.id, "kind": t.kind, "title": t.title, "assignee_id": t.assignee_id,
            "assignee_name": t.assignee_name, "due_at": t.due_at.isoformat(), "overdue": t.overdue(now),
            "state": t.state, "note": t.note, "deal_id": t.deal_id, "contact_id": t.contact_id,
            "company_id": t.company_id, "lead_id": t.lead_id, "missed_caller_id": t.missed_caller_id,
            "remind_at": t.remind_at.isoformat() if t.remind_at else None, "version": t.version}


def _moment(value: object, settings: Settings, field: str) -> datetime:
    """ISO 8601; a time without a zone is the company's."""
    if not isinstance(value, str):
        raise errors.ValidationError(field, "a date and time like 2026-12-01T10:00")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise errors.ValidationError(field, "a date and time like 2026-12-01T10:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(settings.timezone))


def _remind_at(body: Mapping[str, Any], settings: Settings, due: datetime | None) -> datetime | None:
    """remind_at: a moment, or null for no reminder; left out on create, the reminder is at the due time."""
    value = body.get("remind_at", due.isoformat() if due is not None else None)
    return None if value is None else _moment(value, settings, "remind_at")


async def _check_links(conn, user: User, links: dict[str, int | None]) -> None:
    """What the task is about must be the viewer's to see (NotFound otherwise, naming nothing)."""
    if links["contact_id"]:
        await contacts_db.get_party(conn, user, "contact", links["contact_id"])
    if links["company_id"]:
        await contacts_db.get_party(conn, user, "company", links["company_id"])
    if links["deal_id"]:
        await deals_db.get_deal(conn, user, links["deal_id"])
    if links["lead_id"]:
        await leads_db.get_lead(conn, user, links["lead_id"])


async def _create(request: web.Request, body: Mapping[str, Any], due: datetime,
                  remind_at: datetime | None) -> tasks_db.Task:
    user = current_user(request)
    links = {name: int_field(dict(body), name) for name in LINKS}
    async with request.app[keys.POOL].acquire() as conn:
        await _check_links(conn, user, links)
        task = await tasks_db.create_task(conn, user, body.get("title"), due, assignee_id=body.get("assignee_id"),
                                          note=body.get("note", ""), remind_at=remind_at, **links)
    request.app[keys.REMINDERS].wake(task.remind_at)
    return task


async def _update(request: web.Request, changes: dict[str, Any], version: int | None) -> tasks_db.Task:
    async with request.app[keys.POOL].acquire() as conn:
        task = await tasks_db.update_task(conn, current_user(request), path_id(request, "task_id"), changes, _now(),
                                          version)
    request.app[keys.REMINDERS].wake(task.remind_at)
    return task


async def tasks_api(request: web.Request) -> web.Response:
    limit, after = page_args(request, 100)
    async with request.app[keys.POOL].acquire() as conn:
        page = paging.page(await tasks_db.list_open_tasks(conn, current_user(request), limit + 1, after), limit,
                           tasks_db.task_key)
    now = _now()
    return web.json_response(page_json(request, page, [task_json(t, now) for t in page.items]))


async def create_task_api(request: web.Request) -> web.Response:
    """POST /api/tasks {title, due_at, remind_at?, assignee_id?, note?, contact_id? | company_id? | deal_id? |
    lead_id?}."""
    body = await read_json(request)
    settings = request.app[keys.SETTINGS]
    due = _moment(body.get("due_at"), settings, "due_at")
    task = await _create(request, body, due, _remind_at(body, settings, due))
    return web.json_response(task_json(task, _now()), status=201)


async def update_task_api(request: web.Request) -> web.Response:
    """PATCH /api/tasks/{id} {title?, due_at?, remind_at?, assignee_id?, note?, state?, version?}: a stale version
    is 409."""
    body = await read_json(request)
    settings = request.app[keys.SETTINGS]
    changes = {k: body[k] for k in ("title", "assignee_id", "note", "state") if k in body}
    if "due_at" in body:
        changes["due_at"] = _moment(body["due_at"], settings, "due_at")
    if "remind_at" in body:
        changes["remind_at"] = _remind_at(body, settings, None)
    task = await _update(request, changes, int_field(body, "version"))
    return web.json_response(task_json(task, _now()))


async def task_done(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        task = await tasks_db.complete_task(conn, current_user(request), path_id(request, "task_id"), _now())
    if request.path.startswith("/api/"):
        return web.json_response({"id": task.id, "state": task.state})
    back = str((await request.post()).get("next", ""))
    raise web.HTTPFound(back if back.startswith("/tasks") else "/home")


async def reminders_api(request: web.Request) -> web.Response:
    """GET /api/tasks/reminders: my reminders sent lately for tasks still open (a page opened after the push, or
    a browser that was offline at the time, shows them; the browser remembers which it showed)."""
    async with request.app[keys.POOL].acquire() as conn:
        sent = await tasks_db.recent_reminders(conn, current_user(request), _now())
    return web.json_response({"items": [reminder_json(r) for r in sent]})


def reminder_json(r: tasks_db.Reminder) -> dict[str, Any]:
    """The small socket.io event (and the catch-up list): the browser shows it as text."""
    return {"task_id": r.id, "title": r.title, "kind": r.kind, "due_at": r.due_at.isoformat(),
            "remind_at": r.remind_at.isoformat(), "url": f"/tasks/{r.id}"}


# ------------------------------------------------------------------ the reminder job

class ReminderJob:
    """Sends each reminder once, at its time: sleeps until the next one (capped), woken early in this process when a
    task gets an earlier reminder. Reminders due while no node ran are sent at start."""

    def __init__(self, cap: float = REMINDER_CAP_SECONDS) -> None:
        self.cap = cap
        self.wakeup = asyncio.Event()
        self.planned: datetime | None = None  # when the job means to look next

    def wake(self, remind_at: datetime | None) -> None:
        if remind_at is not None and (self.planned is None or remind_at < self.planned):
            self.wakeup.set()

    async def run(self, app: web.Application) -> None:
        while True:
            self.wakeup.clear()  # before looking: a wake() from now on is not lost
            try:
                sent = await send_due_reminders(app)
                if sent:
                    logger.info("%d task reminder(s) sent", sent)
                async with app[keys.POOL].acquire() as conn:
                    upcoming = await tasks_db.next_reminder_at(conn)
            except Exception:
                logger.exception("task reminders failed; trying again later")
                upcoming = None
            now = _now()
            delay = self.cap if upcoming is None else min(self.cap, (upcoming - now).total_seconds())
            # One still locked by another node is due already: look again soon, not in a busy loop.
            delay = max(delay, 0.05)
            self.planned = now + timedelta(seconds=delay)
            try:
                async with asyncio.timeout(delay):  # not wait_for: it can drop a stop's cancellation on 3.11
                    await self.wakeup.wait()
            except TimeoutError:
                pass


async def send_due_reminders(app: web.Application) -> int:
    """Claims due reminders (SKIP LOCKED: one node sends each), pushes them and commits, batch after batch.
    The push happens before the commit: if the commit fails, the reminder is sent again later rather than never."""
    notifier = app[keys.NOTIFIER]
    sent = 0
    while True:
        async with app[keys.POOL].acquire() as conn, conn.transaction():
            due = await tasks_db.claim_due_reminders(conn, _now(), REMINDER_BATCH)
            for reminder in due:
                await notifier.call_event(reminder)
        sent += len(due)
        if len(due) < REMINDER_BATCH:
            return sent


# ------------------------------------------------------------------ the pages

@dataclass(frozen=True, slots=True)
class Day:
    """One column of the week calendar."""

    day: date
    label: str
    today: bool
    tasks: list[tuple[str, tasks_db.Task]]  # (local time, task)


def _week_start(value: str | None, today: date) -> date:
    try:
        chosen = date.fromisoformat(value) if value else today
    except ValueError:
        chosen = today
    return chosen - timedelta(days=chosen.weekday())


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone)


def _prefill(query: Mapping[str, str]) -> dict[str, int]:
    """The "New task" link of a card: ?contact_id=… (or company, deal, lead)."""
    found = {}
    for name in LINKS:
        value = query.get(name, "")
        if value.isdigit() and 0 < int(value) < 2**63:
            found[name] = int(value)
    return found


async def _about_name(conn, user: User, links: dict[str, int]) -> str | None:
    """The name of what a new task will be about; NotFound for what the viewer may not see."""
    if "contact_id" in links:
        return (await contacts_db.get_party(conn, user, "contact", links["contact_id"])).name
    if "company_id" in links:
        return (await contacts_db.get_party(conn, user, "company", links["company_id"])).name
    if "deal_id" in links:
        return (await deals_db.get_deal(conn, user, links["deal_id"])).title
    if "lead_id" in links:
        return (await leads_db.get_lead(conn, user, links["lead_id"])).title
    return None


async def _assignees(conn, user: User) -> list[User]:
    return [u for u in await users_db.list_users(conn) if u.active] if _team(user) else []


async def tasks_page(request: web.Request) -> web.Response:
    """My tasks: overdue, today, upcoming, and a week calendar; the head sees the team (a filter, overdue counts)."""
    user = current_user(request)
    settings = request.app[keys.SETTINGS]
    zone = ZoneInfo(settings.timezone)
    reader = request_reader(request)
    now = _now()
    today = now.astimezone(zone).date()
    monday = _week_start(request.query.get("week"), today)
    manager = request.query.get("manager", "")
    if not _team(user):
        assignee: int | None = user.id
    else:
        assignee = int(manager) if manager.isdigit() and int(manager) < 2**63 else None
    links = _prefill(request.query)
    week = (_local_midnight(monday, zone), _local_midnight(monday + timedelta(days=7), zone))
    async with request.app[keys.POOL].acquire() as conn:
        about = await _about_name(conn, user, links)
        open_tasks = await tasks_db.list_tasks(conn, user, assignee_id=assignee)
        in_week = await tasks_db.list_tasks(conn, user, assignee_id=assignee, due=week, states=("open", "done"))
        team = await tasks_db.team_load(conn, now) if _team(user) else []
        people = await _assignees(conn, user)
    tomorrow = _local_midnight(today + timedelta(days=1), zone)
    sections = [
        ("overdue", N_("Overdue"), [t for t in open_tasks if t.due_at < now]),
        ("today", N_("Today"), [t for t in open_tasks if now <= t.due_at < tomorrow]),
        ("upcoming", N_("Upcoming"), [t for t in open_tasks if t.due_at >= tomorrow]),
    ]
    days = []
    for offset in range(7):
        day = monday + timedelta(days=offset)
        shown = [(format_time(t.due_at.astimezone(zone), "short", locale=reader.locale), t)
                 for t in in_week if t.due_at.astimezone(zone).date() == day]
        days.append(Day(day, format_date(day, "EEE d MMM", locale=reader.locale), day == today, shown))
    default_due = (now.astimezone(zone) + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    return render(request, "tasks.html", now=now, sections=sections, days=days, team=team, people=people,
                  manager=str(assignee or "") if _team(user) else "", links=links, about=about,
                  week_label=f"{reader.moment(monday, 'date')} – {reader.moment(monday + timedelta(days=6), 'date')}",
                  prev_week=(monday - timedelta(days=7)).isoformat(),
                  next_week=(monday + timedelta(days=7)).isoformat(),
                  this_week=monday.isoformat(), default_due=default_due.strftime("%Y-%m-%dT%H:%M"),
                  remind_choices=REMIND_CHOICES, zone=zone, is_team=_team(user))


def _form_due(form: Mapping[str, Any], settings: Settings) -> tuple[datetime, datetime | None]:
    """The page's due time (datetime-local, the company's zone) and its reminder choice (minutes before)."""
    due = _moment(str(form.get("due_at", "")), settings, "due_at")
    choice = str(form.get("remind", ""))
    if choice == "":
        return due, None
    if not choice.isdigit() or int(choice) > 7 * 24 * 60:
        raise errors.ValidationError("remind", "minutes before the due time")
    return due, due - timedelta(minutes=int(choice))


async def new_task_form(request: web.Request) -> web.Response:
    form = await request.post()
    due, remind_at = _form_due(form, request.app[keys.SETTINGS])
    body: dict[str, Any] = {k: form.get(k) for k in ("title", "note", *LINKS)}
    body["assignee_id"] = int_field(dict(form), "assignee_id")
    task = await _create(request, body, due, remind_at)
    local = task.due_at.astimezone(ZoneInfo(request.app[keys.SETTINGS].timezone)).date()
    raise web.HTTPFound(f"/tasks?week={local.isoformat()}#task-{task.id}")


async def task_page(request: web.Request, error: str | None = None, http_status: int = 200) -> web.Response:
    """One task to edit (with its version: a save over someone's newer change is refused and says so)."""
    user = current_user(request)
    settings = request.app[keys.SETTINGS]
    zone = ZoneInfo(settings.timezone)
    async with request.app[keys.POOL].acquire() as conn:
        task = await tasks_db.get_task_about(conn, user, path_id(request, "task_id"))
        people = await _assignees(conn, user)
    minutes = None if task.remind_at is None else int((task.due_at - task.remind_at).total_seconds() // 60)
    chosen = "" if minutes is None else str(minutes)
    keep = None
    if chosen not in dict(REMIND_CHOICES):
        keep = request_reader(request).moment(task.remind_at)
        chosen = "keep"
    return render(request, "task.html", http_status=http_status, task=task, people=people, error=error,
                  due_value=task.due_at.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S"), remind_choices=REMIND_CHOICES,
                  chosen=chosen, keep=keep, now=_now(), is_team=_team(user))


async def edit_task_form(request: web.Request) -> web.Response:
    form = await request.post()
    settings = request.app[keys.SETTINGS]
    due, remind_at = _form_due(form, settings)
    changes: dict[str, Any] = {"note": form.get("note", ""), "due_at": due}
    # A title the server wrote is shown in the reader's language; left as shown, the stored sentence stays.
    if form.get("title") != form.get("shown_title"):
        changes["title"] = form.get("title")
    if form.get("remind") != "keep":
        changes["remind_at"] = remind_at
    if form.get("assignee_id"):
        changes["assignee_id"] = int_field(dict(form), "assignee_id")
    try:
        task = await _update(request, changes, int_field(dict(form), "version"))
    except errors.Conflict:
        message = N_("Someone changed this task while you were editing it. Here is the task as it is now: make your "
                     "change again.")
        return await task_page(request, error=request_reader(request).gettext(message), http_status=409)
    raise web.HTTPFound(f"/tasks?week={task.due_at.astimezone(ZoneInfo(settings.timezone)).date().isoformat()}")


def setup(app: web.Application) -> None:
    job = app[keys.REMINDERS] = ReminderJob()
    app.cleanup_ctx.append(background_task("task-reminders", job.run))
    r = app.router
    r.add_get("/tasks", tasks_page)
    r.add_post("/tasks", new_task_form)
    r.add_get("/tasks/{task_id:\\d+}", task_page)
    r.add_post("/tasks/{task_id:\\d+}", edit_task_form)
    r.add_post("/tasks/{task_id:\\d+}/done", task_done)
    r.add_get("/api/tasks", tasks_api)
    r.add_post("/api/tasks", create_task_api)
    r.add_get("/api/tasks/reminders", reminders_api)
    r.add_patch("/api/tasks/{task_id:\\d+}", update_task_api)
    r.add_post("/api/tasks/{task_id:\\d+}/done", task_done)
