"""The in-memory routing index answers like the database and follows changes through NOTIFY."""

import asyncio
import threading
import time

from crm import routing_index, users
from crm.matching import find_caller
from crm.routing_index import IndexKeeper, RoutingIndex


async def eventually(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the index did not catch up"
        await asyncio.sleep(0.02)


async def test_index_answers_exactly_like_the_database(conn, factory):
    manager = await factory.user("manager1", extension="101")
    company = await factory.company("Volga", manager=manager, phones=["+7 846 333-44-00"])
    await factory.contact("Sergey", phones=["+7 846 333-44-55"], company_id=company.id)
    await factory.contact("Nobody's", phones=["+44 20 7946 0958"])
    index = RoutingIndex(10)
    await index.load(conn)
    for number in ("78463334455", "8463334455", "+7 846 333-44-00", "442079460958", "+79990000000",
                   "anonymous", "", "101"):
        assert index.find(number, "RU") == await find_caller(conn, number, "RU"), number


async def test_index_follows_changes_through_notify(pool, conn, factory):
    manager1 = await factory.user("manager1", extension="101")
    manager2 = await factory.user("manager2", extension="102")
    index = RoutingIndex(10)
    keeper = IndexKeeper(index, pool)
    await keeper.start()
    try:
        await eventually(lambda: index.ready)
        assert index.find("79160000101", "RU") is None
        contact = await factory.contact("New Client", manager=manager1, phones=["+7 916 000-01-01"])
        await eventually(lambda: index.find("79160000101", "RU") is not None)
        assert index.find("79160000101", "RU").manager_extension == "101"
        await conn.execute("UPDATE contacts SET manager_id = $1 WHERE id = $2", manager2.id, contact.id)
        await eventually(lambda: index.find("79160000101", "RU").manager_id == manager2.id)
        await users.update_user(conn, manager2.id, "manager", "102", "Manager Two", False)
        await eventually(lambda: not index.find("79160000101", "RU").manager_active)
        await conn.execute("DELETE FROM phones WHERE contact_id = $1", contact.id)
        await eventually(lambda: index.find("79160000101", "RU") is None)
    finally:
        await keeper.stop()


async def test_a_number_shared_by_people_and_a_switchboard_keeps_the_databases_preference(conn, factory):
    manager1 = await factory.user("manager1", extension="101")
    manager2 = await factory.user("manager2", extension="102")
    company = await factory.company("Volga", manager=manager2, phones=["+7 916 333-44-00"])
    await factory.contact("First", manager=manager1, phones=["+7 916 333-44-00"])
    await factory.contact("Second", phones=["+7 916 333-44-00"], company_id=company.id)
    # The same last ten digits under another country code: a suffix match must pick as the database does.
    await factory.contact("Sacramento", phones=["+1 916 333 4400"])
    index = RoutingIndex(10)
    await index.load(conn)
    numbers = ("79163334400", "+7 916 333-44-00", "9163334400", "89163334400", "19163334400", "+1 916 333 4400")
    for number in numbers:
        assert index.find(number, "RU") == await find_caller(conn, number, "RU"), number
    assert index.find("79163334400", "RU").contact_name == "First"  # a person's phone before the switchboard
    # A change of that key goes through the overlay with the same order.
    await conn.execute("DELETE FROM phones WHERE contact_id = (SELECT id FROM contacts WHERE name = 'First')")
    await index.apply(conn, "phone:+79163334400")
    for number in numbers:
        assert index.find(number, "RU") == await find_caller(conn, number, "RU"), number
    assert index.find("79163334400", "RU").contact_name == "Second"


async def test_changes_wait_in_the_overlay_until_a_compaction_folds_them_in(conn, factory):
    manager = await factory.user("manager1", extension="101")
    gone = await factory.contact("Leaving", manager=manager, phones=["+7 916 000-02-02"])
    index = RoutingIndex(10)
    await index.load(conn)
    assert (len(index), index.overlay_size) == (1, 0)
    await factory.contact("Arrived", manager=manager, phones=["+7 916 000-01-01"])
    await index.apply(conn, "phone:+79160000101")
    await conn.execute("DELETE FROM contacts WHERE id = $1", gone.id)
    await index.apply(conn, "phone:+79160000202")
    assert index.overlay_size == 2  # an addition and a tombstone, the arrays untouched
    assert index.find("79160000101", "RU").contact_name == "Arrived"
    assert index.find("79160000202", "RU") is None
    await index.load(conn)  # the compaction
    assert (len(index), index.overlay_size) == (1, 0)
    assert index.find("79160000101", "RU").contact_name == "Arrived"
    assert index.find("79160000202", "RU") is None


async def test_a_change_applied_while_the_index_loads_is_kept(conn, pool, factory, monkeypatch):
    manager = await factory.user("manager1", extension="101")
    index = RoutingIndex(10)
    await index.load(conn)
    snapshot_read, release = asyncio.Event(), threading.Event()
    build = routing_index._Table.build
    loop = asyncio.get_running_loop()

    def slow_build(*args):
        loop.call_soon_threadsafe(snapshot_read.set)
        release.wait(10)
        return build(*args)

    monkeypatch.setattr(routing_index._Table, "build", slow_build)
    async with pool.acquire() as loader:
        loading = asyncio.create_task(index.load(loader))
        await snapshot_read.wait()  # the snapshot is read; the new contact is not in it
        await factory.contact("During", manager=manager, phones=["+7 916 000-03-03"])
        await index.apply(conn, "phone:+79160000303")
        release.set()
        await loading
    assert index.overlay_size == 1
    assert index.find("79160000303", "RU").contact_name == "During"


async def test_the_keeper_compacts_when_the_overlay_grows(pool, factory, monkeypatch):
    monkeypatch.setattr(routing_index, "COMPACT_KEYS", 2)
    manager = await factory.user("manager1", extension="101")
    index = RoutingIndex(10)
    keeper = IndexKeeper(index, pool)
    await keeper.start()
    try:
        await eventually(lambda: index.ready)
        await factory.contact("One", manager=manager, phones=["+7 916 000-01-01"])
        await factory.contact("Two", manager=manager, phones=["+7 916 000-02-02"])
        await eventually(lambda: len(index) == 2 and index.overlay_size == 0)
        assert index.find("79160000202", "RU").contact_name == "Two"
    finally:
        await keeper.stop()


async def test_a_million_numbers_fit_in_a_quarter_of_the_old_index(conn):
    """The arrays' size per number, measured on 20,000 (each extra number costs the same)."""
    await conn.execute("SET session_replication_role = replica")
    await conn.execute("INSERT INTO contacts (name) SELECT 'Иванова Мария Петровна ' || g "
                       "FROM generate_series(1, 20000) g")
    await conn.execute("INSERT INTO phones (contact_id, e164, raw) SELECT id, '+7916' || lpad(id::text, 7, '0'), 'x' "
                       "FROM contacts")
    await conn.execute("RESET session_replication_role")
    index = RoutingIndex(10)
    await index.load(conn)
    assert len(index) == 20_000
    assert index.nbytes() / 20_000 * 1_000_000 <= 100e6


async def test_the_keeper_stops_when_a_change_arrives_at_the_same_moment(pool):
    """Stopping the app (a deploy, a test's end) just as a notice arrives must not hang: Python 3.11's
    wait_for returned the notice and swallowed the cancellation when both landed in the same loop turns,
    and the keeper went on listening for ever (the suite hung in CI that way). asyncpg's callback is
    called here directly so the notice lands exactly 0, 1, 2 or 3 loop turns before the stop."""
    for turns in range(4):
        index = RoutingIndex()
        keeper = IndexKeeper(index, pool)
        await keeper.start()
        await eventually(lambda: index.ready)  # noqa: B023 (awaited inside this iteration)
        await asyncio.sleep(0.05)  # the keeper now waits for the next notice
        keeper._notified(None, 0, routing_index.CHANNEL, "phone:+79160000001")
        for _ in range(turns):
            await asyncio.sleep(0)
        await asyncio.wait_for(keeper.stop(), 5)
