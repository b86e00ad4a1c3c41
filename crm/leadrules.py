"""Lead distribution: the head's ordered rules that give a new lead its manager, and the alerts about leads
left waiting (nobody assigned, or nobody acted on them) past the head's limits.

On duty: a manager (or head) who is active and logged in to Callboard right now (an unexpired session; logging
out takes a person off duty). A rule whose managers are all off duty does not apply and the next rule is tried;
a lead no rule places stays unassigned, and the unassigned alert tells the head.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from crm.errors import Forbidden, NotFound, ValidationError
from crm.phones import format_phone
from crm.users import User

CHANNELS = ("phone", "email", "web_form", "chat", "manual")
ACTIONS = ("assign", "round_robin")


@dataclass(frozen=True, slots=True)
class LeadRule:
    id: int
    position: int
    name: str
    channel: str | None
    line: str
    prefixes: list[str]
    action: str
    manager_ids: list[int]
    last_manager_id: int | None
    active: bool

    def matches(self, source: str, line: str, phone_e164: str | None) -> bool:
        """Every condition the rule sets holds for the lead (an empty condition holds always)."""
        if self.channel is not None and self.channel != source:
            return False
        if self.line and not same_line(self.line, line):
            return False
        if self.prefixes and not (phone_e164 and any(phone_e164.startswith(p) for p in self.prefixes)):
            return False
        return True


@dataclass(frozen=True, slots=True)
class AlertLimits:
    unassigned_minutes: int
    untouched_minutes: int


@dataclass(frozen=True, slots=True)
class WaitingLead:
    """A lead the head should look at: `why` is 'unassigned' or 'untouched'."""

    lead_id: int
    title: str
    why: str
    manager_id: int | None
    manager_name: str | None
    since: datetime

    def minutes(self, now: datetime) -> int:
        return max(0, int((now - self.since).total_seconds() // 60))


@dataclass(frozen=True, slots=True)
class LeadsWaiting:
    """Told live to the heads: (the stored alert's text, lead id) for each lead newly past a limit."""

    alerts: list[tuple[str, int]]


_RULE_COLUMNS = "id, position, name, channel, line, prefixes, action, manager_ids, last_manager_id, active"
LIST_RULES = f"SELECT {_RULE_COLUMNS} FROM lead_rules ORDER BY position, id"
ACTIVE_RULES = f"SELECT {_RULE_COLUMNS} FROM lead_rules WHERE active ORDER BY position, id"
GET_RULE = f"SELECT {_RULE_COLUMNS} FROM lead_rules WHERE id = $1"
INSERT_RULE = """
INSERT INTO lead_rules (position, name, channel, line, prefixes, action, manager_ids, active)
VALUES ((SELECT coalesce(max(position), 0) + 1 FROM lead_rules), $1, $2, $3, $4, $5, $6, $7) RETURNING id
"""
UPDATE_RULE = """
UPDATE lead_rules SET name = $2, channel = $3, line = $4, prefixes = $5, action = $6, manager_ids = $7,
       active = $8 WHERE id = $1 RETURNING id
"""
DELETE_RULE = "DELETE FROM lead_rules WHERE id = $1 RETURNING id"
# Moving a rule swaps its position with its neighbour's; both rows claimed first (two heads at once).
LOCK_RULES = "SELECT id, position FROM lead_rules ORDER BY position, id FOR UPDATE"
SET_POSITION = "UPDATE lead_rules SET position = $2 WHERE id = $1"
# The round robin's pointer is claimed for the lead's transaction: two leads at once go to two people.
CLAIM_POINTER = "SELECT last_manager_id FROM lead_rules WHERE id = $1 FOR UPDATE"
MOVE_POINTER = "UPDATE lead_rules SET last_manager_id = $2 WHERE id = $1"
ON_DUTY = """
SELECT u.id FROM users u
WHERE u.id = ANY($1::bigint[]) AND u.active AND u.role IN ('manager', 'head')
  AND EXISTS (SELECT 1 FROM sessions s WHERE s.user_id = u.id AND s.expires_at > now())
"""
MANAGERS = "SELECT id FROM users WHERE id = ANY($1::bigint[]) AND active AND role IN ('manager', 'head')"
LEAD_TO_PLACE = "SELECT source, line, phone_e164, name, email FROM leads WHERE id = $1 AND manager_id IS NULL"
ASSIGN_BY_RULE = """
UPDATE leads SET manager_id = $2, rule_id = $3, auto_assigned = true, updated_at = now()
WHERE id = $1 AND manager_id IS NULL RETURNING id
"""
INSERT_NOTIFICATION = "INSERT INTO notifications (user_id, kind, text, lead_id) VALUES ($1, 'lead_assigned', $2, $3)"
GET_LIMITS = "SELECT unassigned_minutes, untouched_minutes FROM lead_alert_limits"
SET_LIMITS = "UPDATE lead_alert_limits SET unassigned_minutes = $1, untouched_minutes = $2"

# Untouched: still new, and no call reached the person or went out to them, no mail went out, no task was set on
# it and nobody edited it by hand since it got its manager. {cutoff} is the placeholder of the time limit.
_UNTOUCHED = """
l.status = 'new' AND l.manager_id IS NOT NULL AND l.assigned_at < {cutoff} AND l.touched_at IS NULL
AND NOT EXISTS (SELECT 1 FROM calls c
                WHERE c.lead_id = l.id AND (c.direction = 'outbound' OR c.answered_at IS NOT NULL))
AND NOT EXISTS (SELECT 1 FROM mail_messages m WHERE m.lead_id = l.id AND m.direction = 'out')
AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.lead_id = l.id)
"""
_UNASSIGNED = "l.status IN ('new', 'in_work', 'qualified') AND l.manager_id IS NULL AND l.created_at < {cutoff}"
_WAITING_COLUMNS = """
l.id AS lead_id, l.name, l.phone_e164, l.email, l.manager_id, u.display_name AS manager_name,
CASE WHEN l.manager_id IS NULL THEN 'unassigned' ELSE 'untouched' END AS why,
coalesce(l.assigned_at, l.created_at) AS since
"""
# Claimed once: the UPDATE marks what it alerts about, so two nodes (or two runs) never alert twice.
FLAG_UNASSIGNED = f"""
WITH found AS (
    UPDATE leads l SET unassigned_alerted_at = $2
    WHERE {_UNASSIGNED.format(cutoff="$1")} AND l.unassigned_alerted_at IS NULL
    RETURNING l.*)
SELECT {_WAITING_COLUMNS} FROM found l LEFT JOIN users u ON u.id = l.manager_id ORDER BY l.created_at
"""
FLAG_UNTOUCHED = f"""
WITH found AS (
    UPDATE leads l SET untouched_alerted_at = $2
    WHERE {_UNTOUCHED.format(cutoff="$1")} AND l.untouched_alerted_at IS NULL
    RETURNING l.*)
SELECT {_WAITING_COLUMNS} FROM found l LEFT JOIN users u ON u.id = l.manager_id ORDER BY l.created_at
"""
LIST_WAITING = f"""
SELECT {_WAITING_COLUMNS} FROM leads l LEFT JOIN users u ON u.id = l.manager_id
WHERE ($3 AND {_UNASSIGNED.format(cutoff="$1")}) OR ($4 AND {_UNTOUCHED.format(cutoff="$2")})
ORDER BY coalesce(l.assigned_at, l.created_at) LIMIT $5
"""
ACTIVE_HEADS = "SELECT id FROM users WHERE role = 'head' AND active"
INSERT_HEAD_NOTIFICATION = """
INSERT INTO notifications (user_id, kind, text, lead_id) VALUES ($1, 'lead_waiting', $2, $3)
"""


def _rule(row: asyncpg.Record) -> LeadRule:
    data = dict(row)
    data["prefixes"] = list(data["prefixes"])
    data["manager_ids"] = list(data["manager_ids"])
    return LeadRule(**data)


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def same_line(rule_line: str, lead_line: str) -> bool:
    """A DID as the PBX passes it (74951234567) and as the head types it (+7 495 123-45-67) are one line;
    a mailbox or form key compares without case."""
    wanted, got = rule_line.strip().lower(), lead_line.strip().lower()
    if wanted == got:
        return True
    if "@" in wanted or ":" in wanted:
        return False
    a, b = _digits(wanted), _digits(got)
    if len(a) >= 10 and len(b) >= 10:
        return a[-10:] == b[-10:]
    return bool(a) and a == b and len(a) == len(wanted.replace(" ", "").replace("-", "").lstrip("+"))


def clean_prefixes(value: object) -> list[str]:
    """'+7495, +7499' or a list: E.164 prefixes (a '+' and 1 to 8 digits), in the order given, once each."""
    parts = re.split(r"[,;\n]+", value) if isinstance(value, str) else list(value or [])
    prefixes: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise ValidationError("prefixes", "prefixes are text like +7495")
        part = re.sub(r"[\s()\-]", "", part)
        if not part:
            continue
        if not re.fullmatch(r"\+?[1-9]\d{0,7}", part):
            raise ValidationError("prefixes", "a prefix is + and 1 to 8 digits, like +7495")
        part = "+" + part.lstrip("+")
        if part not in prefixes:
            prefixes.append(part)
    return prefixes


def _require_head(viewer: User) -> None:
    if viewer.role not in ("head", "admin"):
        raise Forbidden("only the head of sales or an admin sets lead distribution")


async def list_rules(conn: asyncpg.Connection) -> list[LeadRule]:
    return [_rule(r) for r in await conn.fetch(LIST_RULES)]


async def _rule_values(conn: asyncpg.Connection, data: dict) -> tuple:
    name = str(data.get("name") or "").strip()[:100]
    channel = data.get("channel") or None
    if channel is not None and channel not in CHANNELS:
        raise ValidationError("channel", f"one of {', '.join(CHANNELS)}, or empty for any")
    line = str(data.get("line") or "").strip()[:100]
    prefixes = clean_prefixes(data.get("prefixes"))
    action = data.get("action")
    if action not in ACTIONS:
        raise ValidationError("action", "assign or round_robin")
    raw_ids = data.get("manager_ids") or []
    if not isinstance(raw_ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in raw_ids):
        raise ValidationError("manager_ids", "a list of user ids")
    manager_ids = list(dict.fromkeys(raw_ids))
    if not manager_ids:
        raise ValidationError("manager_ids", "choose at least one manager")
    if action == "assign" and len(manager_ids) != 1:
        raise ValidationError("manager_ids", "assign gives the lead to one manager; choose round robin for more")
    known = {r["id"] for r in await conn.fetch(MANAGERS, manager_ids)}
    if known != set(manager_ids):
        raise ValidationError("manager_ids", "no active manager with this id")
    return name, channel, line, prefixes, action, manager_ids, bool(data.get("active", True))


async def create_rule(conn: asyncpg.Connection, viewer: User, data: dict) -> LeadRule:
    """A rule goes last; `data`: name, channel, line, prefixes, action, manager_ids, active."""
    _require_head(viewer)
    async with conn.transaction():
        await conn.execute(LOCK_RULES)  # positions are counted under the lock: two new rules never share one
        rule_id = await conn.fetchval(INSERT_RULE, *await _rule_values(conn, data))
        return _rule(await conn.fetchrow(GET_RULE, rule_id))


async def update_rule(conn: asyncpg.Connection, viewer: User, rule_id: int, data: dict) -> LeadRule:
    _require_head(viewer)
    if await conn.fetchval(UPDATE_RULE, rule_id, *await _rule_values(conn, data)) is None:
        raise NotFound("rule")
    return _rule(await conn.fetchrow(GET_RULE, rule_id))


async def delete_rule(conn: asyncpg.Connection, viewer: User, rule_id: int) -> None:
    _require_head(viewer)
    if await conn.fetchval(DELETE_RULE, rule_id) is None:
        raise NotFound("rule")


async def move_rule(conn: asyncpg.Connection, viewer: User, rule_id: int, up: bool) -> list[LeadRule]:
    """One place up or down the order (rules are tried first to last)."""
    _require_head(viewer)
    async with conn.transaction():
        order = [r["id"] for r in await conn.fetch(LOCK_RULES)]
        if rule_id not in order:
            raise NotFound("rule")
        at = order.index(rule_id)
        to = at - 1 if up else at + 1
        if 0 <= to < len(order):
            order[at], order[to] = order[to], order[at]
        await conn.executemany(SET_POSITION, [(rid, n) for n, rid in enumerate(order, 1)])
    return await list_rules(conn)


async def get_limits(conn: asyncpg.Connection) -> AlertLimits:
    return AlertLimits(**dict(await conn.fetchrow(GET_LIMITS)))


async def set_limits(conn: asyncpg.Connection, viewer: User, unassigned_minutes: object,
                     untouched_minutes: object) -> AlertLimits:
    _require_head(viewer)
    values = []
    for name, value in (("unassigned_minutes", unassigned_minutes), ("untouched_minutes", untouched_minutes)):
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10080:
            raise ValidationError(name, "minutes from 0 (never) to 10080 (a week)")
        values.append(value)
    await conn.execute(SET_LIMITS, *values)
    return await get_limits(conn)


def _next_in_turn(manager_ids: list[int], last: int | None, on_duty: set[int]) -> int | None:
    """The first manager on duty after the last one who got a lead (in the rule's order, round the circle)."""
    start = manager_ids.index(last) + 1 if last in manager_ids else 0
    for offset in range(len(manager_ids)):
        candidate = manager_ids[(start + offset) % len(manager_ids)]
        if candidate in on_duty:
            return candidate
    return None


async def distribute(conn: asyncpg.Connection, lead_id: int) -> int | None:
    """Give a new lead without a manager the manager of the first rule that matches it and has somebody on duty;
    tell that manager (stored notification). Runs inside the transaction that created the lead. The manager's id,
    or None when no rule placed it."""
    rules = [_rule(r) for r in await conn.fetch(ACTIVE_RULES)]
    if not rules:
        return None  # one quick query on the call path when the head has set no rules
    lead = await conn.fetchrow(LEAD_TO_PLACE, lead_id)
    if lead is None:
        return None
    for rule in rules:
        if not rule.matches(lead["source"], lead["line"], lead["phone_e164"]):
            continue
        on_duty = {r["id"] for r in await conn.fetch(ON_DUTY, rule.manager_ids)}
        if rule.action == "assign":
            manager_id = rule.manager_ids[0] if rule.manager_ids[0] in on_duty else None
        else:
            last = await conn.fetchval(CLAIM_POINTER, rule.id)
            manager_id = _next_in_turn(rule.manager_ids, last, on_duty)
            if manager_id is not None:
                await conn.execute(MOVE_POINTER, rule.id, manager_id)
        if manager_id is None:
            continue
        await conn.execute(ASSIGN_BY_RULE, lead_id, manager_id, rule.id)
        who = lead["name"] or (format_phone(lead["phone_e164"]) if lead["phone_e164"] else lead["email"]) or (
            f"#{lead_id}")
        await conn.execute(INSERT_NOTIFICATION, manager_id, f"Lead for you: {who}"[:300], lead_id)
        return manager_id
    return None


def _waiting(row: asyncpg.Record) -> WaitingLead:
    title = row["name"] or (format_phone(row["phone_e164"]) if row["phone_e164"] else row["email"]) or (
        f"#{row['lead_id']}")
    return WaitingLead(row["lead_id"], title, row["why"], row["manager_id"], row["manager_name"], row["since"])


def _cutoffs(limits: AlertLimits, now: datetime) -> tuple[datetime, datetime]:
    return now - timedelta(minutes=limits.unassigned_minutes), now - timedelta(minutes=limits.untouched_minutes)


async def list_waiting_leads(conn: asyncpg.Connection, now: datetime, limit: int = 20) -> list[WaitingLead]:
    """For the head's home page: open leads past the limits now, longest waiting first."""
    limits = await get_limits(conn)
    unassigned, untouched = _cutoffs(limits, now)
    return [_waiting(r) for r in await conn.fetch(LIST_WAITING, unassigned, untouched,
                                                  limits.unassigned_minutes > 0, limits.untouched_minutes > 0,
                                                  limit)]


async def flag_waiting_leads(conn: asyncpg.Connection, now: datetime) -> list[WaitingLead]:
    """The periodic job: leads newly past a limit, each alerted once (stored for the heads, returned to tell them
    live). A limit of 0 alerts never."""
    limits = await get_limits(conn)
    unassigned, untouched = _cutoffs(limits, now)
    found: list[WaitingLead] = []
    async with conn.transaction():
        if limits.unassigned_minutes > 0:
            found += [_waiting(r) for r in await conn.fetch(FLAG_UNASSIGNED, unassigned, now)]
        if limits.untouched_minutes > 0:
            found += [_waiting(r) for r in await conn.fetch(FLAG_UNTOUCHED, untouched, now)]
        heads = [r["id"] for r in await conn.fetch(ACTIVE_HEADS)]
        await conn.executemany(INSERT_HEAD_NOTIFICATION, [(h, alert_text(w, now), w.lead_id)
                                                          for w in found for h in heads])
    return found


def alert_text(lead: WaitingLead, now: datetime) -> str:
    """Stored in English like every notification; shown in the reader's words (web.i18n.SERVER_TEXTS)."""
    if lead.why == "unassigned":
        return f"Lead waiting for a manager for {lead.minutes(now)} min: {lead.title}"[:300]
    return f"Lead untouched for {lead.minutes(now)} min by {lead.manager_name}: {lead.title}"[:300]
