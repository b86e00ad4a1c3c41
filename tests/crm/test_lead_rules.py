"""Lead distribution rules where leads are made (calls, mail, forms, by hand), round robin under concurrency,
alerts about waiting leads (once), and edits by hand with a version."""

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from crm import calls as calls_db
from crm import errors, leadrules
from crm import leads as leads_db
from crm import mail as mail_db
from crm import users as users_db
from tests.web.test_calls import record
from web.forms import as_message

SYSTEM_HEAD = users_db.User(0, "system", "head", None, "system", True)


async def on_duty(conn, *users):
    """Logged in to Callboard: what makes a manager on duty."""
    for user in users:
        await users_db.create_session(conn, user, "pepper", datetime.now(UTC))


async def add_rule(conn, action="round_robin", managers=(), **conditions):
    return await leadrules.create_rule(conn, SYSTEM_HEAD, {"action": action,
                                                           "manager_ids": [m.id for m in managers], **conditions})


async def manager_of(conn, lead_id):
    return await conn.fetchval("SELECT manager_id FROM leads WHERE id = $1", lead_id)


async def test_a_call_to_a_line_goes_to_the_lines_manager_and_moscow_to_moscow(conn, factory):
    line_mgr, moscow, others = await factory.user("mgr1"), await factory.user("mgr2"), await factory.user("mgr3")
    await on_duty(conn, line_mgr, moscow, others)
    await add_rule(conn, "assign", [line_mgr], channel="phone", line="+7 (800) 555-35-35")
    await add_rule(conn, "assign", [moscow], prefixes="+7495, +7499")
    await add_rule(conn, "round_robin", [others])
    by_line, _ = await leads_db.get_or_create_phone_lead(conn, "+74951110001", "78005553535")
    moscow_lead, _ = await leads_db.get_or_create_phone_lead(conn, "+74991110002", "74951234567")
    elsewhere, _ = await leads_db.get_or_create_phone_lead(conn, "+73431110003", "74951234567")
    assert (by_line.manager_id, moscow_lead.manager_id, elsewhere.manager_id) == (line_mgr.id, moscow.id, others.id)
    assert by_line.auto_assigned and by_line.status == "new"
    # The assignee is told: a stored notification that links the lead.
    notes = await leads_db.list_notifications(conn, moscow)
    assert [(n.kind, n.text, n.lead_id) for n in notes] == [("lead_assigned", "Lead for you: +7 499 111-00-02",
                                                             moscow_lead.id)]


async def test_a_rule_whose_manager_is_off_duty_gives_way_to_the_next(conn, factory):
    away, here = await factory.user("away"), await factory.user("here")
    await on_duty(conn, here)  # `away` never logged in (or logged out)
    await add_rule(conn, "assign", [away])
    await add_rule(conn, "round_robin", [away, here])
    lead, _ = await leads_db.get_or_create_phone_lead(conn, "+79160000001", "")
    assert lead.manager_id == here.id
    await conn.execute("DELETE FROM sessions WHERE user_id = $1", here.id)  # logged out: nobody on duty
    nobody, _ = await leads_db.get_or_create_phone_lead(conn, "+79160000002", "")
    assert nobody.manager_id is None


async def test_round_robin_takes_turns_fairly_when_leads_arrive_at_once(pool, conn, factory):
    managers = [await factory.user(f"mgr{i}") for i in range(3)]
    await on_duty(conn, *managers)
    await add_rule(conn, "round_robin", managers)

    async def one_call(n: int) -> int | None:
        async with pool.acquire() as own:
            lead, _ = await leads_db.get_or_create_phone_lead(own, f"+7916{n:07d}", "")
            return lead.manager_id

    got = await asyncio.gather(*(one_call(n) for n in range(12)))
    assert Counter(got) == {m.id: 4 for m in managers}  # the claimed pointer: never two to one at once


async def test_mail_to_a_mailbox_and_a_website_form_follow_their_rules(conn, factory):
    mail_mgr, form_mgr = await factory.user("mail"), await factory.user("form")
    await on_duty(conn, mail_mgr, form_mgr)
    await add_rule(conn, "assign", [mail_mgr], channel="email", line="Sales@Example.com")
    await add_rule(conn, "assign", [form_mgr], line="form:contact")
    raw = b"From: Olga <olga@buyer.example>\r\nTo: sales@example.com\r\nSubject: Pumps\r\n\r\nNeed 5 pumps.\r\n"
    result = await mail_db.process_stored(conn, await mail_db.store_raw(
        conn, raw, "127.0.0.1", "olga@buyer.example", ["sales@example.com"]), raw, "RU")
    assert result.lead_created and result.lead_manager_id == mail_mgr.id
    assert await manager_of(conn, result.lead_id) == mail_mgr.id
    form = as_message("contact", {"Name": "Ivan", "Phone": "+7 912 000-11-22", "Message": "Call me"})
    result = await mail_db.process_stored(conn, await mail_db.store_raw(
        conn, form, "127.0.0.1", "form:contact", ["form:contact"]), form, "RU")
    assert result.lead_created and result.lead_manager_id == form_mgr.id
    lead = await leads_db.get_lead(conn, SYSTEM_HEAD, result.lead_id)
    assert (lead.source, lead.line, lead.manager_id) == ("web_form", "form:contact", form_mgr.id)


async def test_a_lead_entered_by_the_head_is_distributed_one_by_a_manager_stays_theirs(conn, factory):
    head = await factory.user("head", role="head")
    entering, picked = await factory.user("mgr1"), await factory.user("mgr2")
    await on_duty(conn, picked)
    await add_rule(conn, "assign", [picked], channel="manual")
    by_head = await leads_db.create_manual_lead(conn, head, "Oleg", "+79160000010", None, "Uralmash", "Pumps")
    assert (by_head.manager_id, by_head.status, by_head.rule_id is not None) == (picked.id, "new", True)
    by_manager = await leads_db.create_manual_lead(conn, entering, "Anna", "+79160000011", None, "", "")
    assert (by_manager.manager_id, by_manager.status) == (entering.id, "in_work")


async def test_a_duplicate_by_hand_names_the_open_lead_instead_of_making_another(conn, factory):
    head = await factory.user("head", role="head")
    called, _ = await leads_db.get_or_create_phone_lead(conn, "+79160000020", "")
    with pytest.raises(leads_db.DuplicateLead) as raised:
        await leads_db.create_manual_lead(conn, head, "Same person", "+79160000020", None, "", "")
    assert raised.value.lead_id == called.id
    mailed, _ = await leads_db.get_or_create_email_lead(conn, "email", "x@buyer.example", "X", "", "hi")
    with pytest.raises(leads_db.DuplicateLead) as raised:
        await leads_db.create_manual_lead(conn, head, "", None, "X@Buyer.example", "", "")
    assert raised.value.lead_id == mailed.id
    assert await conn.fetchval("SELECT count(*) FROM leads") == 2


async def test_the_manager_who_answers_takes_a_lead_a_rule_gave_to_someone_who_did_nothing(conn, factory):
    answering = await factory.user("manager1", extension="101")
    picked = await factory.user("manager2", extension="102")
    await on_duty(conn, picked)
    await add_rule(conn, "assign", [picked])
    lead, _ = await leads_db.get_or_create_phone_lead(conn, "+79160000030", "+74951234567")  # at the call's start
    assert lead.manager_id == picked.id
    await calls_db.save_call(conn, record("30.1", "+79160000030"))  # answered by 101
    taken = await leads_db.get_lead(conn, SYSTEM_HEAD, lead.id)
    assert (taken.manager_id, taken.auto_assigned) == (answering.id, False)
    # Once a person has it, a later answer by someone else leaves it alone (the existing rule).
    await calls_db.save_call(conn, record("30.2", "+79160000030", answered_by="102", started=1_795_449_000.0))
    assert await manager_of(conn, lead.id) == answering.id


async def test_waiting_leads_alert_the_heads_once(conn, factory):
    head = await factory.user("head", role="head")
    slow = await factory.user("slow")
    await on_duty(conn, slow)
    await leadrules.set_limits(conn, SYSTEM_HEAD, 10, 30)
    lonely, _ = await leads_db.get_or_create_phone_lead(conn, "+79160000040", "")  # no rules: nobody has it
    await add_rule(conn, "assign", [slow])
    ignored, _ = await leads_db.get_or_create_phone_lead(conn, "+79160000041", "")
    worked, _ = await leads_db.get_or_create_phone_lead(conn, "+79160000042", "")
    await leads_db.update_lead(conn, slow, worked.id, {"name": "Called him"})  # touched by hand
    now = datetime.now(UTC)
    assert await leadrules.flag_waiting_leads(conn, now + timedelta(minutes=5)) == []
    first = await leadrules.flag_waiting_leads(conn, now + timedelta(minutes=15))
    assert [(w.lead_id, w.why) for w in first] == [(lonely.id, "unassigned")]
    later = await leadrules.flag_waiting_leads(conn, now + timedelta(minutes=45))
    assert [(w.lead_id, w.why, w.manager_name) for w in later] == [(ignored.id, "untouched", "Slow")]
    assert await leadrules.flag_waiting_leads(conn, now + timedelta(minutes=90)) == []  # never twice
    texts = [n.text for n in await leads_db.list_notifications(conn, head) if n.kind == "lead_waiting"]
    assert sorted(texts) == ["Lead untouched for 45 min by Slow: +7 916 000-00-41",
                             "Lead waiting for a manager for 15 min: +7 916 000-00-40"]
    # The head's home list shows what waits now, whether alerted already or not.
    waiting = await leadrules.list_waiting_leads(conn, now + timedelta(minutes=90))
    assert {(w.lead_id, w.why) for w in waiting} == {(lonely.id, "unassigned"), (ignored.id, "untouched")}


async def test_an_edit_over_a_newer_version_is_refused_and_a_manager_edits_only_their_own(conn, factory):
    mine, other = await factory.user("mgr1"), await factory.user("mgr2")
    lead = await leads_db.create_manual_lead(conn, mine, "Oleg", "+79160000050", None, "", "")
    edited = await leads_db.update_lead(conn, mine, lead.id, {"company_name": "Uralmash"}, version=lead.version)
    assert (edited.company_name, edited.name, edited.version) == ("Uralmash", "Oleg", lead.version + 1)
    with pytest.raises(errors.Conflict):
        await leads_db.update_lead(conn, mine, lead.id, {"name": "Stale"}, version=lead.version)
    with pytest.raises(errors.NotFound):
        await leads_db.update_lead(conn, other, lead.id, {"name": "Not mine"})
    changed = await leads_db.update_lead(conn, mine, lead.id, {"phone": "8 (916) 000-00-51"})
    assert changed.phone_e164 == "+79160000051"


def test_a_line_typed_by_the_head_matches_the_did_as_the_pbx_sends_it():
    assert leadrules.same_line("+7 (495) 123-45-67", "74951234567")
    assert leadrules.same_line("8 495 123 45 67", "+74951234567")
    assert not leadrules.same_line("+7 495 123-45-67", "74951234568")
    assert leadrules.same_line("Sales@Example.com", "sales@example.com")
    assert not leadrules.same_line("sales@example.com", "info@example.com")
    assert leadrules.same_line("200", "200") and not leadrules.same_line("200", "2001")
    assert leadrules.clean_prefixes("+7495, 7499;+7 (812)") == ["+7495", "+7499", "+7812"]
    with pytest.raises(errors.ValidationError):
        leadrules.clean_prefixes("Moscow")
