"""The deals board (stage columns with counts and sums, drag and drop) and its sortable list view; a new deal
from anywhere; editing a deal (PATCH /api/deals/{id} and the card's form, both with a version); the admin's stage
rules and automatic tasks."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from crm import contacts as contacts_db
from crm import deals as deals_db
from crm import errors, stock
from crm import leads as leads_db
from crm import users as users_db
from crm.deals import DealFilter, RuleRefused
from web import keys
from web.api import read_json
from web.auth import current_user, require_role
from web.deals import deal_json, deal_page, int_field, path_id, refused, text_field
from web.i18n import N_
from web.pages import render

CARDS_PER_COLUMN = 50
LIST_PAGE = 100
# The rules' refusals as people read them on pages (crm/deals.py writes them in English; the API keeps English).
RULE_MESSAGES = (
    N_("someone changed this deal meanwhile; reload it to see their change"),
    N_("the deal needs items before this stage"), N_("the deal needs a contract before this stage"),
    N_("a stage on the way cannot be skipped: move the deal through it"),
    N_("items are not all shipped: confirm and say why to win the deal anyway"),
    N_("say why the deal is won with items unshipped"),
    N_("only the head of sales or an admin gives a deal to another manager"),
    N_("no active manager with this id"), N_("a number of working days, 0 to 365"),
)


def _now() -> datetime:
    return datetime.now(UTC)


def _flag(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("1", "on", "true", "yes"))


def _amount(query, name: str) -> Decimal | None:
    value = query.get(name, "").strip()
    return stock.parse_money(value, name) if value else None


def _this_month(settings) -> tuple[date, date]:
    today = datetime.now(ZoneInfo(settings.timezone)).date()
    first = today.replace(day=1)
    last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    return first, last


def deal_filter(request: web.Request, list_view: bool) -> DealFilter:
    """The filters in the address: manager, client, amount_min/amount_max, stuck, closing=month (and, in the
    list, status and stage); a card's deals link with contact or company."""
    q = request.query
    closing = _this_month(request.app[keys.SETTINGS]) if q.get("closing") == "month" else (None, None)
    return DealFilter(
        status=(q.get("status") or "in_progress") if list_view else "in_progress",
        manager_id=int_field(dict(q), "manager"), client=q.get("client") or None,
        contact_id=int_field(dict(q), "contact"), company_id=int_field(dict(q), "company"),
        amount_min=_amount(q, "amount_min"), amount_max=_amount(q, "amount_max"), stuck=_flag(q.get("stuck")),
        closing_from=closing[0], closing_to=closing[1], stage=(q.get("stage") or None) if list_view else None)


async def deals_page(request: web.Request) -> web.Response:
    """/deals: the board; /deals?view=list: the same deals as a sortable list (won and lost ones too)."""
    user = current_user(request)
    list_view = request.query.get("view") == "list"
    chosen = deal_filter(request, list_view)
    now = _now()
    async with request.app[keys.POOL].acquire() as conn:
        managers = await users_db.list_assignees(conn) if user.sees_everything else []
        stages = await deals_db.list_stages(conn)
        if not list_view:
            columns = await deals_db.board(conn, user, chosen, now, CARDS_PER_COLUMN)
            return render(request, "deals.html", columns=columns, now=now, f=chosen, q=request.query,
                          managers=managers, stages=stages, more=CARDS_PER_COLUMN)
        sort = request.query.get("sort") or "created"
        descending = request.query.get("dir", "desc") != "asc"
        page = _page_number(request)
        found, total = await deals_db.list_sorted(conn, user, chosen, now, sort, descending, LIST_PAGE,
                                                  page * LIST_PAGE)
    return render(request, "deals_list.html", deals=found, total=total, now=now, f=chosen, q=request.query,
                  managers=managers, stages=stages, sort=sort, descending=descending, page=page,
                  pages=(total + LIST_PAGE - 1) // LIST_PAGE, query_with=_query_with(request))


def _page_number(request: web.Request) -> int:
    text = request.query.get("page", "0")
    if not (text.isascii() and text.isdigit()) or int(text) > 100_000:
        raise errors.ValidationError("page", "must be a page number")
    return int(text)


def _query_with(request: web.Request):
    """This address with some parameters changed (sort links, pages), the filters kept."""
    def with_(**changes: Any) -> str:
        query = {k: v for k, v in request.query.items() if k not in changes}
        query.update({k: str(v) for k, v in changes.items() if v is not None})
        return str(request.rel_url.with_query(query))
    return with_


async def new_deal_page(request: web.Request) -> web.Response:
    """/deals/new?contact=…|company=…|lead=…|phone=…: the form, the client filled in (one the viewer may see)."""
    user = current_user(request)
    q = dict(request.query)
    contact = company = lead = None
    async with request.app[keys.POOL].acquire() as conn:
        if int_field(q, "lead"):
            lead = await leads_db.get_lead(conn, user, int_field(q, "lead"))
        contact_id = int_field(q, "contact") or (lead.contact_id if lead else None)
        if contact_id is None and q.get("phone"):
            found = await contacts_db.list_parties(conn, user, "contact", q["phone"],
                                                   request.app[keys.SETTINGS].phone_region, limit=2)
            contact_id = found[0].id if len(found) == 1 else None
        if contact_id:
            contact = await contacts_db.get_party(conn, user, "contact", contact_id)
        company_id = int_field(q, "company") or (contact.company_id if contact else None) or (
            lead.company_id if lead else None)
        if company_id:
            company = await contacts_db.get_party(conn, user, "company", company_id)
        managers = await users_db.list_assignees(conn) if user.sees_everything else []
    return render(request, "deal_new.html", contact=contact, company=company, lead=lead, managers=managers)


# ------------------------------------------------------------------ editing

_IDS = ("contact_id", "company_id", "manager_id")
_TEXTS = ("title", "needs", "legal_entity", "stage")


def _changes(body: dict[str, Any]) -> dict[str, Any]:
    """The editable fields sent, parsed; a field not sent is left as it is."""
    changes: dict[str, Any] = {}
    for name in _IDS:
        if name in body:
            changes[name] = int_field(body, name)
    for name in _TEXTS:
        if name in body:
            changes[name] = text_field(body, name)
    for name in ("amount", "probability", "expected_close_on"):
        if name in body:
            changes[name] = body[name]
    unknown = sorted(set(body) - set(deals_db.EDITABLE) - {"version", "csrf_token"})
    if unknown:
        raise errors.ValidationError(unknown[0], "cannot be changed here")
    return changes


async def patch_api(request: web.Request) -> web.Response:
    """PATCH /api/deals/{id}: any editable field; with `version`, a stale edit answers 409 and the current deal."""
    user = current_user(request)
    deal_id = path_id(request, "deal_id")
    body = await read_json(request)
    changes = _changes(body)
    try:
        async with request.app[keys.POOL].acquire() as conn:
            deal = await deals_db.update_deal(conn, user, deal_id, changes, _now(), int_field(body, "version"),
                                              request.app[keys.SETTINGS].hours)
            items = await deals_db.list_items(conn, deal_id)
    except RuleRefused as exc:
        return await refused(request, exc, deal_id)
    return web.json_response(deal_json(deal, items))


async def edit_form(request: web.Request) -> web.Response:
    """The card's Edit form: every field; a refusal shows the card again with the reason and what is stored."""
    user = current_user(request)
    deal_id = path_id(request, "deal_id")
    form = dict(await request.post())
    version = int_field(form, "version")
    fields = {k: v for k, v in form.items() if k in deals_db.EDITABLE}
    if not user.sees_everything:
        fields.pop("manager_id", None)
    try:
        async with request.app[keys.POOL].acquire() as conn:
            await deals_db.update_deal(conn, user, deal_id, _changes(fields), _now(), version,
                                       request.app[keys.SETTINGS].hours)
    except (errors.Conflict, errors.ValidationError, errors.Forbidden) as exc:
        return await deal_page(request, error=str(exc), status=409 if isinstance(exc, errors.Conflict) else 422)
    raise web.HTTPFound(f"/deals/{deal_id}")


# ------------------------------------------------------------------ stage rules and automatic tasks (admin)

async def stage_rules_page(request: web.Request) -> web.Response:
    require_role(request, "admin")
    async with request.app[keys.POOL].acquire() as conn:
        stages = await deals_db.list_stages(conn)
        tasks = await deals_db.list_stage_tasks(conn)
    return render(request, "deal_stages.html", stages=stages, tasks=tasks)


async def stage_rules_action(request: web.Request) -> web.Response:
    require_role(request, "admin")
    form = dict(await request.post())
    action = request.match_info["action"]
    async with request.app[keys.POOL].acquire() as conn:
        if action == "rules":
            await deals_db.set_stage_rules(conn, text_field(form, "stage"), _flag(form.get("requires_items")),
                                           _flag(form.get("requires_contract")), _flag(form.get("skippable")))
        elif action == "task":
            await deals_db.add_stage_task(conn, text_field(form, "stage"), text_field(form, "title"),
                                          form.get("due_days"))
        else:
            await deals_db.delete_stage_task(conn, int_field(form, "task_id", True))
    raise web.HTTPFound("/admin/deal-stages")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/deals", deals_page)
    r.add_get("/deals/new", new_deal_page)
    r.add_post("/deals/{deal_id:\\d+}/edit", edit_form)
    r.add_patch("/api/deals/{deal_id:\\d+}", patch_api)
    r.add_get("/admin/deal-stages", stage_rules_page)
    r.add_post("/admin/deal-stages/{action:rules|task|delete-task}", stage_rules_action)
