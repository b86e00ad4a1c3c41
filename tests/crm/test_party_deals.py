"""A contact's or a company's card lists its own deals, not every deal the viewer may see."""

from datetime import UTC, datetime

from crm import deals

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


async def test_a_company_card_lists_only_that_companys_deals(conn, factory):
    head = await factory.user("head", role="head")
    ours = await factory.company("OOO Romashka", manager=head)
    other = await factory.company("AO Vasilek", manager=head)
    anna = await factory.contact("Anna", manager=head, company_id=ours.id)
    mine = await deals.create_deal(conn, head, "Pumps", NOW, company_id=ours.id)
    hers = await deals.create_deal(conn, head, "Valves", NOW, contact_id=anna.id)
    await deals.create_deal(conn, head, "Not theirs", NOW, company_id=other.id)
    assert hers.company_id == ours.id  # a deal with the company's contact is the company's deal too
    assert {d.id for d in await deals.list_deals(conn, head, None, None, ours.id)} == {mine.id, hers.id}
    assert [d.id for d in await deals.list_deals(conn, head, None, anna.id, None)] == [hers.id]
    assert len(await deals.list_deals(conn, head)) == 3
