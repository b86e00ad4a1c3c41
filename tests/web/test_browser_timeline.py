"""Issue 15 in a real browser: a manager writes a call result from the popup, meets a duplicate when creating a
contact, merges it into the card and sees one timeline with the calls of both."""

from playwright.async_api import expect

from tests.web.test_browser import browser, logged_in_page  # noqa: F401  (the fixture)


async def test_a_manager_writes_a_call_result_merges_a_duplicate_and_sees_one_timeline(live, browser, conn):  # noqa: F811
    base_url, sim, _ = live
    page = await logged_in_page(browser, base_url, "manager1")
    page.on("dialog", lambda dialog: dialog.accept())  # "Merge …? This cannot be undone."

    # The popup of a finished call offers "Result": reached, with a note.
    sim.place_call("74951234567", "101", 1.0, 1.0)
    popup = page.locator(".popup").first
    await expect(popup).to_contain_text("Demo Client", timeout=10000)
    await expect(popup.locator("a.popup-result")).to_have_count(1, timeout=15000)
    await popup.locator("a.popup-result").click()
    await page.check("input[name=result][value=reached]")
    await page.fill("textarea[name=note]", "Wants two pumps")
    await page.click("#call-result-form button[type=submit]")
    await expect(page.locator("#result-saved")).to_be_visible()
    await expect(page.locator("#call-results")).to_contain_text("Wants two pumps")

    # A new contact with Demo Client's phone: warned, with a link to the existing card; saved anyway.
    await page.goto(f"{base_url}/contacts/new")
    await page.fill("input[name=name]", "Demo Client (mobile)")
    await page.locator("input[name=phone]").nth(0).fill("+7 495 123-45-67")
    await page.locator("input[name=phone]").nth(1).fill("+7 916 777-88-99")
    await page.click("form.form button[type=submit]")
    warning = page.locator("#duplicate-warning")
    await expect(warning).to_be_visible()
    await expect(page.locator("#duplicate-link")).to_contain_text("Demo Client")
    await page.check("input[name=allow_duplicate]")
    await page.click("form.form button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Demo Client (mobile)")

    # The duplicate's own number calls; that call is in the duplicate's history only.
    sim.place_call("79167778899", "101", 1.0, 1.0)
    await page.wait_for_timeout(200)
    for _ in range(100):
        if await conn.fetchval("SELECT count(*) FROM calls WHERE caller = '+79167778899'"):
            break
        await page.wait_for_timeout(100)
    main_id = await conn.fetchval("SELECT id FROM contacts WHERE name = 'Demo Client'")

    # Merge with…: find the duplicate, merge it in; the card now has one timeline with both calls and the result.
    await page.goto(f"{base_url}/contacts/{main_id}")
    await page.click("#merge-with")
    await page.fill("#merge-search input[name=q]", "mobile")
    await page.click("#merge-search button")
    row = page.locator("#merge-candidates tr", has_text="Demo Client (mobile)")
    await row.locator("button").click()
    await expect(page.locator("h1")).to_have_text("Demo Client")
    calls = page.locator("#timeline-events li.event-call")
    await expect(calls).to_have_count(2)
    await expect(page.locator("#timeline-events")).to_contain_text("+7 916 777-88-99")
    await expect(page.locator("#timeline-events")).to_contain_text("Wants two pumps")
    assert await conn.fetchval("SELECT count(*) FROM contacts WHERE name = 'Demo Client (mobile)'") == 0
    assert await conn.fetchval("SELECT merged_name FROM party_merges") == "Demo Client (mobile)"
