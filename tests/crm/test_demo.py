"""Demo data: idempotent, and never written into a real company's database."""

from crm import users
from crm.contacts import list_parties
from crm.demo import may_seed_demo, seed_demo


async def test_seeding_twice_gives_the_same_data(conn):
    await seed_demo(conn, "RU")
    await seed_demo(conn, "RU")
    logins = sorted(u.login for u in await users.list_users(conn))
    assert logins == ["admin", "head", "manager1", "manager2"]
    head = await users.get_user_by_login(conn, "head")
    found = await list_parties(conn, head, "contact", "+7 495 123-45-67", "RU")
    assert [(c.name, c.manager_name) for c in found] == [("Demo Client", "Manager One")]
    assert (await users.get_token_user(conn, "demo-admin-token")).login == "admin"


async def test_demo_is_refused_on_a_database_with_real_users(conn, factory):
    assert await may_seed_demo(conn)
    await factory.user("real.person")
    assert not await may_seed_demo(conn)
