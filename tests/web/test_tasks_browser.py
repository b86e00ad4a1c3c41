"""Tasks in a real browser: a manager sets a task with a reminder a few seconds ahead, and the reminder pops in the
page at its time (and as a desktop notification), without a reload."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from playwright.async_api import expect

from crm import tasks as tasks_db
from crm import users as users_db
from tests.web.test_browser import browser, logged_in_page  # noqa: F401 (the fixture)
from web.keys import REMINDERS

# Records the desktop notifications the page makes (permission is granted to the context below).
RECORD_NOTIFICATIONS = """() => {
  const Original = window.Notification;
  window.__notifications = [];
  window.Notification = class extends Original {
    constructor(title, options) { super(title, options); window.__notifications.push([title, options.body]); }
  };
}"""


async def test_a_reminder_set_on_the_page_pops_at_its_time(live, browser, settings, conn):  # noqa: F811
    base_url, _, _ = live
    page = await logged_in_page(browser, base_url, "manager1")
    await page.context.grant_permissions(["notifications"], origin=base_url)
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    await page.goto(f"{base_url}/tasks")
    # Whole seconds, as the form sends it: the reminder is due at the second typed, not at a fraction after it.
    due = (datetime.now(ZoneInfo(settings.timezone)) + timedelta(seconds=6)).replace(microsecond=0)
    await page.fill("#new-task input[name=title]", "Call Anna about the price list")
    await page.fill("#new-task input[name=due_at]", due.strftime("%Y-%m-%dT%H:%M:%S"))
    await page.select_option("#new-task select[name=remind]", "0")  # at the due time
    await page.click("#new-task button")
    await expect(page.locator("#today, #upcoming").locator("text=Call Anna about the price list")).to_be_visible()
    await expect(page.locator("#live")).to_have_text("live", timeout=10000)
    await page.evaluate(RECORD_NOTIFICATIONS)
    await page.evaluate("window.__samePage = true")
    assert await page.locator(".popup.reminder").count() == 0  # not before its time
    reminder = page.locator(".popup.reminder")
    await expect(reminder).to_contain_text("Call Anna about the price list", timeout=15000)
    assert datetime.now(ZoneInfo(settings.timezone)) >= due - timedelta(milliseconds=200)
    await expect(reminder).to_contain_text("Reminder")
    assert await page.evaluate("window.__samePage === true")  # popped in place: no reload
    assert await page.evaluate("window.__notifications") == [
        ["Reminder: Call Anna about the price list", await reminder.locator(".muted").inner_text()]]
    # Done from the reminder closes the task.
    await reminder.locator("button", has_text="Done").click()
    await expect(reminder).to_have_count(0)
    assert await conn.fetchval("SELECT state FROM tasks WHERE title = 'Call Anna about the price list'") == "done"
    # Another page opened later does not show it again.
    await page.goto(f"{base_url}/home")
    await expect(page.locator("#live")).to_have_text("live", timeout=10000)
    await page.wait_for_timeout(500)
    assert await page.locator(".popup.reminder").count() == 0
    assert problems == []


async def test_a_reminder_pushed_between_two_pages_shows_on_the_next(live, browser, conn):  # noqa: F811
    base_url, _, _ = live
    manager = await users_db.get_user_by_login(conn, "manager1")
    page = await logged_in_page(browser, base_url, "manager1")
    await page.goto("about:blank")  # no Callboard page open while the reminder goes out
    past = datetime.now(UTC) - timedelta(seconds=1)
    task = await tasks_db.create_task(conn, manager, "Missed while away", past + timedelta(minutes=5),
                                      remind_at=past)
    live[2][REMINDERS].wake(past)
    for _ in range(100):
        if await conn.fetchval("SELECT reminded_at FROM tasks WHERE id = $1", task.id):
            break
        await page.wait_for_timeout(50)
    await page.goto(f"{base_url}/calls")
    await expect(page.locator(".popup.reminder")).to_contain_text("Missed while away", timeout=10000)
    await page.goto(f"{base_url}/home")
    await expect(page.locator("#live")).to_have_text("live", timeout=10000)
    await page.wait_for_timeout(500)
    assert await page.locator(".popup.reminder").count() == 0  # shown once, not on every page
