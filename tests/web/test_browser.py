"""The pages in a real browser (Playwright driving Debian's chromium): screen-pops, isolation, recordings."""

import shutil
import wave
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from tests.web.live import CHROMIUM, require_chromium

LAUNCH_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
               "--no-first-run", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


@pytest.fixture
async def browser():
    require_chromium()
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield chromium
        await chromium.close()


async def logged_in_page(browser, base_url: str, login: str, **context_options):
    context = await browser.new_context(**context_options)
    page = await context.new_page()
    await page.goto(f"{base_url}/login")
    await page.fill("input[name=login]", login)
    await page.fill("input[name=password]", login)
    await page.click("button[type=submit]")
    await page.goto(f"{base_url}/calls")
    await expect(page.locator("#live")).to_have_text("live", timeout=10000)
    return page


async def test_screen_pop_in_the_browser_follows_the_call(live, browser, settings, conn):
    base_url, sim, _ = live
    manager1 = await logged_in_page(browser, base_url, "manager1")
    manager2 = await logged_in_page(browser, base_url, "manager2")

    sim.place_call("74951234567", "101", 1.5, 1.0)
    popup = manager1.locator(".popup").first
    await expect(popup).to_contain_text("Demo Client", timeout=10000)
    await expect(popup).to_contain_text("+7 495 123-45-67")
    await expect(popup).to_contain_text("Demo Industries LLC")
    await expect(popup.locator(".popup-state")).to_have_text("Answered by 101", timeout=10000)
    await expect(popup.locator(".popup-state")).to_contain_text("Call ended", timeout=10000)
    assert await manager2.locator(".popup").count() == 0

    # A caller name full of markup stays text: no element, no script.
    sim.place_call("79165550001", "101", None, caller_name='<img src=x onerror="window.__xss=1">')
    hostile = manager1.locator(".popup", has_text="+7 916 555-00-01")
    await expect(hostile).to_contain_text('<img src=x onerror="window.__xss=1">', timeout=10000)
    await expect(hostile).to_contain_text("New lead")
    assert await manager1.locator(".popup img").count() == 0
    assert await manager1.evaluate("window.__xss === undefined")
    assert await manager2.locator(".popup").count() == 0

    # The finished call's recording plays from the contact card, seekable (206 Partial Content).
    recording = await conn.fetchval("SELECT recording FROM calls WHERE caller = '+74951234567'")
    settings.recordings_path.mkdir(parents=True, exist_ok=True)
    with wave.open(str(settings.recordings_path / Path(recording).name), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x10" * 16000)
    contact_id = await conn.fetchval("SELECT id FROM contacts WHERE name = 'Demo Client'")
    await manager1.goto(f"{base_url}/contacts/{contact_id}")
    async with manager1.expect_response(lambda r: "/recordings/" in r.url and r.status == 206) as response:
        await manager1.evaluate("document.querySelector('audio').play().catch(() => null)")
    assert (await response.value).status == 206
    # A recording whose file has gone says so when played, instead of a dead player.
    (settings.recordings_path / Path(recording).name).unlink()
    fresh = await logged_in_page(browser, base_url, "manager1")  # a new browser context: nothing cached
    await fresh.goto(f"{base_url}/contacts/{contact_id}")
    await fresh.evaluate("document.querySelector('audio').play().catch(() => null)")
    await expect(fresh.locator(".recording-missing")).to_have_text("The recording file is missing", timeout=10000)
    # manager2 may not open manager1's client's card.
    resp = await manager2.goto(f"{base_url}/contacts/{contact_id}")
    assert resp.status == 404


async def test_a_newcomer_presses_simulate_incoming_call_and_sees_the_popup(demo_live, browser):
    manager1 = await logged_in_page(browser, demo_live, "manager1")
    await manager1.click("#demo-call button")
    await expect(manager1.locator(".popup").first).to_contain_text("Demo Client", timeout=10000)


@pytest.fixture
async def demo_live(settings, pool, conn, aiohttp_server):
    from dataclasses import replace

    from crm.demo import seed_demo
    from web.app import create_app

    await seed_demo(conn, "RU")
    server = await aiohttp_server(create_app(replace(settings, demo=True), pool))
    return str(server.make_url("")).rstrip("/")


def test_chromium_is_debians():
    require_chromium()
    assert shutil.which("chromium") == CHROMIUM


async def test_lead_to_deal_to_reservation_to_printed_offer(settings, pool, conn, factory, aiohttp_server, browser):
    from crm import leads as leads_db
    from crm import stock
    from web.app import create_app

    await factory.user("head", role="head")
    lead, _ = await leads_db.get_or_create_phone_lead(conn, "+79165551234", "74951234567", "Anna")
    now = datetime.now(UTC)
    bearing = await stock.create_product(conn, "BRG-6205", "Ball bearing 6205", "pcs", 450, None, False)
    pump = await stock.create_product(conn, "PMP-K50", "Pump K50", "pcs", 120000, None, True)
    await stock.receive(conn, bearing.id, 10, now)
    await stock.receive(conn, pump.id, 1, now)
    server = await aiohttp_server(create_app(settings, pool))
    base_url = str(server.make_url("")).rstrip("/")
    page = await logged_in_page(browser, base_url, "head")

    await page.goto(f"{base_url}/leads/{lead.id}")
    await page.fill("input[name=contact_name]", "Anna Kuznetsova")
    await page.fill("input[name=company_name]", "Stroykomplekt")
    await page.fill("input[name=deal_title]", "Pumps and bearings")
    await page.click("form[action$='/convert'] button")
    await page.click("text=Pumps and bearings")
    await page.select_option("#add-item select[name=product_id]", str(bearing.id))
    await page.fill("#add-item input[name=quantity]", "2")
    await page.click("#add-item button")
    await page.select_option("#add-item select[name=product_id]", str(pump.id))
    await page.fill("#add-item input[name=quantity]", "3")
    await page.click("#add-item button")
    await page.select_option("select[name=stage]", "reservation")
    await page.click("form[action$='/stage'] button")
    rows = page.locator("#items tbody tr")
    await expect(rows.nth(0).locator(".reserved")).to_have_text("2")
    await expect(rows.nth(1).locator(".reserved")).to_have_text("1")  # one pump in stock…
    await expect(rows.nth(1).locator(".production")).to_have_text("2")  # …two to make
    async with page.expect_popup() as popup_info:
        await page.click("text=Commercial offer")
    offer = await popup_info.value
    await expect(offer.locator("h1")).to_have_text("Commercial offer")
    await expect(offer.locator("tfoot")).to_contain_text("360,900.00")
    pdf = await offer.pdf()
    assert pdf.startswith(b"%PDF")


async def test_pages_load_without_script_errors(demo_live, browser):
    page = await logged_in_page(browser, demo_live, "head")
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    for path in ("/home", "/calls", "/missed", "/leads", "/deals", "/deals/1", "/contacts", "/contacts/1",
                 "/companies", "/stock", "/mail", "/stock/products", "/stock/products/1", "/stock/supplier-orders"):
        resp = await page.goto(f"{demo_live}{path}")
        assert resp.status == 200, path
        await expect(page.locator("#live")).to_have_text("live", timeout=10000)
    assert problems == []


async def test_pages_fit_a_phone_screen(live, browser):
    """390 px wide (a phone): no page is wider than the screen; long lists scroll inside their own box."""
    base_url, _, _ = live
    context = await browser.new_context(viewport={"width": 390, "height": 844})
    page = await context.new_page()
    await page.goto(f"{base_url}/login")
    await page.fill("input[name=login]", "head")
    await page.fill("input[name=password]", "head")
    await page.click("button[type=submit]")
    too_wide = {}
    for path in ("/", "/calls", "/missed", "/leads", "/deals", "/contacts", "/companies", "/stock", "/stock/products",
                 "/stock/products/1", "/stock/production", "/stock/supplier-orders", "/leads/rules", "/leads/new"):
        await page.goto(f"{base_url}{path}")
        width = await page.evaluate("document.documentElement.scrollWidth")
        if width > 392:
            too_wide[path] = width
    assert too_wide == {}
    await context.close()


async def test_a_colleagues_client_pops_without_a_card_to_open(live, browser):
    """Demo Client is manager1's: when the call rings manager2, the popup says whose client it is and offers
    no "Open card" (it would be a 404 for manager2)."""
    base_url, sim, _ = live
    manager2 = await logged_in_page(browser, base_url, "manager2")
    sim.place_call("74951234567", "102", 2.0, 1.0)
    popup = manager2.locator(".popup").first
    await expect(popup).to_contain_text("Demo Client", timeout=10000)
    await expect(popup).to_contain_text("Manager:")
    assert await popup.locator("a", has_text="Open card").count() == 0
    manager1 = await logged_in_page(browser, base_url, "manager1")
    sim.place_call("74951234567", "101", 2.0, 1.0)
    own = manager1.locator(".popup").first
    await expect(own.locator("a", has_text="Open card")).to_have_count(1, timeout=10000)


async def test_the_warehouse_receives_a_supplier_order_and_a_manager_cannot(settings, pool, conn, factory,
                                                                            aiohttp_server, browser):
    """A deal needing goods that are not in stock orders them from a supplier; the warehouse receives them from the
    supplier orders list and stock goes up, reserved for the deal; a manager sees the order without a Receive
    button, and a POST of theirs is refused."""
    from crm import deals, stock
    from web.app import create_app

    await factory.user("sklad", role="warehouse")
    manager = await factory.user("manager1", extension="101")
    now = datetime.now(UTC)
    valve = await stock.create_product(conn, "VLV-50", "Gate valve DN50", "pcs", 3200, "4601234000017", False)
    deal = await deals.create_deal(conn, manager, "Valves for the boiler room", now)
    await deals.add_item(conn, manager, deal.id, valve.id, 4)
    await deals.move_stage(conn, manager, deal.id, "reservation", now)  # nothing in stock: a supplier order
    server = await aiohttp_server(create_app(settings, pool))
    base_url = str(server.make_url("")).rstrip("/")

    seller = await logged_in_page(browser, base_url, "manager1")
    await seller.goto(f"{base_url}/stock/supplier-orders")
    row = seller.locator("#orders tbody tr", has_text="Gate valve DN50")
    await expect(row).to_contain_text("Valves for the boiler room")
    await expect(row.locator(".state")).to_have_text("open")
    assert await seller.locator("#orders button", has_text="Receive").count() == 0
    order_id = await row.get_attribute("data-order")
    refused = await seller.evaluate("""async (id) => {
        const token = document.querySelector('meta[name=csrf-token]').content;
        const r = await fetch('/api/stock/receipts', {method: 'POST', headers: {'Content-Type': 'application/json',
            'X-CSRF-Token': token}, body: JSON.stringify({supplier_order_id: Number(id)})});
        return r.status; }""", order_id)
    assert refused == 403

    sklad = await logged_in_page(browser, base_url, "sklad")
    await sklad.goto(f"{base_url}/stock/supplier-orders")
    row = sklad.locator("#orders tbody tr", has_text="Gate valve DN50")
    await row.locator("input[name=document_number]").fill("УПД-1187")
    await row.locator("button", has_text="Receive").click()
    await expect(sklad.locator("#orders")).to_contain_text("No orders.")  # nothing left to receive
    # The scanner finds the valve: its card shows the new stock and where it came from.
    await sklad.click("#stock-nav >> text=Products")
    await expect(sklad.locator("#product-search input[name=q]")).to_be_focused()
    await sklad.keyboard.type("4601234000017")  # the search box has the focus, as a scanner expects
    await sklad.keyboard.press("Enter")
    await expect(sklad.locator("h1")).to_have_text("Gate valve DN50")
    await expect(sklad.locator("#on-hand")).to_have_text("4")
    await expect(sklad.locator("#movements")).to_contain_text("УПД-1187")
    balance = await stock.balance(conn, valve.id)
    assert (balance.on_hand, balance.reserved) == (4, 4)
    await seller.goto(f"{base_url}/deals/{deal.id}")
    await expect(seller.locator("#items tbody tr").first.locator(".reserved")).to_have_text("4")


async def test_a_full_card_arriving_after_the_ring_stopped_goes_with_the_quick_one(live, browser):
    from crm.callers import CallerCard
    from cti.calls import AgentRinging, AgentRingStopped
    from web.keys import NOTIFIER

    base_url, _, app = live
    page = await logged_in_page(browser, base_url, "manager1")
    await page.clock.install()  # the cards' removal timers run on this clock, fast-forwarded below
    notifier = app[NOTIFIER]
    ring = AgentRinging("lab", "slow-card", 1_795_448_000.0, "101", "inbound", "+79165550002", "", False)
    await notifier.ringing(ring, CallerCard("+79165550002"))
    popup = page.locator(".popup")
    await expect(popup).to_have_count(1)
    await notifier.ring_stopped(AgentRingStopped("lab", "slow-card", ring.ts + 3, "101", None))
    await expect(popup.locator(".popup-state")).to_have_text("Stopped ringing")
    # The database's card comes late (a slow lookup): it takes the quick card's place and its state...
    await notifier.ringing(ring, CallerCard("+79165550002", complete=True))
    await expect(popup).to_have_count(1)
    await expect(popup.locator(".popup-state")).to_have_text("Stopped ringing")
    # ...and goes when the stopped card was due to go, instead of staying until the page reloads.
    await page.clock.run_for(9000)
    await expect(popup).to_have_count(0)


async def test_a_call_ringing_the_phone_again_gets_a_fresh_card_that_stays(live, browser):
    from crm.callers import CallerCard
    from cti.calls import AgentRinging, AgentRingStopped
    from web.keys import NOTIFIER

    base_url, _, app = live
    page = await logged_in_page(browser, base_url, "manager1")
    await page.clock.install()
    notifier = app[NOTIFIER]
    first = AgentRinging("lab", "queue-call", 1_795_448_000.0, "101", "inbound", "+79165550003", "", False)
    await notifier.ringing(first, CallerCard("+79165550003", complete=True))
    await notifier.ring_stopped(AgentRingStopped("lab", "queue-call", first.ts + 15, "101", None))
    popup = page.locator(".popup")
    await expect(popup.locator(".popup-state")).to_have_text("Stopped ringing")
    # The queue's next round rings the same phone for the same call: ringing again, not "stopped"...
    await notifier.ringing(AgentRinging("lab", "queue-call", first.ts + 20, "101", "inbound", "+79165550003", "",
                                        False), CallerCard("+79165550003", complete=True))
    await expect(popup).to_have_count(1)
    await expect(popup.locator(".popup-head .badge")).to_have_text("Ringing")
    # ...and the first ring's removal timer does not take the new card away.
    await page.clock.run_for(9000)
    await expect(popup).to_have_count(1)
