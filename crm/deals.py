"""Deals: stages with normal durations, items, reservation into stock / production / supplier orders,
won or lost with a reason; stuck-deal detection; the illiquid-stock widget's figures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import asyncpg

from crm import contacts, orders, paging, stock
from crm.errors import Conflict, Forbidden, NotFound, ValidationError
from crm.leads import get_lead, notify_heads
from crm.users import User
from crm.workhours import WorkingHours

LOSS_REASONS = ("price", "competitor", "no_budget", "no_decision", "lead_time", "spec_mismatch", "other")


@dataclass(frozen=True, slots=True)
class Stage:
    code: str
    name: str
    position: int
    normal_days: int
    reserves_stock: bool
    requires_items: bool = False
    requires_contract: bool = False
    skippable: bool = True


@dataclass(frozen=True, slots=True)
class Deal:
    id: int
    title: str
    contact_id: int | None
    contact_name: str | None
    company_id: int | None
    company_name: str | None
    lead_id: int | None
    manager_id: int | None
    manager_name: str | None
    stage: str
    stage_name: str
    normal_days: int
    status: str
    loss_reason: str | None
    needs: str
    legal_entity: str
    manual_amount: Decimal | None
    items_amount: Decimal
    probability: int
    source: str
    stage_changed_at: datetime
    created_at: datetime
    version: int = 1
    expected_close_on: date | None = None
    contract_id: int | None = None

    @property
    def amount(self) -> Decimal:
        return self.manual_amount if self.manual_amount is not None else self.items_amount

    def is_stuck(self, now: datetime) -> bool:
        return self.status == "in_progress" and now - self.stage_changed_at > timedelta(days=self.normal_days)

    def days_in_stage(self, now: datetime) -> int:
        return max(0, (now - self.stage_changed_at).days)


@dataclass(frozen=True, slots=True)
class DealItem:
    id: int
    product_id: int
    sku: str
    name: str
    unit: str
    quantity: Decimal
    price: Decimal
    made_in_house: bool
    reserved: Decimal
    shipped: Decimal
    in_production: Decimal
    ordered: Decimal

    @property
    def total(self) -> Decimal:
        return self.quantity * self.price

    @property
    def uncovered(self) -> Decimal:
        return max(Decimal(0), self.quantity - self.shipped - self.reserved - self.in_production - self.ordered)


LIST_STAGES = """
SELECT code, name, position, normal_days, reserves_stock, requires_items, requires_contract, skippable
FROM deal_stages ORDER BY position"""
_DEAL_SELECT = """
SELECT d.id, d.title, d.contact_id, ct.name AS contact_name, d.company_id, co.name AS company_name, d.lead_id,
       d.manager_id, u.display_name AS manager_name, d.stage, s.name AS stage_name, s.normal_days, d.status,
       d.loss_reason, d.needs, d.legal_entity, d.manual_amount,
       coalesce((SELECT sum(i.quantity * i.price) FROM deal_items i WHERE i.deal_id = d.id), 0) AS items_amount,
       d.probability, d.source, d.stage_changed_at, d.created_at, d.version, d.expected_close_on, d.contract_id
FROM deals d
JOIN deal_stages s ON s.code = d.stage
LEFT JOIN contacts ct ON ct.id = d.contact_id
LEFT JOIN companies co ON co.id = d.company_id
LEFT JOIN users u ON u.id = d.manager_id
"""
# A manager sees their own deals; head and admin see all.
GET_DEAL = _DEAL_SELECT + "WHERE d.id = $1 AND ($2::bigint IS NULL OR d.manager_id = $2)"
# Stage by stage from the cursor's stage on, each one range of deals_stage_order_idx (a manager's:
# deals_manager_stage_order_idx, migration 0028): the stage's position lives in deal_stages, so one index
# over deals cannot give the whole order. The page's ids first, then only those deals are read and joined.
_DEAL_PAGE = """
WITH page AS (
    SELECT d.id FROM deal_stages s
    CROSS JOIN LATERAL (
        SELECT d.id, d.stage_changed_at FROM deals d
        WHERE d.stage = s.code AND ($1::bigint IS NULL OR d.manager_id = $1) AND ($2::text IS NULL OR d.status = $2)
          AND $3::bigint IS NULL AND $4::bigint IS NULL
          AND (d.stage_changed_at, d.id) > (CASE WHEN s.position = $5 THEN $6::timestamptz ELSE '-infinity' END,
                                            CASE WHEN s.position = $5 THEN $7::bigint ELSE 0 END)
        ORDER BY d.stage_changed_at, d.id LIMIT $8
    ) d
    WHERE s.position >= $5::int
    ORDER BY s.position, d.stage_changed_at, d.id LIMIT $8
)"""
LIST_DEALS = _DEAL_PAGE + _DEAL_SELECT + """JOIN page ON page.id = d.id
ORDER BY s.position, d.stage_changed_at, d.id
"""
# The home page's stuck deals (longer in their stage than its norm), in list order: the longest in each stage
# come first in its index range, so each stage reads only the deals it returns.
LIST_STUCK_DEALS = LIST_DEALS.replace("          AND $3::bigint IS NULL AND $4::bigint IS NULL\n", """\
          AND d.stage_changed_at < $3::timestamptz - make_interval(days => s.normal_days) AND $4::bigint IS NULL
""")
COUNT_DEALS = "SELECT count(*) FROM deals WHERE status = $2 AND ($1::bigint IS NULL OR manager_id = $1)"
# A contact's or a company's few deals: found by deals_contact_all_idx / deals_company_idx (0023), then sorted.
LIST_PARTY_DEALS = _DEAL_SELECT + """
WHERE ($1::bigint IS NULL OR d.manager_id = $1) AND ($2::text IS NULL OR d.status = $2)
  AND (d.contact_id = $3 OR d.company_id = $4)
  AND (s.position, d.stage_changed_at, d.id) > ($5::int, $6::timestamptz, $7::bigint)
ORDER BY s.position, d.stage_changed_at, d.id LIMIT $8
"""
# Every write to a deal claims its row first: two clicks at once then run one after the other, and the
# second sees what the first did (nothing left to reserve or ship, the stage already moved).
LOCK_DEAL = "SELECT id FROM deals WHERE id = $1 AND ($2::bigint IS NULL OR manager_id = $2) FOR UPDATE"
DEAL_OWNER = "SELECT 1 FROM users WHERE id = $1 AND active AND role IN ('manager', 'head')"
INSERT_DEAL = """
INSERT INTO deals (title, contact_id, company_id, lead_id, manager_id, stage, needs, legal_entity, manual_amount,
                   probability, source, stage_changed_at, expected_close_on)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id
"""
INSERT_HISTORY = "INSERT INTO deal_stage_history (deal_id, stage, entered_at, user_id) VALUES ($1, $2, $3, $4)"
CLOSE_HISTORY = """
UPDATE deal_stage_history SET left_at = $2, note = $3 WHERE deal_id = $1 AND left_at IS NULL"""
LIST_HISTORY = """
SELECT h.stage, s.name, h.entered_at, h.left_at, u.display_name AS who, h.note FROM deal_stage_history h
JOIN deal_stages s ON s.code = h.stage LEFT JOIN users u ON u.id = h.user_id
WHERE h.deal_id = $1 ORDER BY h.entered_at, h.id
"""
SET_STAGE = """
UPDATE deals SET stage = $2, stage_changed_at = $3, stuck_flagged_at = NULL, updated_at = $3, version = version + 1
WHERE id = $1
"""
CLOSE_DEAL = """
UPDATE deals SET status = $2, loss_reason = $3, updated_at = $4, version = version + 1 WHERE id = $1"""
INSERT_ITEM = "INSERT INTO deal_items (deal_id, product_id, quantity, price) VALUES ($1, $2, $3, $4) RETURNING id"
DELETE_ITEM = "DELETE FROM deal_items WHERE id = $1 AND deal_id = $2 RETURNING product_id"
LIST_ITEMS = """
SELECT i.id, i.product_id, p.sku, p.name, p.unit, i.quantity, i.price, p.made_in_house,
  greatest(0, coalesce((SELECT sum(CASE WHEN m.kind = 'reservation' THEN m.quantity ELSE -m.quantity END)
            FROM stock_movements m WHERE m.deal_item_id = i.id AND m.kind IN ('reservation', 'release', 'shipment')),
            0)) AS reserved,
  coalesce((SELECT sum(m.quantity) FROM stock_movements m WHERE m.deal_item_id = i.id AND m.kind = 'shipment'), 0)
    AS shipped,
  coalesce((SELECT sum(o.quantity) FROM production_orders o
            WHERE o.deal_item_id = i.id AND o.status IN ('planned', 'in_work')), 0) AS in_production,
  coalesce((SELECT sum(o.quantity) FROM supplier_orders o WHERE o.deal_item_id = i.id AND o.status = 'open'),
           0) AS ordered
FROM deal_items i JOIN products p ON p.id = i.product_id WHERE i.deal_id = $1 ORDER BY i.id
"""
LIST_ORDERS = """
SELECT 'production' AS kind, o.id, o.deal_item_id, p.sku, p.name, o.quantity, o.status, o.created_at
FROM production_orders o JOIN deal_items i ON i.id = o.deal_item_id JOIN products p ON p.id = o.product_id
WHERE i.deal_id = $1
UNION ALL
SELECT 'supplier', o.id, o.deal_item_id, p.sku, p.name, o.quantity, o.status, o.created_at
FROM supplier_orders o JOIN deal_items i ON i.id = o.deal_item_id JOIN products p ON p.id = o.product_id
WHERE i.deal_id = $1
ORDER BY created_at, id
"""
INSERT_PRODUCTION = "INSERT INTO production_orders (deal_item_id, product_id, quantity) VALUES ($1, $2, $3)"
INSERT_SUPPLIER = "INSERT INTO supplier_orders (deal_item_id, product_id, quantity) VALUES ($1, $2, $3)"
OPEN_DEALS_OF_CONTACT = "SELECT id FROM deals WHERE contact_id = $1 AND status = 'in_progress' LIMIT 2"
OPEN_DEALS_SHORT = """
SELECT d.id, d.title, s.name AS stage FROM deals d JOIN deal_stages s ON s.code = d.stage
WHERE d.status = 'in_progress' AND (d.contact_id = $1 OR ($2::bigint IS NOT NULL AND d.company_id = $2))
ORDER BY d.created_at DESC LIMIT 5
"""
# Stuck: over the stage's normal days and not flagged since it entered the stage.
NEWLY_STUCK = """
UPDATE deals d SET stuck_flagged_at = $1
FROM deal_stages s
WHERE s.code = d.stage AND d.status = 'in_progress' AND d.stuck_flagged_at IS NULL
  AND d.stage_changed_at + make_interval(days => s.normal_days) < $1
RETURNING d.id, d.title, d.manager_id, s.name AS stage_name
"""
INSERT_STUCK_TASK = """
INSERT INTO tasks (kind, title, assignee_id, due_at, deal_id) VALUES ('stuck_deal', $1, $2, $3, $4)
"""
INSERT_NOTIFICATION = "INSERT INTO notifications (user_id, kind, text) VALUES ($1, $2, $3)"


def _deal(row: asyncpg.Record) -> Deal:
    return Deal(**dict(row))


def _scope(viewer: User) -> int | None:
    return None if viewer.sees_everything else viewer.id


async def list_stages(conn: asyncpg.Connection) -> list[Stage]:
    return [Stage(**dict(r)) for r in await conn.fetch(LIST_STAGES)]


async def get_deal(conn: asyncpg.Connection, viewer: User, deal_id: int) -> Deal:
    row = await conn.fetchrow(GET_DEAL, deal_id, _scope(viewer))
    if row is None:
        raise NotFound("deal")
    return _deal(row)


async def list_deals(conn: asyncpg.Connection, viewer: User, status: str | None = None,
                     contact_id: int | None = None, company_id: int | None = None, limit: int = 500,
                     after: str | None = None) -> list[Deal]:
    """By stage, longest in the stage first; `after` is the previous page's cursor (crm.paging)."""
    key = paging.decode(after, (int, datetime, int)) or (-(2 ** 31), datetime.min.replace(tzinfo=UTC), 0)
    if status is not None and status not in ("in_progress", "won", "lost"):
        raise ValidationError("status", "in_progress, won or lost")
    # A contact's or a company's own deals; neither given: every deal the viewer may see.
    query = LIST_DEALS if contact_id is None and company_id is None else LIST_PARTY_DEALS
    rows = await conn.fetch(query, _scope(viewer), status, contact_id, company_id, *key, limit)
    return [_deal(r) for r in rows]


async def list_stuck_deals(conn: asyncpg.Connection, viewer: User, now: datetime, limit: int = 10) -> list[Deal]:
    """The deals in progress longer in their stage than its norm (Deal.is_stuck), in list order."""
    start = (-(2 ** 31), datetime.min.replace(tzinfo=UTC), 0)
    return [_deal(r) for r in await conn.fetch(LIST_STUCK_DEALS, _scope(viewer), "in_progress", now, None, *start,
                                               limit)]


async def count_deals(conn: asyncpg.Connection, viewer: User, status: str = "in_progress") -> int:
    """Cheap at 20,000 deals: one range of an index (migration 0028)."""
    return await conn.fetchval(COUNT_DEALS, _scope(viewer), status)


async def list_deals_page(conn: asyncpg.Connection, viewer: User, status: str | None = None, limit: int = 500,
                          after: str | None = None) -> paging.Page[Deal]:
    positions = {stage.code: stage.position for stage in await list_stages(conn)}
    found = await list_deals(conn, viewer, status, limit=limit + 1, after=after)
    return paging.page(found, limit, lambda d: (positions[d.stage], d.stage_changed_at, d.id))


def _whole(value, field: str, low: int, high: int, message: str) -> int:
    """A whole number in [low, high] from JSON or a form's text."""
    if isinstance(value, bool):
        raise ValidationError(field, message)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValidationError(field, message) from None
    if not low <= number <= high:
        raise ValidationError(field, message)
    return number


def _probability(value) -> int:
    return _whole(value, "probability", 0, 100, "0 to 100")


async def _parties(conn: asyncpg.Connection, viewer: User, contact_id: int | None, company_id: int | None,
                   lead_id: int | None) -> tuple[int | None, int | None]:
    """The deal's contact and company: named ones must be visible to the viewer (NotFound otherwise,
    which names nobody); missing ones come from the contact or the lead."""
    contact = await contacts.get_party(conn, viewer, "contact", contact_id) if contact_id is not None else None
    if company_id is not None:
        await contacts.get_party(conn, viewer, "company", company_id)
    lead = await get_lead(conn, viewer, lead_id) if lead_id is not None else None
    if contact_id is None and lead is not None:
        contact_id = lead.contact_id
    if company_id is None:
        company_id = (contact.company_id if contact else None) or (lead.company_id if lead else None)
    return contact_id, company_id


async def create_deal(conn: asyncpg.Connection, viewer: User, title: str, now: datetime, *,
                      contact_id: int | None = None, company_id: int | None = None, lead_id: int | None = None,
                      manager_id: int | None = None, needs: str = "", legal_entity: str = "",
                      manual_amount=None, probability=20, source: str = "", expected_close_on=None) -> Deal:
    title = (title or "").strip()
    if not title:
        raise ValidationError("title", "is required")
    probability = _probability(probability)
    amount = None if manual_amount in (None, "") else stock.parse_money(manual_amount, "amount")
    manager_id = (manager_id if viewer.sees_everything else None) or viewer.id
    if manager_id != viewer.id and not await conn.fetchval(DEAL_OWNER, manager_id):
        raise ValidationError("manager_id", "no active manager with this id")
    contact_id, company_id = await _parties(conn, viewer, contact_id, company_id, lead_id)
    stages = await list_stages(conn)
    async with conn.transaction():
        deal_id = await conn.fetchval(INSERT_DEAL, title[:200], contact_id, company_id, lead_id, manager_id,
                                      stages[0].code, needs[:5000], legal_entity[:300], amount, probability,
                                      source[:100], now, _date(expected_close_on))
        await conn.execute(INSERT_HISTORY, deal_id, stages[0].code, now, viewer.id)
    return await get_deal(conn, viewer, deal_id)


async def list_items(conn: asyncpg.Connection, deal_id: int) -> list[DealItem]:
    return [DealItem(**dict(r)) for r in await conn.fetch(LIST_ITEMS, deal_id)]


async def stage_history(conn: asyncpg.Connection, deal_id: int) -> list[dict]:
    return [dict(r) for r in await conn.fetch(LIST_HISTORY, deal_id)]


def _require_open(deal: Deal) -> None:
    if deal.status != "in_progress":
        raise Conflict(f"the deal is {deal.status}")


async def _claim(conn: asyncpg.Connection, viewer: User, deal_id: int, must_be_open: bool = True) -> Deal:
    """Lock the deal row for the caller's transaction and read it as it is now."""
    if await conn.fetchval(LOCK_DEAL, deal_id, _scope(viewer)) is None:
        raise NotFound("deal")
    deal = await get_deal(conn, viewer, deal_id)
    if must_be_open:
        _require_open(deal)
    return deal


async def add_item(conn: asyncpg.Connection, viewer: User, deal_id: int, product_id: int, quantity,
                   price=None) -> list[DealItem]:
    amount = stock.parse_quantity(quantity)
    unit_price = None if price in (None, "") else stock.parse_money(price)
    async with conn.transaction():
        await _claim(conn, viewer, deal_id)
        product = await stock.get_product(conn, product_id)
        await conn.execute(INSERT_ITEM, deal_id, product_id, amount, product.price if unit_price is None
                           else unit_price)
    return await list_items(conn, deal_id)


async def remove_item(conn: asyncpg.Connection, viewer: User, deal_id: int, item_id: int, now: datetime) -> None:
    async with conn.transaction():
        await _claim(conn, viewer, deal_id)
        for item in await list_items(conn, deal_id):
            if item.id == item_id:
                await stock.release(conn, item.id, item.product_id, now, viewer.id)
        if await conn.fetchval(DELETE_ITEM, item_id, deal_id) is None:
            raise NotFound("item")


async def _reserve_claimed(conn: asyncpg.Connection, viewer: User, deal_id: int, now: datetime) -> None:
    """Each item takes what stock has; the rest is produced in house or ordered from a supplier.
    The caller holds the deal; the items are read after that, so a second run finds them covered."""
    items = [item for item in await list_items(conn, deal_id) if item.uncovered > 0]
    await stock.lock_products(conn, [item.product_id for item in items])
    for item in items:
        taken = await stock.reserve(conn, item.product_id, item.uncovered, item.id, now, viewer.id)
        rest = item.uncovered - taken
        if rest > 0:
            await conn.execute(INSERT_PRODUCTION if item.made_in_house else INSERT_SUPPLIER, item.id,
                               item.product_id, rest)


async def reserve_items(conn: asyncpg.Connection, viewer: User, deal_id: int, now: datetime) -> list[DealItem]:
    """Cover what is not covered yet: from stock, else by a production or supplier order."""
    async with conn.transaction():
        await _claim(conn, viewer, deal_id)
        await _reserve_claimed(conn, viewer, deal_id, now)
    return await list_items(conn, deal_id)


async def list_orders(conn: asyncpg.Connection, deal_id: int) -> list[dict]:
    return [dict(r) for r in await conn.fetch(LIST_ORDERS, deal_id)]


async def complete_order(conn: asyncpg.Connection, viewer: User, deal_id: int, kind: str, order_id: int,
                         now: datetime) -> list[DealItem]:
    """Made or delivered: the quantity enters stock as a batch and is reserved for its deal item (crm.orders)."""
    if kind not in orders.KINDS:
        raise ValidationError("kind", "production or supplier")
    stock.require_goods_role(viewer)
    async with conn.transaction():
        await _claim(conn, viewer, deal_id, must_be_open=False)
        try:
            await orders.finish_order(conn, viewer, kind, order_id, now, deal_id=deal_id)
        except NotFound:
            raise NotFound("open order") from None
    return await list_items(conn, deal_id)


async def ship_item(conn: asyncpg.Connection, viewer: User, deal_id: int, item_id: int, now: datetime
                    ) -> list[DealItem]:
    """Ship what is reserved for the item, oldest batches first."""
    async with conn.transaction():
        await _claim(conn, viewer, deal_id)
        item = next((i for i in await list_items(conn, deal_id) if i.id == item_id), None)
        if item is None:
            raise NotFound("item")
        if item.reserved <= 0:
            raise Conflict("nothing is reserved for this item yet")
        await stock.ship(conn, item.product_id, item.reserved, now, deal_item_id=item.id, user_id=viewer.id)
    return await list_items(conn, deal_id)


# A deal that moves on, or closes, is no longer stuck: its "stuck" task closes with it.
CLOSE_STUCK_TASKS = """
UPDATE tasks SET state = 'done', closed_at = $2, closed_by = $3, note = $4
WHERE deal_id = $1 AND kind = 'stuck_deal' AND state = 'open'"""


class RuleRefused(Conflict):
    """A deal rule said no; `rule` is the code the API answers with (the board says it in the reader's words)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


STALE = "someone changed this deal meanwhile; reload it to see their change"
NEEDS_ITEMS = "the deal needs items before this stage"
NEEDS_CONTRACT = "the deal needs a contract before this stage"
NOT_SKIPPABLE = "a stage on the way cannot be skipped: move the deal through it"
UNSHIPPED = "items are not all shipped: confirm and say why to win the deal anyway"
WON_REASON = "say why the deal is won with items unshipped"
STAGE_TASK_FROM_RULES = """
INSERT INTO tasks (kind, title, assignee_id, due_at, deal_id, stage_task_id)
SELECT 'follow_up', r.title, $2, $3, $1, r.id FROM deal_stage_tasks r WHERE r.id = $4
ON CONFLICT (deal_id, stage_task_id) WHERE state = 'open' AND stage_task_id IS NOT NULL DO NOTHING
"""
LIST_STAGE_TASKS = "SELECT id, stage, title, due_days FROM deal_stage_tasks ORDER BY stage, id"
STAGE_TASKS_OF = "SELECT id, title, due_days FROM deal_stage_tasks WHERE stage = $1 ORDER BY id"
INSERT_STAGE_TASK = "INSERT INTO deal_stage_tasks (stage, title, due_days) VALUES ($1, $2, $3) RETURNING id"
DELETE_STAGE_TASK = "DELETE FROM deal_stage_tasks WHERE id = $1 RETURNING id"
SET_STAGE_RULES = """
UPDATE deal_stages SET requires_items = $2, requires_contract = $3, skippable = $4 WHERE code = $1 RETURNING code"""


def _check_version(deal: Deal, version: int | None) -> None:
    if version is not None and version != deal.version:
        raise RuleRefused("stale", STALE)


def working_days_later(hours: WorkingHours, now: datetime, days: int) -> datetime:
    """The end of the working day `days` working days after today (0: the end of today, or of the next
    working day when today is off)."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(hours.timezone)
    day = now.astimezone(zone).date()
    while day.weekday() not in hours.days:
        day += timedelta(days=1)
    for _ in range(days):
        day += timedelta(days=1)
        while day.weekday() not in hours.days:
            day += timedelta(days=1)
    return datetime.combine(day, hours.end, zone)


async def _check_rules(conn: asyncpg.Connection, deal: Deal, stages: dict[str, Stage], target: Stage) -> None:
    """Forward moves only: every stage passed over must be skippable, and what the target stage and the
    stages passed over need (items, a contract) must be there. Moving back is always allowed."""
    current = stages[deal.stage]
    if target.position <= current.position:
        return
    between = [s for s in stages.values() if current.position < s.position < target.position]
    if any(not s.skippable for s in between):
        raise RuleRefused("not_skippable", NOT_SKIPPABLE)
    needed = [*between, target]
    if any(s.requires_items for s in needed) and not await list_items(conn, deal.id):
        raise RuleRefused("needs_items", NEEDS_ITEMS)
    if any(s.requires_contract for s in needed) and deal.contract_id is None:
        raise RuleRefused("needs_contract", NEEDS_CONTRACT)


async def _enter_stage(conn: asyncpg.Connection, viewer: User, deal: Deal, stage: Stage, now: datetime,
                       hours: WorkingHours) -> None:
    """The caller holds the deal: history, the stage, the stuck task closed, stock reserved, the stage's tasks."""
    await conn.execute(CLOSE_HISTORY, deal.id, now, "")
    await conn.execute(INSERT_HISTORY, deal.id, stage.code, now, viewer.id)
    await conn.execute(SET_STAGE, deal.id, stage.code, now)
    await conn.execute(CLOSE_STUCK_TASKS, deal.id, now, viewer.id or None, f"moved to {stage.code}")
    if stage.reserves_stock:
        await _reserve_claimed(conn, viewer, deal.id, now)
    # An open task of the same rule and deal stays the one task (the unique index says so).
    for rule in await conn.fetch(STAGE_TASKS_OF, stage.code):
        await conn.execute(STAGE_TASK_FROM_RULES, deal.id, deal.manager_id,
                           working_days_later(hours, now, rule["due_days"]), rule["id"])


async def _stages(conn: asyncpg.Connection, stage: str) -> tuple[dict[str, Stage], Stage]:
    stages = {s.code: s for s in await list_stages(conn)}
    if stage not in stages:
        raise ValidationError("stage", f"one of {', '.join(stages)}")
    return stages, stages[stage]


async def move_stage(conn: asyncpg.Connection, viewer: User, deal_id: int, stage: str, now: datetime,
                     version: int | None = None, hours: WorkingHours | None = None) -> Deal:
    """Move to `stage` by the stage rules; entering a stage that reserves stock reserves, and the stage's
    automatic tasks are set, in the same transaction. With `version`, a move over a newer edit is refused."""
    stages, target = await _stages(conn, stage)
    async with conn.transaction():
        deal = await _claim(conn, viewer, deal_id)
        _check_version(deal, version)
        if stage == deal.stage:
            return deal
        await _check_rules(conn, deal, stages, target)
        await _enter_stage(conn, viewer, deal, target, now, hours or WorkingHours())
    return await get_deal(conn, viewer, deal_id)


def unshipped(items: list[DealItem]) -> bool:
    """Something of the deal has not left the warehouse: in stock, in production or on order."""
    return any(item.shipped < item.quantity for item in items)


async def close_deal(conn: asyncpg.Connection, viewer: User, deal_id: int, status: str, reason: str | None,
                     now: datetime, *, confirm: bool = False, version: int | None = None) -> Deal:
    """Won or lost. Won with items unshipped (reserved, in production, on order) is refused unless the user
    confirms and says why; the reason goes into the stage history."""
    if status not in ("won", "lost"):
        raise ValidationError("status", "won or lost")
    if status == "lost" and reason not in LOSS_REASONS:
        raise ValidationError("reason", f"one of {', '.join(LOSS_REASONS)}")
    note = ""
    async with conn.transaction():
        deal = await _claim(conn, viewer, deal_id)
        _check_version(deal, version)
        items = await list_items(conn, deal_id)
        if status == "lost":
            for item in items:
                await stock.release(conn, item.id, item.product_id, now, viewer.id)
        elif unshipped(items):
            if not confirm:
                raise RuleRefused("unshipped", UNSHIPPED)
            note = (reason or "").strip()[:1000]
            if not note:
                raise ValidationError("reason", WON_REASON)
        await conn.execute(CLOSE_HISTORY, deal_id, now, note)
        await conn.execute(CLOSE_DEAL, deal_id, status, reason if status == "lost" else None, now)
        await conn.execute(CLOSE_STUCK_TASKS, deal_id, now, viewer.id or None, f"deal {status}")
    return await get_deal(conn, viewer, deal_id)


# ------------------------------------------------------------------ editing a deal

UPDATE_DEAL = """
UPDATE deals SET title = $2, manual_amount = $3, probability = $4, needs = $5, legal_entity = $6, contact_id = $7,
       company_id = $8, manager_id = $9, expected_close_on = $10, updated_at = $11, version = version + 1
WHERE id = $1"""
EDITABLE = ("title", "amount", "probability", "needs", "legal_entity", "contact_id", "company_id", "manager_id",
            "expected_close_on", "stage")


def _date(value) -> date | None:
    if value in (None, ""):
        return None
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValidationError("expected_close_on", "must be a date, YYYY-MM-DD") from None


def _text(value, field: str, limit: int, required: bool = False) -> str:
    if not isinstance(value, str) or "\x00" in value:
        raise ValidationError(field, "must be text")
    value = value.strip() if required else value
    if required and not value:
        raise ValidationError(field, "is required")
    if len(value) > limit:
        raise ValidationError(field, f"at most {limit} characters")
    return value


async def update_deal(conn: asyncpg.Connection, viewer: User, deal_id: int, changes: dict, now: datetime,
                      version: int | None = None, hours: WorkingHours | None = None) -> Deal:
    """Change any editable field sent (ids already parsed by the caller); `stage` follows the stage rules.
    The row is claimed first: with `version`, an edit over someone else's newer one is refused, and two edits
    of different fields at once both land (the second reads what the first wrote)."""
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise ValidationError(unknown[0], "cannot be changed")
    stages, target = await _stages(conn, changes["stage"]) if "stage" in changes else ({}, None)
    async with conn.transaction():
        # A won or lost deal's fields may still be corrected (the amount of a won deal is revenue); its stage not.
        deal = await _claim(conn, viewer, deal_id, must_be_open=False)
        _check_version(deal, version)
        title = _text(changes.get("title", deal.title), "title", 200, required=True)
        amount = deal.manual_amount
        if "amount" in changes:
            value = changes["amount"]
            amount = None if value in (None, "") else stock.parse_money(value, "amount")
        probability = _probability(changes.get("probability", deal.probability))
        needs = _text(changes.get("needs", deal.needs), "needs", 5000)
        legal_entity = _text(changes.get("legal_entity", deal.legal_entity), "legal_entity", 300)
        manager_id = changes.get("manager_id", deal.manager_id)
        if manager_id != deal.manager_id:
            if not viewer.sees_everything:
                raise Forbidden("only the head of sales or an admin gives a deal to another manager")
            if manager_id is None or not await conn.fetchval(DEAL_OWNER, manager_id):
                raise ValidationError("manager_id", "no active manager with this id")
        contact_id, company_id = deal.contact_id, deal.company_id
        if "contact_id" in changes and changes["contact_id"] != deal.contact_id:
            contact_id = changes["contact_id"]
            if contact_id is not None:
                contact = await contacts.get_party(conn, viewer, "contact", contact_id)
                if "company_id" not in changes and contact.company_id:
                    company_id = contact.company_id
        if "company_id" in changes and changes["company_id"] != deal.company_id:
            company_id = changes["company_id"]
            if company_id is not None:
                await contacts.get_party(conn, viewer, "company", company_id)
        close_on = _date(changes["expected_close_on"]) if "expected_close_on" in changes else deal.expected_close_on
        await conn.execute(UPDATE_DEAL, deal_id, title, amount, probability, needs, legal_entity, contact_id,
                           company_id, manager_id, close_on, now)
        if target is not None and target.code != deal.stage:
            _require_open(deal)
            await _check_rules(conn, deal, stages, target)
            await _enter_stage(conn, viewer, deal, target, now, hours or WorkingHours())
    return await get_deal(conn, viewer, deal_id)


# ------------------------------------------------------------------ the board and the list

@dataclass(frozen=True, slots=True)
class DealFilter:
    """What the board and the list show: every field narrows; None or False is "any"."""

    status: str = "in_progress"
    manager_id: int | None = None
    client: str | None = None  # a piece of the contact's or the company's name
    contact_id: int | None = None
    company_id: int | None = None
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
    stuck: bool = False
    closing_from: date | None = None  # expected to close in [closing_from, closing_to]
    closing_to: date | None = None
    stage: str | None = None


# Only the conditions a filter uses go into the query (fixed fragments; values stay $n parameters): a query full of
# "$n IS NULL OR …" gets one generic plan for every filter, and on 100k deals that plan is the slow one. The client
# filter looks names up, so the board's counts and sums read deals alone; the amount is the hand-set one, else the
# items' total kept on the row (migration 0021).
AMOUNT = "coalesce(d.manual_amount, d.items_amount)"
_CONDITIONS = (
    ("scope", "d.manager_id = {}"), ("manager_id", "d.manager_id = {}"), ("status", "d.status = {}"),
    ("client", "(d.contact_id IN (SELECT id FROM contacts WHERE name ILIKE {0})"
               " OR d.company_id IN (SELECT id FROM companies WHERE name ILIKE {0}))"),
    ("amount_min", AMOUNT + " >= {}"), ("amount_max", AMOUNT + " <= {}"),
    ("stuck", "d.stage_changed_at + make_interval(days => s.normal_days) < {}"),
    ("closing_from", "d.expected_close_on >= {}"), ("closing_to", "d.expected_close_on <= {}"),
    ("contact_id", "d.contact_id = {}"), ("company_id", "d.company_id = {}"), ("stage", "d.stage = {}"),
)
BOARD_TOTALS = """
SELECT d.stage, count(*) AS count, coalesce(sum(""" + AMOUNT + """), 0) AS amount
FROM deals d JOIN deal_stages s ON s.code = d.stage WHERE {where} GROUP BY d.stage"""
# Each column's newest cards: one index scan per stage (deals_board_idx), never every deal of the column.
BOARD_CARDS = """
SELECT x.* FROM deal_stages st CROSS JOIN LATERAL (""" + _DEAL_SELECT + """
WHERE {where} AND d.stage = st.code ORDER BY d.created_at DESC, d.id DESC LIMIT {limit}) x
ORDER BY st.position, x.created_at DESC, x.id DESC"""
# A narrow filter leaves few deals scattered along each column's index, and walking it to find 50 would read most
# of the column: then the few deals are found first and numbered per column instead.
FEW_DEALS = 5000
BOARD_CARDS_FEW = """
SELECT x.* FROM (""" + _DEAL_SELECT.replace("SELECT d.id,", "SELECT row_number() OVER (PARTITION BY d.stage ORDER BY "
                                                             "d.created_at DESC, d.id DESC) AS n, d.id,", 1) + """
WHERE {where}) x WHERE x.n <= {limit} ORDER BY x.created_at DESC, x.id DESC"""
# The list view picks a page of ids on the deals (and only the joins its sort needs), then reads those deals.
LIST_PAGE_IDS = """
SELECT d.id FROM deals d JOIN deal_stages s ON s.code = d.stage {joins} WHERE {where}
ORDER BY {order} LIMIT {limit} OFFSET {offset}"""
DEALS_BY_ID = _DEAL_SELECT + "WHERE d.id = ANY($1::bigint[])"
# The list view's sort keys and the joins each needs: whitelisted SQL, never the request's text.
SORTS = {
    "title": ("lower(d.title)", ""),
    "client": ("lower(coalesce(co.name, ct.name))", "LEFT JOIN contacts ct ON ct.id = d.contact_id "
                                                    "LEFT JOIN companies co ON co.id = d.company_id"),
    "manager": ("u.display_name", "LEFT JOIN users u ON u.id = d.manager_id"),
    "stage": ("s.position", ""), "amount": (AMOUNT, ""), "probability": ("d.probability", ""),
    "close": ("d.expected_close_on", ""), "created": ("d.created_at", ""), "changed": ("d.stage_changed_at", ""),
}


def _like(text: str | None) -> str | None:
    text = (text or "").strip()[:100]
    if not text:
        return None
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _where(viewer: User, f: DealFilter, now: datetime) -> tuple[str, list]:
    """The WHERE clause of the filter's conditions in use, and their values as $1, $2, …"""
    if f.status not in ("in_progress", "won", "lost"):
        raise ValidationError("status", "in_progress, won or lost")
    values = {"scope": _scope(viewer), "manager_id": f.manager_id, "status": f.status, "client": _like(f.client),
              "amount_min": f.amount_min, "amount_max": f.amount_max,
              "stuck": now if f.stuck and f.status == "in_progress" else None, "closing_from": f.closing_from,
              "closing_to": f.closing_to, "contact_id": f.contact_id, "company_id": f.company_id, "stage": f.stage}
    parts, args = [], []
    for name, condition in _CONDITIONS:
        if values[name] is not None:
            args.append(values[name])
            parts.append(condition.format(f"${len(args)}"))
    return " AND ".join(parts), args


async def board(conn: asyncpg.Connection, viewer: User, f: DealFilter, now: datetime, per_column: int = 50
                ) -> list[tuple[Stage, int, Decimal, list[Deal]]]:
    """Per stage: the count and sum of every deal that passes the filter, and the newest `per_column` cards."""
    where, args = _where(viewer, f, now)
    totals = {r["stage"]: (r["count"], r["amount"])
              for r in await conn.fetch(BOARD_TOTALS.format(where=where), *args)}
    cards: dict[str, list[Deal]] = {}
    few = sum(count for count, _ in totals.values()) <= FEW_DEALS
    query = (BOARD_CARDS_FEW if few else BOARD_CARDS).format(where=where, limit=f"${len(args) + 1}")
    for row in await conn.fetch(query, *args, per_column):
        cards.setdefault(row["stage"], []).append(_deal({k: v for k, v in row.items() if k != "n"}))
    return [(stage, *totals.get(stage.code, (0, Decimal(0))), cards.get(stage.code, []))
            for stage in await list_stages(conn)]


async def list_sorted(conn: asyncpg.Connection, viewer: User, f: DealFilter, now: datetime, sort: str = "created",
                      descending: bool = True, limit: int = 100, offset: int = 0) -> tuple[list[Deal], int]:
    """The list view: one page of deals in the chosen order, and how many pass the filter."""
    if sort not in SORTS:
        raise ValidationError("sort", ", ".join(SORTS))
    where, args = _where(viewer, f, now)
    key, joins = SORTS[sort]
    way = "DESC" if descending else "ASC"
    query = LIST_PAGE_IDS.format(joins=joins, where=where, order=f"{key} {way} NULLS LAST, d.id {way}",
                                 limit=f"${len(args) + 1}", offset=f"${len(args) + 2}")
    ids = [r["id"] for r in await conn.fetch(query, *args, limit, offset)]
    found = {r["id"]: _deal(r) for r in await conn.fetch(DEALS_BY_ID, ids)}
    total = sum(r["count"] for r in await conn.fetch(BOARD_TOTALS.format(where=where), *args))
    return [found[i] for i in ids], total


# ------------------------------------------------------------------ stage rules and automatic tasks (admin)

async def list_stage_tasks(conn: asyncpg.Connection) -> list[dict]:
    return [dict(r) for r in await conn.fetch(LIST_STAGE_TASKS)]


async def add_stage_task(conn: asyncpg.Connection, stage: str, title, due_days) -> int:
    await _stages(conn, stage)
    title = _text(title, "title", 200, required=True)
    days = _whole(due_days, "due_days", 0, 365, "a number of working days, 0 to 365")
    return await conn.fetchval(INSERT_STAGE_TASK, stage, title, days)


async def delete_stage_task(conn: asyncpg.Connection, task_rule_id: int) -> None:
    if await conn.fetchval(DELETE_STAGE_TASK, task_rule_id) is None:
        raise NotFound("stage task")


async def set_stage_rules(conn: asyncpg.Connection, stage: str, requires_items: bool, requires_contract: bool,
                          skippable: bool) -> None:
    if await conn.fetchval(SET_STAGE_RULES, stage, requires_items, requires_contract, skippable) is None:
        raise NotFound("stage")


async def open_deal_of_contact(conn: asyncpg.Connection, contact_id: int | None) -> int | None:
    """The contact's open deal when there is exactly one (calls and e-mails attach to it)."""
    if contact_id is None:
        return None
    rows = await conn.fetch(OPEN_DEALS_OF_CONTACT, contact_id)
    return rows[0]["id"] if len(rows) == 1 else None


async def open_deals_brief(conn: asyncpg.Connection, contact_id: int | None, company_id: int | None) -> list[dict]:
    return [dict(r) for r in await conn.fetch(OPEN_DEALS_SHORT, contact_id, company_id)]


async def flag_stuck_deals(conn: asyncpg.Connection, now: datetime) -> list[dict]:
    """The periodic job: newly stuck deals get a task for their manager and tell the heads."""
    async with conn.transaction():
        stuck = [dict(r) for r in await conn.fetch(NEWLY_STUCK, now)]
        for deal in stuck:
            text = f"Deal stuck at “{deal['stage_name']}”: {deal['title']}"
            await conn.execute(INSERT_STUCK_TASK, text[:200], deal["manager_id"], now + timedelta(days=1), deal["id"])
            if deal["manager_id"] is not None:
                await conn.execute(INSERT_NOTIFICATION, deal["manager_id"], "stuck_deal", text[:300])
            await notify_heads(conn, "stuck_deal", text[:300])
    return stuck


async def illiquid_sales(conn: asyncpg.Connection, viewer: User, month_start: datetime, days: int = 180
                         ) -> list[dict]:
    return await stock.illiquid_sales(conn, month_start, days, _scope(viewer))
