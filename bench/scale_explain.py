"""EXPLAIN the hot list queries on a seeded database (a first cut of bench/scale.py): the plans in docs/PERFORMANCE.md.

    python bench/scale_explain.py [--contacts 200000] [--calls 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402

from crm import calls, contacts  # noqa: E402
from crm.db import EmbeddedPostgres, apply_migrations  # noqa: E402

SEED = [
    """INSERT INTO users (login, password_hash, role, extension, display_name)
       SELECT 'manager' || g, 'x', 'manager', (100 + g)::text, 'Manager ' || g FROM generate_series(1, 20) g""",
    """INSERT INTO companies (name, manager_id) SELECT 'Компания ' || md5(g::text), 1 + g % 20
       FROM generate_series(1, $1::int / 10) g""",
    """INSERT INTO contacts (name, manager_id, company_id)
       SELECT 'Контакт ' || md5(g::text), CASE WHEN g % 7 = 0 THEN NULL ELSE 1 + g % 20 END, 1 + g % ($1::int / 10)
       FROM generate_series(1, $1::int) g""",
    "INSERT INTO phones (contact_id, e164, raw) SELECT id, '+7916' || lpad(id::text, 7, '0'), 'x' FROM contacts",
    "INSERT INTO emails (contact_id, email) SELECT id, 'c' || id || '@example.ru' FROM contacts",
    "ALTER TABLE calls DISABLE TRIGGER calls_viewers",
    """INSERT INTO calls (pbx, linkedid, direction, caller, callee, started_at, ended_at, outcome, ring_seconds,
                          talk_seconds, user_id, contact_id, company_id)
       SELECT 'lab', g::text, 'inbound', '+7916', '100', now() - g * interval '10 seconds',
              now() - g * interval '10 seconds', 'answered', 1, 2, 1 + g % 20, 1 + g % $2::int,
              1 + g % ($2::int / 10)
       FROM generate_series(1, $1::int) g""",
    "ALTER TABLE calls ENABLE TRIGGER calls_viewers",
    """INSERT INTO call_viewers (user_id, started_at, call_id)
       SELECT DISTINCT v.user_id, c.started_at, c.id FROM calls c
       LEFT JOIN contacts ct ON ct.id = c.contact_id LEFT JOIN companies co ON co.id = c.company_id
       CROSS JOIN LATERAL (VALUES (c.user_id), (ct.manager_id), (co.manager_id)) AS v (user_id)
       WHERE v.user_id IS NOT NULL""",
    "ANALYZE",
]
END = datetime.max.replace(tzinfo=UTC)
HOT = {
    "contacts, no query (head)": (contacts.LIST_CONTACTS, (None, None, None, None, 50, 0, "", 0)),
    "contacts, name fragment (head)": (contacts.SEARCH_CONTACTS, ("a1b2", None, None, None, 50, 0, "", 0)),
    "contacts, last digits (manager)": (contacts.SEARCH_CONTACTS, ("4567", 3, None, "7654", 50, 0, "", 0)),
    "contacts, full number (head)": (contacts.SEARCH_CONTACTS,
                                     ("+79160004567", None, "+79160004567", "7654000619", 50, 0, "", 0)),
    "calls (head)": (calls.LIST_CALLS, (None, None, None, None, 200, 0, END, 0)),
    "calls (manager)": (calls.LIST_MY_CALLS, (3, None, None, None, 200, 0, END, 0)),
}


async def seed(conn: asyncpg.Connection, statements: list[str], contacts: int, calls: int) -> None:
    """Run the seeding statements ($1 the number of contacts; with $2, $1 is the calls and $2 the contacts)."""
    for sql in statements:
        started = time.perf_counter()
        arg = [contacts] if "$1" in sql else []
        if "$2" in sql:
            arg = [calls, contacts]
        await conn.execute(sql, *arg)
        print(f"-- {time.perf_counter() - started:.1f} s: {' '.join(sql.split()[:3])}", flush=True)


@asynccontextmanager
async def seeded_database(statements: list[str], contacts: int, calls: int) -> AsyncIterator[asyncpg.Connection]:
    """An embedded PostgreSQL in a temporary directory, migrated and seeded; a connection to it."""
    with tempfile.TemporaryDirectory() as tmp:
        pg = EmbeddedPostgres(Path(tmp))
        dsn = await pg.start()
        try:
            conn = await asyncpg.connect(dsn)
            await apply_migrations(conn)
            await seed(conn, statements, contacts, calls)
            try:
                yield conn
            finally:
                await conn.close()
        finally:
            await pg.stop()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--calls", type=int, default=1_000_000)
    args = parser.parse_args()
    async with seeded_database(SEED, args.contacts, args.calls) as conn:
        for name, (sql, params) in HOT.items():
            plan = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF, SUMMARY ON) " + sql, *params)
            print(f"\n### {name}\n```")
            print("\n".join(r[0] for r in plan))
            print("```", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
