"""Keyset pages, indexed search and the manager's calls through call_viewers (issue 18)."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from crm import calls as calls_db
from crm import contacts, paging
from crm.users import User
from tests.conftest import login
from web.app import create_app

# The visibility rule as it was before call_viewers: the reference the new query must agree with.
REFERENCE_MY_CALLS = """
SELECT c.id FROM calls c LEFT JOIN contacts ct ON ct.id = c.contact_id LEFT JOIN companies co ON co.id = c.company_id
WHERE c.user_id = $1 OR ct.manager_id = $1 OR co.manager_id = $1
ORDER BY c.started_at DESC, c.id DESC
"""
INSERT_CALL = """
INSERT INTO calls (pbx, linkedid, direction, caller, callee, started_at, ended_at, outcome, ring_seconds,
                   talk_seconds, user_id, contact_id, company_id)
VALUES ('lab', $1, 'inbound', '+74950000000', '100', $2, $2, 'answered', 1, 2, $3, $4, $5)
"""


@pytest.fixture
async def client(settings, pool, aiohttp_client):
    return await aiohttp_client(create_app(replace(settings, pbxes=()), pool))


async def walk(client, url: str, limit: int) -> list[list[int]]:
    """Follow the next links; the ids of each page."""
    pages = []
    sep = "&" if "?" in url else "?"
    next_url = f"{url}{sep}limit={limit}"
    while next_url:
        resp = await client.get(next_url)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        pages.append([item["id"] for item in body["items"]])
        next_url = body["next_url"]
        assert len(pages) < 50
    return pages


async def test_contact_pages_cover_the_list_once_at_every_boundary(client, factory):
    await factory.user("head", role="head")
    # Equal names: the id breaks the tie, so a page boundary inside them loses and repeats nothing.
    made = [await factory.contact(name) for name in ("Бета", "альфа", "Альфа", "Гамма", "бета", "Дельта")]
    await login(client, "head")
    whole = [p["id"] for p in (await (await client.get("/api/contacts?limit=500")).json())["items"]]
    assert sorted(whole) == sorted(p.id for p in made)
    for limit in (1, 2, 3, 5, 6, 7):
        pages = await walk(client, "/api/contacts", limit)
        assert [i for page in pages for i in page] == whole, limit
        assert all(len(page) == limit for page in pages[:-1]) and 0 < len(pages[-1]) <= limit
    # A full last page has no next link (no empty page to click through to).
    assert (await (await client.get("/api/contacts?limit=6")).json())["next"] is None


async def test_search_by_fragment_phone_in_any_format_and_last_digits(client, factory):
    await factory.user("head", role="head")
    ivanov = await factory.contact("Иван Петрович Сидоров", phones=["+7 916 123-45-67"], emails=["ivan@zavod.ru"])
    await factory.contact("Мария Кузнецова", phones=["+7 495 765-43-21"])
    await factory.company("ООО Сидоров и партнёры", phones=["+7 812 555-00-11"])
    await login(client, "head")
    cases = {"сидор": [ivanov.id], "СИДОР": [ivanov.id], "zavod": [ivanov.id], "+79161234567": [ivanov.id],
             "8 (916) 123-45-67": [ivanov.id], "916 123 45 67": [ivanov.id], "4567": [ivanov.id],
             "45-67": [ivanov.id], "нет такого": [], "0011": []}
    for query, expected in cases.items():
        resp = await client.get("/api/contacts", params={"q": query})
        assert resp.status == 200, await resp.text()
        assert [p["id"] for p in (await resp.json())["items"]] == expected, query
    companies = await (await client.get("/api/companies", params={"q": "сидор"})).json()
    assert [p["name"] for p in companies["items"]] == ["ООО Сидоров и партнёры"]
    page = await client.get("/contacts", params={"q": "45-67"})
    assert "Иван Петрович Сидоров" in await page.text()


async def test_a_manager_sees_the_same_calls_as_before_through_every_change(client, factory, conn):
    m1, m2 = await factory.user("mgr1", extension="101"), await factory.user("mgr2", extension="102")
    await factory.user("head", role="head")
    company = await factory.company("Завод", manager=m2)
    of_m1 = await factory.contact("Клиент m1", manager=m1, company_id=company.id)
    nobody = await factory.contact("Ничей")
    start = datetime(2024, 5, 1, 9, tzinfo=UTC)
    owners = [(m1.id, None, None), (None, of_m1.id, company.id), (m2.id, of_m1.id, None), (None, nobody.id, None),
              (None, None, company.id), (m2.id, None, None), (None, None, None)]
    for n in range(21):
        user_id, contact_id, company_id = owners[n % len(owners)]
        # Some calls share a start time: the id orders them.
        await conn.execute(INSERT_CALL, f"c{n}", start + timedelta(minutes=n // 2), user_id, contact_id, company_id)

    async def agree() -> None:
        for user in (m1, m2):
            expected = [r["id"] for r in await conn.fetch(REFERENCE_MY_CALLS, user.id)]
            assert [c.id for c in await calls_db.list_calls(conn, user, limit=500)] == expected, user.login
            paged, after = [], None
            while True:
                found = await calls_db.list_calls(conn, user, limit=4, after=after)
                paged += [c.id for c in found]
                if len(found) < 4:
                    break
                after = paging.encode(calls_db.call_key(found[-1]))
            assert paged == expected, user.login
        head = User(0, "head", "head", None, "Head", True)
        everything = await conn.fetch("SELECT id FROM calls ORDER BY started_at DESC, id DESC")
        assert [c.id for c in await calls_db.list_calls(conn, head, limit=500)] == [r["id"] for r in everything]

    await agree()
    admin = User(0, "system", "admin", None, "system", True)
    # Reassigning a contact or a company moves its calls; so does a call's own edit.
    party = await contacts.get_party(conn, admin, "contact", of_m1.id)
    await contacts.update_party(conn, admin, "contact", party.id, contacts.PartyInput(
        name=party.name, manager_id=m2.id, company_id=company.id), "RU")
    await agree()
    await conn.execute("UPDATE companies SET manager_id = $1 WHERE id = $2", m1.id, company.id)
    await agree()
    await conn.execute("UPDATE calls SET user_id = $1 WHERE linkedid = 'c5'", m1.id)
    await agree()
    await conn.execute("UPDATE calls SET contact_id = $1 WHERE linkedid = 'c3'", of_m1.id)
    await agree()

    await login(client, "mgr1")
    pages = await walk(client, "/api/calls", 3)
    expected = [r["id"] for r in await conn.fetch(REFERENCE_MY_CALLS, m1.id)]
    assert [i for page in pages for i in page] == expected
    html = await (await client.get("/calls?limit=3")).text()
    assert 'rel="next"' in html


async def test_bad_cursors_and_limits_answer_422(client, factory):
    await factory.user("head", role="head")
    await login(client, "head")
    for url in ("/api/contacts?after=xyz", "/api/calls?after=W10", "/api/calls?after=" + "A" * 600,
                "/api/leads?after=WyJhIiwxXQ", "/api/missed?after=!!", "/api/deals?after=WzEsMl0",
                "/api/tasks?after=bnVsbA", "/api/calls?limit=ten", "/calls?after=WyJ4IiwxXQ"):
        resp = await client.get(url)
        assert resp.status == 422, (url, resp.status, await resp.text())


async def test_every_list_api_offers_a_next_link(client, factory, conn):
    await factory.user("head", role="head")
    await login(client, "head")
    for url in ("/api/calls", "/api/leads", "/api/missed", "/api/deals", "/api/tasks", "/api/contacts",
                "/api/companies"):
        resp = await client.get(url)
        assert resp.status == 200, (url, await resp.text())
        body = await resp.json()
        assert (body["items"], body["next"], body["next_url"]) == ([], None, None), url


async def test_search_pages_follow_their_next_links_best_matches_first(client, factory):
    await factory.user("head", role="head")
    starting = [await factory.contact(f"Петров {n}") for n in range(5)]
    inside = [await factory.contact(name) for name in ("Анна Петрова", "Яков Петров")]
    await factory.contact("Иван Сидоров")
    await login(client, "head")
    expected = [p.id for p in starting + inside]
    for limit in (1, 2, 4, 5, 6):
        pages = await walk(client, "/api/contacts?q=петров", limit)
        assert [i for page in pages for i in page] == expected, limit
    page = await (await client.get("/contacts", params={"q": "петров", "limit": "5"})).text()
    assert "Петров 4" in page and "Анна Петрова" not in page
    start = page.index('rel="next" href="') + len('rel="next" href="')
    link = page[start:page.index('"', start)].replace("&amp;", "&")
    assert "q=" in link and "after=" in link
    following = await (await client.get(link)).text()
    assert "Анна Петрова" in following and "Яков Петров" in following and "Петров 4" not in following
