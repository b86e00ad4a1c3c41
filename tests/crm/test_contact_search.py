"""The search box's order (issue 18): names that start with the text first, then every other match, each in
name order; pages through the cursor give every match once, for the head and for a manager."""

import pytest

from crm import contacts, paging
from crm.errors import ValidationError

# The documented order, computed over every visible match (the query under test never reads them all).
REFERENCE = """
SELECT p.id FROM contacts p
WHERE ($2::bigint IS NULL OR p.manager_id = $2 OR p.manager_id IS NULL)
  AND (lower(p.name) LIKE '%' || lower($1) || '%'
       OR p.id IN (SELECT contact_id FROM emails WHERE email LIKE '%' || lower($1) || '%'))
ORDER BY NOT starts_with(lower(p.name), lower($1)), lower(p.name), p.id
"""


async def walk(conn, viewer, query: str, limit: int) -> list[int]:
    """Every page of a search through the `after` cursor, as the next links do."""
    walked, after = [], None
    while True:
        found = await contacts.list_parties(conn, viewer, "contact", query, "RU", limit=limit + 1, after=after)
        walked += [p.id for p in found[:limit]]
        if len(found) <= limit:
            return walked
        after = paging.encode(contacts.party_key(found[limit - 1]))
        assert len(walked) < 500


async def seed(conn, factory):
    head = await factory.user("head", role="head")
    manager = await factory.user("manager1", extension="101")
    other = await factory.user("manager2", extension="102")
    names = [f"Петров {first} {n}" for n, first in enumerate(["Иван", "Анна", "Олег"] * 4)]
    names += ["Петрова Ольга", "петровский Пётр", "Анна Петрова", "Сергей Петров", "Водкин-Петров Кузьма",
              "Ипетров Яков", "Аполлон Белкин", "Яна Петровых", "Петр Иванов", "Ольга Сидорова"]
    for n, name in enumerate(names):
        await factory.contact(name, (manager, other, None)[n % 3],
                              emails=["петров.босс@завод.рф"] if name == "Аполлон Белкин" else None)
    return head, manager, other


async def test_names_starting_with_the_text_come_first_and_every_page_joins_up(conn, factory):
    head, manager, _ = await seed(conn, factory)
    for viewer in (head, manager):
        scope = None if viewer.sees_everything else viewer.id
        expected = [r["id"] for r in await conn.fetch(REFERENCE, "петров", scope)]
        names = {p.id: p.name for p in await contacts.list_parties(conn, viewer, "contact", "петров", "RU",
                                                                  limit=500)}
        starting = [i for i in expected if names[i].lower().startswith("петров")]
        assert expected[:len(starting)] == starting and len(starting) < len(expected), viewer.login
        for limit in (1, 2, 3, 4, 7, 50):
            assert await walk(conn, viewer, "петров", limit) == expected, (viewer.login, limit)
            assert await walk(conn, viewer, "ПЕТРОВ", limit) == expected, (viewer.login, limit)


async def test_the_head_gets_the_names_first_then_the_other_matches(conn, factory):
    head, _, _ = await seed(conn, factory)
    found = [p.name for p in await contacts.list_parties(conn, head, "contact", "Петров", "RU", limit=500)]
    assert found == sorted([f"Петров {first} {n}" for n, first in enumerate(["Иван", "Анна", "Олег"] * 4)],
                           key=lambda name: (name.lower(), name)) + [
        "Петрова Ольга", "петровский Пётр",
        "Анна Петрова", "Аполлон Белкин", "Водкин-Петров Кузьма", "Ипетров Яков", "Сергей Петров", "Яна Петровых"]


async def test_a_manager_finds_only_their_own_and_unassigned(conn, factory):
    head, manager, other = await seed(conn, factory)
    every = await contacts.list_parties(conn, head, "contact", "петров", "RU", limit=500)
    theirs = [p for p in await contacts.list_parties(conn, manager, "contact", "петров", "RU", limit=500)]
    assert {p.id for p in theirs} == {p.id for p in every if p.manager_id in (manager.id, None)}
    assert any(p.manager_id == other.id for p in every)


async def test_offset_pages_of_a_search_follow_the_same_order(conn, factory):
    head, _, _ = await seed(conn, factory)
    every = [p.id for p in await contacts.list_parties(conn, head, "contact", "петров", "RU", limit=500)]
    for offset in range(len(every) + 1):
        page = await contacts.list_parties(conn, head, "contact", "петров", "RU", limit=3, offset=offset)
        assert [p.id for p in page] == every[offset:offset + 3], offset


async def test_a_cursor_of_the_plain_list_is_refused_by_a_search(conn, factory):
    head, _, _ = await seed(conn, factory)
    plain = await contacts.list_parties(conn, head, "contact", None, "RU", limit=2)
    with pytest.raises(ValidationError):
        await contacts.list_parties(conn, head, "contact", "петров", "RU",
                                    after=paging.encode(contacts.party_key(plain[0])))
    with pytest.raises(ValidationError):
        await contacts.list_parties(conn, head, "contact", "петров", "RU", after=paging.encode([7, "петров", 1]))
