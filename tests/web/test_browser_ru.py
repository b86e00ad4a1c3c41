"""A Russian-speaking team in a real browser (Chromium, locale ru-RU): every screen and the live popup in Russian."""

import asyncio
import re
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import expect

from tests.web.conftest import running_app
from tests.web.test_browser import LAUNCH_ARGS, browser  # noqa: F401  (the fixture)
from tests.web.test_i18n import _ENGLISH

SCREENS = ["/home", "/calls", "/missed", "/leads", "/deals", "/deals/1", "/contacts", "/stock", "/password"]


@pytest.fixture
async def live_ru(settings, pool, conn, aiohttp_server):
    """The app with the simulator as its PBX and the demo seeded in Russian; the company setting stays English,
    so the Russian comes from the browser's Accept-Language."""
    async with running_app(settings, pool, conn, aiohttp_server, "ru") as (base_url, sim, _):
        yield base_url, sim


async def russian_page(browser, base_url: str, login: str):  # noqa: F811
    # A browser in New York: the popup must still show the company's (Moscow) time.
    context = await browser.new_context(locale="ru-RU", timezone_id="America/New_York")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{base_url}/login")
    await expect(page.locator("button[type=submit]")).to_have_text("Войти")
    await page.fill("input[name=login]", login)
    await page.fill("input[name=password]", login)
    await page.click("button[type=submit]")
    await page.goto(f"{base_url}/calls")
    await expect(page.locator("#live")).to_have_text("онлайн", timeout=10000)
    return page, errors


async def english_left(page) -> list[str]:
    # The PBX's own banner ("Asterisk Call Manager/11.0.0") is data the page quotes, not our words.
    text = (await page.inner_text("body")).replace("Asterisk Call Manager", "")
    return sorted({m.group(1) for m in _ENGLISH.finditer(text)})


@pytest.mark.parametrize("who", ["manager1", "head"])
async def test_a_russian_team_sees_every_screen_in_russian(live_ru, browser, who):  # noqa: F811
    base_url, _ = live_ru
    page, errors = await russian_page(browser, base_url, who)
    leftovers = {}
    for path in SCREENS:
        await page.goto(f"{base_url}{path}")
        assert await page.get_attribute("html", "lang") == "ru"
        found = await english_left(page)
        if found:
            leftovers[path] = found
    assert leftovers == {}
    await page.goto(f"{base_url}/deals/1")
    await expect(page.locator("body")).to_contain_text("25\u00a0500,00\u00a0₽")
    await expect(page.locator("nav")).to_contain_text("Звонки")
    assert errors == []


async def test_the_admin_pages_in_russian(live_ru, browser):  # noqa: F811
    base_url, _ = live_ru
    page, errors = await russian_page(browser, base_url, "admin")
    for path in ("/admin/users", "/mail"):
        await page.goto(f"{base_url}{path}")
        assert await english_left(page) == [], (path, await page.inner_text("body"))
    await expect(page.locator("h1")).to_have_text("Входящая почта")
    assert errors == []


async def test_the_live_popup_speaks_russian_in_the_companys_time_zone(live_ru, browser, conn, settings):  # noqa: F811
    base_url, sim = live_ru
    page, errors = await russian_page(browser, base_url, "manager1")
    sim.place_call("74951234567", "101", 0.5, 1.0)  # a first call: the second popup shows it in its history
    popup = page.locator(".popup").first
    await expect(popup.locator(".popup-state")).to_contain_text("Звонок завершён (1 с)", timeout=10000)
    await page.reload()
    await expect(page.locator("#live")).to_have_text("онлайн", timeout=10000)
    for _ in range(100):
        started = await conn.fetchval("SELECT started_at FROM calls WHERE caller = '+74951234567'")
        if started:
            break
        await asyncio.sleep(0.05)
    sim.place_call("74951234567", "101", 1.0, 1.0)
    popup = page.locator(".popup").first
    await expect(popup).to_contain_text("Дмитрий Клиентов", timeout=10000)
    await expect(popup).to_contain_text("ООО «Демо Индастриз»")
    await expect(popup.locator(".badge").first).to_have_text("Звонок")
    moscow = started.astimezone(ZoneInfo(settings.timezone)).strftime("%d.%m.%Y %H:%M")
    await expect(popup.locator(".popup-history")).to_contain_text(f"{moscow} · входящий · отвечен")
    await expect(popup.locator(".popup-state")).to_have_text("Ответил 101", timeout=10000)
    await expect(popup.locator(".popup-state")).to_contain_text("Звонок завершён", timeout=10000)
    assert re.fullmatch(r"Звонок завершён \(\d+ с\)", await popup.locator(".popup-state").inner_text())
    assert await english_left(page) == []
    assert errors == []
