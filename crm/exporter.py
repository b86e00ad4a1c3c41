"""Export of the lists (calls, contacts, companies, leads, deals, stock) as rows, with the lists' own filters and
visibility; web/exchange.py writes them as CSV or XLSX."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from crm import calls as calls_db
from crm import contacts as contacts_db
from crm import leads as leads_db
from crm import paging, stock
from crm.deals import _DEAL_SELECT, _deal
from crm.phones import format_phone
from crm.users import User

LISTS = ("calls", "contacts", "companies", "leads", "deals", "stock")
PAGE = 1000
# Column codes per list; the web layer names them in the reader's language.
COLUMNS: dict[str, tuple[str, ...]] = {
    "calls": ("id", "started_at", "direction", "outcome", "caller", "callee", "contact", "company", "manager",
              "ring_seconds", "talk_seconds"),
    "contacts": ("id", "name", "company", "phones", "emails", "manager", "notes"),
    "companies": ("id", "name", "inn", "phones", "emails", "manager", "notes"),
    "leads": ("id", "created_at", "status", "source", "name", "company", "phone", "email", "manager",
              "first_message"),
    "deals": ("id", "title", "contact", "company", "manager", "stage", "status", "amount", "probability",
              "created_at", "stage_changed_at"),
    "stock": ("sku", "name", "unit", "price", "on_hand", "reserved", "available"),
}
EMAILS_OF = {"contact": "SELECT contact_id AS id, email FROM emails WHERE contact_id = ANY($1::bigint[]) ORDER BY id",
             "company": "SELECT company_id AS id, email FROM emails WHERE company_id = ANY($1::bigint[]) ORDER BY id"}
# Every deal of the filter, not the page's first 500.
EXPORT_DEALS = _DEAL_SELECT + """
WHERE ($1::bigint IS NULL OR d.manager_id = $1) AND ($2::text IS NULL OR d.status = $2)
ORDER BY d.created_at, d.id
"""


@dataclass(frozen=True, slots=True)
class Filters:
    """What the list page was showing: its query string, checked by the web layer."""

    q: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    outcome: str | None = None
    status: str | None = None
    source: str | None = None


async def export_rows(conn: asyncpg.Connection, viewer: User, name: str, filters: Filters, region: str
                      ) -> AsyncIterator[tuple[Any, ...]]:
    """The rows of one list as the viewer may see it, in the order of COLUMNS[name]."""
    if name == "calls":
        offset = 0
        while batch := await calls_db.list_calls(conn, viewer, filters.since, filters.until, filters.outcome,
                                                 limit=PAGE, offset=offset):
            for c in batch:
                yield (c.id, c.started_at, c.direction, c.outcome, c.caller, c.callee, c.contact_name or "",
                       c.company_name or "", c.user_name or "", c.ring_seconds, c.talk_seconds)
            offset += PAGE
    elif name in ("contacts", "companies"):
        kind = "contact" if name == "contacts" else "company"
        after = None  # keyset pages: a search's order is not SQL's OFFSET order (crm.contacts._search)
        while batch := await contacts_db.list_parties(conn, viewer, kind, filters.q, region, PAGE, after=after):
            emails: dict[int, list[str]] = {}
            for r in await conn.fetch(EMAILS_OF[kind], [p.id for p in batch]):
                emails.setdefault(r["id"], []).append(r["email"])
            for p in batch:
                phones = ", ".join(format_phone(ph.e164, ph.extension) for ph in p.phones)
                third = p.company_name or "" if kind == "contact" else p.tax_id or ""
                yield (p.id, p.name, third, phones, ", ".join(emails.get(p.id, [])), p.manager_name or "", p.notes)
            if len(batch) < PAGE:
                break
            after = paging.encode(contacts_db.party_key(batch[-1]))
    elif name == "leads":
        offset = 0
        while batch := await leads_db.list_leads(conn, viewer, filters.status, filters.source, PAGE, offset):
            for lead in batch:
                yield (lead.id, lead.created_at, lead.status, lead.source, lead.name, lead.company_name,
                       format_phone(lead.phone_e164) if lead.phone_e164 else "", lead.email or "",
                       lead.manager_name or "", lead.first_message)
            offset += PAGE
    elif name == "deals":
        scope = None if viewer.sees_everything else viewer.id
        async with conn.transaction():  # a cursor streams the rows instead of loading them all
            async for row in conn.cursor(EXPORT_DEALS, scope, filters.status):
                d = _deal(row)
                yield (d.id, d.title, d.contact_name or "", d.company_name or "", d.manager_name or "",
                       d.stage, d.status, d.amount, d.probability, d.created_at, d.stage_changed_at)
    elif name == "stock":
        for b in await stock.list_balances(conn, filters.q):
            yield (b.sku, b.name, b.unit, b.price, b.on_hand, b.reserved, b.available)
    else:
        raise ValueError(name)
