"""Lead distribution in pages and /api: the head's rules page (/leads/rules), /api/lead-rules, the alert limits,
and the job that tells the heads about leads left waiting."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from crm import errors
from crm import leadrules as rules_db
from crm import users as users_db
from crm.leadrules import LeadRule, LeadsWaiting, WaitingLead
from web import keys
from web.auth import require_role
from web.errors import path_id
from web.jobs import periodic_job
from web.render import render

WAITING_CHECK_SECONDS = 60
HEADS = ("head", "admin")


def rule_json(rule: LeadRule) -> dict[str, Any]:
    return {"id": rule.id, "position": rule.position, "name": rule.name, "channel": rule.channel,
            "line": rule.line, "prefixes": rule.prefixes, "action": rule.action, "manager_ids": rule.manager_ids,
            "last_manager_id": rule.last_manager_id, "active": rule.active}


def waiting_json(lead: WaitingLead, now: datetime) -> dict[str, Any]:
    return {"lead_id": lead.lead_id, "title": lead.title, "why": lead.why, "manager_id": lead.manager_id,
            "manager_name": lead.manager_name, "since": lead.since.isoformat(), "minutes": lead.minutes(now)}


async def read_json(request: web.Request) -> dict[str, Any]:
    """As web.api.read_json (web.api imports this module for its OpenAPI paths, so not from there)."""
    body = await request.json()
    if not isinstance(body, dict):
        raise errors.ValidationError("body", "must be a JSON object")
    return body


def _form_rule(form: Any) -> dict[str, Any]:
    """The rule form's fields as the API's body: managers are checkboxes (assign takes the one chosen)."""
    ids = [int(v) for v in form.getall("manager_ids", []) if str(v).isdigit()]
    return {"name": form.get("name", ""), "channel": form.get("channel") or None, "line": form.get("line", ""),
            "prefixes": form.get("prefixes", ""), "action": form.get("action"), "manager_ids": ids,
            "active": form.get("active") == "on"}


# ------------------------------------------------------------------ pages

async def rules_page(request: web.Request) -> web.Response:
    require_role(request, *HEADS)
    async with request.app[keys.POOL].acquire() as conn:
        rules = await rules_db.list_rules(conn)
        limits = await rules_db.get_limits(conn)
        managers = await users_db.list_assignees(conn)
    names = {u.id: u.display_name for u in managers}
    return render(request, "lead_rules.html", rules=rules, limits=limits, managers=managers, names=names,
                  channels=rules_db.CHANNELS)


async def rules_form(request: web.Request) -> web.Response:
    """Every form of the rules page: new, save, delete, up, down, limits; back to the page."""
    user = require_role(request, *HEADS)
    form = await request.post()
    action = request.match_info.get("action", "new")
    async with request.app[keys.POOL].acquire() as conn:
        if action == "limits":
            await rules_db.set_limits(conn, user, form.get("unassigned_minutes", ""), form.get("untouched_minutes", ""))
        elif action == "new":
            await rules_db.create_rule(conn, user, _form_rule(form))
        else:
            rule_id = path_id(request, "rule_id")
            if action == "save":
                await rules_db.update_rule(conn, user, rule_id, _form_rule(form))
            elif action == "delete":
                await rules_db.delete_rule(conn, user, rule_id)
            else:
                await rules_db.move_rule(conn, user, rule_id, up=action == "up")
    raise web.HTTPFound("/leads/rules")


# ------------------------------------------------------------------ API

async def list_api(request: web.Request) -> web.Response:
    require_role(request, *HEADS)
    async with request.app[keys.POOL].acquire() as conn:
        rules = await rules_db.list_rules(conn)
        limits = await rules_db.get_limits(conn)
    return web.json_response({"items": [rule_json(r) for r in rules],
                              "limits": {"unassigned_minutes": limits.unassigned_minutes,
                                         "untouched_minutes": limits.untouched_minutes}})


async def create_api(request: web.Request) -> web.Response:
    user = require_role(request, *HEADS)
    body = await read_json(request)
    async with request.app[keys.POOL].acquire() as conn:
        rule = await rules_db.create_rule(conn, user, body)
    return web.json_response(rule_json(rule), status=201)


async def update_api(request: web.Request) -> web.Response:
    user = require_role(request, *HEADS)
    body = await read_json(request)
    async with request.app[keys.POOL].acquire() as conn:
        rule = await rules_db.update_rule(conn, user, path_id(request, "rule_id"), body)
    return web.json_response(rule_json(rule))


async def delete_api(request: web.Request) -> web.Response:
    user = require_role(request, *HEADS)
    async with request.app[keys.POOL].acquire() as conn:
        await rules_db.delete_rule(conn, user, path_id(request, "rule_id"))
    return web.Response(status=204)


async def move_api(request: web.Request) -> web.Response:
    user = require_role(request, *HEADS)
    body = await read_json(request)
    async with request.app[keys.POOL].acquire() as conn:
        rules = await rules_db.move_rule(conn, user, path_id(request, "rule_id"), up=bool(body.get("up")))
    return web.json_response({"items": [rule_json(r) for r in rules]})


async def limits_api(request: web.Request) -> web.Response:
    user = require_role(request, *HEADS)
    body = await read_json(request)
    async with request.app[keys.POOL].acquire() as conn:
        limits = await rules_db.set_limits(conn, user, body.get("unassigned_minutes"), body.get("untouched_minutes"))
    return web.json_response({"unassigned_minutes": limits.unassigned_minutes,
                              "untouched_minutes": limits.untouched_minutes})


async def waiting_api(request: web.Request) -> web.Response:
    require_role(request, *HEADS)
    now = datetime.now(UTC)
    async with request.app[keys.POOL].acquire() as conn:
        waiting = await rules_db.list_waiting_leads(conn, now, limit=200)
    return web.json_response({"items": [waiting_json(w, now) for w in waiting]})


# ------------------------------------------------------------------ the periodic job

async def alert_waiting_leads(app: web.Application) -> list[WaitingLead]:
    """Leads newly past the limits: stored for the heads (once each) and told to them live."""
    now = datetime.now(UTC)
    async with app[keys.POOL].acquire() as conn:
        found = await rules_db.flag_waiting_leads(conn, now)
    notifier = app.get(keys.NOTIFIER)
    if found and notifier is not None:
        await notifier.call_event(LeadsWaiting([(rules_db.alert_text(w, now), w.lead_id) for w in found]))
    return found


def openapi_paths(error: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI of /api/lead-rules and /api/leads/waiting (head and admin)."""
    by_id = [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}]
    body = {"content": {"application/json": {"schema": {"type": "object"}}}}
    ok = {"200": {"description": "ok"}}
    rule = ("{name?, channel?: phone|email|web_form|chat|manual (empty: any), line? (DID, mailbox, form:<key>), "
            "prefixes?: [\"+7495\", …], action: assign|round_robin, manager_ids: [id, …], active?}")
    return {
        "/api/lead-rules": {
            "get": {"summary": "Lead distribution rules in the order they are tried, and the alert limits",
                    "responses": {**ok, "403": error}},
            "post": {"summary": f"A rule, tried after the others: {rule}. Managers on duty (active and logged in) "
                                "get the leads; round robin takes turns",
                     "requestBody": body, "responses": {"201": {"description": "created"}, "403": error,
                                                        "422": error}}},
        "/api/lead-rules/{id}": {
            "parameters": by_id,
            "put": {"summary": f"Change a rule: {rule}", "requestBody": body,
                    "responses": {**ok, "403": error, "404": error, "422": error}},
            "delete": {"summary": "Remove a rule", "responses": {"204": {"description": "removed"}, "403": error,
                                                                  "404": error}}},
        "/api/lead-rules/{id}/move": {"parameters": by_id, "post": {
            "summary": "One place earlier {up: true} or later {up: false}", "requestBody": body,
            "responses": {**ok, "403": error, "404": error}}},
        "/api/lead-rules/limits": {"put": {
            "summary": "Alert the head about leads unassigned for {unassigned_minutes} or untouched (still new: no "
                       "call, mail, task or edit) for {untouched_minutes}; 0 never",
            "requestBody": body, "responses": {**ok, "403": error, "422": error}}},
        "/api/leads/waiting": {"get": {"summary": "Open leads past the limits now, longest waiting first",
                                       "responses": {**ok, "403": error}}},
    }


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(periodic_job("waiting-leads", WAITING_CHECK_SECONDS, alert_waiting_leads,
                                        "%d lead(s) newly waiting too long"))
    r = app.router
    r.add_get("/leads/rules", rules_page)
    r.add_post("/leads/rules", rules_form)
    r.add_post("/leads/rules/{action:limits}", rules_form)
    r.add_post("/leads/rules/{rule_id:\\d+}/{action:save|delete|up|down}", rules_form)
    r.add_get("/api/lead-rules", list_api)
    r.add_post("/api/lead-rules", create_api)
    r.add_put("/api/lead-rules/limits", limits_api)
    r.add_put("/api/lead-rules/{rule_id:\\d+}", update_api)
    r.add_delete("/api/lead-rules/{rule_id:\\d+}", delete_api)
    r.add_post("/api/lead-rules/{rule_id:\\d+}/move", move_api)
    r.add_get("/api/leads/waiting", waiting_api)
