"""Products and stock: balances derived from movements, FIFO shipment, safe reservations, illiquid stock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

import asyncpg

from crm.contracts import parse_date
from crm.errors import Conflict, Forbidden, NotFound, ValidationError
from crm.paging import Page, decode, page
from crm.users import User

# Goods arrive, leave and move by the warehouse's hand; the head and admin may stand in. A manager reads.
GOODS_ROLES = ("warehouse", "head", "admin")
# Kinds that take quantity out of the batch they name (what is left of a batch is its quantity minus these).
OUT_OF_BATCH = ("shipment", "write_off", "transfer_out")


@dataclass(frozen=True, slots=True)
class Product:
    id: int
    sku: str
    name: str
    unit: str
    price: Decimal
    barcode: str | None
    made_in_house: bool
    version: int = 1


@dataclass(frozen=True, slots=True)
class Warehouse:
    id: int
    name: str
    is_default: bool


@dataclass(frozen=True, slots=True)
class Batch:
    id: int
    warehouse_id: int
    warehouse: str
    received_at: datetime
    expires_on: date | None
    quantity: Decimal
    left: Decimal

    def expired(self, today: date) -> bool:
        return self.expires_on is not None and self.expires_on < today

    def expires_soon(self, today: date, days: int) -> bool:
        return self.expires_on is not None and today <= self.expires_on <= today + timedelta(days=days)


@dataclass(frozen=True, slots=True)
class Movement:
    id: int
    kind: str
    quantity: Decimal
    created_at: datetime
    warehouse: str
    batch_id: int | None
    reason: str | None
    document_number: str | None
    user_name: str | None
    deal_id: int | None


def movement_key(m: Movement) -> tuple[datetime, int]:
    return (m.created_at, m.id)


def require_goods_role(user: User) -> None:
    """Receipts, write-offs, transfers and orders received or made: the warehouse's work, never a manager's."""
    if user.role not in GOODS_ROLES:
        raise Forbidden("only the warehouse, the head or an admin moves goods")


@dataclass(frozen=True, slots=True)
class Balance:
    product_id: int
    sku: str
    name: str
    unit: str
    price: Decimal
    made_in_house: bool
    on_hand: Decimal
    reserved: Decimal

    @property
    def available(self) -> Decimal:
        return self.on_hand - self.reserved


PRODUCT_COLUMNS = "p.id, p.sku, p.name, p.unit, p.price, p.barcode, p.made_in_house, p.version"
INSERT_PRODUCT = f"""
INSERT INTO products AS p (sku, name, unit, price, barcode, made_in_house) VALUES ($1, $2, $3, $4, $5, $6)
RETURNING {PRODUCT_COLUMNS}
"""
GET_PRODUCT = f"SELECT {PRODUCT_COLUMNS} FROM products p WHERE p.id = $1"
PRODUCT_BY_SKU = f"SELECT {PRODUCT_COLUMNS} FROM products p WHERE p.sku = $1"
# What a scanner types (the barcode) or a person (the SKU), exactly: both are UNIQUE, so an index answers.
PRODUCT_BY_CODE = f"""
SELECT {PRODUCT_COLUMNS} FROM products p WHERE p.barcode = $1 OR p.sku = $1
ORDER BY p.barcode IS NOT DISTINCT FROM $1 DESC LIMIT 1
"""
UPDATE_PRODUCT = f"""
UPDATE products p SET sku = $2, name = $3, unit = $4, price = $5, barcode = $6, made_in_house = $7,
                      version = p.version + 1
WHERE p.id = $1 AND p.version = $8 RETURNING {PRODUCT_COLUMNS}
"""
DEFAULT_WAREHOUSE = "SELECT id FROM warehouses WHERE is_default"
LIST_WAREHOUSES = "SELECT id, name, is_default FROM warehouses ORDER BY is_default DESC, name, id"
GET_WAREHOUSE = "SELECT id, name, is_default FROM warehouses WHERE id = $1"
INSERT_WAREHOUSE = "INSERT INTO warehouses (name) VALUES ($1) RETURNING id, name, is_default"
LOCK_PRODUCT = "SELECT id FROM products WHERE id = $1 FOR UPDATE"
# Several products are always locked in id order, so two writers never wait on each other in a circle.
LOCK_PRODUCTS = "SELECT id FROM products WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE"
# The deal item a release or shipment decides on; with the product it must belong to.
LOCK_ITEM = "SELECT product_id FROM deal_items WHERE id = $1 FOR UPDATE"
# The sums that define a balance; one place so every reader agrees.
_BALANCE = """
SELECT p.id AS product_id, p.sku, p.name, p.unit, p.price, p.made_in_house,
  coalesce(sum(m.quantity) FILTER (WHERE m.kind = 'receipt'), 0)
  - coalesce(sum(m.quantity) FILTER (WHERE m.kind IN ('shipment', 'write_off')), 0) AS on_hand,
  greatest(0, coalesce(sum(m.quantity) FILTER (WHERE m.kind = 'reservation'), 0)
  - coalesce(sum(m.quantity) FILTER (WHERE m.kind = 'release'), 0)
  - coalesce(sum(m.quantity) FILTER (WHERE m.kind = 'shipment' AND m.deal_item_id IS NOT NULL), 0)) AS reserved
FROM products p LEFT JOIN stock_movements m ON m.product_id = p.id
"""
BALANCE_OF = _BALANCE + "WHERE p.id = $1 GROUP BY p.id"
ALL_BALANCES = _BALANCE + """
WHERE ($1::text IS NULL OR p.sku ILIKE '%' || $1 || '%' OR p.name ILIKE '%' || $1 || '%' OR p.barcode = $1)
GROUP BY p.id ORDER BY p.name
"""
INSERT_BATCH = """
INSERT INTO stock_batches (product_id, warehouse_id, received_at, quantity, expires_on, origin_batch_id)
VALUES ($1, $2, $3, $4, $5, $6) RETURNING id
"""
INSERT_MOVEMENT = """
INSERT INTO stock_movements (product_id, warehouse_id, batch_id, kind, quantity, deal_item_id, user_id, created_at,
                             reason, document_number)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""
# What is left in each batch, oldest first (in one warehouse, or in all when $2 is null): shipments, write-offs
# and transfers out name their batch. The batches are claimed: what is read here is what is taken.
BATCHES_LEFT = """
SELECT b.id, b.warehouse_id, b.received_at, b.expires_on,
       b.quantity - coalesce((SELECT sum(m.quantity) FROM stock_movements m
                              WHERE m.batch_id = b.id AND m.kind IN ('shipment', 'write_off', 'transfer_out')), 0)
         AS left
FROM stock_batches b WHERE b.product_id = $1 AND ($2::bigint IS NULL OR b.warehouse_id = $2)
ORDER BY b.received_at, b.id
FOR UPDATE OF b
"""
# The product card: what is left of each batch still holding some, and the stock in each warehouse.
BATCHES_OF = """
SELECT * FROM (
  SELECT b.id, b.warehouse_id, w.name AS warehouse, b.received_at, b.expires_on, b.quantity,
         b.quantity - coalesce((SELECT sum(m.quantity) FROM stock_movements m
                                WHERE m.batch_id = b.id AND m.kind IN ('shipment', 'write_off', 'transfer_out')), 0)
           AS left
  FROM stock_batches b JOIN warehouses w ON w.id = b.warehouse_id WHERE b.product_id = $1
) x WHERE x.left > 0 ORDER BY x.received_at, x.id
"""
STOCK_BY_WAREHOUSE = """
SELECT w.id, w.name, w.is_default,
  coalesce(sum(m.quantity) FILTER (WHERE m.kind IN ('receipt', 'transfer_in')), 0)
  - coalesce(sum(m.quantity) FILTER (WHERE m.kind IN ('shipment', 'write_off', 'transfer_out')), 0) AS on_hand
FROM warehouses w LEFT JOIN stock_movements m ON m.warehouse_id = w.id AND m.product_id = $1
GROUP BY w.id ORDER BY w.is_default DESC, w.name, w.id
"""
MOVEMENTS_PAGE = """
SELECT m.id, m.kind, m.quantity, m.created_at, w.name AS warehouse, m.batch_id, m.reason, m.document_number,
       u.display_name AS user_name, i.deal_id
FROM stock_movements m JOIN warehouses w ON w.id = m.warehouse_id
LEFT JOIN users u ON u.id = m.user_id LEFT JOIN deal_items i ON i.id = m.deal_item_id
WHERE m.product_id = $1 AND ($2::timestamptz IS NULL OR (m.created_at, m.id) < ($2, $3::bigint))
ORDER BY m.created_at DESC, m.id DESC LIMIT $4
"""
ITEM_RESERVED = """
SELECT coalesce(sum(quantity) FILTER (WHERE kind = 'reservation'), 0)
     - coalesce(sum(quantity) FILTER (WHERE kind IN ('release', 'shipment')), 0)
FROM stock_movements WHERE deal_item_id = $1
"""
# Illiquid, counted per batch (FIFO: shipments and write-offs name the batch they took from; a transfer moves the
# rest into a copy keeping the receipt date): what is left of each batch received more than N days ago has not moved
# for N days. A batch received within the last N days never is,
# and a batch partly sold keeps the rest counted. `on_hand` is the illiquid quantity; reserved is not subtracted.
ILLIQUID = """
WITH left_in AS (
    SELECT b.product_id, b.quantity - coalesce((SELECT sum(m.quantity) FROM stock_movements m
                                                WHERE m.batch_id = b.id
                                                  AND m.kind IN ('shipment', 'write_off', 'transfer_out')
                                                  AND m.created_at <= $2), 0) AS left
    FROM stock_batches b WHERE b.received_at < $1
      -- a transfer's copy of a batch holds stock only from the transfer on
      AND (b.origin_batch_id IS NULL OR EXISTS (SELECT 1 FROM stock_movements t WHERE t.batch_id = b.id
                                                AND t.kind = 'transfer_in' AND t.created_at <= $2))
)
SELECT p.id AS product_id, p.sku, p.name, p.unit, p.price, p.made_in_house, sum(l.left) AS on_hand,
       0::numeric AS reserved
FROM left_in l JOIN products p ON p.id = l.product_id
WHERE l.left > 0
GROUP BY p.id ORDER BY sum(l.left) * p.price DESC, p.name
"""
# Sales of illiquid stock: shipments against deals, from a batch that had waited more than N days when shipped
# (a unit made and shipped the same minute is not one).
ILLIQUID_SALES = """
SELECT d.manager_id, u.display_name AS manager, coalesce(sum(m.quantity * i.price), 0) AS amount,
       count(DISTINCT (m.deal_item_id, m.created_at)) AS shipments
FROM stock_movements m
JOIN stock_batches b ON b.id = m.batch_id
JOIN deal_items i ON i.id = m.deal_item_id
JOIN deals d ON d.id = i.deal_id
LEFT JOIN users u ON u.id = d.manager_id
WHERE m.kind = 'shipment' AND m.created_at >= $1 AND b.received_at < m.created_at - make_interval(days => $2)
  AND ($3::bigint IS NULL OR d.manager_id = $3)
GROUP BY d.manager_id, u.display_name ORDER BY amount DESC
"""


def _product(row: asyncpg.Record) -> Product:
    return Product(**dict(row))


def _balance(row: asyncpg.Record) -> Balance:
    return Balance(row["product_id"], row["sku"], row["name"], row["unit"], row["price"], row["made_in_house"],
                   row["on_hand"], row["reserved"])


# The columns are numeric(14, 3) for quantities and numeric(14, 2) for money: refuse what they cannot hold.
MAX_QUANTITY = Decimal("99999999999")
MAX_MONEY = Decimal("999999999999")


def _parse_decimal(value, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ValidationError(name, "must be a number")
    try:
        number = Decimal(str(value).strip())
    except ArithmeticError:
        raise ValidationError(name, "must be a number") from None
    if not number.is_finite():
        raise ValidationError(name, "must be a number")
    return number


def parse_quantity(value) -> Decimal:
    quantity = _parse_decimal(value, "quantity")
    if quantity <= 0:
        raise ValidationError("quantity", "must be more than zero")
    if quantity > MAX_QUANTITY:
        raise ValidationError("quantity", f"must be at most {MAX_QUANTITY}")
    return quantity


def parse_money(value, name: str = "price") -> Decimal:
    """Zero or more, at most what numeric(14, 2) holds."""
    amount = _parse_decimal(value, name)
    if amount < 0:
        raise ValidationError(name, "must be zero or more")
    if amount > MAX_MONEY:
        raise ValidationError(name, f"must be at most {MAX_MONEY}")
    return amount


async def create_product(conn: asyncpg.Connection, sku: str, name: str, unit: str, price, barcode: str | None,
                         made_in_house: bool) -> Product:
    sku, name = (sku or "").strip(), (name or "").strip()
    if not sku or not name:
        raise ValidationError("sku" if not sku else "name", "is required")
    price_value = parse_money(price)
    if barcode is not None and not isinstance(barcode, str):
        raise ValidationError("barcode", "must be text")
    try:
        return _product(await conn.fetchrow(INSERT_PRODUCT, sku, name, (unit or "pcs").strip(), price_value,
                                             (barcode or "").strip() or None, made_in_house))
    except asyncpg.UniqueViolationError as exc:
        raise Conflict("a product with this SKU or barcode exists") from exc


async def get_product(conn: asyncpg.Connection, product_id: int) -> Product:
    row = await conn.fetchrow(GET_PRODUCT, product_id)
    if row is None:
        raise NotFound("product")
    return _product(row)


async def product_by_sku(conn: asyncpg.Connection, sku: str) -> Product | None:
    row = await conn.fetchrow(PRODUCT_BY_SKU, sku)
    return _product(row) if row else None


async def default_warehouse(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(DEFAULT_WAREHOUSE)


async def balance(conn: asyncpg.Connection, product_id: int) -> Balance:
    row = await conn.fetchrow(BALANCE_OF, product_id)
    if row is None:
        raise NotFound("product")
    return _balance(row)


async def list_balances(conn: asyncpg.Connection, query: str | None = None) -> list[Balance]:
    return [_balance(r) for r in await conn.fetch(ALL_BALANCES, (query or "").strip() or None)]


async def list_warehouses(conn: asyncpg.Connection) -> list[Warehouse]:
    return [Warehouse(**dict(r)) for r in await conn.fetch(LIST_WAREHOUSES)]


async def get_warehouse(conn: asyncpg.Connection, warehouse_id: int | None) -> Warehouse:
    """The named warehouse, or the default one when none is named."""
    row = await conn.fetchrow(GET_WAREHOUSE, warehouse_id or await default_warehouse(conn))
    if row is None:
        raise NotFound("warehouse")
    return Warehouse(**dict(row))


async def create_warehouse(conn: asyncpg.Connection, viewer: User, name: str) -> Warehouse:
    require_goods_role(viewer)
    name = (name or "").strip() if isinstance(name, str) else ""
    if not name or len(name) > 200:
        raise ValidationError("name", "is required (at most 200 characters)")
    try:
        return Warehouse(**dict(await conn.fetchrow(INSERT_WAREHOUSE, name)))
    except asyncpg.UniqueViolationError as exc:
        raise Conflict("a warehouse with this name exists") from exc


def _note(value, name: str, required: bool = False) -> str | None:
    """A short free text (a write-off's reason, a supplier's document number)."""
    if value is not None and not isinstance(value, str):
        raise ValidationError(name, "must be text")
    text = (value or "").strip()
    if required and not text:
        raise ValidationError(name, "is required")
    if len(text) > 500 or "\x00" in text:
        raise ValidationError(name, "must be at most 500 characters")
    return text or None


async def receive(conn: asyncpg.Connection, product_id: int, quantity, now: datetime, user_id: int | None = None,
                  expires_on=None, warehouse_id: int | None = None, document_number: str | None = None) -> int:
    """A batch arrives: a receipt movement on it (with the supplier's document number, if given)."""
    amount = parse_quantity(quantity)
    expires = parse_date(expires_on, "expires_on", required=False)
    document = _note(document_number, "document_number")
    async with conn.transaction():
        warehouse = (await get_warehouse(conn, warehouse_id)).id
        batch_id = await conn.fetchval(INSERT_BATCH, product_id, warehouse, now, amount, expires, None)
        await conn.execute(INSERT_MOVEMENT, product_id, warehouse, batch_id, "receipt", amount, None, user_id, now,
                           None, document)
    return batch_id


async def lock_products(conn: asyncpg.Connection, product_ids: list[int]) -> None:
    """Claim several products at once (in id order) before reserving or shipping them in one transaction."""
    await conn.execute(LOCK_PRODUCTS, sorted(set(product_ids)))


async def reserve(conn: asyncpg.Connection, product_id: int, wanted, deal_item_id: int, now: datetime,
                  user_id: int | None = None) -> Decimal:
    """Reserve up to `wanted`; returns what was reserved. Two deals reserving the last units at
    once never over-reserve: the product row is locked for the read-then-write. The caller decides
    `wanted` and must hold the deal (see crm.deals), or a double click reserves twice."""
    wanted = parse_quantity(wanted)
    async with conn.transaction():
        await conn.execute(LOCK_PRODUCT, product_id)
        available = (await balance(conn, product_id)).available
        take = min(wanted, max(available, Decimal(0)))
        if take > 0:
            await conn.execute(INSERT_MOVEMENT, product_id, await default_warehouse(conn), None, "reservation", take,
                               deal_item_id, user_id, now, None, None)
        return take


async def release(conn: asyncpg.Connection, deal_item_id: int, product_id: int, now: datetime,
                  user_id: int | None = None) -> Decimal:
    """Free what is reserved for the item; returns how much. The item row is claimed first, so a
    second release at the same time finds nothing left and other deals keep their reservations."""
    async with conn.transaction():
        if await conn.fetchval(LOCK_ITEM, deal_item_id) is None:
            return Decimal(0)
        held = await conn.fetchval(ITEM_RESERVED, deal_item_id)
        if held > 0:
            await conn.execute(INSERT_MOVEMENT, product_id, await default_warehouse(conn), None, "release", held,
                               deal_item_id, user_id, now, None, None)
        return held


async def ship(conn: asyncpg.Connection, product_id: int, quantity, now: datetime, deal_item_id: int | None = None,
               user_id: int | None = None, kind: str = "shipment", warehouse_id: int | None = None,
               reason: str | None = None) -> list[tuple[int, Decimal]]:
    """Take from the oldest batches first (of one warehouse, or of all); returns (batch, quantity) pairs.
    Refuses more than on hand, and, against a deal item, more than its reservation plus the free stock."""
    if kind not in ("shipment", "write_off"):
        raise ValidationError("kind", "shipment or write_off")
    if kind == "write_off" and deal_item_id is not None:
        raise ValidationError("deal_item_id", "only a shipment goes against a deal item")
    amount = parse_quantity(quantity)
    note = _note(reason, "reason")
    async with conn.transaction():
        if warehouse_id is not None:
            await get_warehouse(conn, warehouse_id)
        await conn.execute(LOCK_PRODUCT, product_id)
        current = await balance(conn, product_id)
        if amount > current.on_hand:
            raise Conflict(f"only {_plain(current.on_hand)} on hand")
        batches = await conn.fetch(BATCHES_LEFT, product_id, warehouse_id)
        here = sum((b["left"] for b in batches), Decimal(0))
        if amount > here:
            raise Conflict(f"only {_plain(here)} on hand in this warehouse")
        reservation_warehouse = await default_warehouse(conn)
        if deal_item_id is not None:
            if await conn.fetchval(LOCK_ITEM, deal_item_id) != product_id:
                raise NotFound("deal item of this product")
            # A shipment against an item first uses its reservation; the rest must be free stock,
            # reserved here so the balance never takes it from another deal's reservation.
            extra = amount - max(await conn.fetchval(ITEM_RESERVED, deal_item_id), Decimal(0))
            if extra > current.available:
                raise Conflict(f"only {_plain(current.available)} free beyond this item's reservation")
            if extra > 0:
                await conn.execute(INSERT_MOVEMENT, product_id, reservation_warehouse, None, "reservation", extra,
                                   deal_item_id, user_id, now, None, None)
        taken: list[tuple[int, Decimal]] = []
        remaining = amount
        for batch in batches:
            if remaining <= 0:
                break
            take = min(batch["left"], remaining)
            if take > 0:
                await conn.execute(INSERT_MOVEMENT, product_id, batch["warehouse_id"], batch["id"], kind, take,
                                   deal_item_id, user_id, now, note, None)
                taken.append((batch["id"], take))
                remaining -= take
        return taken


async def write_off(conn: asyncpg.Connection, viewer: User, product_id: int, quantity, reason, now: datetime,
                    warehouse_id: int | None = None) -> list[tuple[int, Decimal]]:
    """Spoiled, lost or used up: oldest batches first, with the reason people will ask about later."""
    require_goods_role(viewer)
    _note(reason, "reason", required=True)
    return await ship(conn, product_id, quantity, now, user_id=viewer.id, kind="write_off",
                      warehouse_id=warehouse_id, reason=reason)


async def transfer(conn: asyncpg.Connection, viewer: User, product_id: int, quantity, from_warehouse_id: int,
                   to_warehouse_id: int, now: datetime) -> list[tuple[int, int, Decimal]]:
    """Move stock between warehouses, oldest batches first: each source batch gives to a copy of itself in the
    destination with the same receipt and expiry dates. Returns (source batch, new batch, quantity)."""
    require_goods_role(viewer)
    amount = parse_quantity(quantity)
    if from_warehouse_id == to_warehouse_id:
        raise ValidationError("to_warehouse_id", "must differ from the source warehouse")
    async with conn.transaction():
        source = await get_warehouse(conn, from_warehouse_id)
        target = await get_warehouse(conn, to_warehouse_id)
        await conn.execute(LOCK_PRODUCT, product_id)
        batches = await conn.fetch(BATCHES_LEFT, product_id, source.id)
        here = sum((b["left"] for b in batches), Decimal(0))
        if amount > here:
            raise Conflict(f"only {_plain(here)} on hand in this warehouse")
        moved: list[tuple[int, int, Decimal]] = []
        remaining = amount
        for batch in batches:
            if remaining <= 0:
                break
            take = min(batch["left"], remaining)
            if take <= 0:
                continue
            copy = await conn.fetchval(INSERT_BATCH, product_id, target.id, batch["received_at"], take,
                                       batch["expires_on"], batch["id"])
            await conn.execute(INSERT_MOVEMENT, product_id, source.id, batch["id"], "transfer_out", take, None,
                               viewer.id, now, None, None)
            await conn.execute(INSERT_MOVEMENT, product_id, target.id, copy, "transfer_in", take, None, viewer.id,
                               now, None, None)
            moved.append((batch["id"], copy, take))
            remaining -= take
        return moved


def _plain(quantity: Decimal) -> str:
    """2.000 → 2, 2.500 → 2.5: how a quantity reads in an error message."""
    text = f"{quantity:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


async def stock_by_warehouse(conn: asyncpg.Connection, product_id: int) -> list[tuple[Warehouse, Decimal]]:
    return [(Warehouse(r["id"], r["name"], r["is_default"]), r["on_hand"])
            for r in await conn.fetch(STOCK_BY_WAREHOUSE, product_id)]


async def list_batches(conn: asyncpg.Connection, product_id: int) -> list[Batch]:
    """Batches still holding stock, oldest first."""
    return [Batch(**dict(r)) for r in await conn.fetch(BATCHES_OF, product_id)]


async def list_movements(conn: asyncpg.Connection, product_id: int, limit: int = 50,
                         after: str | None = None) -> Page[Movement]:
    """The product's history, newest first, a keyset page at a time."""
    key = decode(after, (datetime, int))
    rows = await conn.fetch(MOVEMENTS_PAGE, product_id, key[0] if key else None, key[1] if key else None, limit + 1)
    return page([Movement(**dict(r)) for r in rows], limit, movement_key)


async def find_product(conn: asyncpg.Connection, code: str) -> Product | None:
    """The product whose barcode (a scanner's digits) or SKU is exactly `code`."""
    code = (code or "").strip()
    row = await conn.fetchrow(PRODUCT_BY_CODE, code) if code else None
    return _product(row) if row else None


async def update_product(conn: asyncpg.Connection, viewer: User, product_id: int, version: int, sku: str, name: str,
                         unit: str, price, barcode: str | None, made_in_house: bool) -> Product:
    """Edit a product as it was read (`version`): someone else's save in between answers 409."""
    require_goods_role(viewer)
    sku, name = (sku or "").strip(), (name or "").strip()
    if not sku or not name:
        raise ValidationError("sku" if not sku else "name", "is required")
    if barcode is not None and not isinstance(barcode, str):
        raise ValidationError("barcode", "must be text")
    try:
        row = await conn.fetchrow(UPDATE_PRODUCT, product_id, sku, name, (unit or "pcs").strip(), parse_money(price),
                                  (barcode or "").strip() or None, made_in_house, version)
    except asyncpg.UniqueViolationError as exc:
        raise Conflict("a product with this SKU or barcode exists") from exc
    if row is None:
        await get_product(conn, product_id)
        raise Conflict("someone else changed this product; reload and edit again")
    return _product(row)


async def illiquid(conn: asyncpg.Connection, now: datetime, days: int = 180) -> list[Balance]:
    """Products with stock left in batches older than `days`; `on_hand` is that stock."""
    return [_balance(r) for r in await conn.fetch(ILLIQUID, now - timedelta(days=days), now)]


async def illiquid_sales(conn: asyncpg.Connection, since: datetime, days: int, manager_id: int | None
                         ) -> list[dict]:
    """Per manager: shipments since `since` of stock that had waited more than `days` in its batch."""
    return [dict(r) for r in await conn.fetch(ILLIQUID_SALES, since, days, manager_id)]
