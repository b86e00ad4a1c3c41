"""Deals listed stage by stage (issue 18): the same order and pages as sorting every deal, the home page's
stuck deals and count read from the index without loading every deal."""

from datetime import UTC, datetime, timedelta

from crm import contacts, deals, paging

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
# The order the list had when it sorted every visible deal: the reference the stage-by-stage query must keep.
REFERENCE = """
SELECT d.id FROM deals d JOIN deal_stages s ON s.code = d.stage
WHERE ($1::bigint IS NULL OR d.manager_id = $1) AND d.status = $2
ORDER BY s.position, d.stage_changed_at, d.id
"""


async def seed(conn, factory):
    head = await factory.user("head", role="head")
    managers = [await factory.user("manager1", extension="101"), await factory.user("manager2", extension="102")]
    stages = [r["code"] for r in await conn.fetch("SELECT code FROM deal_stages ORDER BY position")]
    for n in range(23):
        deal = await deals.create_deal(conn, head, f"Deal {n}", NOW, manager_id=managers[n % 2].id)
        # Several deals share a moment in a stage: the id breaks the tie at a page boundary.
        await conn.execute("UPDATE deals SET stage = $2, stage_changed_at = $3, status = $4 WHERE id = $1",
                           deal.id, stages[n % len(stages)], NOW - timedelta(days=(n * 7) % 40),
                           "won" if n % 9 == 8 else "in_progress")
    return head, managers


async def test_pages_follow_the_stage_order_at_every_boundary(conn, factory):
    head, managers = await seed(conn, factory)
    for viewer in (head, *managers):
        scope = None if viewer.sees_everything else viewer.id
        for status in ("in_progress", "won"):
            expected = [r["id"] for r in await conn.fetch(REFERENCE, scope, status)]
            assert expected, (viewer.login, status)
            assert [d.id for d in await deals.list_deals(conn, viewer, status)] == expected
            for limit in (1, 2, 3, 5):
                walked, after = [], None
                while True:
                    page = await deals.list_deals_page(conn, viewer, status, limit, after)
                    walked += [d.id for d in page.items]
                    if page.next is None:
                        break
                    after = page.next
                assert walked == expected, (viewer.login, status, limit)


async def test_home_reads_the_stuck_deals_and_the_count_from_the_index(conn, factory):
    head, managers = await seed(conn, factory)
    for viewer in (head, *managers):
        every = await deals.list_deals(conn, viewer, "in_progress")
        stuck = [d.id for d in every if d.is_stuck(NOW)]
        assert 0 < len(stuck) < len(every), viewer.login  # the seed has both, so the filter is tested
        assert [d.id for d in await deals.list_stuck_deals(conn, viewer, NOW, limit=100)] == stuck
        assert [d.id for d in await deals.list_stuck_deals(conn, viewer, NOW, limit=3)] == stuck[:3]
        assert await deals.count_deals(conn, viewer) == len(every)


# The search as it was before each branch kept only a page's worth: every match, sorted (names that start with
# the text first since issue 18's common-surname fix).
REFERENCE_SEARCH = """
SELECT p.id FROM contacts p
WHERE ($2::bigint IS NULL OR p.manager_id = $2 OR p.manager_id IS NULL)
  AND (lower(p.name) LIKE '%' || lower($1) || '%'
       OR p.id IN (SELECT contact_id FROM emails WHERE email LIKE '%' || lower($1) || '%')
       OR p.id IN (SELECT contact_id FROM phones WHERE reverse(e164) LIKE $3 || '%'))
ORDER BY NOT starts_with(lower(p.name), lower($1)), lower(p.name), p.id
"""


async def test_search_pages_take_each_branch_in_order_at_every_boundary(conn, factory):
    """Matches by name, by e-mail and by last digits interleave in name order; a page boundary inside them
    loses and repeats nothing, for the head and for a manager."""
    head = await factory.user("head", role="head")
    manager = await factory.user("manager1", extension="101")
    other = await factory.user("manager2", extension="102")
    for n in range(14):
        owner = (manager, other, None)[n % 3]
        name = ("Петров", "Анна", "Ельцова", "Ярослав")[n % 4] + f" {n}"
        await factory.contact(name, owner, phones=[f"+7916555{n:04d}" if n % 5 == 0 else f"+7495{n:07d}"],
                              emails=[f"petrov{n}@mail.ru" if n % 4 == 1 else f"x{n}@mail.ru"])
    for viewer in (head, manager):
        scope = None if viewer.sees_everything else viewer.id
        expected = [r["id"] for r in await conn.fetch(REFERENCE_SEARCH, "петров", scope, "XXXX")]
        assert len(expected) >= 3, viewer.login  # names and e-mails both match
        for limit in (1, 2, 3, 5, 50):
            walked, after = [], None
            while True:
                found = await contacts.list_parties(conn, viewer, "contact", "петров", "RU", limit=limit + 1,
                                                    after=after)
                walked += [p.id for p in found[:limit]]
                if len(found) <= limit:
                    break
                after = paging.encode(contacts.party_key(found[limit - 1]))
            assert walked == expected, (viewer.login, limit)
        by_digits = [r["id"] for r in await conn.fetch(REFERENCE_SEARCH, "0005", scope, "5000")]
        assert len(by_digits) == 1  # +7 916 555-00-05, nobody's
        assert [p.id for p in await contacts.list_parties(conn, viewer, "contact", "0005", "RU")] == by_digits
