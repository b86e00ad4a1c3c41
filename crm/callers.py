"""The caller's card: who is calling, their open lead, last calls and open deals, read once per call."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from crm import calls as calls_db
from crm import deals as deals_db
from crm.leads import OPEN_LEAD_BY_PHONE
from crm.matching import CallerMatch

HISTORY_LIMIT = 5


@dataclass(frozen=True, slots=True)
class CardLead:
    id: int
    status: str
    name: str


@dataclass(frozen=True, slots=True)
class CardCall:
    when: datetime
    direction: str
    outcome: str
    talk_seconds: int
    who: str | None


@dataclass(frozen=True, slots=True)
class CardDeal:
    id: int
    title: str
    stage: str


@dataclass(frozen=True, slots=True)
class CallerCard:
    """What a ringing manager sees at a glance. `complete` is False for the quick card built from the
    routing index alone (no history, no lead) while the database is slow or away."""

    number: str
    match: CallerMatch | None = None
    lead: CardLead | None = None
    history: tuple[CardCall, ...] = ()
    deals: tuple[CardDeal, ...] = ()
    complete: bool = False


def _history(rows: list[calls_db.CallRow]) -> tuple[CardCall, ...]:
    return tuple(CardCall(c.started_at, c.direction, c.outcome, c.talk_seconds, c.user_name) for c in rows)


async def load_card(conn: asyncpg.Connection, number: str, match: CallerMatch | None,
                    lead: CardLead | None = None) -> CallerCard:
    """The full card of a number already matched (or known to match nobody)."""
    if not number.startswith("+"):
        return CallerCard(number, complete=True)
    if match is not None:
        history = await calls_db.list_party_calls(conn, match.contact_id, match.company_id, limit=HISTORY_LIMIT)
        deals = await deals_db.open_deals_brief(conn, match.contact_id, match.company_id)
        return CallerCard(number, match, None, _history(history),
                          tuple(CardDeal(d["id"], d["title"], d["stage"]) for d in deals), True)
    if lead is None:
        row = await conn.fetchrow(OPEN_LEAD_BY_PHONE, number)
        lead = CardLead(row["id"], row["status"], row["name"]) if row is not None else None
    history = await calls_db.list_lead_calls(conn, lead.id, limit=HISTORY_LIMIT) if lead is not None else []
    return CallerCard(number, None, lead, _history(history), (), True)
