"""Reports for the head of sales: manager activity, funnel, sources, service level, ABC/XYZ; their drill-downs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from crm.errors import Forbidden, ValidationError
from crm.users import User

# A year or three is what people compare; a range of decades is a typo that would scan the whole log.
MAX_DAYS = 3 * 366
MAX_ROWS = 500  # a drill-down lists at most this many rows (newest first)
UNANSWERED = ("missed", "abandoned", "busy")  # the outcomes that put a caller on the missed-call board


@dataclass(frozen=True, slots=True)
class Period:
    """Local days `first`..`last` (both included) in the company's zone, as a half-open UTC range."""

    first: date
    last: date
    timezone: str
    start: datetime
    end: datetime

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


@dataclass(frozen=True, slots=True)
class Filters:
    manager_id: int | None = None
    line: str | None = None
    queue: str | None = None
    source: str | None = None


def make_period(first: date, last: date, timezone: str) -> Period:
    if last < first:
        raise ValidationError("to", "must not be before from")
    if (last - first).days + 1 > MAX_DAYS:
        raise ValidationError("to", f"a report covers at most {MAX_DAYS} days")
    zone = ZoneInfo(timezone)
    start = datetime.combine(first, time(0), zone).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), time(0), zone).astimezone(UTC)
    return Period(first, last, timezone, start, end)


def scoped(viewer: User, filters: Filters) -> Filters:
    """A manager's reports are their own figures: asking for someone else's is refused, not widened."""
    if viewer.sees_everything:
        return filters
    if filters.manager_id not in (None, viewer.id):
        raise Forbidden("a manager sees only their own figures")
    return Filters(viewer.id, filters.line, filters.queue, filters.source)


async def _extension(conn: asyncpg.Connection, manager_id: int | None) -> str | None:
    """The manager's extension for matching `agents_rang`; one that matches nothing when they have none."""
    if manager_id is None:
        return None
    return await conn.fetchval(USER_EXTENSION, manager_id) or "-"


def _ratio(part: int | float | Decimal | None, whole: int | float | Decimal | None) -> float | None:
    return None if not whole else round(float(part or 0) / float(whole), 4)


def _round(value: float | Decimal | None, digits: int = 1) -> float | None:
    return None if value is None else round(float(value), digits)


# ---------------------------------------------------------------------------------------------------- SQL

USER_EXTENSION = "SELECT extension FROM users WHERE id = $1"
# Active sellers (and anyone asked for by id): a manager with no calls still gets a row of zeros.
REPORT_USERS = """
SELECT id, display_name, extension FROM users
WHERE role IN ('manager', 'head') AND (active OR id = $1) AND ($1::bigint IS NULL OR id = $1)
ORDER BY display_name, id
"""
# Calls of the period, filtered by line (the DID an inbound call dialled) and queue. `$1`/`$2` the range.
_CALLS_IN = """
SELECT c.direction, c.outcome, c.user_id, c.agents_rang, c.answered_by, c.ring_seconds, c.talk_seconds
FROM calls c
WHERE c.started_at >= $1 AND c.started_at < $2
  AND ($3::text IS NULL OR (c.direction = 'inbound' AND c.callee = $3))
  AND ($4::text IS NULL OR c.queue = $4)
"""
# Offered to an extension: it rang, or it answered (a direct call); each call once per extension however many
# times it rang there, and once in all (a transferred call is one call, answered by its first agent).
MANAGER_OFFERED = f"""
WITH ci AS ({_CALLS_IN})
SELECT x.ext, count(*) AS offered,
       count(*) FILTER (WHERE ci.outcome = ANY($5::text[])) AS unanswered
FROM ci, LATERAL (SELECT DISTINCT e FROM unnest(ci.agents_rang || ci.answered_by) AS e WHERE e IS NOT NULL) x(ext)
WHERE ci.direction = 'inbound'
GROUP BY x.ext
"""
# A call's own figures go to the user it belongs to (who answered it inbound, who placed it outbound).
MANAGER_OWN = f"""
WITH ci AS ({_CALLS_IN})
SELECT user_id,
       count(*) FILTER (WHERE direction = 'inbound' AND outcome = 'answered') AS inbound_answered,
       count(*) FILTER (WHERE direction = 'outbound') AS outbound,
       count(*) FILTER (WHERE direction = 'outbound' AND outcome = 'answered') AS outbound_reached,
       coalesce(sum(talk_seconds) FILTER (WHERE direction <> 'internal' AND outcome = 'answered'), 0) AS talk_seconds,
       coalesce(sum(ring_seconds) FILTER (WHERE direction = 'inbound' AND outcome = 'answered'), 0) AS answer_wait
FROM ci WHERE user_id IS NOT NULL GROUP BY user_id
"""
# The same two figures from the per-day summary (migration 0026) for the whole UTC days `$1`..`$2` (excluded).
_DAYS_IN = """
FROM call_day_stats s
WHERE s.day >= $1 AND s.day < $2 AND ($3::text IS NULL OR (s.direction = 'inbound' AND s.line = $3))
  AND ($4::text IS NULL OR s.queue = $4)
"""
MANAGER_OFFERED_DAYS = f"""
SELECT s.ext, sum(s.calls)::bigint AS offered,
       coalesce(sum(s.calls) FILTER (WHERE s.outcome = ANY($5::text[])), 0)::bigint AS unanswered
{_DAYS_IN} AND s.ext <> ''
GROUP BY s.ext
"""
MANAGER_OWN_DAYS = f"""
SELECT s.user_id,
       coalesce(sum(s.calls) FILTER (WHERE s.direction = 'inbound' AND s.outcome = 'answered'), 0)::bigint
         AS inbound_answered,
       coalesce(sum(s.calls) FILTER (WHERE s.direction = 'outbound'), 0)::bigint AS outbound,
       coalesce(sum(s.calls) FILTER (WHERE s.direction = 'outbound' AND s.outcome = 'answered'), 0)::bigint
         AS outbound_reached,
       coalesce(sum(s.talk_sum) FILTER (WHERE s.direction <> 'internal' AND s.outcome = 'answered'), 0)::bigint
         AS talk_seconds,
       coalesce(sum(s.ring_sum) FILTER (WHERE s.direction = 'inbound' AND s.outcome = 'answered'), 0)::bigint
         AS answer_wait
{_DAYS_IN} AND s.ext = '' AND s.user_id <> 0
GROUP BY s.user_id
"""
# Missed callers first missed in the period, by the manager the row is assigned to.
MANAGER_CALLBACKS = """
SELECT m.manager_id AS user_id, count(*) AS missed_callers,
       count(*) FILTER (WHERE m.resolution LIKE 'reached_%') AS called_back,
       count(*) FILTER (WHERE m.resolution LIKE 'reached_%' AND m.resolved_at <= m.due_at) AS called_back_in_time
FROM missed_callers m
WHERE m.first_missed_at >= $1 AND m.first_missed_at < $2 AND ($3::text IS NULL OR m.line = $3)
  AND m.manager_id IS NOT NULL
GROUP BY m.manager_id
"""
MANAGER_LEADS = """
SELECT l.manager_id AS user_id, count(*) AS leads, count(*) FILTER (WHERE l.status = 'converted') AS converted
FROM leads l
WHERE l.created_at >= $1 AND l.created_at < $2 AND ($3::text IS NULL OR l.line = $3)
  AND ($4::text IS NULL OR l.source = $4) AND l.manager_id IS NOT NULL
GROUP BY l.manager_id
"""
# What a deal is worth: the amount typed on it, else the sum of its items.
AMOUNT = "coalesce(d.manual_amount, (SELECT sum(i.quantity * i.price) FROM deal_items i WHERE i.deal_id = d.id), 0)"
# A deal's source: the channel of the lead it came from, else what the manager wrote on it, else 'manual'.
DEAL_SOURCE = "coalesce(l.source, nullif(d.source, ''), 'manual')"
_DEALS_FROM = "FROM deals d LEFT JOIN leads l ON l.id = d.lead_id "
# Revenue is counted by deals won (their amount, when won), by invoices (their total, on the day issued; a
# cancelled one counts nothing) or by payments (what was allocated to the deal's invoices, on the day received):
# the setting `revenue_basis`. As rows (deal_id, amount, at); `{zone}` is the parameter holding the company's zone.
REVENUE_BASES = ("won", "invoices", "payments")
_REVENUE_ROWS = {
    "won": f"SELECT d.id AS deal_id, {AMOUNT} AS amount, d.closed_at AS at FROM deals d WHERE d.status = 'won'"
           " AND ({zone})::text IS NOT NULL",  # the zone is a parameter of every basis' query
    "invoices": "SELECT i.deal_id, i.total AS amount, i.issued_on::timestamp AT TIME ZONE {zone} AS at "
                "FROM invoices i WHERE i.state <> 'cancelled'",
    "payments": "SELECT i.deal_id, a.amount, p.received_on::timestamp AT TIME ZONE {zone} AS at "
                "FROM payment_allocations a JOIN payments p ON p.id = a.payment_id "
                "JOIN invoices i ON i.id = a.invoice_id",
}
# A deal's revenue whenever it came (the sources report counts deals made in the period and what they brought).
DEAL_REVENUE = {
    "won": f"CASE WHEN d.status = 'won' THEN {AMOUNT} END",
    "invoices": "(SELECT sum(i.total) FROM invoices i WHERE i.deal_id = d.id AND i.state <> 'cancelled')",
    "payments": "(SELECT sum(a.amount) FROM payment_allocations a JOIN invoices i ON i.id = a.invoice_id "
                "WHERE i.deal_id = d.id)",
}


def _per_basis(template: str, zone: str) -> dict[str, str]:
    """The query once per revenue basis: `{revenue}` the rows in a FROM, `{deal_revenue}` a deal's own."""
    return {basis: template.replace("{revenue}", _REVENUE_ROWS[basis].replace("{zone}", zone))
            .replace("{deal_revenue}", DEAL_REVENUE[basis]) for basis in REVENUE_BASES}


def _basis(basis: str) -> str:
    if basis not in REVENUE_BASES:
        raise ValidationError("revenue_basis", f"one of {', '.join(REVENUE_BASES)}")
    return basis


MANAGER_DEALS = f"""
SELECT d.manager_id AS user_id,
       count(*) FILTER (WHERE d.created_at >= $1 AND d.created_at < $2) AS deals_created,
       count(*) FILTER (WHERE d.status = 'won' AND d.closed_at >= $1 AND d.closed_at < $2) AS deals_won,
       count(*) FILTER (WHERE d.status = 'lost' AND d.closed_at >= $1 AND d.closed_at < $2) AS deals_lost
{_DEALS_FROM}
WHERE ((d.created_at >= $1 AND d.created_at < $2) OR (d.closed_at >= $1 AND d.closed_at < $2))
  AND ($3::text IS NULL OR {DEAL_SOURCE} = $3) AND d.manager_id IS NOT NULL
GROUP BY d.manager_id
"""
# Revenue of the period per manager, by the basis chosen ($4 the zone).
MANAGER_REVENUE = _per_basis(f"""
SELECT d.manager_id AS user_id, coalesce(sum(r.amount), 0) AS revenue_won
FROM ({{revenue}}) r JOIN deals d ON d.id = r.deal_id LEFT JOIN leads l ON l.id = d.lead_id
WHERE r.at >= $1 AND r.at < $2 AND ($3::text IS NULL OR {DEAL_SOURCE} = $3) AND d.manager_id IS NOT NULL
GROUP BY d.manager_id
""", "$4")
# Due in the period and late: still open past the due time, or closed after it.
MANAGER_TASKS = """
SELECT t.assignee_id AS user_id, count(*) AS tasks_overdue FROM tasks t
WHERE t.due_at >= $1 AND t.due_at < $2 AND t.due_at < $3 AND t.state <> 'cancelled'
  AND (t.state = 'open' OR t.closed_at > t.due_at) AND t.assignee_id IS NOT NULL
GROUP BY t.assignee_id
"""

FUNNEL_STAGES = "SELECT code, name, position, normal_days FROM deal_stages ORDER BY position"
_DEAL_FILTER = f"($3::bigint IS NULL OR d.manager_id = $3) AND ($4::text IS NULL OR {DEAL_SOURCE} = $4)"
# Entered a stage in the period; went on: later reached a further stage, or was won from it. "Later" is one
# window pass over the history from the period's start (the furthest stage entered at or after each entry), not a
# subquery per entry; rows stay narrow and are grouped by the stage's position so that sorts fit in memory.
FUNNEL_ENTERED = f"""
WITH h AS (
    SELECT h.deal_id, s.position, h.entered_at,
           extract(epoch FROM coalesce(h.left_at, $5) - h.entered_at) / 86400 AS days,
           max(s.position) OVER (PARTITION BY h.deal_id ORDER BY h.entered_at DESC) > s.position
             AS went_on
    FROM deal_stage_history h JOIN deal_stages s ON s.code = h.stage
    WHERE h.entered_at >= $1
), per AS (
    SELECT h.position, count(DISTINCT h.deal_id) AS entered,
           count(DISTINCT h.deal_id) FILTER (WHERE h.went_on OR d.status = 'won') AS advanced,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY h.days) AS median_days
    FROM h JOIN deals d ON d.id = h.deal_id LEFT JOIN leads l ON l.id = d.lead_id
    WHERE h.entered_at < $2 AND {_DEAL_FILTER}
    GROUP BY h.position
)
SELECT s.code AS stage, per.entered, per.advanced, per.median_days FROM per JOIN deal_stages s USING (position)
"""
# Stuck now (whatever the period): in progress and longer at its stage than the stage's normal days.
FUNNEL_STUCK = f"""
SELECT d.stage, count(*) AS stuck {_DEALS_FROM} JOIN deal_stages s ON s.code = d.stage
WHERE d.status = 'in_progress' AND d.stage_changed_at < $1::timestamptz - make_interval(days => s.normal_days)
  AND ($2::bigint IS NULL OR d.manager_id = $2) AND ($3::text IS NULL OR {DEAL_SOURCE} = $3)
GROUP BY d.stage
"""
FUNNEL_CLOSED = f"""
SELECT d.status, coalesce(d.loss_reason, '') AS loss_reason, count(*) AS deals, coalesce(sum({AMOUNT}), 0) AS amount
{_DEALS_FROM}
WHERE d.closed_at >= $1 AND d.closed_at < $2 AND {_DEAL_FILTER}
GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2
"""
FUNNEL_REVENUE = _per_basis(f"""
SELECT coalesce(sum(r.amount), 0) FROM ({{revenue}}) r JOIN deals d ON d.id = r.deal_id
LEFT JOIN leads l ON l.id = d.lead_id
WHERE r.at >= $1 AND r.at < $2 AND {_DEAL_FILTER}
""", "$5")

# Leads by channel, and the line (DID) phone leads came in on; deals from them and their revenue. The deals are
# summed per lead first, so each lead is one row and nothing counts DISTINCT (a sort of every lead × deal row by
# four text keys). A plain join of leads to deals: a prepared statement's generic plan, which cannot know how many
# leads the period holds, still probes deals by lead rather than re-reading a pre-aggregated set for each lead.
SOURCES_LEADS = _per_basis("""
WITH per_lead AS (
    SELECT l.id, l.source, l.line, l.status, count(d.id) AS deals, count(d.id) FILTER (WHERE d.status = 'won') AS won,
           sum({deal_revenue}) AS revenue
    FROM leads l LEFT JOIN deals d ON d.lead_id = l.id
    WHERE l.created_at >= $1 AND l.created_at < $2 AND ($3::bigint IS NULL OR l.manager_id = $3)
      AND ($4::text IS NULL OR l.source = $4) AND ($5::text IS NULL OR l.line = $5)
    GROUP BY l.id
)
SELECT l.source, CASE WHEN l.source = 'phone' THEN l.line ELSE '' END AS line,
       coalesce(mm.extracted ->> 'utm_source', '') AS utm_source,
       coalesce(mm.extracted ->> 'utm_campaign', '') AS utm_campaign,
       count(*) AS leads, count(*) FILTER (WHERE l.status = 'converted') AS converted,
       coalesce(sum(l.deals), 0)::bigint AS deals, coalesce(sum(l.won), 0)::bigint AS won,
       coalesce(sum(l.revenue), 0) AS revenue
FROM per_lead l
LEFT JOIN LATERAL (SELECT m.extracted FROM mail_messages m WHERE m.lead_id = l.id
                   ORDER BY m.received_at LIMIT 1) mm ON true
GROUP BY 1, 2, 3, 4 ORDER BY leads DESC, 1, 2, 3, 4
""", "")
# Deals created in the period by source (a deal made without a lead has its own source or 'manual').
SOURCES_DEALS = _per_basis(f"""
SELECT {DEAL_SOURCE} AS source, count(*) AS deals, count(*) FILTER (WHERE d.status = 'won') AS won,
       count(*) FILTER (WHERE d.status = 'lost') AS lost, coalesce(sum({{deal_revenue}}), 0) AS revenue
{_DEALS_FROM}
WHERE d.created_at >= $1 AND d.created_at < $2 AND {_DEAL_FILTER}
GROUP BY 1 ORDER BY revenue DESC, deals DESC, 1
""", "")
# Calls → deals: each deal won in the period with the calls and e-mails of its client before the win. The 200
# deals are picked first; only theirs are counted (not those of every deal won in the period).
WON_TOUCHES = f"""
SELECT d.id, d.title, d.amount, d.closed_at, d.source, d.manager,
       (SELECT count(*) FROM calls c WHERE c.started_at <= d.closed_at AND (c.deal_id = d.id
            OR (d.contact_id IS NOT NULL AND c.contact_id = d.contact_id AND c.started_at >= d.created_at)
            OR (d.lead_id IS NOT NULL AND c.lead_id = d.lead_id))) AS calls,
       (SELECT count(*) FROM mail_messages m WHERE m.received_at <= d.closed_at AND (m.deal_id = d.id
            OR (d.contact_id IS NOT NULL AND m.contact_id = d.contact_id AND m.received_at >= d.created_at)
            OR (d.lead_id IS NOT NULL AND m.lead_id = d.lead_id))) AS emails
FROM (SELECT d.id, d.title, {AMOUNT} AS amount, d.closed_at, {DEAL_SOURCE} AS source, u.display_name AS manager,
             d.created_at, d.contact_id, d.lead_id
      {_DEALS_FROM} LEFT JOIN users u ON u.id = d.manager_id
      WHERE d.status = 'won' AND d.closed_at >= $1 AND d.closed_at < $2 AND {_DEAL_FILTER}
      ORDER BY amount DESC, d.id LIMIT 200) d
ORDER BY d.amount DESC, d.id
"""

# Inbound calls of the period (by their start, in the company's zone: a call over midnight is its first day's).
_SERVICE_WHERE = """
WHERE c.direction = 'inbound' AND c.started_at >= $1 AND c.started_at < $2
  AND ($3::text IS NULL OR c.callee = $3) AND ($4::text IS NULL OR c.queue = $4)
  AND ($5::text IS NULL OR c.answered_by = $5 OR $5 = ANY(c.agents_rang))
"""
# Service level: answered within N seconds of all calls whose outcome is known (an `unknown` call, ended while
# the PBX link was down, is neither in nor out of it).
_SERVICE_FIGURES = """
count(*) AS offered, count(*) FILTER (WHERE c.outcome = 'answered') AS answered,
count(*) FILTER (WHERE c.outcome = 'abandoned') AS abandoned,
count(*) FILTER (WHERE c.outcome IN ('missed', 'busy')) AS missed,
count(*) FILTER (WHERE c.outcome = 'failed') AS failed, count(*) FILTER (WHERE c.outcome = 'unknown') AS unknown,
count(*) FILTER (WHERE c.outcome = 'answered' AND c.ring_seconds <= $6) AS answered_in_time,
avg(c.ring_seconds) AS avg_wait, max(c.ring_seconds) AS max_wait
"""
# One pass over the period's calls for the three breakdowns: per line and queue, per local day, per weekday × hour.
SERVICE_ALL = f"""
SELECT line, queue, day, weekday, hour, GROUPING(line, queue, day, weekday, hour) AS grouping, {_SERVICE_FIGURES}
FROM (SELECT c.callee AS line, coalesce(c.queue, '') AS queue, (c.started_at AT TIME ZONE $7)::date AS day,
             extract(isodow FROM c.started_at AT TIME ZONE $7)::int AS weekday,
             extract(hour FROM c.started_at AT TIME ZONE $7)::int AS hour, c.outcome, c.ring_seconds
      FROM calls c {_SERVICE_WHERE}) c
GROUP BY GROUPING SETS ((line, queue), (day), (weekday, hour))
"""
# The same from the per-hour summary (migration 0026): rows of the call itself, or of the calls offered to an
# extension ($5). `within[N + 1]` counts the answered calls that waited at most N seconds.
WITHIN_MAX = 120
SERVICE_HOURS = """
SELECT line, queue, day, weekday, hour, GROUPING(line, queue, day, weekday, hour) AS grouping,
       sum(calls)::bigint AS offered, coalesce(sum(calls) FILTER (WHERE outcome = 'answered'), 0)::bigint AS answered,
       coalesce(sum(calls) FILTER (WHERE outcome = 'abandoned'), 0)::bigint AS abandoned,
       coalesce(sum(calls) FILTER (WHERE outcome IN ('missed', 'busy')), 0)::bigint AS missed,
       coalesce(sum(calls) FILTER (WHERE outcome = 'failed'), 0)::bigint AS failed,
       coalesce(sum(calls) FILTER (WHERE outcome = 'unknown'), 0)::bigint AS unknown,
       coalesce(sum(within[$6 + 1]) FILTER (WHERE outcome = 'answered'), 0)::bigint AS answered_in_time,
       sum(ring_sum) / sum(calls)::numeric AS avg_wait, max(ring_max) AS max_wait
FROM (SELECT s.line, s.queue, (s.hour AT TIME ZONE $7)::date AS day,
             extract(isodow FROM s.hour AT TIME ZONE $7)::int AS weekday,
             extract(hour FROM s.hour AT TIME ZONE $7)::int AS hour, s.outcome, s.calls, s.ring_sum, s.ring_max,
             s.within
      FROM call_hour_stats s
      WHERE s.hour >= $1 AND s.hour < $2 AND ($3::text IS NULL OR s.line = $3) AND ($4::text IS NULL OR s.queue = $4)
        AND s.ext = coalesce($5::text, '')) c
GROUP BY GROUPING SETS ((line, queue), (day), (weekday, hour))
"""
# GROUPING() bits (line, queue, day, weekday, hour), 1 = summed over: which breakdown a row belongs to.
BY_LINE, BY_DAY, BY_HOUR = 0b00111, 0b11011, 0b11100
_BREAKDOWN_KEYS = {BY_LINE: ("line", "queue"), BY_DAY: ("day",), BY_HOUR: ("weekday", "hour")}

# ABC: clients (a company, else a contact) by the revenue of deals won in the period; A while the revenue of
# those before them is under 80 % of the total, B under 95 %, C the rest.
_CLIENT = """CASE WHEN d.company_id IS NOT NULL THEN 'company' ELSE 'contact' END AS kind,
       coalesce(d.company_id, d.contact_id) AS client_id"""
SEGMENTS_ABC = _per_basis(f"""
WITH won AS (
    SELECT {_CLIENT}, r.amount FROM ({{revenue}}) r JOIN deals d ON d.id = r.deal_id
    LEFT JOIN leads l ON l.id = d.lead_id
    WHERE r.at >= $1 AND r.at < $2 AND coalesce(d.company_id, d.contact_id) IS NOT NULL AND {_DEAL_FILTER}
), per AS (
    SELECT kind, client_id, sum(amount) AS revenue, count(*) AS deals FROM won GROUP BY 1, 2
), ranked AS (
    SELECT *, sum(revenue) OVER (ORDER BY revenue DESC, kind, client_id) - revenue AS before,
           sum(revenue) OVER () AS total
    FROM per
)
SELECT kind, client_id, revenue, deals, CASE WHEN total > 0 THEN revenue / total END AS share,
       CASE WHEN total = 0 OR before < 0.80 * total THEN 'A' WHEN before < 0.95 * total THEN 'B' ELSE 'C' END AS abc
FROM ranked ORDER BY revenue DESC, kind, client_id
""", "$5")
# XYZ: month-to-month variation of each client's purchases over the 12 months up to the period's end (months
# without a purchase count as zero): X at most 10 %, Y at most 25 %, Z above. Summed per client and month first,
# then each client's few months padded with zeros to twelve: no client × month grid joined back to the purchases.
XYZ_MONTHS = 12
SEGMENTS_XYZ = _per_basis(f"""
WITH won AS (
    SELECT {_CLIENT}, date_trunc('month', r.at AT TIME ZONE $2) AS month, r.amount
    FROM ({{revenue}}) r JOIN deals d ON d.id = r.deal_id LEFT JOIN leads l ON l.id = d.lead_id
    WHERE coalesce(d.company_id, d.contact_id) IS NOT NULL
      AND r.at >= (date_trunc('month', $1::timestamp) - interval '{XYZ_MONTHS - 1} months') AT TIME ZONE $2
      AND r.at < (date_trunc('month', $1::timestamp) + interval '1 month') AT TIME ZONE $2
      AND ($3::bigint IS NULL OR d.manager_id = $3) AND ($4::text IS NULL OR {DEAL_SOURCE} = $4)
), per_month AS (
    SELECT kind, client_id, month, coalesce(sum(amount), 0) AS amount FROM won GROUP BY 1, 2, 3
), per_client AS (
    SELECT kind, client_id, array_agg(amount) AS amounts FROM per_month GROUP BY 1, 2
)
SELECT c.kind, c.client_id, v.months_bought, v.variation
FROM per_client c, LATERAL (
    SELECT count(*) FILTER (WHERE a > 0) AS months_bought, stddev_pop(a) / nullif(avg(a), 0) AS variation
    FROM unnest(c.amounts || array_fill(0::numeric, ARRAY[{XYZ_MONTHS} - cardinality(c.amounts)])) a) v
""", "$2")
# Stopped buying: at least three purchases, and none for twice their usual interval by the period's end.
SEGMENTS_STOPPED = f"""
WITH won AS (
    SELECT {_CLIENT}, d.closed_at {_DEALS_FROM}
    WHERE d.status = 'won' AND d.closed_at < $1 AND coalesce(d.company_id, d.contact_id) IS NOT NULL
      AND ($2::bigint IS NULL OR d.manager_id = $2) AND ($3::text IS NULL OR {DEAL_SOURCE} = $3)
), gaps AS (
    SELECT kind, client_id, closed_at,
           closed_at - lag(closed_at) OVER (PARTITION BY kind, client_id ORDER BY closed_at) AS gap
    FROM won
)
SELECT kind, client_id, count(*) AS purchases, max(closed_at) AS last_purchase,
       extract(epoch FROM avg(gap)) / 86400 AS usual_days
FROM gaps GROUP BY 1, 2
HAVING count(*) >= 3 AND $1::timestamptz - max(closed_at) > 2 * avg(gap)
ORDER BY max(closed_at), 1, 2
LIMIT 500
"""
CLIENT_NAMES = """
SELECT 'company' AS kind, c.id, c.name, c.manager_id, u.display_name AS manager
FROM companies c LEFT JOIN users u ON u.id = c.manager_id WHERE c.id = ANY($1::bigint[])
UNION ALL
SELECT 'contact', c.id, c.name, c.manager_id, u.display_name
FROM contacts c LEFT JOIN users u ON u.id = c.manager_id WHERE c.id = ANY($2::bigint[])
"""
# One open reactivation task per client and manager: a second click finds it and adds nothing.
REACTIVATION_LOCK = "SELECT pg_advisory_xact_lock(hashtext('callboard:reactivation'))"
OPEN_TASK_EXISTS = """
SELECT 1 FROM tasks WHERE kind = 'follow_up' AND state = 'open' AND title = $1
  AND assignee_id IS NOT DISTINCT FROM $2
"""
INSERT_FOLLOW_UP = "INSERT INTO tasks (kind, title, assignee_id, due_at) VALUES ('follow_up', $1, $2, $3) RETURNING id"


# ---------------------------------------------------------------------------------------------------- reports


def utc_days(period: Period) -> tuple[tuple[date, date] | None, list[tuple[datetime, datetime]]]:
    """The whole UTC days inside the period (first, and the day after the last), which the summaries answer,
    and the parts of UTC days at its edges (a local day starts at a UTC hour), which the calls answer."""
    start, end = period.start.astimezone(UTC), period.end.astimezone(UTC)
    first = start.date() if start.timetz() == time(0, tzinfo=UTC) else start.date() + timedelta(days=1)
    after = end.date()
    if first >= after:
        return None, [(start, end)]
    first_at, after_at = datetime.combine(first, time(0), UTC), datetime.combine(after, time(0), UTC)
    edges = [(a, b) for a, b in ((start, first_at), (after_at, end)) if a < b]
    return (first, after), edges


def _add_up(into: dict[Any, dict[str, Any]], key: str, rows: list[asyncpg.Record]) -> None:
    for row in rows:
        figures = into.setdefault(row[key], {})
        for name, value in row.items():
            if name != key:
                figures[name] = figures.get(name, 0) + (value or 0)


async def _manager_call_figures(conn: asyncpg.Connection, period: Period, filters: Filters
                                ) -> tuple[dict[str, dict[str, Any]], dict[int, dict[str, Any]]]:
    """Calls offered to each extension, and each user's own call figures: whole days from the summary."""
    offered: dict[str, dict[str, Any]] = {}
    own: dict[int, dict[str, Any]] = {}
    days, edges = utc_days(period)
    if days:
        _add_up(offered, "ext", await conn.fetch(MANAGER_OFFERED_DAYS, *days, filters.line, filters.queue,
                                                 list(UNANSWERED)))
        _add_up(own, "user_id", await conn.fetch(MANAGER_OWN_DAYS, *days, filters.line, filters.queue))
    for start, end in edges:
        _add_up(offered, "ext", await conn.fetch(MANAGER_OFFERED, start, end, filters.line, filters.queue,
                                                 list(UNANSWERED)))
        _add_up(own, "user_id", await conn.fetch(MANAGER_OWN, start, end, filters.line, filters.queue))
    return offered, own


async def managers_report(conn: asyncpg.Connection, period: Period, filters: Filters, now: datetime,
                          basis: str = "won") -> list[dict[str, Any]]:
    """One row per seller: calls (call level), callbacks, leads, deals, overdue tasks."""
    people = await conn.fetch(REPORT_USERS, filters.manager_id)
    offered, own_calls = await _manager_call_figures(conn, period, filters)
    parts = [
        [{"user_id": user_id} | figures for user_id, figures in own_calls.items()],
        await conn.fetch(MANAGER_CALLBACKS, period.start, period.end, filters.line),
        await conn.fetch(MANAGER_LEADS, period.start, period.end, filters.line, filters.source),
        await conn.fetch(MANAGER_DEALS, period.start, period.end, filters.source),
        await conn.fetch(MANAGER_REVENUE[_basis(basis)], period.start, period.end, filters.source, period.timezone),
        await conn.fetch(MANAGER_TASKS, period.start, period.end, now),
    ]
    by_user: dict[int, dict[str, Any]] = {}
    for rows in parts:
        for row in rows:
            by_user.setdefault(row["user_id"], {}).update({k: v for k, v in row.items() if k != "user_id"})
    out = []
    for person in people:
        own = by_user.get(person["id"], {})
        rang = offered.get(person["extension"]) if person["extension"] else None
        answered = own.get("inbound_answered", 0) + own.get("outbound_reached", 0)
        talk = own.get("talk_seconds", 0)
        out.append({
            "manager_id": person["id"], "manager": person["display_name"], "extension": person["extension"],
            "inbound_offered": rang["offered"] if rang else 0,
            "inbound_answered": own.get("inbound_answered", 0),
            "inbound_missed": rang["unanswered"] if rang else 0,
            "outbound": own.get("outbound", 0), "outbound_reached": own.get("outbound_reached", 0),
            "talk_seconds": talk, "avg_talk_seconds": _round(talk / answered if answered else None),
            "avg_answer_seconds": _round(own["answer_wait"] / own["inbound_answered"]
                                         if own.get("inbound_answered") else None),
            "missed_callers": own.get("missed_callers", 0), "called_back": own.get("called_back", 0),
            "called_back_in_time": own.get("called_back_in_time", 0),
            "leads": own.get("leads", 0), "leads_converted": own.get("converted", 0),
            "deals_created": own.get("deals_created", 0), "deals_won": own.get("deals_won", 0),
            "deals_lost": own.get("deals_lost", 0), "revenue_won": own.get("revenue_won", Decimal(0)),
            "tasks_overdue": own.get("tasks_overdue", 0),
        })
    return out


async def funnel_report(conn: asyncpg.Connection, period: Period, filters: Filters, now: datetime,
                        basis: str = "won") -> dict[str, Any]:
    args = (period.start, period.end, filters.manager_id, filters.source)
    entered = {r["stage"]: r for r in await conn.fetch(FUNNEL_ENTERED, *args, now)}
    stuck = {r["stage"]: r["stuck"] for r in await conn.fetch(FUNNEL_STUCK, now, filters.manager_id,
                                                                   filters.source)}
    stages = []
    for stage in await conn.fetch(FUNNEL_STAGES):
        row = entered.get(stage["code"])
        count = row["entered"] if row else 0
        stages.append({"stage": stage["code"], "name": stage["name"], "entered": count,
                       "advanced": row["advanced"] if row else 0,
                       "conversion": _ratio(row["advanced"], count) if row else None,
                       "median_days": _round(row["median_days"]) if row else None,
                       "stuck": stuck.get(stage["code"], 0)})
    closed = await conn.fetch(FUNNEL_CLOSED, *args)
    won = sum(r["deals"] for r in closed if r["status"] == "won")
    lost = sum(r["deals"] for r in closed if r["status"] == "lost")
    return {"stages": stages, "won": won, "lost": lost, "win_rate": _ratio(won, won + lost),
            "revenue_won": await conn.fetchval(FUNNEL_REVENUE[_basis(basis)], *args, period.timezone),
            "loss_reasons": [{"reason": r["loss_reason"], "deals": r["deals"], "amount": r["amount"]}
                             for r in closed if r["status"] == "lost"]}


async def sources_report(conn: asyncpg.Connection, period: Period, filters: Filters, basis: str = "won"
                         ) -> dict[str, Any]:
    leads = [dict(r) | {"conversion": _ratio(r["converted"], r["leads"])}
             for r in await conn.fetch(SOURCES_LEADS[_basis(basis)], period.start, period.end, filters.manager_id,
                                       filters.source, filters.line)]
    deal_args = (period.start, period.end, filters.manager_id, filters.source)
    deals = [dict(r) | {"win_rate": _ratio(r["won"], r["won"] + r["lost"])}
             for r in await conn.fetch(SOURCES_DEALS[basis], *deal_args)]
    touches = [dict(r) for r in await conn.fetch(WON_TOUCHES, *deal_args)]
    return {"leads": leads, "deals": deals, "won_deals": touches}


def _service_row(row: asyncpg.Record) -> dict[str, Any]:
    data = dict(row)
    known = data["offered"] - data["unknown"]
    data["service_level"] = _ratio(data["answered_in_time"], known)
    data["avg_wait"] = _round(data["avg_wait"])
    return data


async def service_report(conn: asyncpg.Connection, period: Period, filters: Filters, threshold: int
                         ) -> dict[str, Any]:
    args = (period.start, period.end, filters.line, filters.queue, await _extension(conn, filters.manager_id),
            threshold)
    # The hourly summary serves thresholds it counts, in zones whose local hours are whole UTC hours.
    zone = ZoneInfo(period.timezone)
    summary = threshold <= WITHIN_MAX and all(
        (moment.astimezone(zone).utcoffset() or timedelta(0)) % timedelta(hours=1) == timedelta(0)
        for moment in (period.start, period.end))
    parts: dict[int, list[dict[str, Any]]] = {BY_LINE: [], BY_DAY: [], BY_HOUR: []}
    for row in await conn.fetch(SERVICE_HOURS if summary else SERVICE_ALL, *args, period.timezone):
        data = _service_row(row)
        drop = {"line", "queue", "day", "weekday", "hour", "grouping"} - set(_BREAKDOWN_KEYS[row["grouping"]])
        parts[row["grouping"]].append({k: v for k, v in data.items() if k not in drop})
    lines = sorted(parts[BY_LINE], key=lambda r: (-r["offered"], r["line"], r["queue"]))
    days = sorted(parts[BY_DAY], key=lambda r: r["day"])
    hours = sorted(parts[BY_HOUR], key=lambda r: (r["weekday"], r["hour"]))
    total = {key: sum(r[key] for r in lines) for key in
             ("offered", "answered", "abandoned", "missed", "failed", "unknown", "answered_in_time")}
    total["service_level"] = _ratio(total["answered_in_time"], total["offered"] - total["unknown"])
    total["max_wait"] = max((r["max_wait"] for r in lines), default=None)
    waited = sum(r["avg_wait"] * r["offered"] for r in lines if r["avg_wait"] is not None)
    total["avg_wait"] = _round(waited / total["offered"]) if total["offered"] else None
    return {"threshold_seconds": threshold, "total": total, "lines": lines, "days": days, "hours": hours}


async def _client_names(conn: asyncpg.Connection, keys: set[tuple[str, int]]) -> dict[tuple[str, int], dict]:
    rows = await conn.fetch(CLIENT_NAMES, [i for k, i in keys if k == "company"],
                            [i for k, i in keys if k == "contact"])
    return {(r["kind"], r["id"]): dict(r) for r in rows}


def xyz_class(variation: float | None) -> str:
    if variation is None:
        return "Z"
    return "X" if variation <= 0.10 else "Y" if variation <= 0.25 else "Z"


async def segments_report(conn: asyncpg.Connection, period: Period, filters: Filters, basis: str = "won"
                          ) -> dict[str, Any]:
    """ABC and XYZ by the revenue basis; "stopped buying" by the deals won (a purchase is a won deal)."""
    args = (period.start, period.end, filters.manager_id, filters.source)
    abc = await conn.fetch(SEGMENTS_ABC[_basis(basis)], *args, period.timezone)
    local_last = datetime.combine(period.last, time(0))
    xyz = {(r["kind"], r["client_id"]): r for r in await conn.fetch(
        SEGMENTS_XYZ[basis], local_last, period.timezone, filters.manager_id, filters.source)}
    stopped = await conn.fetch(SEGMENTS_STOPPED, period.end, filters.manager_id, filters.source)
    keys = {(r["kind"], r["client_id"]) for r in abc} | set(xyz) | {(r["kind"], r["client_id"]) for r in stopped}
    names = await _client_names(conn, keys)

    def client(kind: str, client_id: int) -> dict[str, Any]:
        info = names.get((kind, client_id), {})
        return {"kind": kind, "client_id": client_id, "name": info.get("name", ""),
                "manager_id": info.get("manager_id"), "manager": info.get("manager")}

    clients = []
    for row in abc:
        var = xyz.get((row["kind"], row["client_id"]))
        variation = float(var["variation"]) if var and var["variation"] is not None else None
        clients.append(client(row["kind"], row["client_id"]) | {
            "revenue": row["revenue"], "deals": row["deals"], "share": _round(row["share"], 4), "abc": row["abc"],
            "months_bought": var["months_bought"] if var else 0,
            "variation": _round(variation, 3), "xyz": xyz_class(variation) if var else None})
    matrix: dict[str, int] = {}
    for row in clients:
        if row["xyz"]:
            matrix[row["abc"] + row["xyz"]] = matrix.get(row["abc"] + row["xyz"], 0) + 1
    return {"clients": clients, "matrix": matrix,
            "stopped": [client(r["kind"], r["client_id"]) | {
                "purchases": r["purchases"], "last_purchase": r["last_purchase"],
                "usual_days": _round(r["usual_days"])} for r in stopped]}


async def create_reactivation_tasks(conn: asyncpg.Connection, viewer: User, period: Period, filters: Filters,
                                    now: datetime) -> list[int]:
    """A follow-up task for the manager of each client that stopped buying; a second run adds none."""
    if not viewer.sees_everything:
        raise Forbidden("only the head of sales creates reactivation tasks")
    async with conn.transaction():
        await conn.execute(REACTIVATION_LOCK)
        created = []
        for row in (await segments_report(conn, period, filters))["stopped"]:
            title = f"Reactivate client: {row['name']}"[:200]
            if await conn.fetchval(OPEN_TASK_EXISTS, title, row["manager_id"]):
                continue
            created.append(await conn.fetchval(INSERT_FOLLOW_UP, title, row["manager_id"],
                                               now + timedelta(days=1)))
    return created


# ---------------------------------------------------------------------------------------------------- drill-down

# Each number of a report names a metric; its rows are listed with the same conditions that counted it.
# (name → SQL condition, and whose calls a manager filter selects: those they own, or those offered to them.)
CALL_METRICS: dict[str, tuple[str, str]] = {
    "offered": ("c.direction = 'inbound'", "offered"),
    "unanswered": ("c.direction = 'inbound' AND c.outcome IN ('missed', 'abandoned', 'busy')", "offered"),
    "inbound_answered": ("c.direction = 'inbound' AND c.outcome = 'answered'", "own"),
    "outbound": ("c.direction = 'outbound'", "own"),
    "outbound_reached": ("c.direction = 'outbound' AND c.outcome = 'answered'", "own"),
    "answered": ("c.direction = 'inbound' AND c.outcome = 'answered'", "offered"),
    "answered_in_time": ("c.direction = 'inbound' AND c.outcome = 'answered' AND c.ring_seconds <= $8", "offered"),
    "abandoned": ("c.direction = 'inbound' AND c.outcome = 'abandoned'", "offered"),
    "missed": ("c.direction = 'inbound' AND c.outcome IN ('missed', 'busy')", "offered"),
    "failed": ("c.direction = 'inbound' AND c.outcome = 'failed'", "offered"),
    "unknown": ("c.direction = 'inbound' AND c.outcome = 'unknown'", "offered"),
}
_CALL_SCOPES = {
    "own": "($5::bigint IS NULL OR c.user_id = $5)",
    "offered": "($5::text IS NULL OR c.answered_by = $5 OR $5 = ANY(c.agents_rang))",
}
_DRILL_CALLS = """
SELECT c.id, c.started_at, c.direction, c.caller, c.callee, c.queue, c.outcome, c.answered_by,
       u.display_name AS manager, c.ring_seconds, c.talk_seconds, c.contact_id, c.company_id, c.lead_id, c.deal_id
FROM calls c LEFT JOIN users u ON u.id = c.user_id
WHERE c.started_at >= $1 AND c.started_at < $2
  AND ($3::text IS NULL OR (c.direction = 'inbound' AND c.callee = $3)) AND ($4::text IS NULL OR c.queue = $4)
  AND ($6::date IS NULL OR (c.started_at AT TIME ZONE $9)::date = $6)
  AND ($7::int IS NULL OR extract(hour FROM c.started_at AT TIME ZONE $9) = $7)
  AND ($10::int IS NULL OR extract(isodow FROM c.started_at AT TIME ZONE $9) = $10)
  AND {metric} AND {scope} AND $8::int IS NOT NULL
ORDER BY c.started_at DESC, c.id DESC LIMIT {limit}
"""
DRILL_CALLS = {name: _DRILL_CALLS.format(metric=cond, scope=_CALL_SCOPES[scope], limit=MAX_ROWS)
               for name, (cond, scope) in CALL_METRICS.items()}

_IN = "{column} >= $1 AND {column} < $2"
DEAL_METRICS: dict[str, str] = {
    "deals_created": _IN.format(column="d.created_at"),
    "deals_won": "d.status = 'won' AND " + _IN.format(column="d.closed_at"),
    "deals_lost": "d.status = 'lost' AND " + _IN.format(column="d.closed_at"),
    "entered": "EXISTS (SELECT 1 FROM deal_stage_history h WHERE h.deal_id = d.id AND h.stage = $5 AND "
               + _IN.format(column="h.entered_at") + ")",
    "stuck": "d.status = 'in_progress' AND d.stage = $5 "
             "AND d.stage_changed_at < $7::timestamptz - make_interval(days => "
             "(SELECT normal_days FROM deal_stages WHERE code = d.stage)) AND $1::timestamptz IS NOT NULL "
             "AND $2::timestamptz IS NOT NULL",
    "loss_reason": "d.status = 'lost' AND d.loss_reason = $6 AND " + _IN.format(column="d.closed_at"),
}
_DRILL_DEALS = f"""
SELECT d.id, d.title, d.stage, d.status, d.loss_reason, {DEAL_SOURCE} AS source, u.display_name AS manager,
       {AMOUNT} AS amount, d.created_at, d.closed_at
{_DEALS_FROM} LEFT JOIN users u ON u.id = d.manager_id
WHERE {{metric}} AND ($3::bigint IS NULL OR d.manager_id = $3) AND ($4::text IS NULL OR {DEAL_SOURCE} = $4)
  AND ($5::text IS NULL OR $5 IS NOT NULL) AND ($6::text IS NULL OR $6 IS NOT NULL)
  AND ($7::timestamptz IS NULL OR $7 IS NOT NULL)
ORDER BY d.id DESC LIMIT {MAX_ROWS}
"""
DRILL_DEALS = {name: _DRILL_DEALS.format(metric=cond) for name, cond in DEAL_METRICS.items()}

LEAD_METRICS = {"leads": "true", "leads_converted": "l.status = 'converted'"}
_DRILL_LEADS = f"""
SELECT l.id, l.created_at, l.source, l.line, l.status, l.name, l.phone_e164, l.email, u.display_name AS manager
FROM leads l LEFT JOIN users u ON u.id = l.manager_id
WHERE l.created_at >= $1 AND l.created_at < $2 AND ($3::bigint IS NULL OR l.manager_id = $3)
  AND ($4::text IS NULL OR l.source = $4) AND ($5::text IS NULL OR l.line = $5) AND {{metric}}
ORDER BY l.created_at DESC, l.id DESC LIMIT {MAX_ROWS}
"""
DRILL_LEADS = {name: _DRILL_LEADS.format(metric=cond) for name, cond in LEAD_METRICS.items()}


def _metric(table: dict[str, str], metric: str) -> str:
    if metric not in table:
        raise ValidationError("metric", f"one of {', '.join(table)}")
    return table[metric]


async def drill_calls(conn: asyncpg.Connection, period: Period, filters: Filters, metric: str,
                      day: date | None = None, hour: int | None = None, threshold: int = 20,
                      weekday: int | None = None) -> list[dict]:
    sql = _metric(DRILL_CALLS, metric)
    # "own" metrics select a manager's calls by user, "offered" ones by the extension that rang.
    who = filters.manager_id if CALL_METRICS[metric][1] == "own" else await _extension(conn, filters.manager_id)
    rows = await conn.fetch(sql, period.start, period.end, filters.line, filters.queue, who, day, hour, threshold,
                            period.timezone, weekday)
    return [dict(r) for r in rows]


async def drill_deals(conn: asyncpg.Connection, period: Period, filters: Filters, metric: str, now: datetime,
                      stage: str | None = None, reason: str | None = None) -> list[dict]:
    sql = _metric(DRILL_DEALS, metric)
    if metric in ("entered", "stuck") and not stage:
        raise ValidationError("stage", "name the stage")
    if metric == "loss_reason" and not reason:
        raise ValidationError("reason", "name the loss reason")
    rows = await conn.fetch(sql, period.start, period.end, filters.manager_id, filters.source, stage, reason, now)
    return [dict(r) for r in rows]


async def drill_leads(conn: asyncpg.Connection, period: Period, filters: Filters, metric: str) -> list[dict]:
    sql = _metric(DRILL_LEADS, metric)
    rows = await conn.fetch(sql, period.start, period.end, filters.manager_id, filters.source, filters.line)
    return [dict(r) for r in rows]


# ---------------------------------------------------------------------------------------------------- wallboard

# Today's inbound figures per line, open missed callers and overdue callbacks: what the wallboard shows besides
# the live agents and waiting callers.
WALLBOARD_LINES = f"""
SELECT c.callee AS line, {_SERVICE_FIGURES.replace("$6", "$3")}
FROM calls c WHERE c.direction = 'inbound' AND c.started_at >= $1 AND c.started_at < $2
GROUP BY 1 ORDER BY 1
"""
WALLBOARD_MISSED = """
SELECT count(*) FILTER (WHERE state <> 'resolved') AS open_callers,
       count(*) FILTER (WHERE state <> 'resolved' AND due_at < $1) AS overdue_callbacks
FROM missed_callers WHERE state <> 'resolved'
"""


async def wallboard_figures(conn: asyncpg.Connection, today: Period, threshold: int, now: datetime
                            ) -> dict[str, Any]:
    lines = [_service_row(r) for r in await conn.fetch(WALLBOARD_LINES, today.start, today.end, threshold)]
    for row in lines:
        row.pop("avg_wait")
    missed = await conn.fetchrow(WALLBOARD_MISSED, now)
    total = {key: sum(r[key] for r in lines) for key in ("offered", "answered", "abandoned", "missed", "unknown",
                                                          "answered_in_time")}
    total["service_level"] = _ratio(total["answered_in_time"], total["offered"] - total["unknown"])
    return {"lines": lines, "total": total, "open_callers": missed["open_callers"],
            "overdue_callbacks": missed["overdue_callbacks"]}
