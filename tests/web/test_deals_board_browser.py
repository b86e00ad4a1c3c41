"""The deals board in a real browser: a manager makes a deal from the call popup, drags it to the next stage and
sees the columns' counts and sums follow; a move the stage rules refuse goes back with the reason; the move
stays after a reload; on a phone the card's stage list does the same without dragging."""

from playwright.async_api import expect

from tests.web.test_browser import browser, logged_in_page  # noqa: F401 (the fixture)


def column(page, stage: str):
    return page.locator(f'.stage-col[data-stage="{stage}"]')


async def test_a_manager_makes_a_deal_from_the_popup_and_drags_it_across_the_board(live, browser, conn):  # noqa: F811
    base_url, sim, _ = live
    page = await logged_in_page(browser, base_url, "manager1")
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))

    sim.place_call("74951234567", "101", 1.0, 2.0)
    popup = page.locator(".popup").first
    await expect(popup).to_contain_text("Demo Client", timeout=10000)
    await popup.locator("a", has_text="New deal").click()
    await expect(page.locator("h1")).to_have_text("New deal")
    # The caller is filled in: the contact and their company.
    await expect(page.locator("input[data-lookup=contacts]")).to_have_value("Demo Client")
    contact_id = await conn.fetchval("SELECT id FROM contacts WHERE name = 'Demo Client'")
    await expect(page.locator("input[name=contact_id]")).to_have_value(str(contact_id))
    await page.fill("input[name=title]", "Pump K50 for the boiler room")
    await page.fill("input[name=amount]", "120000")
    await page.click("#new-deal-form button")
    await expect(page.locator("h1")).to_have_text("Pump K50 for the boiler room")
    deal_id = await conn.fetchval("SELECT id FROM deals WHERE title = 'Pump K50 for the boiler room'")
    assert await conn.fetchval("SELECT contact_id FROM deals WHERE id = $1", deal_id) == contact_id

    await page.goto(f"{base_url}/deals")
    selection, offer = column(page, "selection"), column(page, "offer")
    before = {"selection": await selection.locator(".col-count").inner_text(),
              "offer": await offer.locator(".col-count").inner_text()}
    selection_sum = await selection.locator(".col-sum").inner_text()
    card = page.locator(f'.deal-card[data-deal="{deal_id}"]')
    await expect(selection.locator(f'[data-deal="{deal_id}"]')).to_have_count(1)

    await card.drag_to(offer)
    await expect(offer.locator(f'[data-deal="{deal_id}"]')).to_have_count(1)
    await expect(offer.locator(".col-count")).to_have_text(str(int(before["offer"]) + 1))
    await expect(selection.locator(".col-count")).to_have_text(str(int(before["selection"]) - 1))
    await expect(offer.locator(".col-sum")).to_contain_text("120,000.00")
    assert await selection.locator(".col-sum").inner_text() != selection_sum

    # Reservation needs items: the card goes back and the toast says why.
    await page.locator(f'.deal-card[data-deal="{deal_id}"]').drag_to(column(page, "reservation"))
    await expect(page.locator("#toast")).to_have_text("This stage needs items in the deal.")
    await expect(offer.locator(f'[data-deal="{deal_id}"]')).to_have_count(1)

    await page.reload()
    await expect(column(page, "offer").locator(f'[data-deal="{deal_id}"]')).to_have_count(1)
    assert await conn.fetchval("SELECT stage FROM deals WHERE id = $1", deal_id) == "offer"
    assert problems == []


async def test_on_a_phone_the_cards_stage_list_moves_it(live, browser, conn):  # noqa: F811
    base_url, _, _ = live
    page = await logged_in_page(browser, base_url, "manager1", viewport={"width": 390, "height": 844})
    await page.goto(f"{base_url}/deals")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 392
    deal_id = await conn.fetchval("SELECT id FROM deals WHERE stage = 'selection' AND manager_id = "
                                  "(SELECT id FROM users WHERE login = 'manager1') LIMIT 1")
    await page.locator(f'.deal-card[data-deal="{deal_id}"] select.move-to').select_option("offer")
    await expect(page.locator("#board")).to_have_attribute("data-moves", "1")  # answered, and the board read again
    await expect(column(page, "offer").locator(f'[data-deal="{deal_id}"]')).to_have_count(1)
    assert await conn.fetchval("SELECT stage FROM deals WHERE id = $1", deal_id) == "offer"
