"""The deals board on a big database: seeds N deals (most in progress, across the stages, a third with items), then
times the board's reads (counts and sums per column, 50 newest cards a column) and the sorted list view, beside
the old /deals page's read (the first 500 deals in progress, by stage) measured in the same run.

    python bench/deals_board.py [--deals 100000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MANAGERS = 20
SEED_CONTACTS = """
INSERT INTO contacts (name, manager_id) SELECT 'Client ' || g, $2 + g % $3 FROM generate_series(1, $1) g"""
SEED_DEALS = """
INSERT INTO deals (title, contact_id, manager_id, stage, status, loss_reason, manual_amount, created_at,
                   stage_changed_at)
SELECT 'Deal ' || g, 1 + (g * 13) % $1, $2 + g % $3,
       (ARRAY['selection', 'offer', 'invoice', 'reservation', 'shipment', 'installation', 'service'])[1 + g % 7],
       CASE WHEN g % 10 = 0 THEN 'won' WHEN g % 10 = 1 THEN 'lost' ELSE 'in_progress' END,
       CASE WHEN g % 10 = 1 THEN 'price' END, CASE WHEN g % 3 <> 0 THEN 1000 + g % 50000 END,
       $4::timestamptz - make_interval(mins => g), $4::timestamptz - make_interval(mins => g)
FROM generate_series(1, $1) g
"""
SEED_ITEMS = """
INSERT INTO deal_items (deal_id, product_id, quantity, price)
SELECT d.id, $1, 1 + d.id % 5, 100 + d.id % 900 FROM deals d WHERE d.id % 3 = 0
"""


async def timed(repeat: int, read) -> float:
    """The median of `repeat` runs, in milliseconds."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        await read()
        runs.append((time.perf_counter() - start) * 1000)
    return statistics.median(runs)


async def main(args: argparse.Namespace) -> None:
    from crm import deals, users
    from crm.db import open_database
    from crm.deals import DealFilter

    data_dir = Path(tempfile.mkdtemp(prefix="callboard-bench-"))
    now = datetime.now(UTC)
    async with open_database(os.environ.get("DATABASE_URL"), data_dir, announce=lambda t: None) as pool:
        async with pool.acquire() as conn:
            head = await users.create_user(conn, "head", "head-pass", "head", None, "Head")
            first = None
            for n in range(MANAGERS):
                made = await users.create_user(conn, f"m{n}", "manager-pass", "manager", None, f"M{n}")
                first = first or made
            started = time.perf_counter()
            await conn.execute(SEED_CONTACTS, args.deals, first.id, MANAGERS)
            await conn.execute(SEED_DEALS, args.deals, first.id, MANAGERS, now)
            product = await conn.fetchval("INSERT INTO products (sku, name, price) VALUES ('P', 'P', 1) RETURNING id")
            await conn.execute(SEED_ITEMS, product)
            await conn.execute("VACUUM ANALYZE")
            print(f"seeded {args.deals:,} deals in {time.perf_counter() - started:.0f} s")
            manager = await users.get_user_by_login(conn, "m3")
            everything = DealFilter()
            narrowed = DealFilter(amount_min=Decimal(20000), amount_max=Decimal(40000), stuck=True)
            cases = {
                "baseline: old /deals read (500 in progress, by stage)":
                    lambda: deals.list_deals_page(conn, head, "in_progress", 500),
                "board, head, no filter": lambda: deals.board(conn, head, everything, now),
                "board, head, amount 20k-40k + stuck": lambda: deals.board(conn, head, narrowed, now),
                "board, head, client 'Client 12'": lambda: deals.board(conn, head, DealFilter(client="Client 12"),
                                                                       now),
                "board, one manager": lambda: deals.board(conn, manager, everything, now),
                "list view, head, by amount": lambda: deals.list_sorted(conn, head, everything, now, "amount"),
            }
            results = {}
            for name, read in cases.items():
                await read()  # warm
                results[name] = await timed(args.repeat, read)
    baseline = next(iter(results.values()))
    print(f"| read | median ms ({args.repeat} runs) | ÷ baseline |")
    print("|---|---|---|")
    for name, ms in results.items():
        print(f"| {name} | {ms:.1f} | {ms / baseline:.2f}× |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
