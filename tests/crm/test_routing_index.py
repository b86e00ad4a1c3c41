"""The in-memory routing index answers like the database and follows changes through NOTIFY."""

import asyncio
import time

from crm import users
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
