"""The missed-call board end to end: the simulator over TCP, the API, socket.io and a real browser."""

import asyncio
import time

from tests.conftest import csrf_headers
from tests.web.live import CHROMIUM, SocketUser, require_chromium, session_cookie


async def wait_saved(app, count: int, timeout: float = 10) -> None:
    from web.keys import TELEPHONY

    deadline = time.monotonic() + timeout
    while app[TELEPHONY].saved_calls < count:
        assert time.monotonic() < deadline, "calls were not saved in time"
        await asyncio.sleep(0.05)


async def api_client(aiohttp_client_factory, base_url, login):
    import aiohttp

    from tests.conftest import post_login

    session = aiohttp.ClientSession(base_url, cookie_jar=aiohttp.CookieJar(unsafe=True))  # an IP host
    await post_login(session, login, login)
    page = await (await session.get("/missed")).text()
    marker = '<meta name="csrf-token" content="'
    start = page.index(marker) + len(marker)
    return session, page[start:page.index('"', start)]


async def test_three_missed_calls_from_one_number_are_one_row_and_a_callback_resolves_it(live, conn):
    base_url, sim, app = live
    head = SocketUser()
    await head.connect(base_url, await session_cookie(base_url, "head"))
    http, csrf = await api_client(None, base_url, "manager1")
    try:
        for _ in range(3):
            await sim.place_call("74951234567", "101", None, ring_timeout=0.3)
        await wait_saved(app, 3)
        await head.wait_for("missed_changed")
        rows = (await (await http.get("/api/missed")).json())["items"]
        assert [(r["who"], r["tries"], r["state"], r["reason"]) for r in rows] == [
            ("Demo Client", 3, "open", "no_answer")]
        # Calling back: the row goes "in progress", then the answered call resolves it.
        sim.originate_timing = (0.2, 0.3, 0.5)
        resp = await http.post("/api/calls", json={"number": "+7 495 123-45-67"}, headers=csrf_headers(csrf))
        assert resp.status == 202, await resp.text()
        await wait_saved(app, 4)
        row = (await (await http.get("/api/missed")).json())["items"][0]
        assert (row["state"], row["resolution"], row["resolved_by"]) == ("resolved", "reached_outbound",
                                                                           "Manager One")
        assert row["seconds_to_callback"] >= 0
        await head.wait_for("missed_changed", lambda e: {"row_id": row["id"], "kind": "resolved"} in e["rows"])
    finally:
        await http.close()
        await head.close()


async def test_a_queue_call_answered_by_the_second_agent_creates_nothing(live, conn):
    _, sim, app = live
    await sim.play(sim.writer.queue("79169990000", "", ("101", "102"), 0.3, 0.3))
    await wait_saved(app, 1)
    assert await conn.fetchval("SELECT outcome FROM calls") == "answered"
    assert await conn.fetchval("SELECT count(*) FROM missed_callers") == 0


async def test_a_manager_never_sees_another_managers_clients_row(live, conn):
    base_url, sim, app = live
    await sim.place_call("79161112233", "102", None, ring_timeout=0.3)  # Olga Smirnova, manager2's client
    await wait_saved(app, 1)
    mine, _ = await api_client(None, base_url, "manager1")
    theirs, _ = await api_client(None, base_url, "manager2")
    try:
        assert (await (await mine.get("/api/missed")).json())["items"] == []
        rows = (await (await theirs.get("/api/missed")).json())["items"]
        assert [r["who"] for r in rows] == ["Olga Smirnova"]
        page = await (await mine.get("/missed")).text()
        assert "Olga" not in page
    finally:
        await mine.close()
        await theirs.close()


async def test_a_missed_call_appears_on_the_heads_board_without_reload(live):
    require_chromium()
    from playwright.async_api import async_playwright, expect

    from tests.web.test_browser import LAUNCH_ARGS

    base_url, sim, _ = live
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = await browser.new_page()
        await page.goto(f"{base_url}/login")
        await page.fill("input[name=login]", "head")
        await page.fill("input[name=password]", "head")
        await page.click("button[type=submit]")
        await page.goto(f"{base_url}/missed")
        await expect(page.locator("#live")).to_have_text("live", timeout=10000)
        await expect(page.locator("#missed-table")).to_contain_text("Every caller was reached")
        await page.evaluate("window.__notReloaded = true")
        sim.place_call("79165550077", "101", None, ring_timeout=0.3)
        await expect(page.locator("#missed-table")).to_contain_text("+7 916 555-00-77", timeout=10000)
        await expect(page.locator("#missed-table")).to_contain_text("New lead")
        await expect(page.locator("#figures")).to_contain_text("1missed today")
        # Issue 15: the per line / manager / day tables follow the board too, not only the figures.
        await expect(page.locator("#missed-breakdown")).to_contain_text("Per manager", timeout=10000)
        await expect(page.locator("#missed-breakdown")).to_contain_text("unassigned")
        assert await page.evaluate("window.__notReloaded === true")
        await browser.close()


async def test_board_forms_assign_and_resolve(client, conn, factory):
    from datetime import UTC, datetime

    from crm.calls import save_call
    from tests.conftest import login
    from tests.web.test_calls import record

    await factory.user("head", role="head")
    manager = await factory.user("manager1", extension="101")
    missed = record("m1", "+79160000777", outcome="missed", answered_by=None,
                    started=datetime.now(UTC).timestamp() - 60)
    await save_call(conn, missed)
    row_id = await conn.fetchval("SELECT id FROM missed_callers")
    csrf = await login(client, "head")
    board = await (await client.get("/missed")).text()
    # The resolve form's default reason is the usual one; one careless click never marks a customer as spam.
    reasons = board[board.index('name="reason"'):]
    assert reasons.index('value="reached_another_way"') < reasons.index('value="spam"')
    assert reasons.index("<option") == reasons.index('<option value="reached_another_way"')
    # The line filter takes the number as people type it.
    for typed, shown in (("8 (495) 123-45-67", True), ("4951234567", True), ("+7 495 000-00-00", False)):
        page = await (await client.get("/missed", params={"line": typed})).text()
        assert (f'data-row="{row_id}"' in page) == shown, typed
    resp = await client.post(f"/missed/{row_id}/assign", allow_redirects=False,
                             data={"csrf_token": csrf, "manager_id": str(manager.id)})
    assert resp.status == 302
    assert await conn.fetchval("SELECT assignee_id FROM tasks WHERE missed_caller_id = $1", row_id) == manager.id
    resp = await client.post(f"/missed/{row_id}/resolve", allow_redirects=False,
                             data={"csrf_token": csrf, "reason": "wrong_number"})
    assert resp.status == 302
    assert tuple(await conn.fetchrow("SELECT state, resolution FROM missed_callers")) == ("resolved", "wrong_number")
    board = await (await client.get("/missed")).text()
    assert "wrong number" in board



async def test_the_board_is_paged_and_its_figures_count_every_row(client, conn, factory):
    """50 rows a page with a Next link (issue 18/19); the figures above count the whole board on every page;
    resolved rows older than the window are on no page."""
    import re
    from datetime import UTC, datetime, timedelta

    from tests.conftest import login

    await factory.user("head", role="head")
    manager = await factory.user("manager1", extension="101")
    other = await factory.user("manager2", extension="102")
    now = datetime.now(UTC)
    # 56 open rows (a minute apart, every 4th the manager's, every 4th another manager's, the rest unassigned),
    # 3 resolved within the window, 2 resolved long ago.
    rows = [(f"+7916000{n:04d}", "open", now - timedelta(minutes=n), (manager.id, other.id, None, None)[n % 4])
            for n in range(56)]
    rows += [(f"+7926000{n:04d}", "resolved", now - timedelta(hours=2, minutes=n), None) for n in range(3)]
    rows += [(f"+7936000{n:04d}", "resolved", now - timedelta(days=30 + n), None) for n in range(2)]
    await conn.executemany(
        """INSERT INTO missed_callers (caller_e164, line, state, tries, first_missed_at, last_missed_at, due_at,
                                       manager_id, resolution)
           VALUES ($1, '+74951234567', $2, 1, $3, $3, $3, $4, CASE WHEN $2 = 'resolved' THEN 'not_needed' END)""",
        rows)
    ids = {caller: row_id for caller, row_id in await conn.fetch("SELECT caller_e164, id FROM missed_callers")}
    board_order = [ids[caller] for caller, *_ in rows[:59]]  # open newest first, then resolved newest first

    def shown(html: str) -> list[int]:
        return [int(i) for i in re.findall(r'data-row="(\d+)"', html)]

    def next_link(html: str) -> str | None:
        found = re.search(r'<a rel="next" href="([^"]+)"', html)
        return found.group(1).replace("&amp;", "&") if found else None

    await login(client, "head")
    first = await (await client.get("/missed")).text()
    assert shown(first) == board_order[:50]
    assert "59 callers" in first  # the figures: every row of the window, not the 50 shown
    second = await (await client.get(next_link(first))).text()
    assert shown(second) == board_order[50:]
    assert next_link(second) is None and "59 callers" in second
    # A state filter pages within its part of the board.
    open_page = await (await client.get("/missed?state=open")).text()
    assert shown(open_page) == board_order[:50]
    assert shown(await (await client.get(next_link(open_page))).text()) == board_order[50:56]
    assert shown(await (await client.get("/missed?state=resolved")).text()) == board_order[56:]
    api = await (await client.get("/api/missed", params={"limit": "7", "state": "resolved"})).json()
    assert ([r["id"] for r in api["items"]], api["next"]) == (board_order[56:], None)

    # A manager pages through their own and the unassigned rows only.
    await login(client, "manager1")
    visible = [i for i, (_, state, _, owner) in zip(board_order, rows, strict=False)
               if owner in (manager.id, None)]
    walked, url = [], "/api/missed?limit=9"
    while url:
        body = await (await client.get(url)).json()
        walked += [r["id"] for r in body["items"]]
        url = body["next_url"]
    assert walked == visible
