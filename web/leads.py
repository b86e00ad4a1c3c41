"""Leads inbox and lead card (pages) and /api/leads: list, detail, assign, status, convert, junk."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from crm import calls as calls_db
from crm import deals as deals_db
from crm import errors, paging
from crm import leads as leads_db
from crm import users as users_db
from crm.leads import Lead, NewLead
from crm.phones import parse_phone
from web import keys
from web.api import read_json
from web.auth import current_user
from web.deals import int_field, path_id, text_field
from web.errors import error_body
from web.pages import render
from web.paging import next_url, page_args, page_json
from web.timeline import timeline_context


def lead_json(lead: Lead) -> dict[str, Any]:
    return {"id": lead.id, "status": lead.status, "source": lead.source, "phone": lead.phone_e164,
            "email": lead.email, "name": lead.name, "company_name": lead.company_name,
            "first_message": lead.first_message, "line": lead.line, "manager_id": lead.manager_id,
            "manager_name": lead.manager_name, "junk_reason": lead.junk_reason, "contact_id": lead.contact_id,
            "company_id": lead.company_id, "created_at": lead.created_at.isoformat(),
            "updated_at": lead.updated_at.isoformat(), "version": lead.version, "rule_id": lead.rule_id,
            "auto_assigned": lead.auto_assigned}


def _lead_id(request: web.Request) -> int:
    return path_id(request, "lead_id")


async def list_api(request: web.Request) -> web.Response:
    user = current_user(request)
    limit, after = page_args(request, 100)
    async with request.app[keys.POOL].acquire() as conn:
        page = paging.page(await leads_db.list_leads(conn, user, request.query.get("status") or None,
                                                     request.query.get("source") or None, limit=limit + 1,
                                                     after=after), limit, leads_db.lead_key)
    return web.json_response(page_json(request, page, [lead_json(lead) for lead in page.items]))


async def detail_api(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        lead = await leads_db.get_lead(conn, current_user(request), _lead_id(request))
        calls = await calls_db.list_lead_calls(conn, lead.id)
    body = lead_json(lead)
    body["calls"] = [{"id": c.id, "started_at": c.started_at.isoformat(), "outcome": c.outcome,
                      "talk_seconds": c.talk_seconds} for c in calls]
    return web.json_response(body)


def _duplicate_json(exc: leads_db.DuplicateLead) -> web.Response:
    body = error_body(409, str(exc))
    body["error"]["lead_id"] = exc.lead_id
    body["lead_id"] = exc.lead_id
    return web.json_response(body, status=409)


async def _create(request: web.Request, data: dict[str, Any]) -> Lead:
    region = request.app[keys.SETTINGS].phone_region
    phone = text_field(data, "phone").strip()
    async with request.app[keys.POOL].acquire() as conn:
        lead = await leads_db.create_manual_lead(conn, current_user(request), text_field(data, "name"),
                                                 parse_phone(phone, region).e164 if phone else None,
                                                 text_field(data, "email").strip() or None,
                                                 text_field(data, "company_name"), text_field(data, "message"),
                                                 text_field(data, "source") or "manual")
    if lead.manager_id is not None and lead.auto_assigned:
        notifier = request.app.get(keys.NOTIFIER)
        if notifier is not None:
            await notifier.call_event(NewLead(lead.id, f"New lead: {lead.title}", lead.manager_id))
    return lead


async def create_api(request: web.Request) -> web.Response:
    try:
        lead = await _create(request, await read_json(request))
    except leads_db.DuplicateLead as exc:
        return _duplicate_json(exc)
    return web.json_response(lead_json(lead), status=201)


async def update_api(request: web.Request) -> web.Response:
    """PATCH /api/leads/{id} {name?, phone?, email?, company_name?, first_message?, version?}."""
    body = await read_json(request)
    changes = {k: body[k] for k in leads_db.EDITABLE if k in body}
    try:
        async with request.app[keys.POOL].acquire() as conn:
            lead = await leads_db.update_lead(conn, current_user(request), _lead_id(request), changes,
                                              request.app[keys.SETTINGS].phone_region, int_field(body, "version"))
    except leads_db.DuplicateLead as exc:
        return _duplicate_json(exc)
    return web.json_response(lead_json(lead))


_FORM_FIELDS = ("name", "phone", "email", "company_name", "message", "source")


async def new_lead_page(request: web.Request) -> web.Response:
    return render(request, "lead_form.html", lead=None, values=dict.fromkeys(_FORM_FIELDS, ""),
                  sources=leads_db.SOURCES, problem=None, duplicate=None)


async def new_lead_form(request: web.Request) -> web.Response:
    form = await request.post()
    values = {k: str(form.get(k, "")) for k in _FORM_FIELDS}
    try:
        lead = await _create(request, values)
    except leads_db.DuplicateLead as exc:
        # One open lead per person: theirs is shown instead of making another.
        return render(request, "lead_form.html", http_status=409, lead=None, values=values,
                      sources=leads_db.SOURCES, problem=None, duplicate=exc)
    except errors.ValidationError as exc:
        return render(request, "lead_form.html", http_status=422, lead=None, values=values,
                      sources=leads_db.SOURCES, problem=exc, duplicate=None)
    raise web.HTTPFound(f"/leads/{lead.id}")


async def edit_lead_page(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        lead = await leads_db.get_lead(conn, current_user(request), _lead_id(request))
    values = {"name": lead.name, "phone": lead.phone_e164 or "", "email": lead.email or "",
              "company_name": lead.company_name, "message": lead.first_message, "version": str(lead.version)}
    return render(request, "lead_form.html", lead=lead, values=values, sources=leads_db.SOURCES, problem=None,
                  duplicate=None)


async def edit_lead_form(request: web.Request) -> web.Response:
    form = await request.post()
    values = {k: str(form.get(k, "")) for k in (*_FORM_FIELDS, "version")}
    changes = {"name": values["name"], "phone": values["phone"], "email": values["email"],
               "company_name": values["company_name"], "first_message": values["message"]}
    user = current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        try:
            await leads_db.update_lead(conn, user, _lead_id(request), changes,
                                       request.app[keys.SETTINGS].phone_region, int_field(values, "version"))
        except (leads_db.DuplicateLead, errors.ValidationError, errors.Conflict) as exc:
            lead = await leads_db.get_lead(conn, user, _lead_id(request))
            duplicate = exc if isinstance(exc, leads_db.DuplicateLead) else None
            return render(request, "lead_form.html", http_status=409 if isinstance(exc, errors.Conflict) else 422,
                          lead=lead, values=values, sources=leads_db.SOURCES, duplicate=duplicate,
                          problem=None if duplicate else exc)
    raise web.HTTPFound(f"/leads/{_lead_id(request)}")


async def _act(request: web.Request, action: str, data: dict[str, Any]) -> Lead:
    user = current_user(request)
    lead_id = _lead_id(request)
    async with request.app[keys.POOL].acquire() as conn:
        if action == "assign":
            return await leads_db.assign_lead(conn, user, lead_id, int_field(data, "manager_id", required=True))
        if action == "status":
            return await leads_db.set_lead_status(conn, user, lead_id, text_field(data, "status"))
        if action == "junk":
            return await leads_db.junk_lead(conn, user, lead_id, text_field(data, "reason"), datetime.now(UTC))
        if action == "convert":
            contact_name, company_name = text_field(data, "contact_name"), text_field(data, "company_name")
            deal_title = text_field(data, "deal_title").strip()
            # One transaction: a deal that cannot be made leaves the lead unconverted, to try again.
            async with conn.transaction():
                lead = await leads_db.convert_lead(conn, user, lead_id, contact_name, company_name,
                                                   request.app[keys.SETTINGS].phone_region)
                if deal_title:
                    # Conversion with a deal: the client's request becomes the deal's needs.
                    await deals_db.create_deal(conn, user, deal_title, datetime.now(UTC),
                                               contact_id=lead.contact_id, company_id=lead.company_id,
                                               lead_id=lead.id, manager_id=lead.manager_id,
                                               needs=lead.first_message, source=lead.source)
            return lead
    raise web.HTTPNotFound()


async def action_api(request: web.Request) -> web.Response:
    lead = await _act(request, request.match_info["action"], await read_json(request))
    return web.json_response(lead_json(lead))


async def action_form(request: web.Request) -> web.Response:
    form = await request.post()
    lead = await _act(request, request.match_info["action"], dict(form))
    if lead.status == "converted" and lead.contact_id:
        raise web.HTTPFound(f"/contacts/{lead.contact_id}")
    raise web.HTTPFound(f"/leads/{lead.id}")


async def inbox_page(request: web.Request) -> web.Response:
    user = current_user(request)
    status = request.query.get("status") or None
    source = request.query.get("source") or None
    limit, after = page_args(request, 50)
    async with request.app[keys.POOL].acquire() as conn:
        page = paging.page(await leads_db.list_leads(conn, user, status, source, limit=limit + 1, after=after),
                           limit, leads_db.lead_key)
        leads = page.items
        managers = await users_db.list_assignees(conn)
        notifications = await leads_db.list_notifications(conn, user)
    return render(request, "leads.html", leads=leads, managers=managers, status_filter=status or "",
                  source=source or "", statuses=leads_db.STATUSES, sources=leads_db.SOURCES,
                  notifications=notifications, next_url=next_url(request, page))


async def lead_page(request: web.Request) -> web.Response:
    user = current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        lead = await leads_db.get_lead(conn, user, _lead_id(request))
        managers = await users_db.list_assignees(conn)
        history = await timeline_context(conn, request, "lead", lead.id)
    return render(request, "lead.html", lead=lead, managers=managers, **history)


def setup(app: web.Application) -> None:
    router = app.router
    router.add_get("/leads", inbox_page)
    router.add_get("/leads/{lead_id:\\d+}", lead_page)
    router.add_get("/leads/new", new_lead_page)
    router.add_post("/leads/new", new_lead_form)
    router.add_get("/leads/{lead_id:\\d+}/edit", edit_lead_page)
    router.add_post("/leads/{lead_id:\\d+}/edit", edit_lead_form)
    router.add_post("/leads/{lead_id:\\d+}/{action:assign|status|junk|convert}", action_form)
    router.add_get("/api/leads", list_api)
    router.add_post("/api/leads", create_api)
    router.add_get("/api/leads/{lead_id:\\d+}", detail_api)
    router.add_patch("/api/leads/{lead_id:\\d+}", update_api)
    router.add_post("/api/leads/{lead_id:\\d+}/{action:assign|status|junk|convert}", action_api)
