"""Caller matching and leads: index-only lookups, one open lead per number, the lead's life."""

from datetime import timedelta

import asyncpg
import pytest

from crm import errors
from crm import leads as leads_db
from crm import mail as mail_db
from crm.calls import save_call
from crm.matching import MATCH_EXACT, MATCH_SUFFIX, find_caller
from tests.crm.test_missed import HOURS, MONDAY_NOON, missed_call


async def test_caller_found_by_exact_number_and_by_last_ten_digits(conn, factory):
    manager = await factory.user("manager1", extension="101")
    company = await factory.company("Volga Bearings", manager=manager, phones=["+7 846 333-44-00"])
    contact = await factory.contact("Sergey", phones=["+7 846 333-44-55"], company_id=company.id)
    exact = await find_caller(conn, "78463334455", "RU")
    assert (exact.contact_id, exact.company_id, exact.manager_id) == (contact.id, company.id, manager.id)
    # A contact without a manager inherits the company's; a number with no country code still matches.
    assert (await find_caller(conn, "8463334455", "KZ")).contact_id == contact.id
    switchboard = await find_caller(conn, "+7 846 333-44-00", "RU")
    assert (switchboard.contact_id, switchboard.company_id) == (None, company.id)
    assert await find_caller(conn, "+7 846 333-44-99", "RU") is None
    assert await find_caller(conn, "anonymous", "RU") is None


async def test_caller_lookup_never_scans_the_phones_table(conn):
    # A realistic size: 200,000 phones; the planner must use the indexes, exact and suffix.
    await conn.execute("""
        INSERT INTO contacts (name) SELECT 'c' || g FROM generate_series(1, 200000) g;
        INSERT INTO phones (contact_id, e164, raw) SELECT id, '+7916' || lpad(id::text, 7, '0'), 'x' FROM contacts;
        ANALYZE contacts; ANALYZE phones; ANALYZE companies;
    """)
    for query, argument in ((MATCH_EXACT, "+79160012345"), (MATCH_SUFFIX, "5432100619")):
        statement = await conn.prepare("EXPLAIN " + query)
        # The 6th execution of a prepared statement may use a generic plan: check that one too.
        for _ in range(7):
            plan = "\n".join(row[0] for row in await statement.fetch(argument))
        assert "Seq Scan on phones" not in plan, plan
        assert "phones_" in plan, plan
    found = await find_caller(conn, "9160012345", "RU")
    assert found is not None and found.contact_id == 12345


async def test_repeat_calls_from_one_number_share_one_open_lead_and_heads_are_told(conn, factory):
    await factory.user("head", role="head")
    first, created = await leads_db.get_or_create_phone_lead(conn, "+79161112233", "74951234567", "Olga")
    again, created_again = await leads_db.get_or_create_phone_lead(conn, "+79161112233", "74951234567")
    assert (created, created_again, again.id) == (True, False, first.id)
    assert (first.source, first.status, first.line, first.name) == ("phone", "new", "74951234567", "Olga")
    head = await factory.conn.fetchval("SELECT id FROM users WHERE login = 'head'")
    texts = await conn.fetch("SELECT kind, lead_id FROM notifications WHERE user_id = $1", head)
    assert [tuple(t) for t in texts] == [("new_lead", first.id)]


async def test_lead_life_assign_qualify_convert_keeps_its_calls(conn, factory):
    head = await factory.user("head", role="head")
    manager = await factory.user("manager1", extension="101")
    lead, _ = await leads_db.get_or_create_phone_lead(conn, "+79161112233", "74951234567")
    await conn.execute("""INSERT INTO calls (pbx, linkedid, direction, caller, caller_e164, callee, started_at,
        ended_at, outcome, ring_seconds, talk_seconds, lead_id) VALUES ('lab', '1.1', 'inbound', '+79161112233',
        '+79161112233', '74951234567', now(), now(), 'missed', 10, 0, $1)""", lead.id)
    with pytest.raises(errors.Forbidden):
        await leads_db.assign_lead(conn, manager, lead.id, manager.id)
    lead = await leads_db.assign_lead(conn, head, lead.id, manager.id)
    assert (lead.status, lead.manager_id) == ("in_work", manager.id)
    lead = await leads_db.set_lead_status(conn, manager, lead.id, "qualified")
    lead = await leads_db.convert_lead(conn, manager, lead.id, "Olga Smirnova", "Uralmash", "RU")
    assert lead.status == "converted" and lead.contact_id and lead.company_id
    call = await conn.fetchrow("SELECT contact_id, company_id FROM calls WHERE linkedid = '1.1'")
    assert tuple(call) == (lead.contact_id, lead.company_id)
    found = await find_caller(conn, "+79161112233", "RU")
    assert (found.contact_id, found.manager_id) == (lead.contact_id, manager.id)
    # A converted lead is closed: the next unknown call of another number is a new lead, this one is not open.
    with pytest.raises(errors.Conflict):
        await leads_db.junk_lead(conn, head, lead.id, "spam")


async def test_junk_needs_a_reason_and_frees_the_number_for_a_new_lead(conn, factory):
    head = await factory.user("head", role="head")
    lead, _ = await leads_db.get_or_create_phone_lead(conn, "+79165550000", "74951234567")
    with pytest.raises(errors.ValidationError):
        await leads_db.junk_lead(conn, head, lead.id, "  ")
    await leads_db.junk_lead(conn, head, lead.id, "robocall")
    fresh, created = await leads_db.get_or_create_phone_lead(conn, "+79165550000", "74951234567")
    assert created and fresh.id != lead.id


async def test_managers_see_only_their_leads(conn, factory):
    head = await factory.user("head", role="head")
    manager1 = await factory.user("manager1", extension="101")
    manager2 = await factory.user("manager2", extension="102")
    mine, _ = await leads_db.get_or_create_phone_lead(conn, "+79160000001", "")
    theirs, _ = await leads_db.get_or_create_phone_lead(conn, "+79160000002", "")
    await leads_db.assign_lead(conn, head, mine.id, manager1.id)
    await leads_db.assign_lead(conn, head, theirs.id, manager2.id)
    assert [lead.id for lead in await leads_db.list_leads(conn, manager1)] == [mine.id]
    with pytest.raises(errors.NotFound):
        await leads_db.get_lead(conn, manager1, theirs.id)


async def test_two_open_leads_for_one_number_are_impossible(conn):
    await leads_db.get_or_create_phone_lead(conn, "+79160000003", "")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute("INSERT INTO leads (source, phone_e164) VALUES ('manual', '+79160000003')")


async def test_converting_a_lead_moves_its_emails_and_form_messages_to_the_contact(conn, factory):
    head = await factory.user("head", role="head")
    raws = [b"From: Olga <olga@example.com>\r\nTo: sales@example.com\r\nSubject: Reducers\r\n\r\nNeed 5 reducers.\r\n",
            b"From: Olga <olga@example.com>\r\nTo: sales@example.com\r\nSubject: Re: Reducers\r\n\r\nAnd a pump.\r\n"]
    for raw in raws:
        await mail_db.process_stored(conn, await mail_db.store_raw(conn, raw, "127.0.0.1", "olga@example.com",
                                                                   ["sales@example.com"]), raw, "RU")
    (lead,) = await leads_db.list_leads(conn, head)
    lead = await leads_db.convert_lead(conn, head, lead.id, "Olga", "Uralmash", "RU")
    mails = await mail_db.list_party_mail(conn, lead.contact_id, None)
    assert sorted(m["subject"] for m in mails) == ["Re: Reducers", "Reducers"]
    rows = await conn.fetch("SELECT contact_id, company_id, lead_id FROM mail_messages")
    assert [tuple(r) for r in rows] == [(lead.contact_id, lead.company_id, lead.id)] * 2


async def test_junking_a_lead_closes_its_callback(conn, factory):
    head = await factory.user("head", role="head")
    saved = await save_call(conn, missed_call("m1", "+79161234567", MONDAY_NOON), hours=HOURS)
    lead_id = await conn.fetchval("SELECT lead_id FROM missed_callers")
    assert saved.missed_updates and lead_id is not None
    await leads_db.junk_lead(conn, head, lead_id, "robocall", MONDAY_NOON + timedelta(hours=1))
    task = await conn.fetchrow("SELECT kind, state, closed_at, closed_by FROM tasks")
    assert tuple(task) == ("callback", "cancelled", MONDAY_NOON + timedelta(hours=1), head.id)
    row = await conn.fetchrow("SELECT state, resolution FROM missed_callers")
    assert tuple(row) == ("resolved", "not_needed")
