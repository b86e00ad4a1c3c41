"""The missed-call board (page, live) and /api/missed: list with filters, resolve, assign."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from markupsafe import Markup

from crm import errors, paging
from crm import missed as missed_db
from crm import users as users_db
from crm.missed import MissedRow
from crm.phones import normalise_caller
from web import keys
from web.api import read_json
from web.auth import current_user
from web.pages import render
from web.paging import next_url, page_args, page_json
from web.render import select_options

# Rows on one page of the board: each carries its forms (assign, resolve), so a page is kept short; the
# figures above it count every row (crm.missed.figures).
BOARD_ROWS = 50


def _assign_options(managers: list[users_db.User]) -> Callable[[Any], Markup]:
    """Each row's assign <select> options, built once per page (web.render.select_options)."""
    return select_options([m.id for m in managers], [m.display_name for m in managers])


def _window(request: web.Request) -> timedelta:
    return timedelta(days=request.app[keys.SETTINGS].missed_window_days)


def _filters(request: web.Request) -> tuple[int | None, str | None, str | None]:
    manager = request.query.get("manager") or None
    if manager is not None and not manager.isdigit():
        raise errors.ValidationError("manager", "must be a user id")
    line = (request.query.get("line") or "").strip() or None
    if line is not None:
        # The line as people type it (8 495 123-45-67, 4951234567): the board keeps lines in E.164.
        line = normalise_caller(line, request.app[keys.SETTINGS].phone_region) or line
    return (int(manager) if manager else None, line, request.query.get("state") or None)


def row_json(row: MissedRow, now: datetime) -> dict[str, Any]:
    return {"id": row.id, "caller": row.caller_e164, "display": row.display, "who": row.who, "line": row.line,
            "state": row.state, "tries": row.tries, "first_missed_at": row.first_missed_at.isoformat(),
            "last_missed_at": row.last_missed_at.isoformat(), "reason": row.last_reason,
            "contact_id": row.contact_id, "company_id": row.company_id, "lead_id": row.lead_id,
            "manager_id": row.manager_id, "manager_name": row.manager_name, "due_at": row.due_at.isoformat(),
            "overdue": row.overdue(now), "waiting_seconds": row.waiting_seconds(now),
            "resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
            "resolved_by": row.resolved_by_name, "resolution": row.resolution,
            "seconds_to_callback": row.seconds_to_callback}


async def list_api(request: web.Request) -> web.Response:
    user = current_user(request)
    manager, line, state = _filters(request)
    now = datetime.now(UTC)
    limit, after = page_args(request, 100)
    async with request.app[keys.POOL].acquire() as conn:
        page = paging.page(await missed_db.list_rows(conn, user, now, _window(request), manager, line, state,
                                                     limit + 1, after), limit, missed_db.row_key)
    return web.json_response(page_json(request, page, [row_json(r, now) for r in page.items]))


async def _notify(request: web.Request, update: missed_db.MissedUpdate) -> None:
    notifier = request.app.get(keys.NOTIFIER)
    if notifier is not None:
        await notifier.call_event(update)


async def resolve_api(request: web.Request) -> web.Response:
    body = await read_json(request)
    async with request.app[keys.POOL].acquire() as conn:
        update = await missed_db.resolve_by_hand(conn, current_user(request), int(request.match_info["row_id"]),
                                                 str(body.get("reason") or ""), datetime.now(UTC))
    await _notify(request, update)
    return web.json_response({"resolved": update.row_id})


async def assign_api(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body.get("manager_id"), int):
        raise errors.ValidationError("manager_id", "must be a user id")
    async with request.app[keys.POOL].acquire() as conn:
        update = await missed_db.assign_row(conn, current_user(request), int(request.match_info["row_id"]),
                                            body["manager_id"])
    await _notify(request, update)
    return web.json_response({"assigned": update.row_id, "manager_id": update.manager_id})


async def board_page(request: web.Request) -> web.Response:
    user = current_user(request)
    manager, line, state = _filters(request)
    settings = request.app[keys.SETTINGS]
    now = datetime.now(UTC)
    limit, after = page_args(request, BOARD_ROWS)
    async with request.app[keys.POOL].acquire() as conn:
        page = paging.page(await missed_db.list_rows(conn, user, now, _window(request), manager, line, state,
                                                     limit + 1, after), limit, missed_db.row_key)
        rows = page.items
        figures = await missed_db.figures(conn, user, now, _window(request), settings.timezone)
        managers = await users_db.list_assignees(conn)
    return render(request, "missed.html", rows=rows, figures=figures, now=now, managers=managers,
                  assign_options=_assign_options(managers), manager=manager, line=line or "", state=state or "",
                  states=missed_db.STATES, resolutions=missed_db.MANUAL_RESOLUTIONS,
                  window_days=settings.missed_window_days, next_url=next_url(request, page))


LIVE_ROWS_MAX = 200  # ids in one live request: the client coalesces, a burst never asks for more


def _row_ids(request: web.Request) -> list[int]:
    raw = [part for part in request.query.get("ids", "").split(",") if part]
    if not raw or len(raw) > LIVE_ROWS_MAX or not all(part.isdigit() and len(part) < 19 for part in raw):
        raise errors.ValidationError("ids", f"1 to {LIVE_ROWS_MAX} row ids, comma-separated")
    return sorted({int(part) for part in raw})


def _shown(row: MissedRow, manager: int | None, line: str | None, state: str | None, since: datetime) -> bool:
    """Would the page's list (same filters) show this row? Mirrors the list query's WHERE."""
    return ((manager is None or row.manager_id == manager) and (line is None or row.line == line)
            and (state is None or row.state == state) and (row.state != "resolved" or row.last_missed_at >= since))


async def live_rows(request: web.Request) -> web.Response:
    """The board's live delta: the figures and the changed rows the page still shows (with its filters),
    rendered with the page's own row markup; a requested row left out is gone from the page."""
    user = current_user(request)
    manager, line, state = _filters(request)
    if state is not None and state not in missed_db.STATES:
        raise errors.ValidationError("state", f"one of {', '.join(missed_db.STATES)}")
    row_ids = _row_ids(request)
    settings = request.app[keys.SETTINGS]
    now = datetime.now(UTC)
    async with request.app[keys.POOL].acquire() as conn:
        rows = await missed_db.get_rows(conn, user, row_ids)
        figures = await missed_db.figures(conn, user, now, _window(request), settings.timezone)
        managers = await users_db.list_assignees(conn) if user.sees_everything else []
    rows = [r for r in rows if _shown(r, manager, line, state, now - _window(request))]
    return render(request, "_missed_live.html", rows=rows, figures=figures, now=now, managers=managers,
                  assign_options=_assign_options(managers),
                  resolutions=missed_db.MANUAL_RESOLUTIONS, window_days=settings.missed_window_days)


async def board_action(request: web.Request) -> web.Response:
    form = await request.post()
    row_id = int(request.match_info["row_id"])
    user = current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        if request.match_info["action"] == "resolve":
            update = await missed_db.resolve_by_hand(conn, user, row_id, str(form.get("reason", "")),
                                                     datetime.now(UTC))
        else:
            manager_id = str(form.get("manager_id", ""))
            if not manager_id.isdigit():
                raise errors.ValidationError("manager_id", "choose a manager")
            update = await missed_db.assign_row(conn, user, row_id, int(manager_id))
    await _notify(request, update)
    raise web.HTTPFound("/missed")


def setup(app: web.Application) -> None:
    app.router.add_get("/missed", board_page)
    app.router.add_get("/missed/live", live_rows)
    app.router.add_post("/missed/{row_id:\\d+}/{action:resolve|assign}", board_action)
    app.router.add_get("/api/missed", list_api)
    app.router.add_post("/api/missed/{row_id:\\d+}/resolve", resolve_api)
    app.router.add_post("/api/missed/{row_id:\\d+}/assign", assign_api)
