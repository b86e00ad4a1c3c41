"""The cards' one timeline at scale (issue 15): p50/p99 of crm.timeline.list_timeline for a contact, a busy contact,
a company, a lead and a deal, beside a bare `SELECT 1` and the card's old calls query (the baseline), with plans.

    python bench/timeline.py [--contacts 200000] [--calls 1000000] [--runs 30] [--explain]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402

from bench.scale_explain import SEED, seeded_database  # noqa: E402
from crm import calls, timeline  # noqa: E402
from crm.timeline import Scope  # noqa: E402
from crm.users import User  # noqa: E402

# Beyond the calls: mail, notes and tasks for every 10th contact, leads with their calls, deals with stage history
# and documents; contact 1 is busy (5,000 more calls, 2,000 e-mails).
MORE = [
    """INSERT INTO mail_messages (raw, status, kind, subject, sender_email, text_body, contact_id, company_id,
                                  received_at)
       SELECT '\\x00', 'parsed', 'email', 'Subject ' || g, 'c' || g || '@example.ru', 'text', 1 + g * 10 % $1::int,
              NULL, now() - g * interval '1 minute' FROM generate_series(1, $1::int / 2) g""",
    """INSERT INTO notes (author_id, text, contact_id, created_at)
       SELECT 1, 'note ' || g, 1 + g * 10 % $1::int, now() - g * interval '3 minutes'
       FROM generate_series(1, $1::int / 10) g""",
    """INSERT INTO tasks (kind, title, assignee_id, due_at, contact_id, created_at)
       SELECT 'follow_up', 'task ' || g, 1, now(), 1 + g * 10 % $1::int, now() - g * interval '5 minutes'
       FROM generate_series(1, $1::int / 10) g""",
    """INSERT INTO leads (source, phone_e164, status, created_at)
       SELECT 'phone', '+7925' || lpad(g::text, 7, '0'), 'converted', now() - g * interval '1 hour'
       FROM generate_series(1, $1::int / 20) g""",
    """INSERT INTO deals (title, contact_id, company_id, lead_id, manager_id, stage)
       SELECT 'Deal ' || g, g, NULL, CASE WHEN g <= $1::int / 20 THEN g END, 1 + g % 20, 'offer'
       FROM generate_series(1, $1::int / 10) g""",
    """INSERT INTO deal_stage_history (deal_id, stage, entered_at) SELECT id, 'selection', now() - interval '9 days'
       FROM deals UNION ALL SELECT id, 'offer', now() - interval '2 days' FROM deals""",
    "ALTER TABLE calls DISABLE TRIGGER calls_viewers",
    """INSERT INTO calls (pbx, linkedid, direction, caller, callee, started_at, ended_at, outcome, ring_seconds,
                          talk_seconds, user_id, contact_id, company_id)
       SELECT 'lab', 'busy' || g, 'inbound', '+7916', '100', now() - g * interval '7 minutes',
              now() - g * interval '7 minutes', 'answered', 1, 2, 1, 1, 1 FROM generate_series(1, 5000) g""",
    """INSERT INTO calls (pbx, linkedid, direction, caller, callee, started_at, ended_at, outcome, ring_seconds,
                          talk_seconds, lead_id)
       SELECT 'lab', 'lead' || g, 'inbound', '+7925', '100', now() - g * interval '1 hour',
              now() - g * interval '1 hour', 'missed', 1, 0, 1 + g % ($1::int / 20)
       FROM generate_series(1, $1::int / 10) g""",
    "ALTER TABLE calls ENABLE TRIGGER calls_viewers",
    """INSERT INTO mail_messages (raw, status, kind, subject, text_body, contact_id, received_at)
       SELECT '\\x00', 'parsed', 'email', 'Busy ' || g, 'text', 1, now() - g * interval '11 minutes'
       FROM generate_series(1, 2000) g""",
    "ANALYZE",
]

BASELINE = "old card query: list_party_calls(contact 11) (baseline)"


async def timed(run, runs: int) -> tuple[float, float]:
    await run()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()
    async with seeded_database(SEED + MORE, args.contacts, args.calls) as conn:
        head = User(1, "manager1", "head", None, "Head", True)
        manager = User(3, "manager3", "manager", None, "Manager 3", True)
        company = await timeline.company_scope(conn, manager, 3)
        busy = Scope((1,))
        cases = {
            "SELECT 1 (round trip)": lambda: conn.fetchval("SELECT 1"),
            BASELINE: lambda: calls.list_party_calls(conn, 11, None),
            "timeline: contact 11 (manager)": lambda: timeline.list_timeline(conn, manager, Scope((11,))),
            "timeline: busy contact 1 (head), 5,000+ calls": lambda: timeline.list_timeline(conn, head, busy),
            f"timeline: company 3 with {len(company.contact_ids)} contacts (manager)":
                lambda: timeline.list_timeline(conn, manager, company),
            "timeline: lead 7 (head)": lambda: timeline.list_timeline(conn, head, Scope(lead_id=7)),
            "timeline: deal 7 made from lead 7 (head)":
                lambda: timeline.list_timeline(conn, head, Scope(deal_id=7, lead_id=7)),
            "timeline: busy contact 1, pages 1-3 (cursor)": lambda: page_three(conn, head),
        }
        results = {name: await timed(run, args.runs) for name, run in cases.items()}
        print("\n| what | p50 | p99 | p50 ÷ baseline p50 |\n|---|---|---|---|")
        for name, (p50, p99) in results.items():
            print(f"| {name} | {p50:.2f} ms | {p99:.2f} ms | {p50 / results[BASELINE][0]:.2f}× |")
        if args.explain:
            for scope in (busy, company):
                plan = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF, SUMMARY ON) " + timeline.TIMELINE,
                                        list(scope.contact_ids), scope.company_id, None, None, *timeline._START, 51)
                print("\n```\n" + "\n".join(r[0] for r in plan) + "\n```")


async def page_three(conn: asyncpg.Connection, viewer: User) -> None:
    after = None
    for _ in range(3):
        events = await timeline.list_timeline(conn, viewer, Scope((1,)), 50, after)
        after = timeline.paging.encode(timeline.event_key(events[-1]))


if __name__ == "__main__":
    asyncio.run(main())
