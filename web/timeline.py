"""The cards' one timeline and note box, call results (page and API), and merging duplicate contacts and companies
(page and API). The card pages themselves live in web/pages.py, web/leads.py and web/deals.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from crm import call_results as results_db
from crm import calls as calls_db
from crm import contacts as contacts_db
from crm import deals as deals_db
from crm import errors, merging, paging, timeline
from crm import leads as leads_db
from crm.contacts import Kind
from crm.timeline import Scope
from crm.users import User
from web import keys
from web.auth import current_user
from web.errors import MAX_ID, error_body, path_id
from web.paging import page_args, page_json
from web.render import render

KIND_BY_SECTION: dict[str, Kind] = {"contacts": "contact", "companies": "company"}
SUBJECT_BY_SECTION = {"contacts": "contact", "companies": "company", "leads": "lead", "deals": "deal"}
TIMELINE_PAGE = 50


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (web.api has the same; importing it would make a cycle with its OpenAPI)."""
    body = await request.json()
    if not isinstance(body, dict):
        raise errors.ValidationError("body", "must be a JSON object")
    return body


# ------------------------------------------------------------------ the timeline on a card

async def scope_of(conn, user: User, subject: str, subject_id: int) -> Scope:
    """What the card shows; NotFound when the viewer may not see the card."""
    if subject == "contact":
        await contacts_db.get_party(conn, user, "contact", subject_id)
        return Scope(contact_ids=(subject_id,))
    if subject == "company":
        await contacts_db.get_party(conn, user, "company", subject_id)
        return await timeline.company_scope(conn, user, subject_id)
    if subject == "lead":
        await leads_db.get_lead(conn, user, subject_id)
        return Scope(lead_id=subject_id)
    deal = await deals_db.get_deal(conn, user, subject_id)
    # A deal made from a lead shows the lead's calls, e-mails and form messages from before it existed.
    return Scope(deal_id=deal.id, lead_id=deal.lead_id)


async def timeline_context(conn, request: web.Request, subject: str, subject_id: int) -> dict[str, Any]:
    """What _timeline.html needs on a card: the events, the "older" link, and what a note is about."""
    user = current_user(request)
    limit, after = page_args(request, TIMELINE_PAGE, 200)
    scope = await scope_of(conn, user, subject, subject_id)
    page = paging.page(await timeline.list_timeline(conn, user, scope, limit + 1, after), limit, timeline.event_key)
    older = None
    if page.next is not None:
        older = str(request.rel_url.with_query({**request.query, "after": page.next}))
    return {"timeline": page.items, "timeline_older": older, "timeline_subject": subject,
            "timeline_subject_id": subject_id}


async def timeline_api(request: web.Request) -> web.Response:
    """GET /api/{contacts|companies|leads|deals}/{id}/timeline?after=…: the card's events, newest first."""
    subject = SUBJECT_BY_SECTION[request.match_info["section"]]
    limit, after = page_args(request, TIMELINE_PAGE, 200)
    user = current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        scope = await scope_of(conn, user, subject, path_id(request, "subject_id"))
        page = paging.page(await timeline.list_timeline(conn, user, scope, limit + 1, after), limit,
                           timeline.event_key)
    return web.json_response(page_json(request, page, [timeline.event_json(e) for e in page.items]))


# ------------------------------------------------------------------ notes

def _link(data: Any, name: str) -> int | None:
    value = data.get(name)
    if value in (None, ""):
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise errors.ValidationError(name, "must be a positive integer")
    return value


async def _add_note(request: web.Request, data: Any) -> tuple[timeline.Event, str, int]:
    user = current_user(request)
    links = {f"{s}_id": _link(data, f"{s}_id") for s in ("contact", "company", "lead", "deal")}
    chosen = [(name, value) for name, value in links.items() if value is not None]
    if len(chosen) != 1:
        raise errors.ValidationError("contact_id", "one of contact_id, company_id, lead_id or deal_id")
    name, subject_id = chosen[0]
    subject = name.removesuffix("_id")
    async with request.app[keys.POOL].acquire() as conn:
        await scope_of(conn, user, subject, subject_id)  # only on a card the author may see
        note = await timeline.add_note(conn, user, data.get("text"), **{name: subject_id})
    return note, subject, subject_id


async def note_api(request: web.Request) -> web.Response:
    """POST /api/notes {text, contact_id | company_id | lead_id | deal_id}."""
    note, _, _ = await _add_note(request, await read_json(request))
    return web.json_response(timeline.event_json(note), status=201)


CARD_URL = {"contact": "/contacts/{}", "company": "/companies/{}", "lead": "/leads/{}", "deal": "/deals/{}"}


async def note_form(request: web.Request) -> web.Response:
    form = await request.post()
    _, subject, subject_id = await _add_note(request, form)
    raise web.HTTPFound(CARD_URL[subject].format(subject_id) + "#timeline")


# ------------------------------------------------------------------ call results

def local_datetime(value: object, field: str, zone: str) -> datetime:
    """ISO 8601 (a datetime-local field sends 2026-12-01T10:00); a time without a zone is the company's."""
    if not isinstance(value, str):
        raise errors.ValidationError(field, "a date and time like 2026-12-01T10:00")
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise errors.ValidationError(field, "a date and time like 2026-12-01T10:00") from None
    return when if when.tzinfo else when.replace(tzinfo=ZoneInfo(zone))


def _callback_at(value: object, zone: str) -> datetime | None:
    return None if value in (None, "") else local_datetime(value, "callback_at", zone)


def result_json(result: results_db.CallResult) -> dict[str, Any]:
    return {"id": result.id, "call_id": result.call_id, "user_id": result.user_id, "result": result.result,
            "note": result.note, "callback_at": result.callback_at.isoformat() if result.callback_at else None,
            "task_id": result.task_id, "created_at": result.created_at.isoformat()}


async def _record(request: web.Request, data: Any) -> results_db.CallResult:
    callback_at = _callback_at(data.get("callback_at"), request.app[keys.SETTINGS].timezone)
    async with request.app[keys.POOL].acquire() as conn:
        return await results_db.record_result(conn, current_user(request), path_id(request, "call_id"),
                                              data.get("result"), data.get("note", ""), callback_at)


async def result_api(request: web.Request) -> web.Response:
    """POST /api/calls/{id}/result {result, note?, callback_at?}."""
    result = await _record(request, await read_json(request))
    return web.json_response(result_json(result), status=201)


def _safe_back(target: str | None, fallback: str) -> str:
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return fallback
    return target


async def result_page(request: web.Request, error: str | None = None, http_status: int = 200,
                      values: dict[str, Any] | None = None) -> web.Response:
    user = current_user(request)
    call_id = path_id(request, "call_id")
    async with request.app[keys.POOL].acquire() as conn:
        call = await calls_db.get_call(conn, user, call_id)
        results = await results_db.list_results(conn, user, call_id)
    back = _safe_back(request.query.get("back") or (values or {}).get("back"), "/calls")
    return render(request, "call_result.html", http_status=http_status, call=call, results=results,
                  choices=results_db.RESULTS, error=error, values=values or {}, back=back,
                  saved=request.query.get("saved") == "1")


async def result_form(request: web.Request) -> web.Response:
    form = await request.post()
    data = dict(form)
    try:
        await _record(request, data)
    except errors.ValidationError as exc:
        return await result_page(request, error=str(exc), http_status=422, values=data)
    back = _safe_back(str(form.get("back", "")), "/calls")
    raise web.HTTPFound(str(request.rel_url.with_query({"back": back, "saved": "1"})))


# ------------------------------------------------------------------ merging duplicates

def merge_json(merge: merging.Merge) -> dict[str, Any]:
    return {"id": merge.id, "kind": merge.kind, "kept_id": merge.kept_id, "merged_id": merge.merged_id,
            "merged_name": merge.merged_name, "moved": merge.moved, "user_id": merge.user_id,
            "created_at": merge.created_at.isoformat()}


async def merge_api(request: web.Request) -> web.Response:
    """POST /api/{contacts|companies}/{id}/merge {other_id}: the other is merged into {id} and removed."""
    kind = KIND_BY_SECTION[request.match_info["section"]]
    body = await read_json(request)
    other_id = _link(body, "other_id")
    if other_id is None:
        raise errors.ValidationError("other_id", "the id of the record to merge into this one")
    kept_id = path_id(request, "party_id")
    if other_id == kept_id:
        return web.json_response(error_body(400, "a record cannot be merged with itself", "other_id"), status=400)
    async with request.app[keys.POOL].acquire() as conn:
        merge = await merging.merge_parties(conn, current_user(request), kind, kept_id, other_id)
    return web.json_response(merge_json(merge))


async def merge_page(request: web.Request) -> web.Response:
    """Merge with…: find the duplicate by name, phone or e-mail; it is merged into this card."""
    kind, user = KIND_BY_SECTION[request.match_info["section"]], current_user(request)
    query = request.query.get("q", "").strip()
    async with request.app[keys.POOL].acquire() as conn:
        party = await contacts_db.get_party(conn, user, kind, path_id(request, "party_id"))
        found = await contacts_db.list_parties(conn, user, kind, query or party.name,
                                               request.app[keys.SETTINGS].phone_region, limit=20)
        merges = await merging.list_merges(conn, kind, party.id)
    return render(request, "merge.html", kind=kind, section=request.match_info["section"], party=party,
                  found=[p for p in found if p.id != party.id], query=query or party.name, merges=merges)


async def merge_form(request: web.Request) -> web.Response:
    kind = KIND_BY_SECTION[request.match_info["section"]]
    form = await request.post()
    other_id = _link(form, "other_id")
    kept_id = path_id(request, "party_id")
    if other_id is None or other_id == kept_id:
        raise errors.ValidationError("other_id", "choose another record to merge into this one")
    async with request.app[keys.POOL].acquire() as conn:
        await merging.merge_parties(conn, current_user(request), kind, kept_id, other_id)
    raise web.HTTPFound(f"/{request.match_info['section']}/{kept_id}#timeline")


def openapi_paths(error: dict[str, Any]) -> dict[str, Any]:
    by_id = [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}]
    ok = {"200": {"description": "ok"}}
    body = {"content": {"application/json": {"schema": {"type": "object"}}}}
    paths: dict[str, Any] = {
        "/api/calls/{id}/result": {"parameters": by_id, "post": {
            "summary": "What the call came to {result: reached|no_answer|callback|wrong_number|other, note?, "
                       "callback_at?}; a callback_at (ISO 8601, without a zone the company's) sets the client's "
                       "manager a task in the same transaction; several results per call, the newest shown first",
            "requestBody": body, "responses": {"201": {"description": "written"}, "404": error, "422": error}}},
        "/api/notes": {"post": {
            "summary": "A note on a card {text, contact_id | company_id | lead_id | deal_id}",
            "requestBody": body, "responses": {"201": {"description": "written"}, "404": error, "422": error}}},
    }
    for section in ("contacts", "companies", "leads", "deals"):
        paths[f"/api/{section}/{{id}}/timeline"] = {"parameters": by_id, "get": {
            "summary": "The card's one timeline, newest first: calls (with results, playable), e-mails in and out, "
                       "notes, tasks set and done, deal stage changes, documents; keyset pages (?after=next)",
            "parameters": [{"name": n, "in": "query", "schema": {"type": t}} for n, t in (("limit", "integer"),
                                                                                         ("after", "string"))],
            "responses": {**ok, "404": error, "422": error}}}
    for section in ("contacts", "companies"):
        paths[f"/api/{section}/{{id}}/merge"] = {"parameters": by_id, "post": {
            "summary": "Merge {other_id} into this record: calls, mail, deals, tasks, phones, e-mails, notes, leads "
                       "move over in one transaction, the other is deleted, an audit entry is written. Head and "
                       "admin merge any two; a manager two of their own. Merging a record with itself is 400",
            "requestBody": body, "responses": {**ok, "400": error, "403": error, "404": error, "409": error,
                                               "422": error}}}
    return paths


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/{section:contacts|companies|leads|deals}/{subject_id:\\d+}/timeline", timeline_api)
    r.add_post("/api/notes", note_api)
    r.add_post("/notes", note_form)
    r.add_post("/api/calls/{call_id:\\d+}/result", result_api)
    r.add_get("/calls/{call_id:\\d+}/result", result_page)
    r.add_post("/calls/{call_id:\\d+}/result", result_form)
    r.add_post("/api/{section:contacts|companies}/{party_id:\\d+}/merge", merge_api)
    r.add_get("/{section:contacts|companies}/{party_id:\\d+}/merge", merge_page)
    r.add_post("/{section:contacts|companies}/{party_id:\\d+}/merge", merge_form)
