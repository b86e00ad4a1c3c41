"""Payments from clients: imported from bank statements (once each) or entered by hand, matched to invoices by
the number in the purpose of payment, then by payer INN and amount; split across invoices by a person."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from crm import contracts
from crm.bankstatement import Statement, StatementDocument
from crm.errors import Conflict, Forbidden, NotFound, ValidationError
from crm.invoices import CLOSE_OVERDUE_TASK
from crm.stock import parse_money
from crm.users import User

# Every write that moves money between payments and invoices holds this lock for its transaction: imports,
# hand entries, splits and cancellations then run one after another (a sales office has a few of them a day),
# and no two can lock invoices in a different order and deadlock.
MONEY_LOCK = "SELECT pg_advisory_xact_lock(4378201915)"

# `по счету № 15, 16 от 03.11.2026`, `сч. №15`, `счёт на оплату N 15`; not `р/сч 4070…` nor `счет-фактура`.
_INVOICE_REF = re.compile(
    r"(?<![а-яё/])сч(?:[её]т[а-я]*|\.)?(?!\s*-?\s*фактур)\s*(?:на\s+оплату\s*)?(?:№|N|No\.?|#)?\s*"
    r"((?<!\d)\d{1,7}(?!\d)(?:\s*(?:,|и)\s*(?:№\s*)?\d{1,7}(?!\d))*)"
    r"(?:\s*от\s*(\d{1,2})\.(\d{1,2})\.(\d{2}|\d{4})(?!\d))?",
    re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Allocation:
    invoice_id: int
    year: int
    number: int
    amount: Decimal
    matched_by: str


@dataclass(frozen=True, slots=True)
class Payment:
    id: int
    source: str
    doc_number: str
    doc_date: date
    received_on: date
    amount: Decimal
    payer_name: str
    payer_inn: str
    payer_account: str
    purpose: str
    company_id: int | None
    company_name: str | None
    allocated: Decimal
    dismissed: bool
    created_at: datetime
    allocations: tuple[Allocation, ...] = ()

    @property
    def unallocated(self) -> Decimal:
        return self.amount - self.allocated


@dataclass(slots=True)
class ImportSummary:
    """What `POST /api/bank-statements` answers."""

    statement_id: int
    documents: int = 0
    incoming: int = 0
    outgoing: int = 0
    matched: int = 0
    to_match: int = 0
    duplicates: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)
    payment_ids: list[int] = field(default_factory=list)


_SELECT = """
SELECT p.id, p.source, p.doc_number, p.doc_date, p.received_on, p.amount, p.payer_name, p.payer_inn,
       p.payer_account, p.purpose, p.company_id, co.name AS company_name, p.allocated, p.dismissed, p.created_at
FROM payments p LEFT JOIN companies co ON co.id = p.company_id
"""
# A manager sees payments of their companies and those paying their deals' invoices; head and admin see all.
_VISIBLE = """($1::bigint IS NULL OR co.manager_id = $1 OR EXISTS (
    SELECT 1 FROM payment_allocations a JOIN invoices i ON i.id = a.invoice_id JOIN deals d ON d.id = i.deal_id
    WHERE a.payment_id = p.id AND d.manager_id = $1))"""
GET_PAYMENT = _SELECT + f"WHERE p.id = $2 AND {_VISIBLE}"
LIST_PAYMENTS = _SELECT + f"""
WHERE {_VISIBLE} AND (NOT $2::boolean OR (p.allocated < p.amount AND NOT p.dismissed))
ORDER BY p.received_on DESC, p.id DESC LIMIT $3
"""
LIST_ALLOCATIONS = """
SELECT a.invoice_id, i.year, i.number, a.amount, a.matched_by FROM payment_allocations a
JOIN invoices i ON i.id = a.invoice_id WHERE a.payment_id = $1 ORDER BY a.id
"""
INSERT_STATEMENT = """
INSERT INTO bank_statements (file_name, account, date_from, date_to, encoding, format_version, documents, uploaded_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id
"""
# The same payment order (day, number, amount, payer's account) is one payment, whichever file brings it.
INSERT_PAYMENT = """
INSERT INTO payments (statement_id, source, doc_number, doc_date, received_on, amount, payer_name, payer_inn,
                      payer_account, purpose, company_id, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
        coalesce($11, (SELECT id FROM companies WHERE $8 <> '' AND tax_id = $8 ORDER BY id LIMIT 1)), $12)
ON CONFLICT (doc_date, doc_number, amount, payer_account) DO NOTHING
RETURNING id
"""
LOCK_PAYMENT = "SELECT id, amount, allocated, payer_inn, dismissed FROM payments WHERE id = $1 FOR UPDATE"
LOCK_INVOICE = """
SELECT id, state, total, paid, buyer_tax_id FROM invoices WHERE id = $1 FOR UPDATE
"""
INVOICE_BY_NUMBER = "SELECT id FROM invoices WHERE year = $1 AND number = $2"
# Open invoices of the payer (by the INN the invoice was issued to, or its company's today) owing exactly this.
INVOICE_BY_INN_AMOUNT = """
SELECT i.id FROM invoices i LEFT JOIN companies co ON co.id = i.company_id
WHERE i.state IN ('issued', 'partly_paid') AND (i.buyer_tax_id = $1 OR co.tax_id = $1) AND i.total - i.paid = $2
ORDER BY i.due_on, i.id LIMIT 1
"""
UPSERT_ALLOCATION = """
INSERT INTO payment_allocations (payment_id, invoice_id, amount, matched_by, created_by) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (payment_id, invoice_id) DO UPDATE SET amount = payment_allocations.amount + EXCLUDED.amount
"""
DELETE_ALLOCATION = "DELETE FROM payment_allocations WHERE payment_id = $1 AND invoice_id = $2 RETURNING amount"
APPLY_TO_INVOICE = """
UPDATE invoices SET paid = paid + $2,
       state = CASE WHEN paid + $2 >= total THEN 'paid' WHEN paid + $2 > 0 THEN 'partly_paid' ELSE 'issued' END
WHERE id = $1 RETURNING state
"""
APPLY_TO_PAYMENT = "UPDATE payments SET allocated = allocated + $2 WHERE id = $1"
DISMISS = "UPDATE payments SET dismissed = $2 WHERE id = $1"


def _scope(viewer: User) -> int | None:
    return None if viewer.sees_everything else viewer.id


def _require_money_role(viewer: User) -> None:
    if not viewer.sees_everything:
        raise Forbidden("only the head of sales or an admin enters and matches payments")


def invoice_refs(purpose: str, default_year: int) -> list[tuple[int, int]]:
    """(year, number) of the invoices a purpose of payment names, in its order; the year from `от dd.mm.yyyy`,
    else the payment's."""
    found: list[tuple[int, int]] = []
    for match in _INVOICE_REF.finditer(purpose):
        year = default_year
        if match.group(4):
            year = int(match.group(4)) + (2000 if len(match.group(4)) == 2 else 0)
        for number in re.findall(r"\d+", match.group(1)):
            ref = (year, int(number))
            if int(number) > 0 and ref not in found:
                found.append(ref)
    return found


async def _apply(conn: asyncpg.Connection, payment_id: int, invoice_id: int, amount: Decimal, matched_by: str,
                 user_id: int | None, now: datetime) -> None:
    """Move `amount` (negative: take back) between a payment and an invoice; both rows are held by the caller."""
    if amount > 0:
        await conn.execute(UPSERT_ALLOCATION, payment_id, invoice_id, amount, matched_by, user_id)
    state = await conn.fetchval(APPLY_TO_INVOICE, invoice_id, amount)
    await conn.execute(APPLY_TO_PAYMENT, payment_id, amount)
    if state == "paid":
        await conn.execute(CLOSE_OVERDUE_TASK, invoice_id, now)


async def _auto_match(conn: asyncpg.Connection, payment_id: int, doc_date: date, purpose: str, now: datetime) -> bool:
    """Allocate a new payment: to the invoices its purpose names (when the payer's INN does not contradict),
    else to the one open invoice of the payer's INN owing exactly the amount. True when anything was allocated."""
    payment = await conn.fetchrow(LOCK_PAYMENT, payment_id)
    left = payment["amount"]
    matched = False
    for year, number in invoice_refs(purpose, doc_date.year):
        if left <= 0:
            break
        # Early in a year a payment often names last year's invoice without its date.
        invoice_id = await conn.fetchval(INVOICE_BY_NUMBER, year, number)
        if invoice_id is None and year == doc_date.year:
            invoice_id = await conn.fetchval(INVOICE_BY_NUMBER, year - 1, number)
        if invoice_id is None:
            continue
        invoice = await conn.fetchrow(LOCK_INVOICE, invoice_id)
        owed = invoice["total"] - invoice["paid"]
        inn_differs = bool(payment["payer_inn"] and invoice["buyer_tax_id"]
                           and payment["payer_inn"] != invoice["buyer_tax_id"])
        if invoice["state"] not in ("issued", "partly_paid") or owed <= 0 or inn_differs:
            continue
        amount = min(left, owed)
        await _apply(conn, payment_id, invoice_id, amount, "number", None, now)
        left -= amount
        matched = True
    if matched or not payment["payer_inn"]:
        return matched
    invoice_id = await conn.fetchval(INVOICE_BY_INN_AMOUNT, payment["payer_inn"], payment["amount"])
    if invoice_id is None:
        return False
    await conn.fetchrow(LOCK_INVOICE, invoice_id)
    await _apply(conn, payment_id, invoice_id, payment["amount"], "inn_amount", None, now)
    return True


async def import_statement(conn: asyncpg.Connection, viewer: User, statement: Statement, file_name: str,
                           now: datetime) -> ImportSummary:
    """Store the statement's incoming payments that are new and match them; one transaction. Outgoing
    documents are counted, not stored (they are our own payments to suppliers)."""
    _require_money_role(viewer)
    incoming: list[StatementDocument] = []
    summary = ImportSummary(0, documents=len(statement.documents), problems=list(statement.problems))
    for doc in statement.documents:
        direction = statement.direction(doc)
        if direction == "incoming":
            incoming.append(doc)
        elif direction == "outgoing":
            summary.outgoing += 1
    summary.incoming = len(incoming)
    # The same order in every import, so two imports meet on the same first row.
    incoming.sort(key=lambda d: (d.doc_date, d.number, d.amount, d.payer_account))
    async with conn.transaction():
        await conn.execute(MONEY_LOCK)
        summary.statement_id = await conn.fetchval(
            INSERT_STATEMENT, (file_name or "statement.txt")[:200], ", ".join(statement.accounts)[:500],
            statement.date_from, statement.date_to, statement.encoding, statement.version[:20],
            len(statement.documents), viewer.id or None)
        for doc in incoming:
            payment_id = await conn.fetchval(
                INSERT_PAYMENT, summary.statement_id, "statement", doc.number, doc.doc_date,
                doc.received_on or doc.doc_date, doc.amount, doc.payer_name, doc.payer_inn, doc.payer_account,
                doc.purpose, None, viewer.id or None)
            if payment_id is None:
                summary.duplicates += 1
                continue
            summary.payment_ids.append(payment_id)
            if await _auto_match(conn, payment_id, doc.doc_date, doc.purpose, now):
                summary.matched += 1
            else:
                summary.to_match += 1
    return summary


def _allocations(value: Any) -> list[tuple[int, Decimal]]:
    """[{invoice_id, amount}, …] from JSON or a form, each invoice once."""
    if not isinstance(value, list) or not value:
        raise ValidationError("allocations", "give at least one {invoice_id, amount}")
    out: dict[int, Decimal] = {}
    for entry in value:
        if not isinstance(entry, dict):
            raise ValidationError("allocations", "each allocation is {invoice_id, amount}")
        invoice_id = contracts.parse_whole(entry.get("invoice_id"), "invoice_id", 1, 2**63 - 1)
        if invoice_id == 0:
            raise ValidationError("invoice_id", "is required")
        amount = parse_money(entry.get("amount"), "amount")
        if amount <= 0:
            raise ValidationError("amount", "must be more than zero")
        if invoice_id in out:
            raise ValidationError("invoice_id", "an invoice is named twice")
        out[invoice_id] = amount
    return sorted(out.items())


async def allocate(conn: asyncpg.Connection, viewer: User, payment_id: int, allocations: Any,
                   now: datetime) -> Payment:
    """Split what is left of a payment across invoices, each within what the invoice still owes."""
    _require_money_role(viewer)
    wanted = _allocations(allocations)
    async with conn.transaction():
        await conn.execute(MONEY_LOCK)
        await _allocate_claimed(conn, viewer, payment_id, wanted, now)
    return await get_payment(conn, viewer, payment_id)


async def _allocate_claimed(conn: asyncpg.Connection, viewer: User, payment_id: int,
                            wanted: list[tuple[int, Decimal]], now: datetime) -> None:
    payment = await conn.fetchrow(LOCK_PAYMENT, payment_id)
    if payment is None:
        raise NotFound("payment")
    if sum(amount for _, amount in wanted) > payment["amount"] - payment["allocated"]:
        raise Conflict("more than is left of the payment")
    for invoice_id, amount in wanted:
        invoice = await conn.fetchrow(LOCK_INVOICE, invoice_id)
        if invoice is None:
            raise NotFound("invoice")
        if invoice["state"] == "cancelled":
            raise Conflict("the invoice is cancelled")
        if amount > invoice["total"] - invoice["paid"]:
            raise Conflict("more than the invoice still owes")
        await _apply(conn, payment_id, invoice_id, amount, "manual", viewer.id or None, now)


async def unallocate(conn: asyncpg.Connection, viewer: User, payment_id: int, invoice_id: int,
                     now: datetime) -> Payment:
    """Take a payment off an invoice (a wrong match); the money waits to be matched again."""
    _require_money_role(viewer)
    async with conn.transaction():
        await conn.execute(MONEY_LOCK)
        if await conn.fetchrow(LOCK_PAYMENT, payment_id) is None:
            raise NotFound("payment")
        await conn.fetchrow(LOCK_INVOICE, invoice_id)
        amount = await conn.fetchval(DELETE_ALLOCATION, payment_id, invoice_id)
        if amount is None:
            raise NotFound("allocation")
        await _apply(conn, payment_id, invoice_id, -amount, "manual", viewer.id or None, now)
    return await get_payment(conn, viewer, payment_id)


async def enter_payment(conn: asyncpg.Connection, viewer: User, now: datetime, *, doc_number: str, doc_date,
                        amount, received_on=None, payer_name: str = "", payer_inn: str = "", payer_account: str = "",
                        purpose: str = "", company_id: int | None = None, allocations: Any = None) -> Payment:
    """A payment typed by hand (cash, a bank without a statement): split as given, else matched like an
    imported one. The same order entered twice (or later imported) is one payment."""
    _require_money_role(viewer)
    number = (doc_number or "").strip()
    if not number or len(number) > 64:
        raise ValidationError("doc_number", "is required (at most 64 characters)")
    day = contracts.parse_date(doc_date, "doc_date")
    received = contracts.parse_date(received_on, "received_on", required=False) or day
    value = parse_money(amount, "amount")
    if value <= 0:
        raise ValidationError("amount", "must be more than zero")
    inn = (payer_inn or "").strip()
    if inn and not (inn.isdigit() and len(inn) in (10, 12)):
        raise ValidationError("payer_inn", "an INN is 10 or 12 digits")
    wanted = _allocations(allocations) if allocations not in (None, []) else None
    async with conn.transaction():
        await conn.execute(MONEY_LOCK)
        payment_id = await conn.fetchval(
            INSERT_PAYMENT, None, "manual", number, day, received, value, (payer_name or "").strip()[:500], inn,
            (payer_account or "").strip()[:34], (purpose or "")[:2000], company_id, viewer.id or None)
        if payment_id is None:
            raise Conflict("this payment is entered already (same date, number, amount and payer's account)")
        if wanted is not None:
            await _allocate_claimed(conn, viewer, payment_id, wanted, now)
        else:
            await _auto_match(conn, payment_id, day, purpose or "", now)
    return await get_payment(conn, viewer, payment_id)


async def dismiss_payment(conn: asyncpg.Connection, viewer: User, payment_id: int, dismissed: bool = True
                          ) -> Payment:
    """Not for an invoice (a refund, a loan): off the to-match list, or back on it."""
    _require_money_role(viewer)
    async with conn.transaction():
        await conn.execute(MONEY_LOCK)
        if await conn.fetchrow(LOCK_PAYMENT, payment_id) is None:
            raise NotFound("payment")
        await conn.execute(DISMISS, payment_id, dismissed)
    return await get_payment(conn, viewer, payment_id)


async def get_payment(conn: asyncpg.Connection, viewer: User, payment_id: int) -> Payment:
    row = await conn.fetchrow(GET_PAYMENT, _scope(viewer), payment_id)
    if row is None:
        raise NotFound("payment")
    allocations = tuple(Allocation(**dict(r)) for r in await conn.fetch(LIST_ALLOCATIONS, payment_id))
    return Payment(**dict(row), allocations=allocations)


async def list_payments(conn: asyncpg.Connection, viewer: User, to_match: bool = False, limit: int = 500
                        ) -> list[Payment]:
    return [Payment(**dict(r)) for r in await conn.fetch(LIST_PAYMENTS, _scope(viewer), to_match, limit)]


INVOICE_PAYMENTS = """
SELECT p.id, p.doc_number, p.doc_date, p.received_on, p.payer_name, a.amount, a.matched_by
FROM payment_allocations a JOIN payments p ON p.id = a.payment_id WHERE a.invoice_id = $1 ORDER BY p.received_on, p.id
"""


async def invoice_payments(conn: asyncpg.Connection, invoice_id: int) -> list[dict]:
    """The payments allocated to an invoice (the caller has checked it may see the invoice)."""
    return [dict(r) for r in await conn.fetch(INVOICE_PAYMENTS, invoice_id)]
