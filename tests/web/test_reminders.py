"""Payment reminders: from the receivables page or the API, a Russian e-mail to the client listing the overdue
invoices with the invoice PDFs attached, through the outbox into the client's history; once a day per invoice."""

import asyncio
import io
from datetime import UTC, datetime

import pypdf
import pytest

from crm import deals as deals_db
from crm import invoices as invoices_db
from crm import stock
from tests.conftest import csrf_headers, login
from tests.web import test_outgoing_mail as outgoing
from tests.web.test_outgoing_mail import wait_until

# The SMTP sink and the app that relays to it, as the outgoing-mail tests have them.
relay_port, sink, mail_client = outgoing.relay_port, outgoing.sink, outgoing.mail_client


@pytest.fixture
async def debts(conn, factory):
    """manager1's client «Ромашка» (with an e-mail) owes on two invoices, 20 and 5 days overdue, and one not due
    yet; manager2's client owes on one overdue invoice."""
    manager1 = await factory.user("manager1", extension="101")
    manager2 = await factory.user("manager2", extension="102")
    await factory.user("keeper", role="warehouse")
    product = await stock.create_product(conn, "BRG-6204", "Подшипник 6204-2RS", "pcs", 1220, None, False)
    today = datetime.now(UTC).date()
    made = {}
    for key, manager, client, email, quantity, overdue in (
            ("a", manager1, "ООО «Ромашка»", "buh@romashka.ru", 10, 20), ("b", manager1, None, None, 2, 5),
            ("c", manager1, None, None, 1, -3), ("d", manager2, "ООО «Лютик»", "lutik@example.ru", 1, 9)):
        if client:
            company = await factory.company(client, manager)
            await conn.execute("INSERT INTO emails (company_id, email) VALUES ($1, $2)", company.id, email)
            made[key + "_company"] = company
        deal = await deals_db.create_deal(conn, manager, f"Поставка {key}", datetime.now(UTC),
                                          company_id=company.id)
        await deals_db.add_item(conn, manager, deal.id, product.id, quantity)
        invoice = await invoices_db.issue_invoice(conn, manager, deal.id, today, vat_percent=22,
                                                  prices_include_vat=True)
        await conn.execute("UPDATE invoices SET issued_on = $2::date - 30, due_on = $2::date - $3::int WHERE id = $1",
                           invoice.id, today, overdue)
        made[key] = invoice
    return made


async def test_a_reminder_in_russian_with_the_pdfs_reaches_the_client_once_a_day(sink, mail_client, conn, debts):
    csrf = await login(mail_client, "manager1")
    company = debts["a_company"]
    resp = await mail_client.post("/api/receivables/reminders", json={"company_id": company.id},
                                  headers=csrf_headers(csrf))
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["invoice_ids"] == [debts["a"].id, debts["b"].id]  # the overdue ones, not the one not due yet
    assert body["mail"]["to"] == ["buh@romashka.ru"]

    await wait_until(lambda: asyncio.sleep(0, bool(sink.messages)))
    _, recipients, message = sink.messages[0]
    assert recipients == ["buh@romashka.ru"]
    assert message["Subject"].startswith("Напоминание об оплате")
    text = message.get_body(("plain",)).get_content().replace("\xa0", " ")
    assert f"Счёт № {debts['a'].number} от" in text and f"Счёт № {debts['b'].number} от" in text
    assert "12 200,00" in text and "2 440,00" in text and "Просрочено всего: 14 640,00" in text
    assert "20 дней просрочки" in text and "5 дней просрочки" in text
    assert f"Счёт № {debts['c'].number} от" not in text
    files = list(message.iter_attachments())
    assert [f.get_content_type() for f in files] == ["application/pdf", "application/pdf"]
    pdf_text = " ".join(" ".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(files[0].get_content())).pages)
                        .split())
    assert "Подшипник 6204-2RS" in pdf_text and "Счёт на оплату" in pdf_text

    # Sent: in the client's history, with the invoices.
    await wait_until(lambda: conn.fetchval("SELECT state = 'sent' FROM outgoing_mail"))
    history = await conn.fetchrow("SELECT direction, company_id, (SELECT count(*) FROM mail_attachments a "
                                  "WHERE a.message_id = m.id) AS files FROM mail_messages m")
    assert dict(history) == {"direction": "out", "company_id": company.id, "files": 2}
    assert "Напоминание об оплате" in await (await mail_client.get(f"/companies/{company.id}")).text()

    # The same day again, per client or per invoice: nothing more is queued.
    again = await mail_client.post("/api/receivables/reminders", json={"invoice_ids": [debts["b"].id]},
                                   headers=csrf_headers(csrf))
    assert again.status == 409
    assert await conn.fetchval("SELECT count(*) FROM outgoing_mail") == 1


async def test_a_double_click_on_the_page_queues_one_reminder(mail_client, conn, debts):
    csrf = await login(mail_client, "manager1")
    page = await (await mail_client.get("/receivables")).text()
    assert page.count("/receivables/reminders") == 3  # the client, and each of its two overdue invoices
    form = {"csrf_token": csrf, "invoice_id": str(debts["a"].id)}
    clicks = await asyncio.gather(*(mail_client.post("/receivables/reminders", data=form, allow_redirects=False)
                                    for _ in range(2)))
    assert sorted(r.headers["Location"] for r in clicks) == ["/receivables?reminded=0", "/receivables?reminded=1"]
    assert await conn.fetchval("SELECT count(*) FROM outgoing_mail") == 1
    assert await conn.fetchval("SELECT count(*) FROM payment_reminders WHERE outgoing_id IS NOT NULL") == 1
    shown = await (await mail_client.get("/receivables?reminded=0")).text()
    assert "was sent today already" in shown
    # The other overdue invoice of the client can still be reminded of today.
    resp = await mail_client.post("/receivables/reminders", data={"csrf_token": csrf,
                                                                 "company_id": str(debts["a_company"].id)},
                                  allow_redirects=False)
    assert resp.headers["Location"] == "/receivables?reminded=1"


async def test_who_may_remind_whom_and_bad_requests(mail_client, conn, debts):
    csrf = await login(mail_client, "manager1")

    async def remind(payload):
        return await mail_client.post("/api/receivables/reminders", json=payload, headers=csrf_headers(csrf))

    assert (await remind({"company_id": debts["d_company"].id})).status == 404  # manager2's client
    assert (await remind({"invoice_ids": [debts["c"].id]})).status == 404  # not overdue yet
    assert (await remind({"invoice_ids": [debts["a"].id, debts["d"].id]})).status == 422  # not all theirs
    assert (await remind({})).status == 422
    assert (await remind({"invoice_ids": ["x"]})).status == 422
    assert (await remind({"company_id": debts["a_company"].id, "language": "de"})).status == 422
    assert await conn.fetchval("SELECT count(*) FROM outgoing_mail") == 0
    await mail_client.post("/logout", data={"csrf_token": csrf})
    csrf = await login(mail_client, "keeper")
    resp = await mail_client.post("/api/receivables/reminders", json={"company_id": debts["a_company"].id},
                                  headers=csrf_headers(csrf))
    assert resp.status == 403


async def test_the_reminder_route_is_in_openapi(client):
    spec = await (await client.get("/api/openapi.json")).json()
    assert "409" in spec["paths"]["/api/receivables/reminders"]["post"]["responses"]
