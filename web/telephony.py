"""Telephony in the web app: the service's lifetime, the demo PBX, call log pages and API."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from crm import calls as calls_db
from crm import contacts as contacts_db
from crm import errors, paging
from crm import missed as missed_db
from crm import users as users_db
from crm.calls import CallRow
from crm.demo import DEMO_COMPANIES
from crm.phones import format_phone, parse_phone
from crm.settings import PbxSettings
from cti.clicktocall import CallRequest, ClickToCall
from cti.service import QuietNotifier, TelephonyService
from cti.simulator import AmiSimulator
from web import keys
from web.api import read_json
from web.auth import current_user, require_role
from web.errors import MAX_ID, json_error
from web.paging import next_url, page_args, page_json
from web.realtime import user_room

logger = logging.getLogger(__name__)

OUTCOMES = ("answered", "missed", "abandoned", "busy", "failed", "unknown")
DEMO_CALLS_PER_SECOND = 1 / 40
# The lead may move this into web/keys.py with the other keys.
CLICK_TO_CALL = web.AppKey("click_to_call", ClickToCall)


async def telephony_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start the demo PBX (demo mode) and the telephony service; stop both at shutdown."""
    settings = app[keys.SETTINGS]
    simulator = None
    pbxes = settings.pbxes
    if settings.demo:
        secret = secrets.token_urlsafe(12)
        simulator = AmiSimulator("callboard", secret, seed=7)
        # A free loopback port, so a real PBX on 5038 is never disturbed.
        port = await simulator.start("127.0.0.1", 0)
        pbxes = (*pbxes, PbxSettings("demo", "127.0.0.1", port, "callboard", secret))
        logger.warning("DEMO MODE: built-in PBX simulator on 127.0.0.1:%d", port)
        app[keys.DEMO_SIMULATOR] = simulator
    service = TelephonyService(replace(settings, pbxes=pbxes), app[keys.POOL],
                               app.get(keys.NOTIFIER) or QuietNotifier())
    app[keys.TELEPHONY] = service
    clicks = ClickToCall(settings, service.connectors.get, _request_notifier(app))
    app[CLICK_TO_CALL] = clicks
    await service.start()
    load = None
    if simulator is not None:
        callers = [phone.lstrip("+").replace(" ", "").replace("-", "") for _, _, _, contacts, _ in DEMO_COMPANIES
                   for _, phones, _ in contacts for phone in phones if "доб" not in phone]
        load = simulator.spawn(simulator.run_load("mix", DEMO_CALLS_PER_SECOND, callers))
    try:
        yield
    finally:
        if load is not None:
            load.cancel()
        await clicks.close()
        await service.stop()
        if simulator is not None:
            await simulator.stop()


def _request_notifier(app: web.Application):
    """Each change of a click-to-call reaches the sockets of the user who clicked (any node, any tab)."""
    async def tell(request: CallRequest) -> None:
        sio = app.get(keys.SIO)
        if sio is not None:
            await sio.emit("call_request", _request_json(request), room=user_room(request.user_id))
    return tell


def _request_json(request: CallRequest) -> dict[str, Any]:
    display = format_phone(request.number) if request.number.startswith("+") else request.number
    return {**request.to_json(), "display": display}


async def click_to_call(request: web.Request) -> web.Response:
    """POST /api/calls {number, contact_id?, pbx?}: answers 202 at once with a request id; the manager's
    phone rings, then the number is dialled. Ringing, answered or failed follow as socket.io
    'call_request' events and at GET /api/calls/requests/{id}."""
    user = current_user(request)
    body = await read_json(request)
    if not isinstance(body.get("number"), str):
        raise errors.ValidationError("number", "is required")
    settings = request.app[keys.SETTINGS]
    if not user.extension:
        raise errors.ValidationError("extension", "you have no phone extension; ask an administrator")
    phone = parse_phone(body["number"], settings.phone_region)
    contact_id = body.get("contact_id")
    if contact_id is not None:
        if not isinstance(contact_id, int) or isinstance(contact_id, bool) or not 0 < contact_id <= MAX_ID:
            raise errors.ValidationError("contact_id", "must be a contact's id")
        async with request.app[keys.POOL].acquire() as conn:
            await contacts_db.get_party(conn, user, "contact", contact_id)  # 404 if not theirs
    telephony = request.app[keys.TELEPHONY]
    if not isinstance(body.get("pbx") or "", str):
        raise errors.ValidationError("pbx", "must be a PBX name")
    pbx = body.get("pbx") or telephony.default_pbx()
    if not isinstance(pbx, str) or pbx not in telephony.connectors:
        return _unavailable("no PBX is configured" if pbx is None else f"no PBX named {pbx}")
    if telephony.connectors[pbx].state.state != "connected":
        return _unavailable(f"PBX {pbx} is not connected ({telephony.connectors[pbx].state.state})")
    placed = request.app[CLICK_TO_CALL].place(user.id, pbx, user.extension, phone.e164, user.display_name)
    async with request.app[keys.POOL].acquire() as conn:
        updates = await missed_db.mark_in_progress(conn, phone.e164, user)
    notifier = request.app.get(keys.NOTIFIER)
    for update in updates if notifier is not None else ():
        await notifier.call_event(update)
    return web.json_response({**_request_json(placed), "status": "ringing your phone",
                              "status_url": f"/api/calls/requests/{placed.id}"}, status=202)


async def call_request_api(request: web.Request) -> web.Response:
    """GET /api/calls/requests/{id}: where a click-to-call stands (its owner, or head and admin)."""
    user = current_user(request)
    placed = request.app[CLICK_TO_CALL].get(request.match_info["request_id"])
    if placed is None or (placed.user_id != user.id and not user.sees_everything):
        raise errors.NotFound("call request")
    return web.json_response(_request_json(placed))


def _unavailable(message: str) -> web.Response:
    return json_error(503, message)


def call_json(call: CallRow) -> dict[str, Any]:
    return {
        "id": call.id, "pbx": call.pbx, "call_id": call.linkedid, "direction": call.direction,
        "caller": call.caller, "caller_name": call.caller_name, "callee": call.callee,
        "started_at": call.started_at.isoformat(), "answered_at": call.answered_at.isoformat()
        if call.answered_at else None, "ended_at": call.ended_at.isoformat(), "outcome": call.outcome,
        "reason": call.reason, "answered_by": call.answered_by, "agents_rang": call.agents_rang, "queue": call.queue,
        "ring_seconds": call.ring_seconds, "talk_seconds": call.talk_seconds,
        "has_recording": call.recording is not None, "transfers": call.transfers, "recovered": call.recovered,
        "user_id": call.user_id, "contact_id": call.contact_id, "contact_name": call.contact_name,
        "company_id": call.company_id, "company_name": call.company_name,
    }


def _filters(request: web.Request) -> tuple[datetime | None, datetime | None, str | None, str]:
    zone = ZoneInfo(request.app[keys.SETTINGS].timezone)
    day_text = request.query.get("day", "")
    since = until = None
    if day_text:
        try:
            day = datetime.strptime(day_text, "%Y-%m-%d").replace(tzinfo=zone)
        except ValueError:
            raise errors.ValidationError("day", "use YYYY-MM-DD") from None
        since, until = day, day + timedelta(days=1)
    outcome = request.query.get("outcome") or None
    if outcome is not None and outcome not in OUTCOMES:
        raise errors.ValidationError("outcome", f"one of {', '.join(OUTCOMES)}")
    return since, until, outcome, day_text


async def calls_page(request: web.Request) -> web.Response:
    from web.pages import render

    user = current_user(request)
    since, until, outcome, day_text = _filters(request)
    limit, after = page_args(request, 50)  # 200 rows took ~300 ms to render (issue 18)
    async with request.app[keys.POOL].acquire() as conn:
        page = paging.page(await calls_db.list_calls(conn, user, since, until, outcome, limit=limit + 1, after=after),
                           limit, calls_db.call_key)
        calls = page.items
        agents = {u.extension: "unknown" for u in await users_db.list_users(conn) if u.extension and u.active}
    telephony = request.app.get(keys.TELEPHONY)
    if telephony is not None:
        agents.update(telephony.agent_states())
    return render(request, "calls.html", calls=calls, outcome=outcome or "", day=day_text, outcomes=OUTCOMES,
                  pbx_status=telephony.pbx_status() if telephony else {}, agent_states=agents,
                  demo_pbx=keys.DEMO_SIMULATOR in request.app, extension=user.extension or "101",
                  next_url=next_url(request, page))


async def list_calls_api(request: web.Request) -> web.Response:
    user = current_user(request)
    since, until, outcome, _ = _filters(request)
    limit, after = page_args(request, 100)
    async with request.app[keys.POOL].acquire() as conn:
        page = paging.page(await calls_db.list_calls(conn, user, since, until, outcome, limit=limit + 1, after=after),
                           limit, calls_db.call_key)
    return web.json_response(page_json(request, page, [call_json(c) for c in page.items]))


async def get_call_api(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        call = await calls_db.get_call(conn, current_user(request), int(request.match_info["call_id"]))
    return web.json_response(call_json(call))


async def pbx_status_api(request: web.Request) -> web.Response:
    require_role(request, "admin", "head")
    telephony = request.app[keys.TELEPHONY]
    return web.json_response({"pbx": telephony.pbx_status(), "agents": telephony.agent_states()})


async def demo_call_api(request: web.Request) -> web.Response:
    """Demo only: make the simulator place an inbound call. Head and admin ring any extension; a
    manager trying the demo rings their own phone."""
    user = current_user(request)
    simulator = request.app.get(keys.DEMO_SIMULATOR)
    if simulator is None:
        raise web.HTTPNotFound(reason="only in demo mode")
    body = await request.json() if request.can_read_body else {}
    if not isinstance(body, dict):
        raise errors.ValidationError("body", "must be a JSON object")
    caller = str(body.get("caller") or "+7 495 123-45-67")
    extension = str(body.get("extension") or "101")
    answer_after = body.get("answer_after", 3)
    talk_seconds = body.get("talk_seconds", 20)
    e164 = parse_phone(caller, request.app[keys.SETTINGS].phone_region).e164
    if not extension.isdigit() or not 2 <= len(extension) <= 6:
        raise errors.ValidationError("extension", "must be 2-6 digits")
    if not user.sees_everything and extension != user.extension:
        raise errors.Forbidden("a manager can ring only their own extension")
    for name, value in (("answer_after", answer_after), ("talk_seconds", talk_seconds)):
        if value is not None and (not isinstance(value, (int, float)) or not 0 <= value <= 3600):
            raise errors.ValidationError(name, "must be a number of seconds (0-3600) or null")
    simulator.place_call(e164.lstrip("+"), extension, answer_after, talk_seconds or 0,
                         str(body.get("caller_name") or "")[:40])
    return web.json_response({"placed": True, "caller": e164, "extension": extension}, status=202)


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(telephony_ctx)
    app.router.add_get("/calls", calls_page)
    app.router.add_get("/api/calls", list_calls_api)
    app.router.add_get("/api/calls/{call_id:\\d+}", get_call_api)
    app.router.add_post("/api/calls", click_to_call)
    app.router.add_get("/api/calls/requests/{request_id:[0-9a-f]{16}}", call_request_api)
    app.router.add_get("/api/pbx", pbx_status_api)
    app.router.add_post("/api/demo/calls", demo_call_api)
