"""Production and supplier orders raised by deals: listed for the warehouse, planned, put in work, and made or
received into stock (a batch reserved for the deal item that asked for it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

import asyncpg

from crm import stock
from crm.contracts import parse_date
from crm.errors import Conflict, NotFound, ValidationError
from crm.paging import Page, decode, page
from crm.users import User

Kind = Literal["production", "supplier"]
KINDS: tuple[Kind, ...] = ("production", "supplier")
# The states each kind goes through, and the moves allowed between them (planned may be made at once: the
# workshop sometimes reports only the end). A move not listed changes nothing and is refused.
STATES: dict[str, tuple[str, ...]] = {"production": ("planned", "in_work", "made", "cancelled"),
                                      "supplier": ("open", "received", "cancelled")}
MOVES: dict[str, dict[str, tuple[str, ...]]] = {
    "production": {"planned": ("in_work", "made"), "in_work": ("made",)},
    "supplier": {"open": ("received",)},
}
OPEN_STATES = {"production": ("planned", "in_work"), "supplier": ("open",)}
DONE_STATE = {"production": "made", "supplier": "received"}


@dataclass(frozen=True, slots=True)
class Order:
    kind: str
    id: int
    deal_id: int
    deal_title: str
    deal_status: str
    manager_id: int | None
    manager_name: str | None
    deal_item_id: int
    product_id: int
    sku: str
    name: str
    unit: str
    quantity: Decimal
    status: str
    planned_on: date | None
    created_at: datetime
    finished_at: datetime | None
    batch_id: int | None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATES[self.kind]

    def next_states(self) -> tuple[str, ...]:
        return MOVES[self.kind].get(self.status, ())


def order_key(order: Order) -> tuple[int]:
    return (order.id,)


def _select(kind: str) -> str:
    table = "production_orders" if kind == "production" else "supplier_orders"
    planned = "o.planned_on" if kind == "production" else "NULL::date"
    return f"""
SELECT '{kind}' AS kind, o.id, i.deal_id, d.title AS deal_title, d.status AS deal_status, d.manager_id,
       u.display_name AS manager_name, o.deal_item_id, o.product_id, p.sku, p.name, p.unit, o.quantity, o.status,
       {planned} AS planned_on, o.created_at, o.finished_at, o.batch_id
FROM {table} o JOIN deal_items i ON i.id = o.deal_item_id JOIN deals d ON d.id = i.deal_id
JOIN products p ON p.id = o.product_id LEFT JOIN users u ON u.id = d.manager_id
"""


# A manager sees the orders of their own deals (read-only); everyone else sees all.
LIST = {kind: _select(kind) + """
WHERE ($1::bigint IS NULL OR d.manager_id = $1) AND o.status = ANY($2::text[]) AND ($3::bigint IS NULL OR o.id < $3)
ORDER BY o.id DESC LIMIT $4
""" for kind in KINDS}
GET = {kind: _select(kind) + "WHERE o.id = $1 AND ($2::bigint IS NULL OR d.manager_id = $2)" for kind in KINDS}
# The order row is claimed first: two clicks on "Made" at once give one batch (the second finds it made).
CLAIM = {kind: f"""
SELECT o.id, o.deal_item_id, o.product_id, o.quantity, o.status, i.deal_id, d.status AS deal_status
FROM {table} o JOIN deal_items i ON i.id = o.deal_item_id JOIN deals d ON d.id = i.deal_id
WHERE o.id = $1 FOR UPDATE OF o
""" for kind, table in (("production", "production_orders"), ("supplier", "supplier_orders"))}
FINISH = {"production": "UPDATE production_orders SET status = 'made', finished_at = $2, batch_id = $3 WHERE id = $1",
          "supplier": "UPDATE supplier_orders SET status = 'received', finished_at = $2, batch_id = $3 WHERE id = $1"}
START = "UPDATE production_orders SET status = 'in_work' WHERE id = $1"
PLAN = "UPDATE production_orders SET planned_on = $2 WHERE id = $1"


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValidationError("kind", "production or supplier")
    return kind


def _scope(viewer: User) -> int | None:
    return None if viewer.sees_everything else viewer.id


async def list_orders(conn: asyncpg.Connection, viewer: User, kind: str, states: tuple[str, ...] | None = None,
                      limit: int = 100, after: str | None = None) -> Page[Order]:
    """Newest first; by default the open ones (what the warehouse still has to do)."""
    kind = _kind(kind)
    wanted = states or OPEN_STATES[kind]
    if any(s not in STATES[kind] for s in wanted):
        raise ValidationError("state", " or ".join(STATES[kind]))
    key = decode(after, (int,))
    rows = await conn.fetch(LIST[kind], _scope(viewer), list(wanted), key[0] if key else None, limit + 1)
    return page([Order(**dict(r)) for r in rows], limit, order_key)


async def get_order(conn: asyncpg.Connection, viewer: User, kind: str, order_id: int) -> Order:
    row = await conn.fetchrow(GET[_kind(kind)], order_id, _scope(viewer))
    if row is None:
        raise NotFound("order")
    return Order(**dict(row))


async def _claim(conn: asyncpg.Connection, kind: str, order_id: int, deal_id: int | None) -> asyncpg.Record:
    row = await conn.fetchrow(CLAIM[kind], order_id)
    if row is None or (deal_id is not None and row["deal_id"] != deal_id):
        raise NotFound("order")
    return row


async def finish_order(conn: asyncpg.Connection, viewer: User, kind: str, order_id: int, now: datetime, *,
                       deal_id: int | None = None, quantity=None, warehouse_id: int | None = None,
                       expires_on=None, document_number: str | None = None) -> Order:
    """Made or received: the goods enter stock as a batch (by default the ordered quantity, into the default
    warehouse) and, while the deal is open, are reserved for the item that ordered them."""
    stock.require_goods_role(viewer)
    kind = _kind(kind)
    async with conn.transaction():
        row = await _claim(conn, kind, order_id, deal_id)
        if row["status"] not in OPEN_STATES[kind]:
            raise NotFound("open order")
        amount = row["quantity"] if quantity in (None, "") else stock.parse_quantity(quantity)
        batch_id = await stock.receive(conn, row["product_id"], amount, now, viewer.id, expires_on, warehouse_id,
                                       document_number)
        if row["deal_status"] == "in_progress":
            await stock.reserve(conn, row["product_id"], min(amount, row["quantity"]), row["deal_item_id"], now,
                                viewer.id)
        await conn.execute(FINISH[kind], order_id, now, batch_id)
    return await get_order(conn, viewer, kind, order_id)


async def start_production(conn: asyncpg.Connection, viewer: User, order_id: int) -> Order:
    """Planned → in work."""
    stock.require_goods_role(viewer)
    async with conn.transaction():
        row = await _claim(conn, "production", order_id, None)
        if "in_work" not in MOVES["production"].get(row["status"], ()):
            raise Conflict(f"the order is {row['status'].replace('_', ' ')} already")
        await conn.execute(START, order_id)
    return await get_order(conn, viewer, "production", order_id)


async def plan_production(conn: asyncpg.Connection, viewer: User, order_id: int, planned_on) -> Order:
    """The day the workshop plans to make it (empty: not planned yet); only while it is not made."""
    stock.require_goods_role(viewer)
    day = parse_date(planned_on, "planned_on", required=False)
    async with conn.transaction():
        row = await _claim(conn, "production", order_id, None)
        if row["status"] not in OPEN_STATES["production"]:
            raise Conflict(f"the order is {row['status']} already")
        await conn.execute(PLAN, order_id, day)
    return await get_order(conn, viewer, "production", order_id)


async def move_production(conn: asyncpg.Connection, viewer: User, order_id: int, state: str, now: datetime,
                          **receipt) -> Order:
    """Set a production order's state: in_work, or made (which adds the goods to stock)."""
    if state == "in_work":
        return await start_production(conn, viewer, order_id)
    if state == "made":
        return await finish_order(conn, viewer, "production", order_id, now, **receipt)
    raise ValidationError("state", "in_work or made")
