"""Deals, products and stock in pages and /api; the printable offer; the stuck-deal job; home page."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiohttp import web

from crm import contracts as contracts_db
from crm import deals as deals_db
from crm import documents as documents_db
from crm import errors, stock
from crm import invoices as invoices_db
from crm import leadrules as leadrules_db
from crm import missed as missed_db
from crm import tasks as tasks_db
from crm import users as users_db
from crm.deals import Deal, DealItem, RuleRefused
from crm.stock import Balance
from web import documents, keys
from web.api import read_json
from web.auth import current_user, require_role
from web.errors import error_body
from web.i18n import request_reader
from web.jobs import periodic_job
from web.pages import render
from web.paging import page_args, page_json
from web.timeline import timeline_context

logger = logging.getLogger(__name__)

STUCK_CHECK_SECONDS = 600
ILLIQUID_DAYS = 180


def _now() -> datetime:
    return datetime.now(UTC)


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def deal_json(deal: Deal, items: list[DealItem] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": deal.id, "title": deal.title, "contact_id": deal.contact_id, "company_id": deal.company_id,
        "lead_id": deal.lead_id, "manager_id": deal.manager_id, "manager_name": deal.manager_name,
        "stage": deal.stage, "stage_name": deal.stage_name, "status": deal.status, "loss_reason": deal.loss_reason,
        "needs": deal.needs, "legal_entity": deal.legal_entity, "amount": _money(deal.amount),
        "probability": deal.probability, "source": deal.source, "stuck": deal.is_stuck(_now()),
        "stage_changed_at": deal.stage_changed_at.isoformat(), "created_at": deal.created_at.isoformat(),
        "contact_name": deal.contact_name, "company_name": deal.company_name,
        "manual_amount": _money(deal.manual_amount), "version": deal.version,
        "expected_close_on": deal.expected_close_on.isoformat() if deal.expected_close_on else None}
    if items is not None:
        body["items"] = [{"id": i.id, "product_id": i.product_id, "sku": i.sku, "name": i.name,
                          "quantity": str(i.quantity), "price": _money(i.price), "reserved": str(i.reserved),
                          "shipped": str(i.shipped), "in_production": str(i.in_production),
                          "ordered": str(i.ordered)} for i in items]
    return body


def balance_json(b: Balance) -> dict[str, Any]:
    return {"product_id": b.product_id, "sku": b.sku, "name": b.name, "unit": b.unit, "price": _money(b.price),
            "made_in_house": b.made_in_house, "on_hand": str(b.on_hand), "reserved": str(b.reserved),
            "available": str(b.available)}


# Ids are PostgreSQL bigints: anything larger is no id of ours (and would fail in the driver, not here).
MAX_ID = 2**63 - 1


def path_id(request: web.Request, name: str) -> int:
    """An id from the URL (the route already allows digits only); out of range means not found."""
    value = int(request.match_info[name])
    if value > MAX_ID:
        raise errors.NotFound(name.removesuffix("_id"))
    return value


def int_field(data: dict[str, Any], name: str, required: bool = False) -> int | None:
    """An id from a JSON body or a form: a whole number in range, or a digit string (forms send text)."""
    value = data.get(name)
    if value in (None, ""):
        if required:
            raise errors.ValidationError(name, "is required")
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise errors.ValidationError(name, "must be a whole number id")
    return value


def text_field(data: dict[str, Any], name: str, default: str = "") -> str:
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise errors.ValidationError(name, "must be text")
    return value


async def _create(request: web.Request, data: dict[str, Any]) -> Deal:
    user = current_user(request)
    probability = data.get("probability")
    async with request.app[keys.POOL].acquire() as conn:
        return await deals_db.create_deal(
            conn, user, text_field(data, "title"), _now(), contact_id=int_field(data, "contact_id"),
            company_id=int_field(data, "company_id"), lead_id=int_field(data, "lead_id"),
            manager_id=int_field(data, "manager_id"), needs=text_field(data, "needs"),
            legal_entity=text_field(data, "legal_entity"), manual_amount=data.get("amount"),
            probability=20 if probability in (None, "") else probability, source=text_field(data, "source"),
            expected_close_on=data.get("expected_close_on"))


async def _act(request: web.Request, action: str, data: dict[str, Any]) -> Deal:
    user = current_user(request)
    deal_id = path_id(request, "deal_id")
    async with request.app[keys.POOL].acquire() as conn:
        version = int_field(data, "version")
        if action == "stage":
            return await deals_db.move_stage(conn, user, deal_id, text_field(data, "stage"), _now(), version,
                                             request.app[keys.SETTINGS].hours)
        if action == "close":
            confirm = data.get("confirm") in (True, "1", "on", "true")
            return await deals_db.close_deal(conn, user, deal_id, text_field(data, "status"),
                                             text_field(data, "reason") or None, _now(), confirm=confirm,
                                             version=version)
        if action == "items":
            product_id = int_field(data, "product_id")
            if product_id is None:
                sku = text_field(data, "sku").strip()
                product = await stock.product_by_sku(conn, sku) if sku else None
                if product is None:
                    raise errors.ValidationError("product_id", "choose a product")
                product_id = product.id
            await deals_db.add_item(conn, user, deal_id, product_id, data.get("quantity"), data.get("price"))
        elif action == "remove-item":
            await deals_db.remove_item(conn, user, deal_id, int_field(data, "item_id", True), _now())
        elif action == "ship":
            await deals_db.ship_item(conn, user, deal_id, int_field(data, "item_id", True), _now())
        elif action == "order-done":
            stock.require_goods_role(user)  # a manager cannot mark a supplier order received or goods made
            await deals_db.complete_order(conn, user, deal_id, text_field(data, "kind"),
                                          int_field(data, "order_id", True), _now())
        elif action == "reserve":
            await deals_db.reserve_items(conn, user, deal_id, _now())
        return await deals_db.get_deal(conn, user, deal_id)


# ------------------------------------------------------------------ API

async def list_api(request: web.Request) -> web.Response:
    limit, after = page_args(request, 100)  # like the other list APIs; 500 deals were 344 KB (issue 18)
    async with request.app[keys.POOL].acquire() as conn:
        page = await deals_db.list_deals_page(conn, current_user(request), request.query.get("status") or None,
                                              limit, after)
    return web.json_response(page_json(request, page, [deal_json(d) for d in page.items]))


async def create_api(request: web.Request) -> web.Response:
    deal = await _create(request, await read_json(request))
    return web.json_response(deal_json(deal, []), status=201)


async def detail_api(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        deal = await deals_db.get_deal(conn, current_user(request), path_id(request, "deal_id"))
        items = await deals_db.list_items(conn, deal.id)
        history = await deals_db.stage_history(conn, deal.id)
    body = deal_json(deal, items)
    body["history"] = [{"stage": h["stage"], "entered_at": h["entered_at"].isoformat(),
                        "left_at": h["left_at"].isoformat() if h["left_at"] else None} for h in history]
    return web.json_response(body)


async def refused(request: web.Request, exc: RuleRefused, deal_id: int) -> web.Response:
    """409 with the rule that said no (`error.rule`) and the deal as it is now (`current`), so the client can
    show the other person's change and start over instead of overwriting it."""
    body = error_body(409, str(exc))
    body["error"]["rule"] = exc.rule
    async with request.app[keys.POOL].acquire() as conn:
        current = await deals_db.get_deal(conn, current_user(request), deal_id)
        body["current"] = deal_json(current, await deals_db.list_items(conn, deal_id))
    return web.json_response(body, status=409)


async def action_api(request: web.Request) -> web.Response:
    try:
        deal = await _act(request, request.match_info["action"], await read_json(request))
    except RuleRefused as exc:
        return await refused(request, exc, path_id(request, "deal_id"))
    async with request.app[keys.POOL].acquire() as conn:
        items = await deals_db.list_items(conn, deal.id)
    return web.json_response(deal_json(deal, items))


async def products_api(request: web.Request) -> web.Response:
    current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        balances = await stock.list_balances(conn, request.query.get("q"))
    return web.json_response({"items": [balance_json(b) for b in balances]})


async def create_product_api(request: web.Request) -> web.Response:
    require_role(request, *stock.GOODS_ROLES)
    body = await read_json(request)
    async with request.app[keys.POOL].acquire() as conn:
        product = await stock.create_product(conn, text_field(body, "sku"), text_field(body, "name"),
                                             text_field(body, "unit") or "pcs", body.get("price", 0),
                                             body.get("barcode"), bool(body.get("made_in_house")))
    return web.json_response({"id": product.id, "sku": product.sku}, status=201)


def _days(value: str | None) -> int:
    if not value:
        return ILLIQUID_DAYS
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) <= 36500:
        raise errors.ValidationError("illiquid_days", "a number of days, 1 to 36500")
    return int(value)


async def stock_api(request: web.Request) -> web.Response:
    current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        balances = await stock.list_balances(conn, request.query.get("q"))
        slow = await stock.illiquid(conn, _now(), _days(request.query.get("illiquid_days")))
    return web.json_response({"items": [balance_json(b) for b in balances],
                              "illiquid": [balance_json(b) for b in slow]})


async def stock_movement_api(request: web.Request) -> web.Response:
    """Receipts, shipments and write-offs: the warehouse's work (and the head's and admin's). Receipts, write-offs
    and transfers have their own doors too (web/stock.py), with the same rules."""
    user = require_role(request, *stock.GOODS_ROLES)
    body = await read_json(request)
    product_id = int_field(body, "product_id", required=True)
    kind = text_field(body, "kind")
    async with request.app[keys.POOL].acquire() as conn:
        await stock.get_product(conn, product_id)
        if kind == "receipt":
            await stock.receive(conn, product_id, body.get("quantity"), _now(), user.id, body.get("expires_on"),
                                int_field(body, "warehouse_id"), body.get("document_number"))
        elif kind == "write_off":
            await stock.write_off(conn, user, product_id, body.get("quantity"), body.get("reason"), _now(),
                                  int_field(body, "warehouse_id"))
        elif kind == "shipment":
            await stock.ship(conn, product_id, body.get("quantity"), _now(), int_field(body, "deal_item_id"), user.id,
                             kind, int_field(body, "warehouse_id"))
        else:
            raise errors.ValidationError("kind", "receipt, shipment or write_off")
        balance = await stock.balance(conn, product_id)
    return web.json_response(balance_json(balance), status=201)


# ------------------------------------------------------------------ pages

async def deal_page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    """The deal card; after a refused form, again with the reason (`error`) and what is stored now."""
    user = current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        deal = await deals_db.get_deal(conn, user, path_id(request, "deal_id"))
        items = await deals_db.list_items(conn, deal.id)
        history = await deals_db.stage_history(conn, deal.id)
        stages = await deals_db.list_stages(conn)
        products = await stock.list_balances(conn)
        orders = await deals_db.list_orders(conn, deal.id)
        money = {"contract": await contracts_db.deal_contract(conn, user, deal.id),  # web/money.py, _deal_money.html
                 "company_contracts": await contracts_db.list_contracts(conn, user, deal.company_id)
                 if deal.company_id else [],
                 "deal_invoices": await invoices_db.list_invoices(conn, user, deal_id=deal.id)}
        attached = await documents_db.list_documents(conn, deal.id)
        events = await timeline_context(conn, request, "deal", deal.id)  # calls, mail, notes… (web/timeline.py)
        managers = await users_db.list_assignees(conn) if user.sees_everything else []
    return render(request, "deal.html", http_status=status, error=error, managers=managers,
                  unshipped=deals_db.unshipped(items), deal=deal, items=items, history=history, stages=stages,
                  products=products, now=_now(), loss_reasons=deals_db.LOSS_REASONS, orders=orders,
                  documents=attached, **events, **money)


async def new_deal_form(request: web.Request) -> web.Response:
    form = await request.post()
    deal = await _create(request, dict(form))
    raise web.HTTPFound(f"/deals/{deal.id}")


async def deal_action_form(request: web.Request) -> web.Response:
    form = await request.post()
    try:
        deal = await _act(request, request.match_info["action"], dict(form))
    except (errors.Conflict, errors.ValidationError) as exc:
        # The card again, saying why, with what is stored now (a won refused shows the confirmation).
        return await deal_page(request, error=str(exc), status=409 if isinstance(exc, errors.Conflict) else 422)
    raise web.HTTPFound(f"/deals/{deal.id}")


async def offer_page(request: web.Request) -> web.Response:
    """The offer as a printable page; /deals/{id}/offer.pdf is the same offer as a PDF (web/documents.py)."""
    user = current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        doc = await documents.deal_context(conn, request.app[keys.SETTINGS], user, path_id(request, "deal_id"),
                                           _now())
    reader = request_reader(request)
    return render(request, "offer.html", doc=doc, seller_lines=documents.seller_lines(doc.seller, reader),
                  words=documents.amount_in_words(doc, reader.language))


async def stock_page(request: web.Request) -> web.Response:
    current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        balances = await stock.list_balances(conn, request.query.get("q"))
        slow = {b.product_id for b in await stock.illiquid(conn, _now(), ILLIQUID_DAYS)}
    return render(request, "stock.html", balances=balances, illiquid=slow, query=request.query.get("q", ""))


async def home_page(request: web.Request) -> web.Response:
    """What needs me today: overdue callbacks, stuck deals, illiquid stock to sell."""
    user = current_user(request)
    now = _now()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    async with request.app[keys.POOL].acquire() as conn:
        stuck = await deals_db.list_stuck_deals(conn, user, now)
        open_deals = await deals_db.count_deals(conn, user)
        # The first 8 waiting (open rows come first on the board): a manager's own, the head's all.
        callbacks = [r for r in await missed_db.list_rows(conn, user, now, timedelta(days=7),
                                                          None if user.sees_everything else user.id, limit=8)
                     if r.state != "resolved"]
        sales = await deals_db.illiquid_sales(conn, user, month_start, ILLIQUID_DAYS)
        my_tasks = [t for t in await tasks_db.list_open_tasks(conn, user) if t.kind != "callback"]
        slow = (await stock.illiquid(conn, now, ILLIQUID_DAYS))[:5]
        waiting = await leadrules_db.list_waiting_leads(conn, now) if user.sees_everything else []
    return render(request, "home.html", now=now, stuck=stuck, tasks=my_tasks,
                  open_deals=open_deals, callbacks=callbacks, illiquid_sales=sales, illiquid_items=slow,
                  leads_waiting=waiting)


# ------------------------------------------------------------------ the periodic job

async def check_stuck_deals(app: web.Application) -> list[dict]:
    async with app[keys.POOL].acquire() as conn:
        stuck = await deals_db.flag_stuck_deals(conn, _now())
    notifier = app.get(keys.NOTIFIER)
    if notifier is not None:
        for deal in stuck:
            await notifier.call_event(StuckDeal(deal["id"], deal["manager_id"], deal["title"], deal["stage_name"]))
    return stuck


@dataclass(frozen=True, slots=True)
class StuckDeal:
    """Told to the notifier: the manager and the heads see it live."""

    deal_id: int
    manager_id: int | None
    title: str
    stage_name: str


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(periodic_job("stuck-deals", STUCK_CHECK_SECONDS, check_stuck_deals,
                                        "%d deal(s) newly stuck"))
    r = app.router
    r.add_get("/home", home_page)
    r.add_post("/deals/new", new_deal_form)
    r.add_get("/deals/{deal_id:\\d+}", deal_page)
    r.add_get("/deals/{deal_id:\\d+}/offer", offer_page)
    r.add_post("/deals/{deal_id:\\d+}/{action:stage|close|items|remove-item|reserve|ship|order-done}", deal_action_form)
    r.add_get("/stock", stock_page)
    r.add_get("/api/deals", list_api)
    r.add_post("/api/deals", create_api)
    r.add_get("/api/deals/{deal_id:\\d+}", detail_api)
    r.add_post("/api/deals/{deal_id:\\d+}/{action:stage|close|items|remove-item|reserve|ship|order-done}", action_api)
    r.add_get("/api/products", products_api)
    r.add_post("/api/products", create_product_api)
    r.add_get("/api/stock", stock_api)
    r.add_post("/api/stock/movements", stock_movement_api)
