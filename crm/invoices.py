"""Invoices from a deal's items: numbered per year without gaps, VAT, due dates from the contract, states by
payments; the printable document's context; the overdue-invoice job."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg

from crm import contracts
from crm.errors import Conflict, NotFound, ValidationError
from crm.leads import notify_heads
from crm.stock import parse_quantity
from crm.users import User

STATES = ("issued", "partly_paid", "paid", "cancelled")
OPEN_STATES = ("issued", "partly_paid")
DEFAULT_DUE_DAYS = 5  # without a contract: the usual "payable within 5 days"
CENT = Decimal("0.01")
# Reads on behalf of the system (jobs, documents whose access the caller checked): sees everything.
SYSTEM = User(0, "system", "admin", None, "system", True)


@dataclass(frozen=True, slots=True)
class Invoice:
    id: int
    year: int
    number: int
    issued_on: date
    due_on: date
    deal_id: int
    deal_title: str
    manager_id: int | None
    manager_name: str | None
    contract_id: int | None
    contract_number: str | None
    contract_signed_on: date | None
    company_id: int | None
    contact_id: int | None
    buyer: str
    buyer_tax_id: str
    vat_percent: int | None
    prices_include_vat: bool
    net: Decimal
    vat: Decimal
    total: Decimal
    paid: Decimal
    state: str
    created_at: datetime

    @property
    def owed(self) -> Decimal:
        return Decimal(0) if self.state == "cancelled" else self.total - self.paid

    def overdue_days(self, today: date) -> int:
        """Days past the due date while something is owed; 0 when not overdue."""
        return max(0, (today - self.due_on).days) if self.owed > 0 else 0


@dataclass(frozen=True, slots=True)
class InvoiceItem:
    position: int
    deal_item_id: int | None
    sku: str
    name: str
    unit: str
    quantity: Decimal
    price: Decimal
    amount: Decimal


_SELECT = """
SELECT i.id, i.year, i.number, i.issued_on, i.due_on, i.deal_id, d.title AS deal_title, d.manager_id,
       u.display_name AS manager_name, i.contract_id, c.number AS contract_number, c.signed_on AS contract_signed_on,
       i.company_id, i.contact_id, i.buyer, i.buyer_tax_id, i.vat_percent, i.prices_include_vat, i.net, i.vat,
       i.total, i.paid, i.state, i.created_at
FROM invoices i JOIN deals d ON d.id = i.deal_id LEFT JOIN users u ON u.id = d.manager_id
LEFT JOIN contracts c ON c.id = i.contract_id
"""
# A manager sees the invoices of their deals; head and admin see all.
GET_INVOICE = _SELECT + "WHERE i.id = $1 AND ($2::bigint IS NULL OR d.manager_id = $2)"
LIST_INVOICES = _SELECT + """
WHERE ($1::bigint IS NULL OR d.manager_id = $1) AND ($2::bigint IS NULL OR i.deal_id = $2)
  AND ($3::text IS NULL OR i.state = $3) AND ($4::bigint IS NULL OR i.company_id = $4)
ORDER BY i.year DESC, i.number DESC LIMIT $5
"""
# Unpaid past their due date, of one client or the invoices named (a payment reminder lists these).
OVERDUE_INVOICES = _SELECT + """
WHERE ($1::bigint IS NULL OR d.manager_id = $1) AND i.state IN ('issued', 'partly_paid') AND i.due_on < $2
  AND ($3::bigint IS NULL OR i.company_id = $3) AND ($4::bigint[] IS NULL OR i.id = ANY($4::bigint[]))
ORDER BY i.due_on, i.id
"""
LIST_ITEMS = """
SELECT position, deal_item_id, sku, name, unit, quantity, price, amount FROM invoice_items
WHERE invoice_id = $1 ORDER BY position
"""
LOCK_DEAL = """
SELECT d.id, d.title, d.status, d.company_id, d.contact_id, d.contract_id, d.legal_entity, co.name AS company_name,
       coalesce(co.tax_id, '') AS tax_id, ct.name AS contact_name
FROM deals d LEFT JOIN companies co ON co.id = d.company_id LEFT JOIN contacts ct ON ct.id = d.contact_id
WHERE d.id = $1 AND ($2::bigint IS NULL OR d.manager_id = $2)
FOR UPDATE OF d
"""
# What of each deal item is not on a live invoice yet.
UNINVOICED = """
SELECT di.id, p.sku, p.name, p.unit, di.quantity, di.price,
       di.quantity - coalesce((SELECT sum(ii.quantity) FROM invoice_items ii JOIN invoices i ON i.id = ii.invoice_id
                               WHERE ii.deal_item_id = di.id AND i.state <> 'cancelled'), 0) AS remaining
FROM deal_items di JOIN products p ON p.id = di.product_id WHERE di.deal_id = $1 ORDER BY di.id
"""
# Claims the year's counter row until commit: a second invoice waits, then takes the next number; a rolled
# back invoice gives its number back, so there are no gaps.
NEXT_NUMBER = """
INSERT INTO invoice_counters AS c (year, last_number) VALUES ($1, 1)
ON CONFLICT (year) DO UPDATE SET last_number = c.last_number + 1 RETURNING last_number
"""
INSERT_INVOICE = """
INSERT INTO invoices (year, number, issued_on, due_on, deal_id, contract_id, company_id, contact_id, buyer,
                      buyer_tax_id, vat_percent, prices_include_vat, net, vat, total, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) RETURNING id
"""
INSERT_ITEM = """
INSERT INTO invoice_items (invoice_id, deal_item_id, position, sku, name, unit, quantity, price, amount)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""
LOCK_INVOICE = """
SELECT i.id, i.state, i.paid FROM invoices i JOIN deals d ON d.id = i.deal_id
WHERE i.id = $1 AND ($2::bigint IS NULL OR d.manager_id = $2) FOR UPDATE OF i
"""
CANCEL = "UPDATE invoices SET state = 'cancelled', cancelled_at = $2, cancelled_by = $3 WHERE id = $1"
CLOSE_OVERDUE_TASK = """
UPDATE tasks SET state = 'done', closed_at = $2 WHERE invoice_id = $1 AND kind = 'overdue_invoice' AND state = 'open'
"""
# Newly overdue: past the due day, something owed, not flagged before. Flagging and the task are one
# transaction, and the task has a unique index per invoice: two nodes running the job give one task.
NEWLY_OVERDUE = """
UPDATE invoices i SET overdue_flagged_at = $2 FROM deals d
WHERE d.id = i.deal_id AND i.state IN ('issued', 'partly_paid') AND i.due_on < $1 AND i.overdue_flagged_at IS NULL
RETURNING i.id, i.year, i.number, i.buyer, i.deal_id, d.manager_id, i.total - i.paid AS owed
"""
INSERT_OVERDUE_TASK = """
INSERT INTO tasks (kind, title, assignee_id, due_at, deal_id, invoice_id) VALUES ('overdue_invoice', $1, $2, $3, $4, $5)
ON CONFLICT (invoice_id) WHERE kind = 'overdue_invoice' DO NOTHING RETURNING id
"""
INSERT_NOTIFICATION = "INSERT INTO notifications (user_id, kind, text) VALUES ($1, $2, $3)"


def _scope(viewer: User) -> int | None:
    return None if viewer.sees_everything else viewer.id


def overdue_title(number: int, year: int, buyer: str) -> str:
    """The task's sentence (translated where shown: web/i18n.py SERVER_TEXTS)."""
    return f"Invoice № {number} of {year} is overdue: {buyer}"[:200]


def vat_totals(lines_total: Decimal, vat_percent: int | None, prices_include_vat: bool
               ) -> tuple[Decimal, Decimal, Decimal]:
    """(net, VAT, total), each to the kopeck: VAT taken out of prices that include it, or added on top."""
    lines_total = lines_total.quantize(CENT, ROUND_HALF_UP)
    if not vat_percent:
        return lines_total, Decimal("0.00"), lines_total
    rate = Decimal(vat_percent)
    if prices_include_vat:
        vat = (lines_total * rate / (100 + rate)).quantize(CENT, ROUND_HALF_UP)
        return lines_total - vat, vat, lines_total
    vat = (lines_total * rate / 100).quantize(CENT, ROUND_HALF_UP)
    return lines_total, vat, lines_total + vat


async def get_invoice(conn: asyncpg.Connection, viewer: User, invoice_id: int) -> Invoice:
    row = await conn.fetchrow(GET_INVOICE, invoice_id, _scope(viewer))
    if row is None:
        raise NotFound("invoice")
    return Invoice(**dict(row))


async def list_items(conn: asyncpg.Connection, invoice_id: int) -> list[InvoiceItem]:
    return [InvoiceItem(**dict(r)) for r in await conn.fetch(LIST_ITEMS, invoice_id)]


async def overdue_invoices(conn: asyncpg.Connection, viewer: User, today: date, company_id: int | None = None,
                           invoice_ids: list[int] | None = None) -> list[Invoice]:
    rows = await conn.fetch(OVERDUE_INVOICES, _scope(viewer), today, company_id, invoice_ids)
    return [Invoice(**dict(r)) for r in rows]


async def list_invoices(conn: asyncpg.Connection, viewer: User, *, deal_id: int | None = None,
                        state: str | None = None, company_id: int | None = None, limit: int = 500) -> list[Invoice]:
    if state is not None and state not in STATES:
        raise ValidationError("state", ", ".join(STATES))
    rows = await conn.fetch(LIST_INVOICES, _scope(viewer), deal_id, state, company_id, limit)
    return [Invoice(**dict(r)) for r in rows]


def _wanted(lines: list[dict[str, Any]] | None, remaining: dict[int, Decimal]) -> dict[int, Decimal]:
    """deal item id → quantity to invoice: all that is left, or the lines asked for (each within what is left)."""
    if lines is None:
        return {item_id: left for item_id, left in remaining.items() if left > 0}
    if not isinstance(lines, list) or not lines:
        raise ValidationError("items", "choose at least one item")
    wanted: dict[int, Decimal] = {}
    for line in lines:
        if not isinstance(line, dict):
            raise ValidationError("items", "each item is {deal_item_id, quantity}")
        item_id = contracts.parse_whole(line.get("deal_item_id"), "deal_item_id", 1, 2**63 - 1, default=0)
        if item_id not in remaining:
            raise ValidationError("deal_item_id", "no such item on this deal")
        quantity = remaining[item_id] if line.get("quantity") in (None, "") else parse_quantity(line["quantity"])
        if item_id in wanted:
            raise ValidationError("deal_item_id", "an item is named twice")
        if quantity > remaining[item_id]:
            raise Conflict("more than is left to invoice on this item")
        if quantity > 0:
            wanted[item_id] = quantity
    return wanted


async def issue_invoice(conn: asyncpg.Connection, viewer: User, deal_id: int, today: date, *,
                        vat_percent: int | None, prices_include_vat: bool, lines: list[dict] | None = None,
                        due_on=None) -> Invoice:
    """An invoice for what of the deal is not invoiced yet (or for the lines given). The deal is claimed first,
    so a double click finds everything invoiced by the first and answers 409."""
    due = contracts.parse_date(due_on, "due_on", required=False)
    async with conn.transaction():
        deal = await conn.fetchrow(LOCK_DEAL, deal_id, _scope(viewer))
        if deal is None:
            raise NotFound("deal")
        if deal["status"] == "lost":
            raise Conflict("the deal is lost")
        items = {r["id"]: r for r in await conn.fetch(UNINVOICED, deal_id)}
        wanted = _wanted(lines, {item_id: r["remaining"] for item_id, r in items.items()})
        if not wanted:
            raise Conflict("everything on this deal is invoiced already" if items else "the deal has no items")
        contract = None
        if deal["contract_id"] is not None:
            contract = await contracts.get_contract(conn, SYSTEM, deal["contract_id"])
        if due is None:
            due = today + timedelta(days=contract.deferral_days if contract else DEFAULT_DUE_DAYS)
        if due < today:
            raise ValidationError("due_on", "must not be before the invoice date")
        rows = []
        for position, (item_id, quantity) in enumerate(wanted.items(), start=1):
            item = items[item_id]
            amount = (quantity * item["price"]).quantize(CENT, ROUND_HALF_UP)
            rows.append((item_id, position, item["sku"], item["name"], item["unit"], quantity, item["price"], amount))
        net, vat, total = vat_totals(sum((r[-1] for r in rows), Decimal(0)), vat_percent, prices_include_vat)
        if total <= 0:
            raise Conflict("the invoice would be for nothing (the items cost zero)")
        buyer = deal["legal_entity"] or deal["company_name"] or deal["contact_name"] or deal["title"]
        number = await conn.fetchval(NEXT_NUMBER, today.year)
        invoice_id = await conn.fetchval(
            INSERT_INVOICE, today.year, number, today, due, deal_id, deal["contract_id"], deal["company_id"],
            deal["contact_id"], buyer[:500], deal["tax_id"], vat_percent, prices_include_vat, net, vat, total,
            viewer.id or None)
        await conn.executemany(INSERT_ITEM, [(invoice_id, *r) for r in rows])
    return await get_invoice(conn, viewer, invoice_id)


async def cancel_invoice(conn: asyncpg.Connection, viewer: User, invoice_id: int, now: datetime) -> Invoice:
    """Only an unpaid invoice is cancelled; its number stays used (the counter never goes back)."""
    async with conn.transaction():
        row = await conn.fetchrow(LOCK_INVOICE, invoice_id, _scope(viewer))
        if row is None:
            raise NotFound("invoice")
        if row["state"] == "cancelled":
            raise Conflict("the invoice is cancelled already")
        if row["paid"] > 0:
            raise Conflict("payments are allocated to this invoice; take them off first")
        await conn.execute(CANCEL, invoice_id, now, viewer.id or None)
        await conn.execute(CLOSE_OVERDUE_TASK, invoice_id, now)
    return await get_invoice(conn, viewer, invoice_id)


async def invoice_document(conn: asyncpg.Connection, invoice_id: int) -> dict[str, Any]:
    """What a printed or PDF invoice shows, apart from the seller's requisites (the caller adds `seller`).
    No access check here: the caller has found the invoice visible to the reader."""
    invoice = await get_invoice(conn, SYSTEM, invoice_id)
    items = await list_items(conn, invoice_id)
    return {
        "invoice": invoice, "items": items, "number": invoice.number, "year": invoice.year,
        "issued_on": invoice.issued_on, "due_on": invoice.due_on,
        "buyer": {"name": invoice.buyer, "tax_id": invoice.buyer_tax_id},
        "contract": ({"number": invoice.contract_number, "signed_on": invoice.contract_signed_on}
                     if invoice.contract_id else None),
        "vat_percent": invoice.vat_percent, "prices_include_vat": invoice.prices_include_vat,
        "net": invoice.net, "vat": invoice.vat, "total": invoice.total, "paid": invoice.paid, "owed": invoice.owed,
        "state": invoice.state, "manager_name": invoice.manager_name, "seller": None,
    }


async def flag_overdue_invoices(conn: asyncpg.Connection, today: date, now: datetime) -> list[dict]:
    """The periodic job: each invoice that became overdue gives its manager one task and tells the heads."""
    async with conn.transaction():
        overdue = [dict(r) for r in await conn.fetch(NEWLY_OVERDUE, today, now)]
        for invoice in overdue:
            text = overdue_title(invoice["number"], invoice["year"], invoice["buyer"])
            created = await conn.fetchval(INSERT_OVERDUE_TASK, text, invoice["manager_id"], now + timedelta(days=1),
                                          invoice["deal_id"], invoice["id"])
            if created is None:
                continue
            if invoice["manager_id"] is not None:
                await conn.execute(INSERT_NOTIFICATION, invoice["manager_id"], "overdue_invoice", text[:300])
            await notify_heads(conn, "overdue_invoice", text[:300])
    return overdue
