"""Receivables as of a day: what clients owe per client, per manager and in total, overdue, ageing buckets."""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

import asyncpg

from crm.users import User

BUCKETS = ("not_due", "1_30", "31_60", "61_90", "over_90")

# Each live invoice issued by the day, less what was paid to it by that day (payments received later do not
# count: the report for a past day shows that day's debt).
OPEN_INVOICES = """
SELECT * FROM (
  SELECT i.id, i.year, i.number, i.issued_on, i.due_on, i.total, i.deal_id, i.company_id,
         coalesce(co.name, i.buyer) AS client, d.manager_id, u.display_name AS manager_name,
         i.total - coalesce((SELECT sum(a.amount) FROM payment_allocations a JOIN payments p ON p.id = a.payment_id
                             WHERE a.invoice_id = i.id AND p.received_on <= $1), 0) AS owed
  FROM invoices i JOIN deals d ON d.id = i.deal_id
  LEFT JOIN companies co ON co.id = i.company_id LEFT JOIN users u ON u.id = d.manager_id
  WHERE i.state <> 'cancelled' AND i.issued_on <= $1 AND ($2::bigint IS NULL OR d.manager_id = $2)
) open WHERE owed > 0 ORDER BY due_on, id
"""


def _by_debt(debt: Debt) -> tuple:
    """The biggest overdue debtors first."""
    return (-debt.overdue, -debt.owed, debt.name)


def bucket(as_of: date, due_on: date) -> str:
    days = (as_of - due_on).days
    if days <= 0:
        return "not_due"
    if days <= 30:
        return "1_30"
    if days <= 60:
        return "31_60"
    if days <= 90:
        return "61_90"
    return "over_90"


@dataclass(slots=True)
class Debt:
    """Sums for one client, one manager or everyone."""

    key: int | str | None
    name: str
    owed: Decimal = Decimal(0)
    overdue: Decimal = Decimal(0)
    expected_this_month: Decimal = Decimal(0)
    buckets: dict[str, Decimal] = field(default_factory=lambda: {b: Decimal(0) for b in BUCKETS})
    invoices: int = 0

    def add(self, owed: Decimal, where: str, due_this_month: bool) -> None:
        self.owed += owed
        self.buckets[where] += owed
        self.invoices += 1
        if where != "not_due":
            self.overdue += owed
        elif due_this_month:
            self.expected_this_month += owed


@dataclass(slots=True)
class Receivables:
    as_of: date
    total: Debt
    clients: list[Debt]
    managers: list[Debt]
    invoices: list[dict]


async def receivables(conn: asyncpg.Connection, viewer: User, as_of: date) -> Receivables:
    """`expected_this_month`: owed on invoices not overdue yet that fall due by the end of as_of's month."""
    rows = await conn.fetch(OPEN_INVOICES, as_of, None if viewer.sees_everything else viewer.id)
    month_end = as_of.replace(day=calendar.monthrange(as_of.year, as_of.month)[1])
    total = Debt(None, "")
    clients: dict[object, Debt] = {}
    managers: dict[object, Debt] = {}
    invoices = []
    for row in rows:
        where = bucket(as_of, row["due_on"])
        this_month = row["due_on"] <= month_end
        client_key = row["company_id"] or f"buyer:{row['client']}"
        for table, key, name in ((clients, client_key, row["client"]),
                                 (managers, row["manager_id"], row["manager_name"] or "")):
            table.setdefault(key, Debt(key, name)).add(row["owed"], where, this_month)
        total.add(row["owed"], where, this_month)
        invoices.append({**dict(row), "bucket": where, "days_overdue": max(0, (as_of - row["due_on"]).days)})
    return Receivables(as_of, total, sorted(clients.values(), key=_by_debt), sorted(managers.values(), key=_by_debt),
                       invoices)
