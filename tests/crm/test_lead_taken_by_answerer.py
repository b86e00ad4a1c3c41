"""An unknown caller answered by a manager becomes that manager's lead (the head need not assign it)."""

from crm import calls as calls_db
from tests.web.test_calls import record


async def test_the_manager_who_answered_an_unknown_caller_takes_the_lead(conn, factory):
    manager = await factory.user("manager1", extension="101")
    saved = await calls_db.save_call(conn, record("9.1", "+79165550101", caller_name="Oleg"))
    assert saved.new_lead is not None and saved.new_lead.manager_id == manager.id
    assert await conn.fetchval("SELECT manager_id FROM leads WHERE phone_e164 = '+79165550101'") == manager.id


async def test_a_missed_unknown_caller_leaves_the_lead_for_the_head_to_assign(conn, factory):
    await factory.user("manager1", extension="101")
    await calls_db.save_call(conn, record("9.2", "+79165550102", outcome="missed", answered_by=None))
    assert await conn.fetchval("SELECT manager_id FROM leads WHERE phone_e164 = '+79165550102'") is None


async def test_a_lead_someone_already_has_stays_theirs(conn, factory):
    first = await factory.user("manager1", extension="101")
    await factory.user("manager2", extension="102")
    await calls_db.save_call(conn, record("9.3", "+79165550103"))
    await calls_db.save_call(conn, record("9.4", "+79165550103", answered_by="102", started=1_795_449_000.0))
    assert await conn.fetchval("SELECT manager_id FROM leads WHERE phone_e164 = '+79165550103'") == first.id


async def test_a_deal_made_from_a_lead_shows_the_calls_from_before_it_existed(conn, factory):
    from datetime import UTC, datetime

    from crm import deals
    from crm import leads as leads_db

    manager = await factory.user("manager1", extension="101")
    await calls_db.save_call(conn, record("9.5", "+79165550105", caller_name="Oleg"))
    lead_id = await conn.fetchval("SELECT id FROM leads WHERE phone_e164 = '+79165550105'")
    lead = await leads_db.convert_lead(conn, manager, lead_id, "Oleg Petrov", "", "RU")
    deal = await deals.create_deal(conn, manager, "Pumps for Oleg", datetime.now(UTC), lead_id=lead_id,
                                   contact_id=lead.contact_id)
    calls = await calls_db.list_deal_calls(conn, deal.id)
    assert [c.caller for c in calls] == ["+79165550105"]


async def test_calling_a_lead_back_puts_the_call_in_its_history_and_the_lead_in_work(conn, factory):
    from dataclasses import replace

    manager = await factory.user("manager1", extension="101")
    await calls_db.save_call(conn, record("9.6", "+79165550106", outcome="missed", answered_by=None))
    lead_id = await conn.fetchval("SELECT id FROM leads WHERE phone_e164 = '+79165550106'")
    back = replace(record("9.7", "101", started=1_795_449_500.0), direction="outbound", callee="+79165550106")
    call_id = (await calls_db.save_call(conn, back)).id
    assert await conn.fetchval("SELECT lead_id FROM calls WHERE id = $1", call_id) == lead_id
    assert tuple(await conn.fetchrow("SELECT status, manager_id FROM leads WHERE id = $1", lead_id)) == (
        "in_work", manager.id)
    assert [c.id for c in await calls_db.list_lead_calls(conn, lead_id)][0] == call_id
