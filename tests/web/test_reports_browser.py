"""Reports and the wallboard in a real browser: charts, drill-down, XLSX download, live wallboard, no CSP errors."""

import io

import openpyxl
from playwright.async_api import expect

from tests.web.test_browser import browser, logged_in_page  # noqa: F401 (the fixture)

NAMES = ("managers", "funnel", "sources", "service", "segments")


async def test_the_head_reads_reports_drills_down_exports_and_watches_the_wallboard(live, browser):  # noqa: F811
    base_url, sim, _ = live
    page = await logged_in_page(browser, base_url, "head")
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    sim.place_call("74951234567", "101", 0.3, 0.5)
    await page.goto(f"{base_url}/wallboard")
    await expect(page.locator("[data-key='total.answered']")).to_have_text("1", timeout=15000)
    sim.place_call("74951234567", "101", 1.5, 1.0)
    await expect(page.locator("[data-agent='101'] [data-role=state]")).to_have_text("ringing", timeout=10000)
    await expect(page.locator("[data-key='total.answered']")).to_have_text("2", timeout=15000)
    for name in NAMES:
        await page.goto(f"{base_url}/reports/{name}")
        await expect(page.locator(f"#report-{name}")).to_be_visible()
        assert await page.locator("svg").count() >= 1, name
    await page.goto(f"{base_url}/reports/managers")
    await page.locator("tr", has_text="Manager One").locator("td").nth(2).locator("a").click()
    await expect(page.locator("#drill-table tbody tr[data-call]")).to_have_count(2)
    async with page.expect_download() as download:
        await page.click("text=Excel")
    data = open(await (await download.value).path(), "rb").read()
    rows = list(openpyxl.load_workbook(io.BytesIO(data)).active.values)
    assert len(rows) == 3 and rows[1][5] == "answered"
    assert problems == []  # nothing refused by the CSP, no script errors
