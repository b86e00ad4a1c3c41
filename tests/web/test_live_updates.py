"""Live pages by small deltas: the missed board's coalesced room emits, its /missed/live rows, and the
board in a real browser updating row by row without a reload."""

import asyncio
from datetime import UTC, datetime

import pytest
import socketio

from tests.conftest import login
from tests.web.live import CHROMIUM, SocketUser, require_chromium, session_cookie
from tests.web.test_missed_board import wait_saved
from web import keys
from web.app import create_app
from web.realtime import BOARD_ROOM, MISSED_WATCH_ROOM, SocketNotifier, user_room


class EmitLog:
    """Records every emit of a real socket.io server (and the task it left from), then sends it on."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.emits: list[tuple[str, str | None, dict, str]] = []
        self._emit = sio.emit
        sio.emit = self.emit

    async def emit(self, event: str, data=None, to=None, room=None, **kwargs) -> None:
        self.emits.append((event, room or to, data, asyncio.current_task().get_name()))
        await self._emit(event, data, to=to, room=room, **kwargs)

    def of(self, event: str) -> list[tuple[str | None, dict, str]]:
        return [(room, data, task) for name, room, data, task in self.emits if name == event]


async def test_a_burst_of_board_changes_is_one_emit_per_room():
    from crm.missed import MissedUpdate

    notifier = SocketNotifier(socketio.AsyncServer(async_mode="aiohttp"), coalesce=0.05)
    log = EmitLog(notifier.sio)
    await notifier.missed_changed(MissedUpdate(1, None, "missed", None))
    await notifier.missed_changed(MissedUpdate(2, 7, "missed", 7))
    await notifier.missed_changed(MissedUpdate(1, None, "missed"))
    await notifier.missed_changed(MissedUpdate(2, 7, "resolved"))
    assert log.of("missed_changed") == []  # nothing leaves from the caller's task
    await asyncio.sleep(0.2)
    assert sorted((room, data) for room, data, _ in log.of("missed_changed")) == sorted([
        (BOARD_ROOM, {"rows": [{"row_id": 1, "kind": "missed"}, {"row_id": 2, "kind": "resolved"}]}),
        (MISSED_WATCH_ROOM, {"rows": [{"row_id": 1, "kind": "missed"}]}),
        (user_room(7), {"rows": [{"row_id": 2, "kind": "resolved"}]}),
    ])
    assert {task for _, _, task in log.of("missed_changed")} == {"missed-board-flush"}
    assert log.of("task") == [(user_room(7), {"row_id": 2, "text": "New callback task"}, log.of("task")[0][2])]
    await notifier.close()


async def test_a_missed_call_is_one_room_emit_with_200_clients_connected(live):
    base_url, sim, app = live
    log = EmitLog(app[keys.SIO])
    head, watcher = SocketUser(), SocketUser()
    await head.connect(base_url, await session_cookie(base_url, "head"))
    await watcher.connect(base_url, await session_cookie(base_url, "manager1"))
    await watcher.client.emit("watch", "missed")  # manager1 has the board open
    cookie = await session_cookie(base_url, "manager2")
    others = [SocketUser() for _ in range(200)]
    try:
        for start in range(0, len(others), 50):
            await asyncio.gather(*(user.connect(base_url, cookie) for user in others[start:start + 50]))
        await asyncio.sleep(0.2)  # the watcher's room is joined
        sim.place_call("79267770011", "101", None, ring_timeout=0.3)  # an unknown caller: nobody's row yet
        await wait_saved(app, 1)
        changed = await head.wait_for("missed_changed")
        await watcher.wait_for("missed_changed")
        await asyncio.sleep(0.5)  # anything else would have arrived by now
        row_id = changed["rows"][0]["row_id"]
        body = {"rows": [{"row_id": row_id, "kind": "missed"}]}
        assert [(room, data) for room, data, _ in log.of("missed_changed")] == [
            (BOARD_ROOM, body), (MISSED_WATCH_ROOM, body)]
        assert {task for _, _, task in log.of("missed_changed")} == {"missed-board-flush"}
        assert sum(len(user.events("missed_changed")) for user in others) == 0
        assert head.events("missed_changed") == [body] and watcher.events("missed_changed") == [body]
    finally:
        await asyncio.gather(*(user.close() for user in [head, watcher, *others]))


async def _missed_row(conn, caller: str, minutes_ago: int = 5, manager_id=None, resolved: bool = False) -> int:
    when = datetime.now(UTC).timestamp() - minutes_ago * 60
    return await conn.fetchval(
        """INSERT INTO missed_callers (caller_e164, line, tries, first_missed_at, last_missed_at, last_reason,
                                       manager_id, due_at, state, resolution, resolved_at)
           VALUES ($1, '74950000000', 1, to_timestamp($2), to_timestamp($2), 'no_answer', $3,
                   to_timestamp($2) + interval '1 h', $4, $5, $6) RETURNING id""",
        caller, when, manager_id, "resolved" if resolved else "open", "spam" if resolved else None,
        datetime.now(UTC) if resolved else None)


async def test_live_rows_answers_the_rows_the_page_shows_with_its_own_markup(client, conn, factory):
    await factory.user("head", role="head")
    manager1 = await factory.user("manager1", extension="101")
    manager2 = await factory.user("manager2", extension="102")
    unassigned = await _missed_row(conn, "+79260000001")
    mine = await _missed_row(conn, "+79260000002", manager_id=manager1.id)
    theirs = await _missed_row(conn, "+79260000003", manager_id=manager2.id)
    done = await _missed_row(conn, "+79260000004", resolved=True)
    await login(client, "manager1")
    resp = await client.get(f"/missed/live?ids={unassigned},{mine},{theirs},{done}")
    assert resp.status == 200, await resp.text()
    html = await resp.text()
    assert [f'data-row="{i}"' in html for i in (unassigned, mine, theirs, done)] == [True, True, False, True]
    assert 'id="figures"' in html and "<html" not in html  # a fragment: figures and rows only
    assert "+7 926 000-00-01" in html
    resp = await client.get(f"/missed/live?ids={unassigned},{mine},{done}&state=open&manager={manager1.id}")
    html = await resp.text()
    assert [f'data-row="{i}"' in html for i in (unassigned, mine, done)] == [False, True, False]


@pytest.mark.parametrize("query", ["", "ids=", "ids=abc", "ids=1,,x", "ids=-1", "ids=" + ",".join(["1"] * 201),
                                   "ids=99999999999999999999", "ids=1&state=nope", "ids=1&manager=me"])
async def test_live_rows_refuses_bad_input_with_a_clear_4xx(client, factory, query):
    await factory.user("head", role="head")
    await login(client, "head")
    resp = await client.get("/missed/live?" + query)
    assert resp.status == 422, await resp.text()


async def test_live_rows_needs_a_login(client):
    resp = await client.get("/missed/live?ids=1", allow_redirects=False)
    assert resp.status in (302, 401), await resp.text()


async def test_the_board_updates_row_by_row_while_calls_are_missed(live):
    require_chromium()
    from playwright.async_api import async_playwright, expect

    from tests.web.test_browser import LAUNCH_ARGS

    base_url, sim, app = live
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        context = await browser.new_context()
        await context.add_cookies([{"name": "callboard_session", "value": await session_cookie(base_url, "head"),
                                    "url": base_url}])
        page = await context.new_page()
        await page.goto(f"{base_url}/missed")
        await expect(page.locator("#live")).to_have_text("live", timeout=10000)
        # Markers a re-render of the table body or a reload would lose.
        await page.evaluate("""() => {
            const marker = document.createElement('tr');
            marker.id = 'test-marker';
            document.querySelector('#missed-table tbody').append(marker);
            window.__notReloaded = true;
        }""")
        rows = page.locator("#missed-table tr[data-row]")
        for n, caller in enumerate(("79267770001", "79267770002", "79267770003"), start=1):
            sim.place_call(caller, "101", None, ring_timeout=0.2)
            await wait_saved(app, n)
            await expect(rows).to_have_count(n, timeout=10000)
        await expect(rows.first).to_contain_text("+7 926 777-00-03")  # the newest on top
        await expect(page.locator("#figures")).to_contain_text("3missed today")
        first = await rows.nth(2).get_attribute("data-row")
        sim.place_call("79267770001", "101", None, ring_timeout=0.2)  # the first caller again: same row
        await wait_saved(app, 4)
        await expect(page.locator(f'tr[data-row="{first}"] td.tries')).to_have_text("2", timeout=10000)
        await expect(rows).to_have_count(3)
        assert await page.evaluate("window.__notReloaded === true && !!document.getElementById('test-marker')")
        assert await page.evaluate("Number(document.body.dataset.liveRows)") >= 4
        await browser.close()


async def test_start_up_and_the_routing_index_are_frozen_out_of_the_collector(settings, pool, aiohttp_client, conn,
                                                                              factory):
    import dataclasses
    import gc

    from web.memory import FULL_COLLECTION_EVERY, WATCH_EVERY

    await factory.contact("Frozen Client", phones=["+74951112233"])
    client = await aiohttp_client(create_app(dataclasses.replace(settings, freeze_gc=True), pool))
    router = client.server.app[keys.ROUTER]
    assert gc.get_freeze_count() > 0  # start-up's objects
    assert gc.get_threshold()[2] == FULL_COLLECTION_EVERY  # full collections rarer while the app runs
    for _ in range(100):
        if router.index is not None and router.index.ready:
            break
        await asyncio.sleep(0.05)
    assert router.index is not None and router.index.ready
    await asyncio.sleep(WATCH_EVERY * 2)
    table = router.index._table  # built by the load, after start-up's freeze
    # A dozen flat arrays and strings however many phones (nothing per phone for a collection to walk), and
    # those frozen by the memory watcher: gc.get_objects() walks the generations a collection scans; the
    # permanent one is not among them.
    columns = (table, table.keys, table.numbers, table.contacts, table.companies, table.contact_managers,
               table.contact_names)
    scanned = {id(o) for o in gc.get_objects()}
    assert not any(id(column) in scanned for column in columns)
