"""Website forms straight in: the same intake as mail (raw kept, lead rules, history), CORS, honeypot, rate limit."""

from dataclasses import replace

import pytest

from crm.settings import load_settings
from web.app import create_app


@pytest.fixture
async def site(settings, pool, aiohttp_client):
    forms = (("site", "https://zavod.example"), ("landing", "*"))
    return await aiohttp_client(create_app(replace(settings, forms=forms), pool))


async def test_a_form_from_a_stranger_becomes_a_lead_with_its_message(site, conn):
    resp = await site.post("/api/forms/site", data={"fio": "Ольга Смирнова", "tel": "8 (916) 555-01-23",
                                                    "comment": "Нужен насос КМ 80-50", "website": ""},
                           headers={"Origin": "https://zavod.example"})
    assert resp.status == 202, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == "https://zavod.example"
    lead = await conn.fetchrow("SELECT source, name, phone_e164, first_message FROM leads")
    assert tuple(lead) == ("web_form", "Ольга Смирнова", "+79165550123", "Нужен насос КМ 80-50")
    stored = await conn.fetchrow("SELECT kind, envelope_from FROM mail_messages")
    assert tuple(stored) == ("web_form", "form:site")


async def test_a_known_client_goes_to_their_history_and_json_works(site, conn, factory):
    manager = await factory.user("manager1", extension="101")
    contact = await factory.contact("Иван Петров", manager=manager, phones=["+7 916 555-01-24"])
    resp = await site.post("/api/forms/landing", json={"name": "Иван", "phone": "+79165550124",
                                                       "message": "Счёт, пожалуйста"})
    assert resp.status == 202
    assert await conn.fetchval("SELECT count(*) FROM leads") == 0
    assert await conn.fetchval("SELECT contact_id FROM mail_messages") == contact.id
    assert await conn.fetchval("SELECT assignee_id FROM tasks WHERE kind = 'reply'") == manager.id


async def test_robots_and_floods_and_bad_input(site, conn):
    robot = await site.post("/api/forms/site", data={"name": "x", "phone": "+79165550125", "website": "spam.biz"})
    assert robot.status == 202 and await conn.fetchval("SELECT count(*) FROM mail_messages") == 0
    assert (await site.post("/api/forms/nope", data={"phone": "+79165550125"})).status == 404
    assert (await site.post("/api/forms/site", data={"name": "no way to answer"})).status == 422
    assert (await site.post("/api/forms/site", data=b"{broken", headers={"Content-Type": "application/json"})
            ).status == 400
    preflight = await site.options("/api/forms/site", headers={"Origin": "https://zavod.example"})
    assert preflight.status == 204 and preflight.headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    other = await site.post("/api/forms/site", data={"phone": "+79165550126"}, headers={"Origin": "https://evil"})
    assert "Access-Control-Allow-Origin" not in other.headers
    statuses = [(await site.post("/api/forms/landing", data={"phone": f"+7916555{i:04d}"})).status
                for i in range(12)]
    assert statuses.count(429) >= 1 and statuses[0] == 202


def test_form_keys_come_from_the_settings():
    settings = load_settings(env={"CALLBOARD_FORMS": "site=https://zavod.example/,landing=*"})
    assert settings.forms == (("site", "https://zavod.example"), ("landing", "*"))
    with pytest.raises(ValueError):
        load_settings(env={"CALLBOARD_FORMS": "bad key=*"})


async def test_a_finished_chat_is_filed_as_a_chat_lead_with_its_conversation(site, conn):
    finished = {"event_name": "chat_finished", "visitor": {"name": "Пётр", "phone": "+7 916 555-01-27"},
                "chat": {"messages": [{"type": "visitor", "message": "Есть ли насосы в наличии?"},
                                      {"type": "agent", "message": "Да, 12 штук"}]}}
    resp = await site.post("/api/chats/site", json=finished)
    assert resp.status == 200 and (await resp.json())["filed"] is True
    lead = await conn.fetchrow("SELECT source, name, phone_e164, first_message FROM leads")
    assert (lead["source"], lead["name"], lead["phone_e164"]) == ("chat", "Пётр", "+79165550127")
    assert "Есть ли насосы в наличии?" in lead["first_message"] and "Да, 12 штук" in lead["first_message"]
    other = await site.post("/api/chats/site", json={"event_name": "chat_accepted"})
    assert (await other.json())["filed"] is False
    assert (await site.post("/api/chats/nope", json=finished)).status == 404
    assert (await site.post("/api/chats/site", data=b"{x", headers={"Content-Type": "application/json"})
            ).status == 400
