"""One timeline per card (issue 15): every kind of event in time order with keyset pages, call results with their
callback task, a lead's whole history carried over by its conversion, and merges that move everything."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from crm import call_results, errors, merging, timeline
from crm import deals as deals_db
from crm import leads as leads_db
from crm import mail as mail_db
from crm import tasks as tasks_db
from crm.matching import find_caller
from crm.timeline import Scope
from crm.users import User

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
INSERT_CALL = """
INSERT INTO calls (pbx, linkedid, direction, caller, caller_e164, callee, started_at, ended_at, outcome,
                   ring_seconds, talk_seconds, recording, user_id, contact_id, company_id, lead_id)
VALUES ('lab', $1, 'inbound', $2, $2, '101', $3, $3::timestamptz + interval '1 minute', $4, 5, $5, $6, $7, $8, $9, $10)
RETURNING id"""


async def insert_call(conn, linkedid, at, *, caller="+79161112233", outcome="answered", talk=60, recording=None,
                      user_id=None, contact_id=None, company_id=None, lead_id=None) -> int:
    return await conn.fetchval(INSERT_CALL, linkedid, caller, at, outcome, talk, recording, user_id, contact_id,
                               company_id, lead_id)


async def store_mail(conn, raw: bytes) -> int:
    message_id = await mail_db.store_raw(conn, raw, "127.0.0.1", "x@example.com", ["sales@example.com"])
    await mail_db.process_stored(conn, message_id, raw, "RU")
    return message_id


async def test_a_contact_timeline_holds_every_kind_newest_first_and_pages_without_gaps(conn, factory):
    manager = await factory.user("manager1", extension="101")
    anna = await factory.contact("Anna", manager=manager, phones=["+79161112233"], emails=["anna@example.com"])
    other = await factory.contact("Boris", manager=manager, phones=["+79162223344"])
    call = await insert_call(conn, "c1", T0, recording="c1.wav", user_id=manager.id, contact_id=anna.id)
    await insert_call(conn, "elsewhere", T0 + timedelta(minutes=1), contact_id=other.id)
    mail_id = await store_mail(conn, b"From: Anna <anna@example.com>\r\nSubject: Price list\r\n\r\nSend it.\r\n")
    await conn.execute("UPDATE mail_messages SET received_at = $1 WHERE id = $2", T0 + timedelta(hours=1), mail_id)
    await conn.execute("DELETE FROM tasks")  # the reply task the intake set: this test sets its own
    deal = await deals_db.create_deal(conn, manager, "Pumps", T0 + timedelta(hours=2), contact_id=anna.id)
    task = await tasks_db.create_task(conn, manager, "Send the offer", T0 + timedelta(days=1), contact_id=anna.id)
    await conn.execute("UPDATE tasks SET created_at = $1 WHERE id = $2", T0 + timedelta(hours=3), task.id)
    await tasks_db.update_task(conn, manager, task.id, {"state": "done"}, T0 + timedelta(hours=5))
    note = await timeline.add_note(conn, manager, "  Prefers mornings  ", contact_id=anna.id)
    await conn.execute("UPDATE notes SET created_at = $1 WHERE id = $2", T0 + timedelta(hours=4), note.id)
    events = await timeline.list_timeline(conn, manager, Scope(contact_ids=(anna.id,)))
    assert [(e.kind, e.at) for e in events] == [
        ("task_done", T0 + timedelta(hours=5)), ("note", T0 + timedelta(hours=4)),
        ("task", T0 + timedelta(hours=3)), ("stage", T0 + timedelta(hours=2)), ("mail", T0 + timedelta(hours=1)),
        ("call", T0)]
    by_kind = {e.kind: e for e in events}
    assert (by_kind["note"].text, by_kind["note"].who) == ("Prefers mornings", "Manager1")
    assert (by_kind["mail"].title, by_kind["mail"].data["direction"]) == ("Price list", "in")
    assert (by_kind["stage"].text, by_kind["stage"].data["deal_id"]) == ("Pumps", deal.id)
    assert by_kind["call"].id == call and by_kind["call"].data["playable"] and by_kind["call"].data["results"] == []
    # Three at a time: the pages join up exactly, nothing twice, nothing skipped.
    first = await timeline.list_timeline(conn, manager, Scope(contact_ids=(anna.id,)), limit=3)
    cursor = timeline.paging.encode(timeline.event_key(first[-1]))
    second = await timeline.list_timeline(conn, manager, Scope(contact_ids=(anna.id,)), limit=3, after=cursor)
    assert [(e.kind, e.id) for e in first + second] == [(e.kind, e.id) for e in events]


async def test_a_recording_plays_only_for_those_who_may_hear_it(conn, factory):
    manager = await factory.user("manager1", extension="101")
    colleague = await factory.user("manager2", extension="102")
    unassigned = await factory.contact("Walk-in")
    await insert_call(conn, "c1", T0, recording="c1.wav", user_id=colleague.id, contact_id=unassigned.id)
    (mine,) = await timeline.list_timeline(conn, manager, Scope(contact_ids=(unassigned.id,)))
    (theirs,) = await timeline.list_timeline(conn, colleague, Scope(contact_ids=(unassigned.id,)))
    assert (mine.data["playable"], theirs.data["playable"]) == (False, True)


async def test_a_call_result_with_a_time_to_call_back_sets_the_clients_manager_a_task(conn, factory):
    manager = await factory.user("manager1", extension="101")
    head = await factory.user("head", role="head")
    anna = await factory.contact("Anna", manager=manager)
    call = await insert_call(conn, "c1", T0, contact_id=anna.id)
    later = T0 + timedelta(days=1)
    first = await call_results.record_result(conn, head, call, "no_answer", "busy line")
    second = await call_results.record_result(conn, head, call, "callback", "asked to call tomorrow", later)
    task = await conn.fetchrow("SELECT kind, assignee_id, due_at, contact_id, title FROM tasks WHERE id = $1",
                               second.task_id)
    assert tuple(task) == ("follow_up", manager.id, later, anna.id, "Call back Anna")
    assert first.task_id is None
    (event,) = [e for e in await timeline.list_timeline(conn, manager, Scope(contact_ids=(anna.id,)))
                if e.kind == "call"]
    assert [(r["result"], r["note"]) for r in event.data["results"]] == [
        ("callback", "asked to call tomorrow"), ("no_answer", "busy line")]
    with pytest.raises(errors.ValidationError):
        await call_results.record_result(conn, head, call, "callback", "")  # no time given
    with pytest.raises(errors.ValidationError):
        await call_results.record_result(conn, head, call, "sold", "")
    stranger = await factory.user("manager2", extension="102")
    with pytest.raises(errors.NotFound):
        await call_results.record_result(conn, stranger, call, "reached")
    assert await conn.fetchval("SELECT count(*) FROM call_results") == 2


async def test_a_converted_lead_carries_its_whole_history_to_the_contact_and_the_deal(conn, factory):
    head = await factory.user("head", role="head")
    await store_mail(conn, b"From: Olga <olga@example.com>\r\nSubject: Reducers\r\n\r\nNeed 5 reducers.\r\n")
    form = (b"From: Site <robot@site.ru>\r\nSubject: Web form\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            b"Name: Olga\r\nE-mail: olga@example.com\r\nMessage: Call me back\r\n")
    await store_mail(conn, form)
    (lead,) = await leads_db.list_leads(conn, head)
    await insert_call(conn, "c1", T0, lead_id=lead.id)
    await timeline.add_note(conn, head, "Wants delivery to Samara", lead_id=lead.id)
    await tasks_db.create_task(conn, head, "Prepare an offer", T0, lead_id=lead.id)
    lead = await leads_db.convert_lead(conn, head, lead.id, "Olga", "", "RU")
    deal = await deals_db.create_deal(conn, head, "Reducers", T0, contact_id=lead.contact_id, lead_id=lead.id)
    contact_events = await timeline.list_timeline(conn, head, Scope(contact_ids=(lead.contact_id,)))
    kinds = sorted(e.kind for e in contact_events)
    assert kinds == ["call", "mail", "mail", "note", "stage", "task"], kinds
    assert {e.title for e in contact_events if e.kind == "mail"} == {"Reducers", "Web form"}
    # The deal made from the lead shows the e-mails and form messages from before it existed.
    deal_events = await timeline.list_timeline(conn, head, Scope(deal_id=deal.id, lead_id=lead.id))
    assert sorted(e.kind for e in deal_events) == kinds


async def test_merging_two_contacts_moves_everything_and_leaves_an_audit_entry(conn, factory):
    manager = await factory.user("manager1", extension="101")
    kept = await factory.contact("Anna Petrova", manager=manager, phones=["+79161112233"], emails=["a@x.ru"])
    other = await factory.contact("A. Petrova", manager=manager, phones=["+79161112233", "+79165556677"],
                                  emails=["a@x.ru", "anna@y.ru"])
    call = await insert_call(conn, "c1", T0, contact_id=other.id)
    await call_results.record_result(conn, manager, call, "reached")
    deal = await deals_db.create_deal(conn, manager, "Pumps", T0, contact_id=other.id)
    await tasks_db.create_task(conn, manager, "Call", T0, contact_id=other.id)
    await timeline.add_note(conn, manager, "met at the fair", contact_id=other.id)
    lead, _ = await leads_db.get_or_create_phone_lead(conn, "+79169990000", "")
    await conn.execute("UPDATE leads SET contact_id = $1 WHERE id = $2", other.id, lead.id)
    mail_id = await store_mail(conn, b"From: anna@y.ru\r\nSubject: Hello\r\n\r\nHi.\r\n")
    merge = await merging.merge_parties(conn, manager, "contact", kept.id, other.id)
    assert merge.moved == {"calls.contact_id": 1, "deals.contact_id": 1, "emails.contact_id": 1,
                           "leads.contact_id": 1, "mail_messages.contact_id": 1, "notes.contact_id": 1,
                           "phones.contact_id": 1, "tasks.contact_id": 1}
    assert await conn.fetchval("SELECT count(*) FROM contacts WHERE id = $1", other.id) == 0
    phones = await conn.fetch("SELECT e164 FROM phones WHERE contact_id = $1 ORDER BY e164", kept.id)
    assert [p["e164"] for p in phones] == ["+79161112233", "+79165556677"]
    emails = await conn.fetch("SELECT email FROM emails WHERE contact_id = $1 ORDER BY email", kept.id)
    assert [e["email"] for e in emails] == ["a@x.ru", "anna@y.ru"]
    assert await conn.fetchval("SELECT contact_id FROM mail_messages WHERE id = $1", mail_id) == kept.id
    assert (await deals_db.get_deal(conn, manager, deal.id)).contact_id == kept.id
    events = await timeline.list_timeline(conn, manager, Scope(contact_ids=(kept.id,)))
    assert {e.kind for e in events} == {"call", "mail", "note", "task", "stage"}
    (audit,) = await merging.list_merges(conn, "contact", kept.id)
    assert (audit.merged_id, audit.merged_name, audit.user_name, audit.moved) == (
        other.id, "A. Petrova", "Manager1", merge.moved)
    data = await conn.fetchval("SELECT merged_data FROM party_merges")
    assert '"+79165556677"' in data and "anna@y.ru" in data


async def test_merge_rules_self_permission_and_a_colleagues_record(conn, factory):
    manager = await factory.user("manager1", extension="101")
    colleague = await factory.user("manager2", extension="102")
    head = await factory.user("head", role="head")
    mine = await factory.contact("Anna", manager=manager)
    also_mine = await factory.contact("Anna P.", manager=manager)
    theirs = await factory.contact("Anna K.", manager=colleague)
    theirs_too = await factory.contact("Anna K", manager=colleague)
    unassigned = await factory.contact("Anna ?")
    with pytest.raises(errors.ValidationError):
        await merging.merge_parties(conn, manager, "contact", mine.id, mine.id)
    with pytest.raises(errors.NotFound):  # a colleague's record: not even its existence is told
        await merging.merge_parties(conn, manager, "contact", theirs.id, theirs_too.id)
    with pytest.raises(errors.Forbidden):
        await merging.merge_parties(conn, manager, "contact", mine.id, theirs.id)
    with pytest.raises(errors.Forbidden):
        await merging.merge_parties(conn, manager, "contact", mine.id, unassigned.id)
    await merging.merge_parties(conn, head, "contact", theirs.id, unassigned.id)
    await merging.merge_parties(conn, manager, "contact", mine.id, also_mine.id)
    with pytest.raises(errors.Conflict):  # merged already: said so, not "not found"
        await merging.merge_parties(conn, manager, "contact", mine.id, also_mine.id)


async def test_merging_companies_moves_their_people_and_phones(conn, factory):
    head = await factory.user("head", role="head")
    kept = await factory.company("Uralmash", phones=["+73432223344"])
    other = await factory.company("Uralmash JSC", phones=["+73432225566"])
    person = await factory.contact("Ivan", company_id=other.id)
    await conn.execute("UPDATE companies SET tax_id = '6658012345' WHERE id = $1", other.id)
    merge = await merging.merge_parties(conn, head, "company", kept.id, other.id)
    assert merge.moved == {"contacts.company_id": 1, "phones.company_id": 1}
    assert await conn.fetchval("SELECT company_id FROM contacts WHERE id = $1", person.id) == kept.id
    assert await conn.fetchval("SELECT tax_id FROM companies WHERE id = $1", kept.id) == "6658012345"


async def test_two_merges_at_once_one_wins_and_nothing_is_lost(pool, conn, factory):
    head = await factory.user("head", role="head")
    a = await factory.contact("Anna")
    b = await factory.contact("Anna 2")
    for i in range(20):
        await insert_call(conn, f"c{i}", T0 + timedelta(minutes=i), contact_id=(a.id, b.id)[i % 2])

    async def merge(kept: int, other: int):
        async with pool.acquire() as c:
            try:
                return await merging.merge_parties(c, head, "contact", kept, other)
            except (errors.Conflict, errors.NotFound) as exc:
                return exc

    results = await asyncio.gather(merge(a.id, b.id), merge(b.id, a.id))
    merged = [r for r in results if isinstance(r, merging.Merge)]
    assert len(merged) == 1 and any(isinstance(r, errors.Conflict) for r in results), results
    survivor = merged[0].kept_id
    assert await conn.fetchval("SELECT count(*) FROM calls WHERE contact_id = $1", survivor) == 20
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 1


async def test_after_a_merge_the_routing_index_sends_the_moved_numbers_to_the_kept_contacts_manager(pool, conn,
                                                                                                    factory):
    from crm.routing_index import IndexKeeper, RoutingIndex
    from tests.crm.test_routing_index import eventually

    head = await factory.user("head", role="head")
    manager1 = await factory.user("manager1", extension="101")
    await factory.user("manager2", extension="102")
    kept = await factory.contact("Anna", manager=manager1, phones=["+7 916 000-01-01"])
    index = RoutingIndex(10)
    keeper = IndexKeeper(index, pool)
    await keeper.start()
    try:
        await eventually(lambda: index.ready)
        other = await factory.contact("Anna (old)", phones=["+7 916 000-02-02"])
        await eventually(lambda: index.find("79160000202", "RU") is not None)
        assert index.find("79160000202", "RU").contact_id == other.id
        await merging.merge_parties(conn, head, "contact", kept.id, other.id)
        await eventually(lambda: index.find("79160000202", "RU").contact_id == kept.id)
        moved = index.find("79160000202", "RU")
        assert (moved.manager_id, moved.manager_extension) == (manager1.id, "101")
        assert index.find("79160000202", "RU") == await find_caller(conn, "79160000202", "RU")
    finally:
        await keeper.stop()


async def test_a_card_reads_its_own_rows_through_the_indexes_never_a_whole_table(conn):
    # The summary triggers would add 100,000 upserts (80 s) that this plan test does not read.
    await conn.execute("""
        ALTER TABLE calls DISABLE TRIGGER USER;
        INSERT INTO contacts (name) SELECT 'c' || g FROM generate_series(1, 20000) g;
        INSERT INTO calls (pbx, linkedid, direction, caller, callee, started_at, ended_at, outcome, ring_seconds,
                           talk_seconds, contact_id)
        SELECT 'lab', g::text, 'inbound', '+7916', '101', now() - g * interval '1 minute',
               now() - g * interval '1 minute', 'answered', 1, 1, 1 + g % 20000 FROM generate_series(1, 100000) g;
        INSERT INTO mail_messages (raw, status, subject, contact_id, received_at)
        SELECT '\\x00', 'parsed', 's', 1 + g % 20000, now() - g * interval '1 minute' FROM generate_series(1, 40000) g;
        ALTER TABLE calls ENABLE TRIGGER USER;
        ANALYZE calls; ANALYZE mail_messages; ANALYZE contacts;
    """)
    for scope in ((([7], None, None, None)), ([], 7, None, None), ([], None, 7, None), ([], None, 7, 7)):
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + timeline.TIMELINE, *scope, *timeline._START, 51))
        assert "Seq Scan on calls" not in plan and "Seq Scan on mail_messages" not in plan, plan
        assert "calls_started_id_idx" not in plan and "mail_messages_received" not in plan, plan
    events = await timeline.list_timeline(conn, User(1, "x", "head", None, "X", True), Scope(contact_ids=(7,)))
    # Calls and mail of the same minute: the order is (time, kind, id) descending, so "mail" before "call".
    assert [e.kind for e in events] == ["mail", "call", "mail", "call", "call", "call", "call"]
