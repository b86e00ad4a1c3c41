"""Money over HTTP: contracts, invoices and their printable page, statements uploaded (once), payments split by
hand, receivables; roles; bad input answers 4xx."""

import asyncio
import io

import aiohttp
import pypdf
import pytest

from crm import invoices as invoices_db
from crm import stock
from tests.conftest import csrf_headers, login
from tests.crm.statements import Doc, statement_bytes

CLIENT_INN = "7701234567"
CLIENT_ACCOUNT = "40702810138000067890"


def paying(number: str, amount: str, purpose: str) -> Doc:
    return Doc(number, "25.11.2026", amount, "ООО «Ромашка»", CLIENT_INN, CLIENT_ACCOUNT, purpose)


async def logout(client, csrf: str) -> None:
    await client.post("/logout", data={"csrf_token": csrf})


@pytest.fixture
async def world(client, conn, factory):
    """manager1's client company (with INN), a contract, a deal of 10 bearings at 1 220 ₽; logged in as manager1."""
    await factory.user("head", role="head")
    manager = await factory.user("manager1", extension="101")
    await factory.user("manager2", extension="102")
    company = await factory.company("ООО «Ромашка»", manager)
    await conn.execute("UPDATE companies SET tax_id = $2 WHERE id = $1", company.id, CLIENT_INN)
    await stock.create_product(conn, "BRG-6204", "Подшипник 6204-2RS", "pcs", 1220, None, False)
    csrf = await login(client, "manager1")
    contract = await (await client.post("/api/contracts", headers=csrf_headers(csrf), json={
        "number": "П-17/2026", "signed_on": "2026-01-15", "company_id": company.id, "kind": "supply",
        "valid_until": "2026-12-31", "deferral_days": 10})).json()
    deal = await (await client.post("/api/deals", headers=csrf_headers(csrf), json={
        "title": "Подшипники", "company_id": company.id})).json()
    resp = await client.post(f"/api/deals/{deal['id']}/items", headers=csrf_headers(csrf),
                             json={"sku": "BRG-6204", "quantity": 10})
    assert resp.status == 200, await resp.text()
    resp = await client.post(f"/api/deals/{deal['id']}/contract", headers=csrf_headers(csrf),
                             json={"contract_id": contract["id"]})
    assert resp.status == 200, await resp.text()
    return {"csrf": csrf, "company": company, "contract": contract, "deal": deal}


async def test_invoice_from_a_deal_paid_partly_by_an_uploaded_statement(client, conn, world):
    csrf, deal = world["csrf"], world["deal"]
    resp = await client.post(f"/api/deals/{deal['id']}/invoices", headers=csrf_headers(csrf), json={})
    assert resp.status == 201, await resp.text()
    invoice = await resp.json()
    today = invoice["issued_on"]
    assert {k: invoice[k] for k in ("number", "total", "vat", "net", "vat_percent", "state", "owed", "buyer",
                                    "buyer_tax_id", "contract_id")} == {
        "number": 1, "total": "12200.00", "vat": "2200.00", "net": "10000.00", "vat_percent": 22,
        "state": "issued", "owed": "12200.00", "buyer": "ООО «Ромашка»", "buyer_tax_id": CLIENT_INN,
        "contract_id": world["contract"]["id"]}
    assert invoice["items"][0]["quantity"] == "10.000"
    again = await client.post(f"/api/deals/{deal['id']}/invoices", headers=csrf_headers(csrf), json={})
    assert again.status == 409
    printable = await client.get(invoice["print"])
    assert printable.status == 200
    page = await printable.text()
    for text in ("Invoice № 1 of", "Your Company LLC", "ООО «Ромашка»", "INN 7701234567", "Contract № П-17/2026",
                 "Подшипник 6204-2RS", "RUB12,200.00", "Including VAT (22%):", "RUB2,200.00", '/static/invoice.css'):
        assert text in page, text
    assert "style=" not in page and "<script>" not in page
    # The same invoice as a PDF: text that can be searched and copied, in Cyrillic, with the amount in words.
    pdf = await client.get(f"/invoices/{invoice['id']}/pdf", headers={"Accept-Language": "ru"})
    assert pdf.status == 200 and pdf.content_type == "application/pdf"
    text = "".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(await pdf.read())).pages)
    text = " ".join(text.split())
    for piece in ("ООО «Ромашка»", "Подшипник 6204-2RS", "12 200,00", "Двенадцать тысяч двести рублей 00 копеек"):
        assert piece in text, (piece, text[:600])
    deal_page = await (await client.get(f"/deals/{deal['id']}")).text()
    assert f'href="/invoices/{invoice["id"]}"' in deal_page and "П-17/2026" in deal_page
    # Managers do not import statements; the head does.
    data = statement_bytes([paying("317", "5000.00", f"Оплата по счету № 1 от {today[8:10]}.{today[5:7]}.{today[:4]}")])
    form = aiohttp.FormData()
    form.add_field("file", data, filename="kl_to_1c.txt", content_type="text/plain")
    assert (await client.post("/api/bank-statements", headers=csrf_headers(csrf), data=form)).status == 403
    await logout(client, csrf)
    csrf = await login(client, "head")
    form = aiohttp.FormData()
    form.add_field("file", data, filename="kl_to_1c.txt", content_type="text/plain")
    resp = await client.post("/api/bank-statements", headers=csrf_headers(csrf), data=form)
    assert resp.status == 201, await resp.text()
    summary = await resp.json()
    del summary["statement_id"], summary["payment_ids"]
    assert summary == {"documents": 1, "incoming": 1, "outgoing": 0, "matched": 1, "to_match": 0, "duplicates": 0,
                       "problems": []}
    # The same file as a raw body: nothing new.
    resp = await client.post("/api/bank-statements", headers={**csrf_headers(csrf), "Content-Type": "text/plain"},
                             data=data)
    assert (await resp.json())["duplicates"] == 1
    body = await (await client.get(f"/api/invoices/{invoice['id']}")).json()
    assert (body["state"], body["paid"], body["owed"]) == ("partly_paid", "5000.00", "7200.00")
    assert [(p["doc_number"], p["amount"], p["matched_by"]) for p in body["payments"]] == [
        ("317", "5000.00", "number")]
    # After the due date (time moved by asking as of a later day) the rest is overdue.
    report = await (await client.get("/api/receivables?as_of=2027-01-20")).json()
    assert (report["total"]["owed"], report["total"]["overdue"], report["total"]["buckets"]["31_60"]) == (
        "7200.00", "7200.00", "7200.00")
    assert [(c["name"], c["owed"]) for c in report["clients"]] == [("ООО «Ромашка»", "7200.00")]
    page = await (await client.get("/receivables?as_of=2027-01-20")).text()
    assert "7,200.00" in page and "31–60 days" in page


async def test_two_uploads_of_one_statement_at_once_give_one_set_of_payments(client, conn, world):
    await logout(client, world["csrf"])
    csrf = await login(client, "head")
    data = statement_bytes([paying(str(n), "100.00", "Оплата за подшипники") for n in range(1, 21)])

    async def upload():
        return await client.post("/api/bank-statements", headers={**csrf_headers(csrf), "Content-Type": "text/plain"},
                                 data=data)

    answers = [await r.json() for r in await asyncio.gather(upload(), upload())]
    assert sorted((a["incoming"], a["to_match"], a["duplicates"]) for a in answers) == [(20, 0, 20), (20, 20, 0)]
    assert await conn.fetchval("SELECT count(*) FROM payments") == 20


async def test_a_payment_entered_and_split_from_the_pages(client, conn, world):
    csrf, deal = world["csrf"], world["deal"]
    item_id = (await (await client.get(f"/api/deals/{deal['id']}")).json())["items"][0]["id"]
    first = await (await client.post(f"/api/deals/{deal['id']}/invoices", headers=csrf_headers(csrf),
                                     json={"items": [{"deal_item_id": item_id, "quantity": 4}]})).json()
    resp = await client.post(f"/deals/{deal['id']}/invoice", data={"csrf_token": csrf, "due_on": ""},
                             allow_redirects=False)
    assert resp.status == 302, await resp.text()
    second_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    await logout(client, csrf)
    csrf = await login(client, "head")
    resp = await client.post("/payments/new", allow_redirects=False, data={
        "csrf_token": csrf, "doc_number": "88", "doc_date": "2026-11-26", "amount": "6000", "payer_name": "Ромашка",
        "payer_inn": "", "purpose": "за подшипники"})
    assert resp.status == 302, await resp.text()
    payment_path = resp.headers["Location"]
    page = await (await client.get(payment_path)).text()
    assert 'id="allocate"' in page
    form = aiohttp.FormData([("csrf_token", csrf), ("invoice_id", str(first["id"])), ("amount", "4880"),
                             ("invoice_id", str(second_id)), ("amount", "1120"), ("invoice_id", ""), ("amount", "")])
    resp = await client.post(f"{payment_path}/allocate", data=form, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    body = await (await client.get(f"/api{payment_path}")).json()
    assert [(a["number"], a["amount"]) for a in body["allocations"]] == [(1, "4880.00"), (2, "1120.00")]
    states = {i["number"]: i["state"] for i in (await (await client.get("/api/invoices")).json())["items"]}
    assert states == {1: "paid", 2: "partly_paid"}


async def test_the_overdue_job_tasks_the_manager_once_and_the_home_page_shows_it(client, conn, world):
    from web.money import check_overdue_invoices
    csrf, deal = world["csrf"], world["deal"]
    invoice = await (await client.post(f"/api/deals/{deal['id']}/invoices", headers=csrf_headers(csrf),
                                       json={})).json()
    await conn.execute("UPDATE invoices SET issued_on = issued_on - 40, due_on = due_on - 30 WHERE id = $1",
                       invoice["id"])
    assert len(await check_overdue_invoices(client.app)) == 1
    assert await check_overdue_invoices(client.app) == []
    home = await (await client.get("/home")).text()
    assert "Invoice № 1 of" in home and "is overdue: ООО «Ромашка»" in home
    tasks = (await (await client.get("/api/tasks")).json())["items"]
    assert [(t["kind"], t["deal_id"]) for t in tasks] == [("overdue_invoice", deal["id"])]


async def test_pages_for_each_role(client, conn, world):
    await client.post(f"/api/deals/{world['deal']['id']}/invoices", headers=csrf_headers(world["csrf"]), json={})
    await logout(client, world["csrf"])
    for who in ("manager1", "manager2", "head", "admin"):
        if who == "admin":
            await conn.execute("INSERT INTO users (login, password_hash, role, display_name) SELECT 'admin', "
                               "password_hash, 'admin', 'Admin' FROM users WHERE login = 'head'")
        csrf = await login(client, who, "head" if who == "admin" else None)
        for path in ("/invoices", "/invoices/1", "/invoices/1/print", "/payments", "/receivables", "/contracts",
                     f"/contracts/{world['contract']['id']}", f"/deals/{world['deal']['id']}"):
            resp = await client.get(path)
            expected = 404 if who == "manager2" and path not in ("/invoices", "/payments", "/receivables",
                                                                 "/contracts") else 200
            assert resp.status == expected, (who, path, resp.status)
        await logout(client, csrf)


async def test_bad_input_gets_a_clear_4xx(client, conn, world):
    csrf, deal = world["csrf"], world["deal"]
    h = csrf_headers(csrf)
    cases = [
        ("/api/contracts", {"number": "", "signed_on": "2026-01-01", "company_id": world["company"].id,
                            "kind": "supply"}, 422),
        ("/api/contracts", {"number": "X", "signed_on": "01.01.2026", "company_id": world["company"].id,
                            "kind": "supply"}, 422),
        ("/api/contracts", {"number": "X", "signed_on": "2026-01-01", "company_id": 10**30, "kind": "supply"}, 422),
        ("/api/contracts", {"number": "X", "signed_on": "2026-01-01", "company_id": 999, "kind": "supply"}, 404),
        ("/api/contracts", {"number": ["X"], "signed_on": "2026-01-01", "company_id": 1, "kind": "supply"}, 422),
        (f"/api/deals/{deal['id']}/contract", {"contract_id": "abc"}, 422),
        (f"/api/deals/{deal['id']}/invoices", {"items": "all"}, 422),
        (f"/api/deals/{deal['id']}/invoices", {"items": [{"deal_item_id": 1, "quantity": "много"}]}, 422),
        (f"/api/deals/{deal['id']}/invoices", {"due_on": "2000-01-01"}, 422),
        (f"/api/deals/{deal['id']}/invoices", {"due_on": 5}, 422),
        ("/api/deals/99999/invoices", {}, 404),
        ("/api/invoices/99999/cancel", {}, 404),
    ]
    for path, body, status in cases:
        resp = await client.post(path, headers=h, json=body)
        assert resp.status == status, (path, body, resp.status, await resp.text())
        assert (await resp.json())["error"]["status"] == status
    await logout(client, csrf)
    csrf = await login(client, "head")
    h = csrf_headers(csrf)
    for body in (b"", b"%PDF-1.7 not a statement", "Дата;Сумма\n01.11.2026;100\n".encode("cp1251")):
        resp = await client.post("/api/bank-statements", headers={**h, "Content-Type": "text/plain"}, data=body)
        assert resp.status == 422, await resp.text()
        assert (await resp.json())["error"]["field"] == "file"
    form = aiohttp.FormData()
    form.add_field("other", b"x", filename="x.txt")
    assert (await client.post("/api/bank-statements", headers=h, data=form)).status == 422
    huge = b"1CClientBankExchange\r\n" + b"x" * (21 * 1024 * 1024)
    resp = await client.post("/api/bank-statements", headers={**h, "Content-Type": "text/plain"}, data=huge)
    assert resp.status == 413
    for body, status in (({"doc_number": "1", "doc_date": "2026-11-01", "amount": "abc"}, 422),
                         ({"doc_number": "", "doc_date": "2026-11-01", "amount": "1"}, 422),
                         ({"doc_number": "1", "doc_date": "2026-11-01", "amount": "1", "payer_inn": "12"}, 422),
                         ({"doc_number": "1", "doc_date": "2026-11-01", "amount": "1",
                           "allocations": [{"invoice_id": 999, "amount": "1"}]}, 404)):
        resp = await client.post("/api/payments", headers=h, json=body)
        assert resp.status == status, (body, await resp.text())
    assert (await client.get("/api/receivables?as_of=yesterday")).status == 422
    assert (await client.get("/api/contracts/expiring?days=0")).status == 422
    assert (await client.post("/api/payments/99999/allocate", headers=h,
                              json={"allocations": [{"invoice_id": 1, "amount": 1}]})).status == 404
    assert (await client.get("/api/invoices?state=open")).status == 422


def test_the_number_sequence_is_per_year():
    assert invoices_db.overdue_title(15, 2026, "ООО «Ромашка»") == "Invoice № 15 of 2026 is overdue: ООО «Ромашка»"


async def test_openapi_describes_every_money_route(client):
    import re

    spec = await (await client.get("/api/openapi.json")).json()
    money = {re.sub(r"\{\w+_id(:[^}]*)?\}", "{id}", r.resource.canonical) for r in client.app.router.routes()
             if r.resource is not None and r.handler.__module__ == "web.money"
             and r.resource.canonical.startswith("/api/")}
    money = {re.sub(r"\{action[^}]*\}", action, path) for path in money for action in ("allocate", "unallocate",
                                                                                     "dismiss")}
    assert len(money) == 15
    assert money - set(spec["paths"]) == set()
