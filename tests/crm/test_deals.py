"""Deals and stock on real PostgreSQL: balances, FIFO, concurrent reservations, stuck deals, illiquid."""

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from crm import deals, errors, stock
from crm.calls import save_call
from tests.web.test_calls import record

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
async def people(factory):
    return {"head": await factory.user("head", role="head"),
            "manager1": await factory.user("manager1", extension="101"),
            "manager2": await factory.user("manager2", extension="102")}


async def test_balances_come_from_movements_and_shipments_take_the_oldest_batch_first(conn, people):
    product = await stock.create_product(conn, "BRG-1", "Bearing", "pcs", 100, None, False)
    old = await stock.receive(conn, product.id, 5, NOW - timedelta(days=10))
    new = await stock.receive(conn, product.id, 10, NOW - timedelta(days=1))
    assert await stock.ship(conn, product.id, 7, NOW) == [(old, Decimal(5)), (new, Decimal(2))]
    balance = await stock.balance(conn, product.id)
    assert (balance.on_hand, balance.reserved, balance.available) == (8, 0, 8)
    with pytest.raises(errors.Conflict):
        await stock.ship(conn, product.id, 9, NOW)
    with pytest.raises(errors.ValidationError):
        await stock.receive(conn, product.id, "-3", NOW)


async def test_two_deals_reserving_the_last_units_at_once_never_over_reserve(pool, conn, people):
    product = await stock.create_product(conn, "RED-1", "Reducer", "pcs", 1000, None, True)
    await stock.receive(conn, product.id, 5, NOW)
    first = await deals.create_deal(conn, people["head"], "A", NOW, manager_id=people["manager1"].id)
    second = await deals.create_deal(conn, people["head"], "B", NOW, manager_id=people["manager2"].id)
    for deal in (first, second):
        await deals.add_item(conn, people["head"], deal.id, product.id, 4)

    async def reserve(deal_id):
        async with pool.acquire() as own:
            await deals.move_stage(own, people["head"], deal_id, "reservation", NOW)
            return await deals.list_items(own, deal_id)

    items_a, items_b = await asyncio.gather(reserve(first.id), reserve(second.id))
    reserved = items_a[0].reserved + items_b[0].reserved
    assert reserved == 5  # never more than on hand
    assert sorted([items_a[0].reserved, items_b[0].reserved]) == [1, 4]
    # Whatever could not be reserved goes to production (made in house).
    assert items_a[0].in_production + items_b[0].in_production == 3
    assert (await stock.balance(conn, product.id)).available == 0


async def test_reservation_orders_the_shortfall_by_kind_and_a_lost_deal_releases(conn, people):
    bought = await stock.create_product(conn, "SEAL", "Seal", "set", 10, None, False)
    own = await stock.create_product(conn, "PMP", "Pump", "pcs", 5000, None, True)
    await stock.receive(conn, bought.id, 2, NOW)
    deal = await deals.create_deal(conn, people["manager1"], "Line", NOW)
    await deals.add_item(conn, people["manager1"], deal.id, bought.id, 5)
    await deals.add_item(conn, people["manager1"], deal.id, own.id, 1)
    await deals.move_stage(conn, people["manager1"], deal.id, "reservation", NOW)
    items = await deals.list_items(conn, deal.id)
    assert [(i.sku, i.reserved, i.in_production, i.ordered) for i in items] == [
        ("SEAL", 2, 0, 3), ("PMP", 0, 1, 0)]
    assert (await deals.get_deal(conn, people["manager1"], deal.id)).amount == Decimal("5050.00")
    with pytest.raises(errors.ValidationError):
        await deals.close_deal(conn, people["manager1"], deal.id, "lost", "bad luck", NOW)
    await deals.close_deal(conn, people["manager1"], deal.id, "lost", "price", NOW)
    assert (await stock.balance(conn, bought.id)).reserved == 0
    history = await deals.stage_history(conn, deal.id)
    assert [h["stage"] for h in history] == ["selection", "reservation"]


async def test_stuck_deals_are_flagged_once_with_a_task_and_the_heads_told(conn, people):
    deal = await deals.create_deal(conn, people["manager1"], "Slow", NOW - timedelta(days=8))
    assert await deals.flag_stuck_deals(conn, NOW - timedelta(days=2)) == []  # 6 days of 7: fine
    stuck = await deals.flag_stuck_deals(conn, NOW)
    assert [d["id"] for d in stuck] == [deal.id]
    assert await deals.flag_stuck_deals(conn, NOW) == []  # flagged once
    task = await conn.fetchrow("SELECT kind, assignee_id FROM tasks WHERE deal_id = $1", deal.id)
    assert tuple(task) == ("stuck_deal", people["manager1"].id)
    assert await conn.fetchval("SELECT count(*) FROM notifications WHERE kind = 'stuck_deal'") == 2
    moved = await deals.move_stage(conn, people["manager1"], deal.id, "offer", NOW)
    assert not moved.is_stuck(NOW)
    # The deal moved on: its "stuck" task is done, not left open on the manager's list.
    assert await conn.fetchval("SELECT state FROM tasks WHERE deal_id = $1", deal.id) == "done"


async def test_a_lost_deal_takes_its_stuck_task_with_it(conn, people):
    deal = await deals.create_deal(conn, people["manager1"], "Slow", NOW - timedelta(days=8))
    assert [d["id"] for d in await deals.flag_stuck_deals(conn, NOW)] == [deal.id]
    await deals.close_deal(conn, people["manager1"], deal.id, "lost", "price", NOW)
    assert tuple(await conn.fetchrow("SELECT state, note FROM tasks WHERE deal_id = $1", deal.id)) == (
        "done", "deal lost")


async def test_managers_see_only_their_deals(conn, people):
    mine = await deals.create_deal(conn, people["manager1"], "Mine", NOW)
    theirs = await deals.create_deal(conn, people["manager2"], "Theirs", NOW)
    assert [d.id for d in await deals.list_deals(conn, people["manager1"])] == [mine.id]
    with pytest.raises(errors.NotFound):
        await deals.get_deal(conn, people["manager1"], theirs.id)
    assert len(await deals.list_deals(conn, people["head"])) == 2


async def test_illiquid_stock_and_its_sales(conn, people):
    slow = await stock.create_product(conn, "OLD", "Old stock", "pcs", 50, None, False)
    fast = await stock.create_product(conn, "NEW", "Fresh stock", "pcs", 50, None, False)
    await stock.receive(conn, slow.id, 10, NOW - timedelta(days=400))
    await stock.receive(conn, fast.id, 10, NOW - timedelta(days=400))
    await stock.ship(conn, fast.id, 1, NOW - timedelta(days=5))
    # Counted per batch: the nine left of the old batch stay illiquid though one of them sold lately.
    assert [(b.sku, b.on_hand) for b in await stock.illiquid(conn, NOW, 180)] == [("OLD", 10), ("NEW", 9)]
    deal = await deals.create_deal(conn, people["manager1"], "Clearance", NOW)
    await deals.add_item(conn, people["manager1"], deal.id, slow.id, 4, 40)
    item = (await deals.list_items(conn, deal.id))[0]
    await stock.ship(conn, slow.id, 4, NOW, deal_item_id=item.id)
    sales = await deals.illiquid_sales(conn, people["manager1"], NOW - timedelta(days=1), 180)
    assert [(s["manager"], s["amount"]) for s in sales] == [("Manager1", Decimal("160.00"))]


async def test_a_call_attaches_to_the_contacts_only_open_deal(conn, factory, people):
    contact = await factory.contact("Client", manager=people["manager1"], phones=["+7 916 000-01-01"])
    deal = await deals.create_deal(conn, people["manager1"], "Only one", NOW, contact_id=contact.id)
    saved = await save_call(conn, record("c1", "+79160000101"))
    assert await conn.fetchval("SELECT deal_id FROM calls WHERE id = $1", saved.id) == deal.id
    await deals.create_deal(conn, people["manager1"], "Second", NOW, contact_id=contact.id)
    saved = await save_call(conn, record("c2", "+79160000101"))
    assert await conn.fetchval("SELECT deal_id FROM calls WHERE id = $1", saved.id) is None


async def test_orders_become_stock_reserved_for_the_item_then_ship_oldest_first(conn, people):
    own = await stock.create_product(conn, "PMP", "Pump", "pcs", 5000, None, True)
    await stock.receive(conn, own.id, 1, NOW - timedelta(days=30))
    deal = await deals.create_deal(conn, people["manager1"], "Pumps", NOW)
    await deals.add_item(conn, people["manager1"], deal.id, own.id, 3)
    await deals.move_stage(conn, people["manager1"], deal.id, "reservation", NOW)
    (order,) = await deals.list_orders(conn, deal.id)
    assert (order["kind"], order["quantity"], order["status"]) == ("production", 2, "planned")
    items = await deals.complete_order(conn, people["head"], deal.id, "production", order["id"], NOW)
    assert (items[0].reserved, items[0].in_production) == (3, 0)
    with pytest.raises(errors.NotFound):
        await deals.complete_order(conn, people["head"], deal.id, "production", order["id"], NOW)
    items = await deals.ship_item(conn, people["manager1"], deal.id, items[0].id, NOW)
    assert (items[0].reserved, items[0].shipped, items[0].uncovered) == (0, 3, 0)
    balance = await stock.balance(conn, own.id)
    assert (balance.on_hand, balance.reserved) == (0, 0)
    with pytest.raises(errors.Conflict):
        await deals.ship_item(conn, people["manager1"], deal.id, items[0].id, NOW)
