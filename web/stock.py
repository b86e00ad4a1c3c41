"""The warehouse's screens and API: products (search by name, SKU or a scanned barcode; create, edit), the product
card (stock per warehouse, batches with expiry, movement history), receipts, write-offs, transfers, warehouses,
production orders (planned → in work → made) and supplier orders (received)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from crm import errors, orders, stock
from crm.orders import Order
from crm.stock import Batch, Movement, Product, Warehouse
from web import keys
from web.api import read_json
from web.auth import current_user
from web.deals import balance_json, int_field, path_id, text_field
from web.i18n import N_
from web.pages import render
from web.paging import next_url, page_args, page_json

# A batch expiring within this many days is highlighted on the product card (?expiring_days= changes it).
EXPIRY_WARNING_DAYS = 30

# Domain errors raised by crm.stock and crm.orders, for the catalog (shown as the reader's words on the forms).
MESSAGES = (
    N_("only the warehouse, the head or an admin moves goods"), N_("must differ from the source warehouse"),
    N_("is required (at most 200 characters)"), N_("a warehouse with this name exists"),
    N_("must be at most 500 characters"), N_("someone else changed this product; reload and edit again"),
    N_("the order is made already"), N_("the order is in work already"), N_("the order is cancelled already"),
    N_("in_work or made"), N_("production or supplier"), N_("this order is for another product"),
    N_("must be text"), N_("Main warehouse"),
)


def _now() -> datetime:
    return datetime.now(UTC)


def _today(request: web.Request) -> date:
    """Today in the company's time zone (an expiry date is a local day)."""
    return _now().astimezone(ZoneInfo(request.app[keys.SETTINGS].timezone)).date()


def _qty(value: Decimal) -> str:
    return str(value)


def _can_move(user) -> bool:
    return user.role in stock.GOODS_ROLES


def _goods_user(request: web.Request):
    user = current_user(request)
    stock.require_goods_role(user)
    return user


def product_json(p: Product) -> dict[str, Any]:
    return {"id": p.id, "sku": p.sku, "name": p.name, "unit": p.unit, "price": f"{p.price:.2f}",
            "barcode": p.barcode, "made_in_house": p.made_in_house, "version": p.version}


def warehouse_json(w: Warehouse, on_hand: Decimal | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": w.id, "name": w.name, "is_default": w.is_default}
    if on_hand is not None:
        body["on_hand"] = _qty(on_hand)
    return body


def batch_json(b: Batch) -> dict[str, Any]:
    return {"id": b.id, "warehouse_id": b.warehouse_id, "warehouse": b.warehouse,
            "received_at": b.received_at.isoformat(), "expires_on": b.expires_on.isoformat() if b.expires_on else None,
            "quantity": _qty(b.quantity), "left": _qty(b.left)}


def movement_json(m: Movement) -> dict[str, Any]:
    return {"id": m.id, "kind": m.kind, "quantity": _qty(m.quantity), "created_at": m.created_at.isoformat(),
            "warehouse": m.warehouse, "batch_id": m.batch_id, "reason": m.reason,
            "document_number": m.document_number, "user_name": m.user_name, "deal_id": m.deal_id}


def order_json(o: Order) -> dict[str, Any]:
    return {"kind": o.kind, "id": o.id, "deal_id": o.deal_id, "deal_title": o.deal_title, "manager_id": o.manager_id,
            "deal_item_id": o.deal_item_id, "product_id": o.product_id, "sku": o.sku, "name": o.name,
            "quantity": _qty(o.quantity), "state": o.status,
            "planned_on": o.planned_on.isoformat() if o.planned_on else None, "created_at": o.created_at.isoformat(),
            "finished_at": o.finished_at.isoformat() if o.finished_at else None, "batch_id": o.batch_id}


def _product_fields(data: dict[str, Any]) -> dict[str, Any]:
    made = data.get("made_in_house")
    return {"sku": text_field(data, "sku"), "name": text_field(data, "name"),
            "unit": text_field(data, "unit") or "pcs", "price": data.get("price") or 0,
            "barcode": data.get("barcode"), "made_in_house": made in (True, "on", "1", "true")}


# ------------------------------------------------------------------ the writes, shared by the API and the forms

async def _receipt(conn, user, data: dict[str, Any]) -> tuple[int, int]:
    """A receipt, or the delivery of an open supplier order (which marks it received); (product, batch)."""
    stock.require_goods_role(user)
    order_id = int_field(data, "supplier_order_id")
    product_id = int_field(data, "product_id", required=order_id is None)
    warehouse_id = int_field(data, "warehouse_id")
    if order_id is not None:
        order = await orders.get_order(conn, user, "supplier", order_id)
        if product_id is not None and product_id != order.product_id:
            raise errors.ValidationError("product_id", "this order is for another product")
        done = await orders.finish_order(conn, user, "supplier", order_id, _now(), quantity=data.get("quantity"),
                                         warehouse_id=warehouse_id, expires_on=data.get("expires_on") or None,
                                         document_number=data.get("document_number"))
        return done.product_id, done.batch_id or 0
    await stock.get_product(conn, product_id)
    batch = await stock.receive(conn, product_id, data.get("quantity"), _now(), user.id,
                                data.get("expires_on") or None, warehouse_id, data.get("document_number"))
    return product_id, batch


async def _write_off(conn, user, data: dict[str, Any]) -> tuple[int, list[tuple[int, Decimal]]]:
    product_id = int_field(data, "product_id", required=True)
    stock.require_goods_role(user)
    await stock.get_product(conn, product_id)
    taken = await stock.write_off(conn, user, product_id, data.get("quantity"), data.get("reason"), _now(),
                                  int_field(data, "warehouse_id"))
    return product_id, taken


async def _transfer(conn, user, data: dict[str, Any]) -> tuple[int, list[tuple[int, int, Decimal]]]:
    product_id = int_field(data, "product_id", required=True)
    stock.require_goods_role(user)
    await stock.get_product(conn, product_id)
    moved = await stock.transfer(conn, user, product_id, data.get("quantity"),
                                 int_field(data, "from_warehouse_id", required=True),
                                 int_field(data, "to_warehouse_id", required=True), _now())
    return product_id, moved


async def _balance_body(conn, product_id: int) -> dict[str, Any]:
    body = balance_json(await stock.balance(conn, product_id))
    body["warehouses"] = [warehouse_json(w, q) for w, q in await stock.stock_by_warehouse(conn, product_id)]
    return body


# ------------------------------------------------------------------ API

async def receipts_api(request: web.Request) -> web.Response:
    """POST /api/stock/receipts {product_id, quantity, warehouse_id?, expires_on?, document_number?,
    supplier_order_id?}."""
    user = current_user(request)
    data = await read_json(request)
    async with request.app[keys.POOL].acquire() as conn:
        product_id, batch = await _receipt(conn, user, data)
        body = await _balance_body(conn, product_id)
    return web.json_response({**body, "batch_id": batch}, status=201)


async def writeoffs_api(request: web.Request) -> web.Response:
    """POST /api/stock/writeoffs {product_id, quantity, reason, warehouse_id?}: oldest batches first."""
    user = current_user(request)
    data = await read_json(request)
    async with request.app[keys.POOL].acquire() as conn:
        product_id, taken = await _write_off(conn, user, data)
        body = await _balance_body(conn, product_id)
    return web.json_response({**body, "taken": [{"batch_id": b, "quantity": _qty(q)} for b, q in taken]}, status=201)


async def transfers_api(request: web.Request) -> web.Response:
    """POST /api/stock/transfers {product_id, quantity, from_warehouse_id, to_warehouse_id}."""
    user = current_user(request)
    data = await read_json(request)
    async with request.app[keys.POOL].acquire() as conn:
        product_id, moved = await _transfer(conn, user, data)
        body = await _balance_body(conn, product_id)
    return web.json_response({**body, "moved": [{"from_batch_id": s, "to_batch_id": t, "quantity": _qty(q)}
                                                for s, t, q in moved]}, status=201)


async def product_api(request: web.Request) -> web.Response:
    current_user(request)
    product_id = path_id(request, "product_id")
    async with request.app[keys.POOL].acquire() as conn:
        product = await stock.get_product(conn, product_id)
        body = await _balance_body(conn, product_id)
        batches = await stock.list_batches(conn, product_id)
    return web.json_response({**product_json(product), **body, "batches": [batch_json(b) for b in batches]})


async def update_product_api(request: web.Request) -> web.Response:
    """PUT /api/products/{id} {sku, name, unit, price, barcode, made_in_house, version}; a stale version is 409."""
    user = current_user(request)
    data = await read_json(request)
    async with request.app[keys.POOL].acquire() as conn:
        product = await stock.update_product(conn, user, path_id(request, "product_id"),
                                             int_field(data, "version", required=True), **_product_fields(data))
    return web.json_response(product_json(product))


async def movements_api(request: web.Request) -> web.Response:
    current_user(request)
    limit, after = page_args(request, 50)
    product_id = path_id(request, "product_id")
    async with request.app[keys.POOL].acquire() as conn:
        await stock.get_product(conn, product_id)
        page = await stock.list_movements(conn, product_id, limit, after)
    return web.json_response(page_json(request, page, [movement_json(m) for m in page.items]))


async def warehouses_api(request: web.Request) -> web.Response:
    current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        found = await stock.list_warehouses(conn)
    return web.json_response({"items": [warehouse_json(w) for w in found]})


async def create_warehouse_api(request: web.Request) -> web.Response:
    user = current_user(request)
    data = await read_json(request)
    async with request.app[keys.POOL].acquire() as conn:
        warehouse = await stock.create_warehouse(conn, user, data.get("name"))
    return web.json_response(warehouse_json(warehouse), status=201)


def _states(request: web.Request) -> tuple[str, ...] | None:
    state = request.query.get("state")
    if not state:
        return None
    return tuple(orders.STATES[_kind(request)]) if state == "all" else (state,)


def _kind(request: web.Request) -> str:
    return "production" if "production" in request.path else "supplier"


async def orders_api(request: web.Request) -> web.Response:
    """GET /api/production-orders, /api/supplier-orders: open ones by default; ?state=… or all."""
    user = current_user(request)
    limit, after = page_args(request, 100)
    async with request.app[keys.POOL].acquire() as conn:
        page = await orders.list_orders(conn, user, _kind(request), _states(request), limit, after)
    return web.json_response(page_json(request, page, [order_json(o) for o in page.items]))


async def _move_production(conn, user, order_id: int, data: dict[str, Any]) -> Order:
    if "planned_on" in data:
        order = await orders.plan_production(conn, user, order_id, data.get("planned_on"))
    state = text_field(data, "state")
    if state:
        order = await orders.move_production(conn, user, order_id, state, _now(),
                                             warehouse_id=int_field(data, "warehouse_id"),
                                             expires_on=data.get("expires_on") or None)
    elif "planned_on" not in data:
        raise errors.ValidationError("state", "in_work or made")
    return order


async def production_order_api(request: web.Request) -> web.Response:
    """PATCH /api/production-orders/{id} {state?: in_work | made, planned_on?, warehouse_id?, expires_on?}."""
    user = current_user(request)
    data = await read_json(request)
    async with request.app[keys.POOL].acquire() as conn:
        order = await _move_production(conn, user, path_id(request, "order_id"), data)
    return web.json_response(order_json(order))


async def receive_order_api(request: web.Request) -> web.Response:
    """POST /api/supplier-orders/{id}/receive {quantity?, warehouse_id?, expires_on?, document_number?}."""
    user = current_user(request)
    data = await read_json(request)
    async with request.app[keys.POOL].acquire() as conn:
        await _receipt(conn, user, {**data, "supplier_order_id": path_id(request, "order_id")})
        order = await orders.get_order(conn, user, "supplier", path_id(request, "order_id"))
    return web.json_response(order_json(order))


# ------------------------------------------------------------------ pages

async def products_page(request: web.Request) -> web.Response:
    """The list; a scanner's digits (or a whole SKU) followed by Enter open that product's card at once."""
    user = current_user(request)
    query = request.query.get("q", "").strip()
    async with request.app[keys.POOL].acquire() as conn:
        exact = await stock.find_product(conn, query) if query else None
        if exact is not None:
            raise web.HTTPFound(f"/stock/products/{exact.id}")
        balances = await stock.list_balances(conn, query)
        warehouses = await stock.list_warehouses(conn)
    return render(request, "products.html", balances=balances, query=query, warehouses=warehouses,
                  can_move=_can_move(user))


async def product_form_page(request: web.Request, error: str | None = None, values: dict[str, Any] | None = None,
                            status: int = 200) -> web.Response:
    _goods_user(request)
    product = None
    if "product_id" in request.match_info:
        async with request.app[keys.POOL].acquire() as conn:
            product = await stock.get_product(conn, path_id(request, "product_id"))
    if values is None:
        values = product_json(product) if product else {"unit": "pcs", "price": "0"}
    return render(request, "product_form.html", product=product, values=values, error=error, http_status=status)


async def product_form_post(request: web.Request) -> web.Response:
    user = _goods_user(request)
    data = dict(await request.post())
    try:
        async with request.app[keys.POOL].acquire() as conn:
            fields = _product_fields(data)
            if "product_id" in request.match_info:
                product = await stock.update_product(conn, user, path_id(request, "product_id"),
                                                     int_field(data, "version", required=True), **fields)
            else:
                product = await stock.create_product(conn, **fields)
    except (errors.ValidationError, errors.Conflict) as exc:
        status = 422 if isinstance(exc, errors.ValidationError) else 409
        return await product_form_page(request, str(exc), {**data, "made_in_house": "made_in_house" in data}, status)
    raise web.HTTPFound(f"/stock/products/{product.id}")


def _expiring_days(request: web.Request) -> int:
    value = request.query.get("expiring_days", "")
    if not value:
        return EXPIRY_WARNING_DAYS
    if not (value.isascii() and value.isdigit()) or not 0 <= int(value) <= 3650:
        raise errors.ValidationError("expiring_days", "a number of days, 0 to 3650")
    return int(value)


async def product_page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    user = current_user(request)
    product_id = path_id(request, "product_id")
    limit, after = page_args(request, 50)
    async with request.app[keys.POOL].acquire() as conn:
        product = await stock.get_product(conn, product_id)
        current = await stock.balance(conn, product_id)
        per_warehouse = await stock.stock_by_warehouse(conn, product_id)
        batches = await stock.list_batches(conn, product_id)
        history = await stock.list_movements(conn, product_id, limit, after)
        suppliers = [o for o in (await orders.list_orders(conn, user, "supplier", limit=500)).items
                     if o.product_id == product_id] if _can_move(user) else []
    return render(request, "product.html", product=product, balance=current, per_warehouse=per_warehouse,
                  batches=batches, history=history.items, next_url=next_url(request, history), today=_today(request),
                  expiring_days=_expiring_days(request), can_move=_can_move(user), error=error,
                  supplier_orders=suppliers, http_status=status)


async def product_action_post(request: web.Request) -> web.Response:
    """The card's forms: receipt, write-off, transfer. A refusal shows the card again with the reason."""
    user = _goods_user(request)
    data = {**dict(await request.post()), "product_id": str(path_id(request, "product_id"))}
    action = request.match_info["action"]
    try:
        async with request.app[keys.POOL].acquire() as conn:
            if action == "receipt":
                await _receipt(conn, user, data)
            elif action == "writeoff":
                await _write_off(conn, user, data)
            else:
                await _transfer(conn, user, data)
    except (errors.ValidationError, errors.Conflict) as exc:
        return await product_page(request, str(exc), 422 if isinstance(exc, errors.ValidationError) else 409)
    raise web.HTTPFound(f"/stock/products/{data['product_id']}")


async def warehouse_post(request: web.Request) -> web.Response:
    user = _goods_user(request)
    data = await request.post()
    async with request.app[keys.POOL].acquire() as conn:
        await stock.create_warehouse(conn, user, data.get("name"))
    raise web.HTTPFound("/stock/products")


async def orders_page(request: web.Request) -> web.Response:
    """Production or supplier orders; the warehouse (head, admin) acts, a manager sees their deals' read-only."""
    user = current_user(request)
    kind = _kind(request)
    limit, after = page_args(request, 100)
    async with request.app[keys.POOL].acquire() as conn:
        page = await orders.list_orders(conn, user, kind, _states(request), limit, after)
        warehouses = await stock.list_warehouses(conn)
    return render(request, "orders.html", kind=kind, orders=page.items, next_url=next_url(request, page),
                  state=request.query.get("state", ""), states=orders.STATES[kind], warehouses=warehouses,
                  can_move=_can_move(user))


async def order_post(request: web.Request) -> web.Response:
    user = _goods_user(request)
    kind = _kind(request)
    data = dict(await request.post())
    order_id = path_id(request, "order_id")
    async with request.app[keys.POOL].acquire() as conn:
        if kind == "production":
            await _move_production(conn, user, order_id, data)
        else:
            await _receipt(conn, user, {**data, "supplier_order_id": str(order_id)})
    raise web.HTTPFound("/stock/production" if kind == "production" else "/stock/supplier-orders")


def openapi_paths(error: dict[str, Any]) -> dict[str, Any]:
    """For web/api.py's /api/openapi.json."""
    by_id = [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}]
    body = {"content": {"application/json": {"schema": {"type": "object"}}}}
    made = {"201": {"description": "the product's new balance, per warehouse"}, "403": error, "404": error,
            "409": error, "422": error}
    ok = {"200": {"description": "ok"}}
    listed = [{"name": n, "in": "query", "schema": {"type": "string"}} for n in ("state", "limit", "after")]
    return {
        "/api/stock/receipts": {"post": {
            "summary": "Goods in (warehouse, head, admin): {product_id, quantity, warehouse_id?, expires_on?: "
                       "YYYY-MM-DD, document_number?, supplier_order_id?}; against an open supplier order it is "
                       "marked received and the goods reserved for its deal", "requestBody": body,
            "responses": made}},
        "/api/stock/writeoffs": {"post": {
            "summary": "Write off, oldest batches first {product_id, quantity, reason, warehouse_id?}; never more "
                       "than on hand (409)", "requestBody": body, "responses": made}},
        "/api/stock/transfers": {"post": {
            "summary": "Move stock {product_id, quantity, from_warehouse_id, to_warehouse_id}, oldest batches first; "
                       "the batches keep their receipt and expiry dates", "requestBody": body, "responses": made}},
        "/api/products/{id}": {"parameters": by_id,
                               "get": {"summary": "A product with its stock per warehouse and its batches",
                                       "responses": {**ok, "404": error}},
                               "put": {"summary": "Edit {sku, name, unit, price, barcode, made_in_house, version} "
                                                  "(warehouse, head, admin); a stale version is 409",
                                       "requestBody": body,
                                       "responses": {**ok, "403": error, "404": error, "409": error, "422": error}}},
        "/api/products/{id}/movements": {"parameters": by_id, "get": {
            "summary": "The product's movements, newest first (keyset: limit, after)",
            "parameters": listed[1:], "responses": {**ok, "404": error}}},
        "/api/warehouses": {"get": {"summary": "Warehouses", "responses": ok},
                            "post": {"summary": "A warehouse {name} (warehouse, head, admin)", "requestBody": body,
                                     "responses": {"201": {"description": "created"}, "403": error, "409": error}}},
        "/api/production-orders": {"get": {
            "summary": "Production orders (a manager: of their deals); open ones by default, ?state=planned|in_work|"
                       "made|cancelled|all", "parameters": listed, "responses": {**ok, "422": error}}},
        "/api/production-orders/{id}": {"parameters": by_id, "patch": {
            "summary": "{planned_on?: YYYY-MM-DD | null, state?: in_work | made, warehouse_id?, expires_on?} "
                       "(warehouse, head, admin); made puts the goods in stock as a batch",
            "requestBody": body, "responses": {**ok, "403": error, "404": error, "409": error, "422": error}}},
        "/api/supplier-orders": {"get": {
            "summary": "Supplier orders (a manager: of their deals); open ones by default, ?state=open|received|"
                       "cancelled|all", "parameters": listed, "responses": {**ok, "422": error}}},
        "/api/supplier-orders/{id}/receive": {"parameters": by_id, "post": {
            "summary": "The goods came (warehouse, head, admin) {quantity?, warehouse_id?, expires_on?, "
                       "document_number?}", "requestBody": body,
            "responses": {**ok, "403": error, "404": error, "422": error}}},
    }


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/stock/products", products_page)
    r.add_get("/stock/products/new", product_form_page)
    r.add_post("/stock/products/new", product_form_post)
    r.add_get("/stock/products/{product_id:\\d+}", product_page)
    r.add_get("/stock/products/{product_id:\\d+}/edit", product_form_page)
    r.add_post("/stock/products/{product_id:\\d+}/edit", product_form_post)
    r.add_post("/stock/products/{product_id:\\d+}/{action:receipt|writeoff|transfer}", product_action_post)
    r.add_post("/stock/warehouses", warehouse_post)
    r.add_get("/stock/production", orders_page)
    r.add_post("/stock/production/{order_id:\\d+}", order_post)
    r.add_get("/stock/supplier-orders", orders_page)
    r.add_post("/stock/supplier-orders/{order_id:\\d+}", order_post)
    r.add_post("/api/stock/receipts", receipts_api)
    r.add_post("/api/stock/writeoffs", writeoffs_api)
    r.add_post("/api/stock/transfers", transfers_api)
    r.add_get("/api/products/{product_id:\\d+}", product_api)
    r.add_put("/api/products/{product_id:\\d+}", update_product_api)
    r.add_get("/api/products/{product_id:\\d+}/movements", movements_api)
    r.add_get("/api/warehouses", warehouses_api)
    r.add_post("/api/warehouses", create_warehouse_api)
    r.add_get("/api/production-orders", orders_api)
    r.add_patch("/api/production-orders/{order_id:\\d+}", production_order_api)
    r.add_get("/api/supplier-orders", orders_api)
    r.add_post("/api/supplier-orders/{order_id:\\d+}/receive", receive_order_api)
