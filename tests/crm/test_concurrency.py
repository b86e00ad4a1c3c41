"""Double clicks on real PostgreSQL: each write fired twice at once over two connections gives one result."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from crm import contacts, deals, errors, stock
from crm import leads as leads_db
from crm.contacts import PartyInput

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
async def people(factory):
    return {"head": await factory.user("head", role="head"),
            "manager1": await factory.user("manager1", extension="101")}


async def slow_writes(conn: asyncpg.Connection, *tables: str, seconds: float = 0.2) -> None:
    """Make each insert or update of these tables take a while, so the first of two clicks is still
    inside its transaction when the second reads: the race happens every run, not now and then."""
    await conn.execute(f"""CREATE OR REPLACE FUNCTION slow_write() RETURNS trigger LANGUAGE plpgsql AS
        'BEGIN PERFORM pg_sleep({seconds}); RETURN NEW; END'""")
    for table in tables:
        await conn.execute(f"CREATE TRIGGER slow_write BEFORE INSERT OR UPDATE ON {table} "
                           "FOR EACH ROW EXECUTE FUNCTION slow_write()")


async def twice(pool: asyncpg.Pool, action: Callable[[asyncpg.Connection], Awaitable]) -> list:
    """Run `action` twice at once, each on its own pooled connection; results or the domain errors raised."""
    async def one():
        async with pool.acquire() as own:
            return await action(own)

    return await asyncio.gather(one(), one(), return_exceptions=True)


def outcomes(results: list) -> list[str]:
    """'ok' or the error's class name, sorted, so a test states which of the two won without caring which."""
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, errors.CrmError):
            raise result
    return sorted(type(r).__name__ if isinstance(r, BaseException) else "ok" for r in results)


async def deal_with_line(conn, people, on_hand: int, wanted: int, made_in_house: bool = False):
    product = await stock.create_product(conn, "BRG-1", "Bearing", "pcs", 100, None, made_in_house)
    if on_hand:
        await stock.receive(conn, product.id, on_hand, NOW)
    deal = await deals.create_deal(conn, people["manager1"], "Bearings", NOW)
    (item,) = await deals.add_item(conn, people["manager1"], deal.id, product.id, wanted)
    return product, deal, item


async def beside_another_deal(conn, people, on_hand: int = 10, reserve_mine: bool = True):
    """Our line of 5 and another deal's line of 5 of the same product, the other's reserved (and ours)."""
    product, deal, item = await deal_with_line(conn, people, on_hand=on_hand, wanted=5)
    other = await deals.create_deal(conn, people["head"], "Other", NOW, manager_id=people["manager1"].id)
    await deals.add_item(conn, people["head"], other.id, product.id, 5)
    if reserve_mine:
        await deals.reserve_items(conn, people["manager1"], deal.id, NOW)
    await deals.reserve_items(conn, people["head"], other.id, NOW)
    return product, deal, item


async def movements(conn, product_id: int) -> list[tuple[str, Decimal]]:
    rows = await conn.fetch("SELECT kind, quantity FROM stock_movements WHERE product_id = $1 ORDER BY id",
                            product_id)
    return [(r["kind"], r["quantity"]) for r in rows]


async def test_reserve_twice_at_once_reserves_the_line_once(pool, conn, people):
    product, deal, item = await deal_with_line(conn, people, on_hand=20, wanted=5)
    await slow_writes(conn, "stock_movements")
    results = await twice(pool, lambda c: deals.reserve_items(c, people["manager1"], deal.id, NOW))
    assert outcomes(results) == ["ok", "ok"]
    (item,) = await deals.list_items(conn, deal.id)
    assert (item.reserved, item.in_production, item.ordered) == (5, 0, 0)
    assert await movements(conn, product.id) == [("receipt", 20), ("reservation", 5)]
    assert (await stock.balance(conn, product.id)).available == 15


async def test_reserve_twice_at_once_orders_the_shortfall_once(pool, conn, people):
    product, deal, item = await deal_with_line(conn, people, on_hand=2, wanted=5)
    await slow_writes(conn, "stock_movements")
    await twice(pool, lambda c: deals.reserve_items(c, people["manager1"], deal.id, NOW))
    (item,) = await deals.list_items(conn, deal.id)
    assert (item.reserved, item.in_production, item.ordered) == (2, 0, 3)
    assert [(o["kind"], o["quantity"]) for o in await deals.list_orders(conn, deal.id)] == [("supplier", 3)]


async def test_stage_change_with_reservation_twice_at_once_moves_and_reserves_once(pool, conn, people):
    product, deal, item = await deal_with_line(conn, people, on_hand=20, wanted=5)
    await slow_writes(conn, "deal_stage_history", "stock_movements")
    results = await twice(pool, lambda c: deals.move_stage(c, people["manager1"], deal.id, "reservation", NOW))
    assert outcomes(results) == ["ok", "ok"]
    history = await deals.stage_history(conn, deal.id)
    assert [(h["stage"], h["left_at"]) for h in history] == [("selection", NOW), ("reservation", None)]
    (item,) = await deals.list_items(conn, deal.id)
    assert (item.reserved, item.in_production, item.ordered) == (5, 0, 0)
    assert (await stock.balance(conn, product.id)).available == 15


async def test_ship_twice_at_once_ships_the_reserved_quantity_once(pool, conn, people):
    product, deal, item = await deal_with_line(conn, people, on_hand=20, wanted=5)
    await deals.reserve_items(conn, people["manager1"], deal.id, NOW)
    await slow_writes(conn, "stock_movements")
    results = await twice(pool, lambda c: deals.ship_item(c, people["manager1"], deal.id, item.id, NOW))
    assert outcomes(results) == ["Conflict", "ok"]
    (item,) = await deals.list_items(conn, deal.id)
    assert (item.reserved, item.shipped) == (0, 5)
    balance = await stock.balance(conn, product.id)
    assert (balance.on_hand, balance.reserved) == (15, 0)
    assert await movements(conn, product.id) == [("receipt", 20), ("reservation", 5), ("shipment", 5)]


async def test_release_twice_at_once_frees_the_item_once_and_keeps_other_reservations(pool, conn, people):
    product, deal, item = await beside_another_deal(conn, people)
    await slow_writes(conn, "stock_movements")
    results = await twice(pool, lambda c: stock.release(c, item.id, product.id, NOW))
    assert sorted(results) == [0, 5]
    balance = await stock.balance(conn, product.id)
    assert (balance.on_hand, balance.reserved) == (10, 5)  # the other deal still holds its five


async def test_remove_item_twice_at_once_releases_once(pool, conn, people):
    product, deal, item = await beside_another_deal(conn, people)
    await slow_writes(conn, "stock_movements")
    results = await twice(pool, lambda c: deals.remove_item(c, people["manager1"], deal.id, item.id, NOW))
    assert outcomes(results) == ["NotFound", "ok"]
    assert (await stock.balance(conn, product.id)).reserved == 5
    assert [k for k, _ in await movements(conn, product.id)].count("release") == 1


async def test_losing_a_deal_twice_at_once_releases_and_closes_once(pool, conn, people):
    product, deal, item = await beside_another_deal(conn, people)
    await slow_writes(conn, "stock_movements", "deals")
    results = await twice(pool, lambda c: deals.close_deal(c, people["manager1"], deal.id, "lost", "price", NOW))
    assert outcomes(results) == ["Conflict", "ok"]
    assert (await stock.balance(conn, product.id)).reserved == 5
    assert [k for k, _ in await movements(conn, product.id)].count("release") == 1


async def test_an_order_received_twice_at_once_enters_stock_once(pool, conn, people):
    product, deal, item = await deal_with_line(conn, people, on_hand=0, wanted=3, made_in_house=True)
    await deals.reserve_items(conn, people["manager1"], deal.id, NOW)
    (order,) = await deals.list_orders(conn, deal.id)
    await slow_writes(conn, "stock_movements")
    results = await twice(pool, lambda c: deals.complete_order(c, people["head"], deal.id, "production",
                                                               order["id"], NOW))
    assert outcomes(results) == ["NotFound", "ok"]
    balance = await stock.balance(conn, product.id)
    assert (balance.on_hand, balance.reserved) == (3, 3)


async def test_write_off_twice_at_once_never_takes_more_than_on_hand(pool, conn, people):
    product = await stock.create_product(conn, "SEAL", "Seal", "set", 10, None, False)
    await stock.receive(conn, product.id, 5, NOW)
    await slow_writes(conn, "stock_movements")
    results = await twice(pool, lambda c: stock.ship(c, product.id, 3, NOW, kind="write_off"))
    assert outcomes(results) == ["Conflict", "ok"]
    assert (await stock.balance(conn, product.id)).on_hand == 2


async def qualified_lead(conn, people):
    lead, _ = await leads_db.get_or_create_phone_lead(conn, "+79161112233", "74951234567", "Olga")
    await leads_db.assign_lead(conn, people["head"], lead.id, people["manager1"].id)
    return lead


async def test_convert_twice_at_once_makes_one_contact_and_one_company(pool, conn, people):
    lead = await qualified_lead(conn, people)
    await slow_writes(conn, "contacts")
    results = await twice(pool, lambda c: leads_db.convert_lead(c, people["manager1"], lead.id, "Olga Smirnova",
                                                                "Uralmash", "RU"))
    assert outcomes(results) == ["Conflict", "ok"]
    assert [tuple(r) for r in await conn.fetch("SELECT name, manager_id FROM contacts")] == [
        ("Olga Smirnova", people["manager1"].id)]
    assert [r["name"] for r in await conn.fetch("SELECT name FROM companies")] == ["Uralmash"]
    converted = await leads_db.get_lead(conn, people["head"], lead.id)
    contact_id = await conn.fetchval("SELECT id FROM contacts")
    assert (converted.status, converted.contact_id) == ("converted", contact_id)


async def test_junk_twice_at_once_junks_once(pool, conn, people):
    lead = await qualified_lead(conn, people)
    await slow_writes(conn, "leads")
    results = await twice(pool, lambda c: leads_db.junk_lead(c, people["manager1"], lead.id, "robocall"))
    assert outcomes(results) == ["Conflict", "ok"]
    assert (await leads_db.get_lead(conn, people["head"], lead.id)).status == "junk"


async def test_assign_and_convert_at_once_never_reassign_a_converted_lead(pool, conn, factory, people):
    lead = await qualified_lead(conn, people)
    manager2 = await factory.user("manager2", extension="102")
    await slow_writes(conn, "contacts")
    async with pool.acquire() as a, pool.acquire() as b:
        results = await asyncio.gather(
            leads_db.convert_lead(a, people["head"], lead.id, "Olga", "", "RU"),
            leads_db.assign_lead(b, people["head"], lead.id, manager2.id), return_exceptions=True)
    assert not isinstance(results[0], BaseException), results
    final = await leads_db.get_lead(conn, people["head"], lead.id)
    contact = await contacts.get_party(conn, people["head"], "contact", final.contact_id)
    # Either the assignment came first and the contact is manager2's, or it came second and was refused:
    # never a converted lead of one manager whose contact belongs to another.
    expected = people["manager1"].id if isinstance(results[1], errors.Conflict) else manager2.id
    assert (final.status, final.manager_id, contact.manager_id) == ("converted", expected, expected)


async def test_two_saves_of_one_contact_at_once_both_answer_and_keep_one_set_of_phones(pool, conn, people):
    contact = await contacts.create_party(conn, people["manager1"], "contact",
                                          PartyInput(name="Olga", phones=[("+79161112233", "")]), "RU")
    data = PartyInput(name="Olga S", phones=[("+79161112233", "work")], emails=["olga@example.com"])
    await slow_writes(conn, "phones")
    results = await twice(pool, lambda c: contacts.update_party(c, people["manager1"], "contact", contact.id,
                                                                data, "RU"))
    assert outcomes(results) == ["ok", "ok"]
    saved = await contacts.get_party(conn, people["manager1"], "contact", contact.id)
    assert ([p.label for p in saved.phones], saved.emails) == (["work"], ("olga@example.com",))


async def test_a_save_from_a_stale_form_is_refused_and_overwrites_nothing(conn, people):
    loaded = await contacts.create_party(conn, people["manager1"], "contact", PartyInput(name="Olga"), "RU")
    saved = await contacts.update_party(conn, people["manager1"], "contact", loaded.id, PartyInput(name="Olga S"),
                                        "RU", expected_version=loaded.version)
    assert (loaded.version, saved.version) == (1, 2)
    with pytest.raises(errors.Conflict):
        await contacts.update_party(conn, people["manager1"], "contact", loaded.id, PartyInput(name="Olga K"), "RU",
                                    expected_version=loaded.version)
    assert (await contacts.get_party(conn, people["manager1"], "contact", loaded.id)).name == "Olga S"


async def test_shipping_against_an_item_never_takes_another_deals_reservation(conn, people):
    product, deal, item = await beside_another_deal(conn, people, on_hand=6, reserve_mine=False)
    with pytest.raises(errors.Conflict):
        await stock.ship(conn, product.id, 2, NOW, deal_item_id=item.id)
    await stock.ship(conn, product.id, 1, NOW, deal_item_id=item.id)
    balance = await stock.balance(conn, product.id)
    assert (balance.on_hand, balance.reserved, balance.available) == (5, 5, 0)
