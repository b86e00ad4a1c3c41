"""Call log storage: idempotent upserts of finished calls and legs; the raw AMI journal."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from crm import missed, paging
from crm.deals import open_deal_of_contact
from crm.errors import NotFound
from crm.leads import Lead, get_or_create_phone_lead, lead_called_back
from crm.matching import find_caller
from crm.missed import MissedUpdate
from crm.users import User
from crm.workhours import WorkingHours


class LegLike(Protocol):
    uniqueid: str
    channel: str
    kind: str
    extension: str | None
    created_at: float
    answered_at: float | None
    ended_at: float | None
    hangup_cause: int | None


class TransferLike(Protocol):
    from_: str | None
    to: str | None
    kind: str


class CallRecordLike(Protocol):
    """What cti's CallRecord offers; crm does not import cti."""

    pbx: str
    call_id: str
    direction: str
    caller: str
    caller_name: str
    callee: str
    started_at: float
    answered_at: float | None
    ended_at: float
    outcome: str
    reason: str
    answered_by: str | None
    agents_rang: Sequence[str]
    queue: str | None
    ring_seconds: int
    talk_seconds: int
    recording: str | None
    transfers: Sequence[TransferLike]
    talk_by_agent: Sequence[tuple[str, int]]
    legs: Sequence[LegLike]
    recovered: bool
    originated: bool


@dataclass(frozen=True, slots=True)
class CallRow:
    id: int
    pbx: str
    linkedid: str
    direction: str
    caller: str
    caller_e164: str | None
    caller_name: str
    callee: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime
    outcome: str
    reason: str
    answered_by: str | None
    agents_rang: list[str]
    queue: str | None
    ring_seconds: int
    talk_seconds: int
    recording: str | None
    transfers: list[dict[str, Any]]
    recovered: bool
    user_id: int | None
    user_name: str | None
    contact_id: int | None
    contact_name: str | None
    company_id: int | None
    company_name: str | None
    lead_id: int | None

    @property
    def duration_seconds(self) -> int:
        return self.ring_seconds + self.talk_seconds


# The user a call belongs to: who answered an inbound call, who placed an outbound one.
USER_OF_EXTENSION = "SELECT id FROM users WHERE extension = $1"
# A stored row is replaced only by a write of the same or a newer lease generation, and an observed
# call never by a recovered or backfilled one (a node that lost the lease must not undo the other's).
UPSERT_CALL = """
INSERT INTO calls (pbx, linkedid, direction, caller, caller_e164, caller_name, callee, started_at, answered_at,
                   ended_at, outcome, reason, answered_by, agents_rang, queue, ring_seconds, talk_seconds,
                   recording, transfers, talk_by_agent, recovered, originated, user_id, contact_id, company_id,
                   lead_id, lease_generation, observed)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22,
        $23, $24, $25, $26, $27, $28)
ON CONFLICT (pbx, linkedid) DO UPDATE SET
    direction = EXCLUDED.direction, caller = EXCLUDED.caller, caller_e164 = EXCLUDED.caller_e164,
    caller_name = EXCLUDED.caller_name, callee = EXCLUDED.callee, started_at = EXCLUDED.started_at,
    answered_at = EXCLUDED.answered_at, ended_at = EXCLUDED.ended_at, outcome = EXCLUDED.outcome,
    reason = EXCLUDED.reason, answered_by = EXCLUDED.answered_by, agents_rang = EXCLUDED.agents_rang,
    queue = EXCLUDED.queue, ring_seconds = EXCLUDED.ring_seconds, talk_seconds = EXCLUDED.talk_seconds,
    recording = coalesce(EXCLUDED.recording, calls.recording), transfers = EXCLUDED.transfers,
    talk_by_agent = EXCLUDED.talk_by_agent, recovered = EXCLUDED.recovered, originated = EXCLUDED.originated,
    user_id = EXCLUDED.user_id, contact_id = coalesce(calls.contact_id, EXCLUDED.contact_id),
    company_id = coalesce(calls.company_id, EXCLUDED.company_id),
    lead_id = coalesce(calls.lead_id, EXCLUDED.lead_id), lease_generation = EXCLUDED.lease_generation,
    observed = EXCLUDED.observed
WHERE calls.lease_generation <= EXCLUDED.lease_generation AND (EXCLUDED.observed OR NOT calls.observed)
RETURNING id
"""
CALL_ID = "SELECT id FROM calls WHERE pbx = $1 AND linkedid = $2"
# Named only when the caller gave one and the lead has none yet (the routing door may have come first).
NAME_LEAD = "UPDATE leads SET name = $2, updated_at = now() WHERE id = $1 AND name = '' RETURNING id"
# The manager who answered an unknown caller takes their lead, unless somebody already has it: a rule's pick
# that nobody has acted on yet (still new) gives way to the manager who has just talked to the person.
TAKE_LEAD = """
UPDATE leads SET manager_id = $2, updated_at = now()
WHERE id = $1 AND status IN ('new', 'in_work')
  AND (manager_id IS NULL OR (auto_assigned AND status = 'new' AND manager_id <> $2)) RETURNING id"""
UPSERT_LEG = """
INSERT INTO call_legs (call_id, pbx, uniqueid, channel, kind, extension, created_at, answered_at, ended_at,
                       hangup_cause)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (pbx, uniqueid) DO UPDATE SET
    call_id = EXCLUDED.call_id, channel = EXCLUDED.channel, kind = EXCLUDED.kind, extension = EXCLUDED.extension,
    created_at = EXCLUDED.created_at, answered_at = EXCLUDED.answered_at, ended_at = EXCLUDED.ended_at,
    hangup_cause = EXCLUDED.hangup_cause
"""
_CALL_SELECT = """
SELECT c.id, c.pbx, c.linkedid, c.direction, c.caller, c.caller_e164, c.caller_name, c.callee, c.started_at,
       c.answered_at, c.ended_at, c.outcome, c.reason, c.answered_by, c.agents_rang, c.queue, c.ring_seconds,
       c.talk_seconds, c.recording, c.transfers, c.recovered, c.user_id, u.display_name AS user_name,
       c.contact_id, ct.name AS contact_name, c.company_id, co.name AS company_name, c.lead_id
FROM calls c
LEFT JOIN users u ON u.id = c.user_id
LEFT JOIN contacts ct ON ct.id = c.contact_id
LEFT JOIN companies co ON co.id = c.company_id
"""
# Keyset pages in (started_at, id) order, newest first; the first page starts before ('infinity', 0).
_CALL_FILTERS = """
  AND ($2::timestamptz IS NULL OR c.started_at >= $2)
  AND ($3::timestamptz IS NULL OR c.started_at < $3)
  AND ($4::text IS NULL OR c.outcome = $4)
"""
LIST_CALLS = _CALL_SELECT + """
WHERE $1::bigint IS NULL AND (c.started_at, c.id) < ($7::timestamptz, $8::bigint)""" + _CALL_FILTERS + """
ORDER BY c.started_at DESC, c.id DESC LIMIT $5 OFFSET $6
"""
# A manager sees their own calls and calls of their clients: call_viewers (migration 0018, kept by
# triggers) holds one row per user and call in list order, so this is one index range.
LIST_MY_CALLS = _CALL_SELECT.replace("FROM calls c", "FROM call_viewers v JOIN calls c ON c.id = v.call_id") + """
WHERE v.user_id = $1 AND (v.started_at, v.call_id) < ($7::timestamptz, $8::bigint)""" + _CALL_FILTERS + """
ORDER BY v.started_at DESC, v.call_id DESC LIMIT $5 OFFSET $6
"""
GET_CALL = _CALL_SELECT + """
WHERE c.id = $1 AND ($2::bigint IS NULL OR c.user_id = $2 OR ct.manager_id = $2 OR co.manager_id = $2)
"""
LIST_LEAD_CALLS = _CALL_SELECT + "WHERE c.lead_id = $1 ORDER BY c.started_at DESC LIMIT $2"
# The deal's calls, and those made while its client was still a lead (before the deal existed).
LIST_DEAL_CALLS = _CALL_SELECT + """
WHERE c.deal_id = $1
   OR c.lead_id = (SELECT lead_id FROM deals WHERE id = $1 AND lead_id IS NOT NULL)
ORDER BY c.started_at DESC LIMIT $2
"""
LIST_PARTY_CALLS = _CALL_SELECT + """
WHERE (c.contact_id = $1 OR ($2::bigint IS NOT NULL AND c.company_id = $2))
ORDER BY c.started_at DESC LIMIT $3
"""
ATTACH_DEAL = "UPDATE calls SET deal_id = $2 WHERE id = $1 AND deal_id IS NULL"
COUNT_LEGS = "SELECT count(*) FROM call_legs WHERE call_id = $1"
INSERT_JOURNAL = "INSERT INTO ami_journal (pbx, received_at, linkedid, raw) VALUES ($1, $2, $3, $4)"
# A batch replayed from the writer's spool after a crash must not be written twice.
CLAIM_JOURNAL_BATCH = "INSERT INTO ami_journal_batches (id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id"
DELETE_OLD_BATCHES = "DELETE FROM ami_journal_batches WHERE written_at < $1"
SELECT_JOURNAL = "SELECT raw FROM ami_journal WHERE pbx = $1 AND linkedid = $2 ORDER BY id"
LAST_JOURNAL_TIME = "SELECT max(received_at) FROM ami_journal WHERE pbx = $1"
DELETE_OLD_JOURNAL = "DELETE FROM ami_journal WHERE received_at < $1"


_END_OF_TIME = datetime.max.replace(tzinfo=UTC)


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


@dataclass(frozen=True, slots=True)
class SavedCall:
    id: int
    missed_updates: list[MissedUpdate]
    written: bool = True  # False: the stored row won (newer generation, or observed over recovered)
    new_lead: Lead | None = None  # created for this call's unknown caller


@dataclass(frozen=True, slots=True)
class CallerLead:
    lead: Lead
    created: bool


async def lead_for_unknown_caller(conn: asyncpg.Connection, number: str, line: str,
                                  caller_name: str = "") -> CallerLead | None:
    """The one rule: an unknown caller with a real number has an open lead, named after the caller ID.

    The caller of this function has decided that the number matches no contact or company (from
    the routing index or the database). Withheld and internal numbers never become leads. The
    heads' stored notification is written here; telling them live is the caller's job when
    `created` is true.
    """
    if not number.startswith("+"):
        return None
    lead, created = await get_or_create_phone_lead(conn, number, line, caller_name)
    if not created and caller_name and not lead.name:
        if await conn.fetchval(NAME_LEAD, lead.id, caller_name[:200]) is not None:
            lead = replace(lead, name=caller_name[:200])
    return CallerLead(lead, created)


async def save_call(conn: asyncpg.Connection, record: CallRecordLike, region: str = "RU",
                    suffix_digits: int = 10, hours: WorkingHours | None = None,
                    callback_delay: timedelta = timedelta(hours=2), generation: int = 0) -> SavedCall:
    """Insert or update one finished call and its legs in one transaction; the same record twice
    leaves the same rows, and a missed call opens its board row and callback task once.

    The call is linked to the user it belongs to, to the contact or company of the outside number,
    for an unknown inbound caller to their open lead (created if needed), and goes to the missed-call
    board: a missed inbound call opens or adds to a row, an answered call to or from the number
    closes its rows. `generation` is the PBX lease generation of the node that observed the call:
    an older generation, or a recovered record over an observed one, leaves the stored row alone.
    """
    observed = not (record.recovered or getattr(record, "backfilled", False))
    caller_e164 = record.caller if record.caller.startswith("+") else None
    outside = record.caller if record.direction == "inbound" else (
        record.callee if record.direction == "outbound" else "")
    owner_extension = record.answered_by if record.direction != "outbound" else record.caller
    async with conn.transaction():
        user_id = await conn.fetchval(USER_OF_EXTENSION, owner_extension) if owner_extension else None
        match = await find_caller(conn, outside, region, suffix_digits) if outside else None
        lead = None
        if match is None and record.direction == "inbound" and caller_e164:
            lead = await lead_for_unknown_caller(conn, caller_e164, record.callee, record.caller_name)
        lead_id = lead.lead.id if lead else None
        if match is None and record.direction == "outbound" and outside.startswith("+"):
            # Calling a lead back: the call is in the lead's history, and reaching them puts the lead in work.
            lead_id = await lead_called_back(conn, outside, record.outcome == "answered", user_id)
        call_id = await conn.fetchval(
            UPSERT_CALL, record.pbx, record.call_id, record.direction, record.caller, caller_e164,
            record.caller_name[:200], record.callee, _dt(record.started_at), _dt(record.answered_at),
            _dt(record.ended_at), record.outcome, record.reason, record.answered_by, list(record.agents_rang),
            record.queue, record.ring_seconds, record.talk_seconds, record.recording,
            json.dumps([{"from": t.from_, "to": t.to, "kind": t.kind} for t in record.transfers]),
            json.dumps(dict(record.talk_by_agent)), record.recovered, record.originated, user_id,
            match.contact_id if match else None, match.company_id if match else None, lead_id, generation,
            observed)
        new_lead = lead.lead if lead is not None and lead.created else None
        if lead is not None and record.outcome == "answered" and user_id is not None:
            if await conn.fetchval(TAKE_LEAD, lead.lead.id, user_id) is not None and new_lead is not None:
                new_lead = replace(new_lead, manager_id=user_id, auto_assigned=False)
        if call_id is None:
            return SavedCall(await conn.fetchval(CALL_ID, record.pbx, record.call_id), [], False, new_lead)
        if record.legs:
            await conn.executemany(UPSERT_LEG, [
                (call_id, record.pbx, leg.uniqueid, leg.channel, leg.kind, leg.extension, _dt(leg.created_at),
                 _dt(leg.answered_at), _dt(leg.ended_at), leg.hangup_cause) for leg in record.legs])
        deal_id = await open_deal_of_contact(conn, match.contact_id if match else None)
        if deal_id is not None:
            await conn.execute(ATTACH_DEAL, call_id, deal_id)
        updates = await missed.record_call(
            conn, call_id, record.direction, record.outcome, record.reason, caller_e164, record.callee,
            _dt(record.started_at), _dt(record.answered_at), user_id, match.contact_id if match else None,
            match.company_id if match else None, lead_id, match.manager_id if match else None,
            hours or WorkingHours(), callback_delay)
    return SavedCall(call_id, updates, True, new_lead)


def _row(row: asyncpg.Record) -> CallRow:
    data = dict(row)
    data["transfers"] = json.loads(data["transfers"]) if isinstance(data["transfers"], str) else data["transfers"]
    data["agents_rang"] = list(data["agents_rang"])
    return CallRow(**data)


def call_key(call: CallRow) -> tuple[datetime, int]:
    """Where a call sits in the call log: the `after` cursor of the page it ends."""
    return call.started_at, call.id


async def list_calls(conn: asyncpg.Connection, viewer: User, since: datetime | None = None,
                     until: datetime | None = None, outcome: str | None = None, limit: int = 100,
                     offset: int = 0, after: str | None = None) -> list[CallRow]:
    """Newest first; `after` is the cursor of the previous page's last call (crm.paging)."""
    before_at, before_id = paging.decode(after, (datetime, int)) or (_END_OF_TIME, 0)
    scope = None if viewer.sees_everything else viewer.id
    rows = await conn.fetch(LIST_CALLS if scope is None else LIST_MY_CALLS, scope, since, until, outcome, limit,
                            offset, before_at, before_id)
    return [_row(row) for row in rows]


async def get_call(conn: asyncpg.Connection, viewer: User, call_id: int) -> CallRow:
    """Raise NotFound also when the viewer may not see it."""
    row = await conn.fetchrow(GET_CALL, call_id, None if viewer.sees_everything else viewer.id)
    if row is None:
        raise NotFound("call")
    return _row(row)


async def list_party_calls(conn: asyncpg.Connection, contact_id: int | None, company_id: int | None,
                           limit: int = 50) -> list[CallRow]:
    return [_row(row) for row in await conn.fetch(LIST_PARTY_CALLS, contact_id, company_id, limit)]


async def list_lead_calls(conn: asyncpg.Connection, lead_id: int, limit: int = 50) -> list[CallRow]:
    return [_row(row) for row in await conn.fetch(LIST_LEAD_CALLS, lead_id, limit)]


async def list_deal_calls(conn: asyncpg.Connection, deal_id: int, limit: int = 50) -> list[CallRow]:
    return [_row(row) for row in await conn.fetch(LIST_DEAL_CALLS, deal_id, limit)]


async def count_legs(conn: asyncpg.Connection, call_id: int) -> int:
    return await conn.fetchval(COUNT_LEGS, call_id)


async def append_journal(conn: asyncpg.Connection, rows: Sequence[tuple[str, datetime, str | None, str]],
                         batch_id: str | None = None) -> bool:
    """Rows of (pbx, received_at, linkedid, raw message). A batch with an id is written at most once;
    False when it already was."""
    async with conn.transaction():
        if batch_id is not None and await conn.fetchval(CLAIM_JOURNAL_BATCH, batch_id) is None:
            return False
        await conn.executemany(INSERT_JOURNAL, rows)
    return True


async def read_journal(conn: asyncpg.Connection, pbx: str, linkedid: str) -> list[str]:
    return [row["raw"] for row in await conn.fetch(SELECT_JOURNAL, pbx, linkedid)]


async def last_journal_time(conn: asyncpg.Connection, pbx: str) -> datetime | None:
    """When this PBX last sent us an event the model kept (the start of a restart's gap)."""
    return await conn.fetchval(LAST_JOURNAL_TIME, pbx)


async def purge_journal(conn: asyncpg.Connection, keep: timedelta, now: datetime) -> int:
    result = await conn.execute(DELETE_OLD_JOURNAL, now - keep)
    await conn.execute(DELETE_OLD_BATCHES, now - keep)
    return int(result.split()[-1])
