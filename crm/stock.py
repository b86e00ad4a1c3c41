"""Products and stock: balances derived from movements, FIFO shipment, safe reservations, illiquid stock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg

from crm.errors import Conflict, NotFound, ValidationError


@dataclass(frozen=True, slots=True)
class Product:
    id: int
    sku: str
    name: str
    unit: str
    price: Decimal
    barcode: str | None
    made_in_house: bool


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


PRODUCT_COLUMNS = "p.id, p.sku, p.name, p.unit, p.price, p.barcode, p.made_in_house"
INSERT_PRODUCT = f"""
INSERT INTO products AS p (sku, name, unit, price, barcode, made_in_house) VALUES ($1, $2, $3, $4, $5, $6)
RETURNING {PRODUCT_COLUMNS}
"""
GET_PRODUCT = f"SELECT {PRODUCT_COLUMNS} FROM products p WHERE p.id = $1"
PRODUCT_BY_SKU = f"SELECT {PRODUCT_COLUMNS} FROM products p WHERE p.sku = $1"
DEFAULT_WAREHOUSE = "SELECT id FROM warehouses WHERE is_default"
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
WHERE ($1::text IS NULL OR p.sku ILIKE '%' || $1 || '%' OR p.name ILIKE '%' || $1 || '%')
GROUP BY p.id ORDER BY p.name
"""
INSERT_BATCH = """
INSERT INTO stock_batches (product_id, warehouse_id, received_at, quantity, expires_on) VALUES ($1, $2, $3, $4, $5)
RETURNING id
"""
INSERT_MOVEMENT = """
INSERT INTO stock_movements (product_id, warehouse_id, batch_id, kind, quantity, deal_item_id, user_id, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
# What is left in each batch, oldest first: shipments and write-offs name their batch.
BATCHES_LEFT = """
SELECT b.id, b.quantity - coalesce((SELECT sum(m.quantity) FROM stock_movements m
                                    WHERE m.batch_id = b.id AND m.kind IN ('shipment', 'write_off')), 0) AS left
FROM stock_batches b WHERE b.product_id = $1 AND b.warehouse_id = $2
ORDER BY b.received_at, b.id
"""
ITEM_RESERVED = """
SELECT coalesce(sum(quantity) FILTER (WHERE kind = 'reservation'), 0)
     - coalesce(sum(quantity) FILTER (WHERE kind IN ('release', 'shipment')), 0)
FROM stock_movements WHERE deal_item_id = $1
"""
# Illiquid, counted per batch (FIFO: shipments and write-offs name the batch they took from): what is left of each
# batch received more than N days ago has not moved for N days. A batch received within the last N days never is,
# and a batch partly sold keeps the rest counted. `on_hand` is the illiquid quantity; reserved is not subtracted.
ILLIQUID = """
WITH left_in AS (
    SELECT b.product_id, b.quantity - coalesce((SELECT sum(m.quantity) FROM stock_movements m
                                                WHERE m.batch_id = b.id AND m.kind IN ('shipment', 'write_off')
                                                  AND m.created_at <= $2), 0) AS left
    FROM stock_batches b WHERE b.received_at < $1
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


async def receive(conn: asyncpg.Connection, product_id: int, quantity, now: datetime, user_id: int | None = None,
                  expires_on=None, warehouse_id: int | None = None) -> int:
    """A batch arrives: a receipt movement on it."""
    amount = parse_quantity(quantity)
    warehouse = warehouse_id or await default_warehouse(conn)
    async with conn.transaction():
        batch_id = await conn.fetchval(INSERT_BATCH, product_id, warehouse, now, amount, expires_on)
        await conn.execute(INSERT_MOVEMENT, product_id, warehouse, batch_id, "receipt", amount, None, user_id, now)
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
                               deal_item_id, user_id, now)
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
                               deal_item_id, user_id, now)
        return held


async def ship(conn: asyncpg.Connection, product_id: int, quantity, now: datetime, deal_item_id: int | None = None,
               user_id: int | None = None, kind: str = "shipment") -> list[tuple[int, Decimal]]:
    """Take from the oldest batches first; returns (batch, quantity) pairs. Refuses more than on hand,
    and, against a deal item, more than its reservation plus the free stock."""
    if kind not in ("shipment", "write_off"):
        raise ValidationError("kind", "shipment or write_off")
    if kind == "write_off" and deal_item_id is not None:
        raise ValidationError("deal_item_id", "only a shipment goes against a deal item")
    amount = parse_quantity(quantity)
    warehouse = await default_warehouse(conn)
    async with conn.transaction():
        await conn.execute(LOCK_PRODUCT, product_id)
        current = await balance(conn, product_id)
        if amount > current.on_hand:
            raise Conflict(f"only {current.on_hand} on hand")
        if deal_item_id is not None:
            if await conn.fetchval(LOCK_ITEM, deal_item_id) != product_id:
                raise NotFound("deal item of this product")
            # A shipment against an item first uses its reservation; the rest must be free stock,
            # reserved here so the balance never takes it from another deal's reservation.
            extra = amount - max(await conn.fetchval(ITEM_RESERVED, deal_item_id), Decimal(0))
            if extra > current.available:
                raise Conflict(f"only {current.available} free beyond this item's reservation")
            if extra > 0:
                await conn.execute(INSERT_MOVEMENT, product_id, warehouse, None, "reservation", extra, deal_item_id,
                                   user_id, now)
        taken: list[tuple[int, Decimal]] = []
        remaining = amount
        for batch in await conn.fetch(BATCHES_LEFT, product_id, warehouse):
            if remaining <= 0:
                break
            take = min(batch["left"], remaining)
            if take > 0:
                await conn.execute(INSERT_MOVEMENT, product_id, warehouse, batch["id"], kind, take, deal_item_id,
                                   user_id, now)
                taken.append((batch["id"], take))
                remaining -= take
        return taken


async def illiquid(conn: asyncpg.Connection, now: datetime, days: int = 180) -> list[Balance]:
    """Products with stock left in batches older than `days`; `on_hand` is that stock."""
    return [_balance(r) for r in await conn.fetch(ILLIQUID, now - timedelta(days=days), now)]


async def illiquid_sales(conn: asyncpg.Connection, since: datetime, days: int, manager_id: int | None
                         ) -> list[dict]:
    """Per manager: shipments since `since` of stock that had waited more than `days` in its batch."""
    return [dict(r) for r in await conn.fetch(ILLIQUID_SALES, since, days, manager_id)]
