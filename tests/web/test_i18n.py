"""Languages: every message has a Russian translation, pages in Russian show no English UI word, formats by locale."""

import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from crm import calls as calls_db
from crm import leads as leads_db
from crm import missed as missed_db
from crm import users as users_db
from crm.demo import seed_demo
from crm.settings import LANGUAGES, Settings, SettingsError, load_settings
from tests.conftest import csrf_headers, login
from tests.web.test_calls import record
from web.app import create_app
from web.i18n import CODE_LABELS, DOMAIN_MESSAGES, I18n, negotiate

ROOT = Path(__file__).resolve().parents[2]
LOCALE = ROOT / "web" / "locale"


def extracted(config: str) -> set[str | tuple[str, ...]]:
    """Every message Babel finds in the code and templates, with the project's own extraction config."""
    with open(ROOT / config, encoding="utf-8") as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    return {message for _, _, message, _, _ in extract_from_dir(str(ROOT), method_map, options_map)}


@pytest.mark.parametrize(("config", "domain"), [("babel.cfg", "messages"), ("babel-js.cfg", "js")])
def test_every_message_has_a_russian_and_an_english_translation(config, domain):
    messages = extracted(config)
    assert len(messages) > (200 if domain == "messages" else 20)  # the extraction really found the code
    for language in LANGUAGES:
        with open(LOCALE / language / "LC_MESSAGES" / f"{domain}.po", "rb") as po:
            catalog = read_po(po)
        missing = sorted(str(m) for m in messages
                         if catalog.get(m) is None or not all(catalog.get(m).string if isinstance(m, tuple)
                                                              else [catalog.get(m).string]))
        assert missing == [], f"{language}/{domain}.po lacks translations (run pybabel extract/update/compile)"
        # The compiled catalog is what runs: it must hold the same translations as the .po.
        mo = (LOCALE / language / "LC_MESSAGES" / f"{domain}.mo")
        assert mo.stat().st_mtime >= (LOCALE / language / "LC_MESSAGES" / f"{domain}.po").stat().st_mtime - 1
    russian = I18n(Settings()).reader("ru")
    for message in messages:
        if isinstance(message, str) and domain == "messages" and re.search("[a-z]{3}", message):
            assert russian.gettext(message) != message or message in ("E-mail",), message


def test_labels_and_domain_messages_are_translated():
    russian = I18n(Settings()).reader("ru")
    untranslated = [code for code in CODE_LABELS if russian.label(code) == CODE_LABELS[code]]
    assert untranslated == []
    assert [m for m in DOMAIN_MESSAGES if russian.gettext(m) == m] == []


def test_formats_by_locale():
    i18n = I18n(Settings(timezone="Europe/Moscow"))
    ru, en = i18n.reader("ru"), i18n.reader("en")
    nbsp = "\xa0"
    assert ru.money(Decimal("250050")) == f"250{nbsp}050,00{nbsp}₽"
    assert I18n(Settings(currency="EUR")).reader("ru").money(12.5) == f"12,50{nbsp}€"
    assert ru.number(Decimal("2.500")) == "2,5" and ru.number(Decimal("1250")) == f"1{nbsp}250"
    moment = datetime(2026, 11, 28, 16, 41, tzinfo=UTC)  # 19:41 in Moscow
    assert ru.moment(moment) == "28.11.2026 19:41"
    assert en.moment(moment) == "11/28/26 7:41\u202fPM"
    assert ru.moment("2026-11-28") == "28.11.2026"
    assert [ru.duration(s) for s in (65, 45, 3725)] == ["1 мин 05 с", "45 с", "1 ч 02 мин 05 с"]
    assert en.duration(65) == "1 min 05 sec"
    tries = [ru.ngettext("%(count)s try", "%(count)s tries", n) % {"count": n} for n in (1, 2, 5, 11, 21)]
    assert tries == ["1 попытка", "2 попытки", "5 попыток", "11 попыток", "21 попытка"]
    assert ru.percent(53.2) == f"53{nbsp}%"
    assert ru.label("no_answer") == "нет ответа" and en.label("no_answer") == "no answer"
    assert ru.label("Equipment selection") == "Подбор оборудования"


def test_server_sentences_and_domain_errors_are_shown_in_the_readers_language():
    ru = I18n(Settings()).reader("ru")
    assert ru.text("Call back +7 495 123-45-67 (nobody assigned)") == "Перезвонить +7 495 123-45-67 (никто не назначен)"
    assert ru.text("New lead: call from +7 495 123-45-67") == "Новый лид: звонок с номера +7 495 123-45-67"
    assert ru.text("Deal stuck at “Shipment”: Pumps") == "Сделка застряла на этапе «Отгрузка»: Pumps"
    assert ru.text("name: is empty") == "имя: не заполнено"
    assert ru.text("This deal does not exist, or it is not yours.") == "Такого объекта (сделка) нет, или он не ваш."
    assert ru.text("something we never wrote") == "something we never wrote"


def test_language_negotiation_and_settings():
    assert negotiate("en-US,en;q=0.9,ru;q=0.8") == "en"
    assert negotiate("de-DE,ru;q=0.5,en;q=0.9") == "en"
    assert negotiate("ru-RU,ru;q=0.9") == "ru"
    assert negotiate("de, fr;q=0.5") is None and negotiate("") is None and negotiate("en;q=0") is None
    i18n = I18n(Settings(language="ru"))
    assert i18n.choose(None, "de").language == "ru"
    assert i18n.choose("en", "ru-RU").language == "en"
    assert i18n.choose(None, "en-GB").language == "en"
    settings = load_settings({"CALLBOARD_LANGUAGE": "EN", "CALLBOARD_CURRENCY": "usd"})
    assert (settings.language, settings.currency) == ("en", "USD")
    assert Settings().language == "ru" and Settings().currency == "RUB"
    with pytest.raises(SettingsError, match="CALLBOARD_LANGUAGE"):
        load_settings({"CALLBOARD_LANGUAGE": "de"})
    with pytest.raises(SettingsError, match="CALLBOARD_CURRENCY"):
        load_settings({"CALLBOARD_CURRENCY": "XYZ"})


class VisibleText(HTMLParser):
    """What a person reads: text outside scripts and styles, and the placeholder/title/label attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        for name, value in attrs:
            if name in ("placeholder", "title", "aria-label") and value:
                self.parts.append(value)

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skip -= 1

    def handle_data(self, data):
        if not self.skip and data.strip():
            self.parts.append(data.strip())


# Words of the English interface that must not be left on a Russian page.
ENGLISH_UI_WORDS = ["Home", "Calls", "Missed", "Leads", "Contacts", "Companies", "Deals", "Stock", "Save", "Cancel",
                    "Search", "Log out", "Log in", "Users", "Mail", "Filter", "Manager", "Status", "Source", "Name",
                    "Phone", "Amount", "Stage", "History", "Reserved", "Available", "Price", "Total", "Edit", "New",
                    "Create", "Assign", "Resolve", "Call back", "Password", "Language", "Nothing", "No", "Back",
                    "answered", "missed", "unassigned", "overdue", "tries", "in progress", "open", "won", "lost",
                    "idle", "ringing", "pcs", "days", "due", "Good day", "connecting", "Recording", "Commercial offer",
                    "Not allowed", "Not found", "Tax id", "Devices", "Active", "Role", "Extension", "Login",
                    "Invoice", "Invoices", "Payment", "Payments", "Receivables", "Contract", "Contracts", "Paid",
                    "Owed", "VAT", "Buyer", "Supplier", "Payer", "issued", "partly paid", "paid", "supply", "by hand",
                    "Money", "Print", "expected this month", "not due", "Allocate", "Import"]
_ENGLISH = re.compile(r"\b(" + "|".join(re.escape(w) for w in ENGLISH_UI_WORDS) + r")\b")

PAGES = ["/home", "/calls", "/calls?outcome=missed", "/missed", "/missed?state=open", "/leads", "/leads?status=new",
         "/deals", "/deals?status=won", "/contacts", "/contacts?q=495", "/contacts?q=nobody", "/companies",
         "/contacts/new", "/companies/new", "/stock", "/password", "/contacts/1", "/companies/1", "/contacts/1/edit",
         "/deals/1", "/deals/1/offer", "/contacts/999999", "/invoices", "/invoices?state=paid", "/invoices/1",
         "/invoices/1/print", "/payments", "/payments/1", "/receivables", "/contracts", "/contracts/1",
         "/reports/managers", "/reports/funnel", "/reports/sources", "/reports/service", "/reports/segments",
         "/reports/calls?metric=offered", "/reports/deals?metric=deals_won", "/reports/leads?metric=leads",
         "/wallboard", "/stock/products", "/stock/products/1", "/stock/products/new", "/stock/products/1/edit",
         "/stock/production", "/stock/production?state=all", "/stock/supplier-orders",
         "/stock/supplier-orders?state=all",
         "/leads/rules", "/leads/new", "/leads/1/edit",
         "/tasks", "/tasks?week=2026-12-07", "/tasks/1",
         "/deals?view=list", "/deals?view=list&status=won&sort=amount", "/deals/new?contact=1",
         "/deals?stuck=1&closing=month",
         "/contacts/1/merge", "/companies/1/merge", "/calls/1/result", "/leads/1"]


async def seed_russian_day(conn, settings):
    """Demo data in Russian, an answered and a missed call today, and the missed call on the board."""
    await seed_demo(conn, "RU", "ru")
    manager = await users_db.get_user_by_login(conn, "manager1")
    now = time.time()
    await calls_db.save_call(conn, record("100.0", "+74951234567", started=now - 900))
    missed = await calls_db.save_call(conn, record("101.0", "+74951234567", "missed", None, started=now - 600))
    contact = await conn.fetchrow("SELECT id, company_id FROM contacts WHERE name = 'Дмитрий Клиентов'")
    await missed_db.record_call(conn, missed.id, "inbound", "missed", "no_answer", "+74951234567", "+74951234567",
                                datetime.fromtimestamp(now - 600, UTC), None, None, contact["id"],
                                contact["company_id"], None, manager.id, settings.hours, timedelta(minutes=1))
    await leads_db.get_or_create_phone_lead(conn, "+79165550001", "sales")
    stranger = await calls_db.save_call(conn, record("102.0", "+79165550001", "missed", None, started=now - 300))
    await missed_db.record_call(conn, stranger.id, "inbound", "missed", "no_answer", "+79165550001",
                                "+74951234567", datetime.fromtimestamp(now - 300, UTC), None, None, None, None,
                                None, None, settings.hours, timedelta(minutes=1))
    await seed_russian_money(conn)
    # The timeline's own rows (web/timeline.py): a call result with a callback and a note on the contact.
    from crm import call_results, timeline

    head = await users_db.get_user_by_login(conn, "head")
    await call_results.record_result(conn, head, missed.id, "callback", "Перезвонить после обеда",
                                     datetime.now(UTC) + timedelta(days=1))
    await timeline.add_note(conn, head, "Просил прислать каталог", contact_id=contact["id"])


async def seed_russian_money(conn):
    """A contract of deal 1's company, an invoice partly paid by hand, and a payment waiting to be matched."""
    from crm import contracts, invoices, payments

    head = await users_db.get_user_by_login(conn, "head")
    company_id = await conn.fetchval("SELECT company_id FROM deals WHERE id = 1")
    contract = await contracts.create_contract(conn, head, number="П-1/2026", signed_on="2026-01-10",
                                               company_id=company_id, kind="supply", valid_until="2026-12-31",
                                               prepayment_percent=30, deferral_days=10)
    await contracts.set_deal_contract(conn, head, 1, contract.id)
    today = datetime.now(UTC).date()
    invoice = await invoices.issue_invoice(conn, head, 1, today - timedelta(days=20), vat_percent=22,
                                           prices_include_vat=True)
    now = datetime.now(UTC)
    await payments.enter_payment(conn, head, now, doc_number="17", doc_date=today.isoformat(), amount="1000",
                                 payer_name="ООО «Ромашка»", allocations=[{"invoice_id": invoice.id, "amount": 1000}])
    await payments.enter_payment(conn, head, now, doc_number="18", doc_date=today.isoformat(), amount="500",
                                 payer_name="ИП Сидоров", purpose="Возврат")
    await invoices.flag_overdue_invoices(conn, today, now)


@pytest.fixture
async def russian_client(settings, pool, aiohttp_client):
    """The company's setting says Russian; the client sends no Accept-Language."""
    return await aiohttp_client(create_app(replace(settings, language="ru"), pool))


@pytest.mark.parametrize("who", ["head", "manager1", "admin"])
async def test_every_page_in_russian_shows_no_english_ui_word(russian_client, conn, settings, who):
    await seed_russian_day(conn, settings)
    await login(russian_client, who)
    paths = [*PAGES, "/admin/users", "/admin/company", "/mail", "/import", "/admin/webhooks", "/mail/outbox",
             "/admin/deal-stages"]
    leftovers = {}
    for path in paths:
        resp = await russian_client.get(path)
        assert resp.status in (200, 403, 404), (path, resp.status)
        page = await resp.text()
        assert '<html lang="ru">' in page, path
        parser = VisibleText()
        parser.feed(page)
        found = sorted({m.group(1) for part in parser.parts for m in _ENGLISH.finditer(part)})
        if found:
            leftovers[path] = found
    assert leftovers == {}


async def test_russian_formats_on_the_pages(russian_client, conn, settings):
    await seed_russian_day(conn, settings)
    await login(russian_client, "head")
    deal = await (await russian_client.get("/deals/1")).text()
    assert "25\xa0500,00\xa0₽" in deal  # 30 × 450 + 10 × 1200
    assert "Подшипники для линии прессов" in deal and "Подбор оборудования" in deal
    calls = await (await russian_client.get("/calls")).text()
    assert "1 мин 03 с" in calls and "отвечен" in calls and "пропущен" in calls
    assert re.search(r"\d\d\.\d\d\.\d{4} \d\d:\d\d", calls)
    board = await (await russian_client.get("/missed")).text()
    assert ("нет ответа" in board or "в нерабочее время" in board) and "Новый лид" in board and "открыт" in board
    leads = await (await russian_client.get("/leads")).text()
    assert "Новый лид: звонок с номера +7 916 555-00-01" in leads  # a notification written in English
    await login(russian_client, "manager1")
    home = await (await russian_client.get("/home")).text()
    assert "1 попытка" in home and "20 дней (норма 7)" in home and "270\xa0000,00\xa0₽" in home


async def test_the_javascript_catalog_is_served_in_the_page(russian_client, conn, settings):
    await seed_demo(conn, "RU", "ru")
    await login(russian_client, "manager1")
    page = await (await russian_client.get("/calls")).text()
    start = page.index('<script type="application/json" id="callboard-i18n">') + len(
        '<script type="application/json" id="callboard-i18n">')
    import json

    catalog = json.loads(page[start:page.index("</script>", start)])
    assert catalog["language"] == "ru" and catalog["zone"] == settings.timezone
    assert catalog["messages"]["Answered by %(who)s"] == "Ответил %(who)s"
    assert catalog["labels"]["answered"] == "отвечен"
    assert catalog["labels"]["Commercial offer"] == "Коммерческое предложение"
    assert catalog["units"] == {"hour": "{0} ч", "minute": "{0} мин", "second": "{0} с"}


async def test_an_english_user_sees_english(russian_client, conn, settings):
    await seed_demo(conn, "RU", "ru")
    await login(russian_client, "manager1")
    # The browser asks for English: English, whatever the company setting.
    page = await (await russian_client.get("/calls", headers={"Accept-Language": "en-US,en;q=0.9"})).text()
    assert '<html lang="en">' in page and ">Calls<" in page and ">Missed<" in page
    # Their own choice wins over the browser's.
    csrf = await login(russian_client, "manager1")
    resp = await russian_client.post("/password/language", data={"language": "en", "csrf_token": csrf},
                                     allow_redirects=False)
    assert resp.status == 302, await resp.text()
    page = await (await russian_client.get("/home", headers={"Accept-Language": "ru-RU"})).text()
    assert '<html lang="en">' in page and "My tasks" in page
    resp = await russian_client.post("/password/language", data={"language": "", "csrf_token": csrf},
                                     allow_redirects=False)
    assert resp.status == 302
    page = await (await russian_client.get("/home", headers={"Accept-Language": "ru-RU"})).text()
    assert '<html lang="ru">' in page and "Мои задачи" in page
    bad = await russian_client.post("/password/language", data={"language": "de", "csrf_token": csrf})
    assert bad.status == 422


async def test_the_admin_sets_a_users_language(russian_client, conn, settings):
    await seed_demo(conn, "RU", "ru")
    csrf = await login(russian_client, "admin")
    manager = await users_db.get_user_by_login(conn, "manager2")
    resp = await russian_client.post(f"/admin/users/{manager.id}/edit", headers=csrf_headers(csrf), data={
        "csrf_token": csrf, "version": str(manager.version), "display_name": manager.display_name,
        "role": "manager", "extension": "102", "devices": "", "active": "on", "language": "en"},
        allow_redirects=False)
    assert resp.status == 302, await resp.text()
    assert (await users_db.get_user_by_login(conn, "manager2")).language == "en"
    page = await (await russian_client.get("/admin/users")).text()
    assert '<option value="en" selected>English</option>' in page
