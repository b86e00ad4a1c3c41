"""Money in a real browser: the manager issues an invoice from a deal and downloads its PDF, the accountant imports
the bank statement that pays part of it, and after the due date (time moved) the receivables page and the head's
home show the rest overdue."""

import io
import re
from datetime import UTC, datetime, timedelta

import pypdf
from playwright.async_api import expect

from crm import contracts, deals, stock
from tests.crm.statements import Doc, statement_bytes
from tests.web.test_browser import browser, logged_in_page  # noqa: F401 (the browser fixture)
from tests.web.test_money import CLIENT_ACCOUNT, CLIENT_INN


async def test_invoice_pdf_statement_and_overdue_rest(settings, pool, conn, factory, aiohttp_server, browser,  # noqa: F811
                                                      tmp_path, monkeypatch):
    import web.money
    from web.app import create_app

    await factory.user("head", role="head")
    await factory.user("buhgalter", role="accountant")
    manager = await factory.user("manager1", extension="101")
    company = await factory.company("ООО «Ромашка»", manager)
    await conn.execute("UPDATE companies SET tax_id = $2 WHERE id = $1", company.id, CLIENT_INN)
    contract = await contracts.create_contract(
        conn, manager, number="П-17/2026", signed_on="2026-01-15", company_id=company.id, kind="supply",
        valid_until="2027-12-31", prepayment_percent=0, deferral_days=10)
    product = await stock.create_product(conn, "BRG-6204", "Подшипник 6204-2RS", "pcs", 1220, None, False)
    deal = await deals.create_deal(conn, manager, "Подшипники для конвейера", datetime.now(UTC),
                                   company_id=company.id)
    await deals.add_item(conn, manager, deal.id, product.id, 10)
    await contracts.set_deal_contract(conn, manager, deal.id, contract.id)
    app = create_app(settings, pool)
    server = await aiohttp_server(app)
    base_url = str(server.make_url("")).rstrip("/")

    # The manager issues the invoice from the deal's card and downloads its PDF.
    page = await logged_in_page(browser, base_url, "manager1")
    await page.goto(f"{base_url}/deals/{deal.id}")
    await page.click("#issue-invoice button")
    await page.wait_for_url(re.compile(r"/invoices/\d+$"))
    invoice_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    async with page.expect_download() as download_info:
        await page.click("a[href$='/pdf']")
    download = await download_info.value
    pdf_path = tmp_path / "invoice.pdf"
    await download.save_as(pdf_path)
    text = " ".join("".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf_path.read_bytes())).pages)
                    .split())
    assert "ООО «Ромашка»" in text and "Подшипник 6204-2RS" in text and "12,200.00" in text, text[:500]
    issued = await conn.fetchrow("SELECT number, issued_on, due_on FROM invoices WHERE id = $1", invoice_id)

    # The accountant imports the bank's statement: 5 000 of the 12 200 paid, found by the invoice's number.
    accountant = await logged_in_page(browser, base_url, "buhgalter")
    statement = tmp_path / "kl_to_1c.txt"
    statement.write_bytes(statement_bytes([Doc(
        "317", issued["issued_on"].strftime("%d.%m.%Y"), "5000.00", "ООО «Ромашка»", CLIENT_INN, CLIENT_ACCOUNT,
        f"Оплата по счету № {issued['number']} от {issued['issued_on'].strftime('%d.%m.%Y')}")],
        day_from=issued["issued_on"].strftime("%d.%m.%Y"), day_to=issued["issued_on"].strftime("%d.%m.%Y")))
    await accountant.goto(f"{base_url}/payments")
    await accountant.set_input_files("#statement-upload input[type=file]", str(statement))
    await accountant.click("#statement-upload button")
    summary = accountant.locator("#import-summary")
    await expect(summary).to_contain_text("Statement imported")
    assert await conn.fetchval("SELECT state FROM invoices WHERE id = $1", invoice_id) == "partly_paid"

    # Fifteen days later (ten days' deferral): the rest, 7 200, is overdue.
    later = datetime.now(UTC) + timedelta(days=15)
    monkeypatch.setattr(web.money, "_now", lambda: later)
    assert issued["due_on"] < later.date()
    await web.money.check_overdue_invoices(app)  # the periodic job's run
    head = await logged_in_page(browser, base_url, "head")
    await head.goto(f"{base_url}/receivables")
    client_row = head.locator("#by-client tbody tr", has_text="ООО «Ромашка»")
    await expect(client_row.locator("td").nth(1)).to_contain_text("7,200.00")  # owed
    await expect(client_row.locator("td").nth(2)).to_contain_text("7,200.00")  # of it overdue
    await expect(client_row.locator("td.overdue-line")).to_have_count(1)
    unpaid = head.locator("#unpaid tbody tr.overdue-line")
    await expect(unpaid).to_have_count(1)
    await expect(unpaid).to_contain_text("5 days")
    await head.goto(f"{base_url}/home")
    await expect(head.locator("#tasks")).to_contain_text(f"Invoice № {issued['number']} of")
    await expect(head.locator("#tasks")).to_contain_text("is overdue: ООО «Ромашка»")
