"""Who can be given clients, leads, deals and missed callers."""

from crm import users


async def test_assignees_are_the_active_managers_and_heads_by_name(conn, factory):
    await factory.user("zoya", extension="103")
    await factory.user("boss", role="head")
    await factory.user("admin", role="admin")
    await factory.user("store", role="warehouse")
    gone = await factory.user("gone", extension="109")
    await users.update_user(conn, gone.id, "manager", "109", "Gone", False)
    await factory.user("anna", extension="101")
    assert [u.login for u in await users.list_assignees(conn)] == ["anna", "boss", "zoya"]
