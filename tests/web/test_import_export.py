"""Spreadsheet import (CSV in any delimiter and encoding, XLSX; mapping, duplicates, dry run, row errors) and the
export of every list to CSV and XLSX with its filters."""

import asyncio
import csv
import io
import time

import pytest
from aiohttp import FormData
from openpyxl import Workbook, load_workbook

from crm import importer
from crm import stock as stock_db
from tests.conftest import csrf_headers, login

# A spreadsheet as people keep them: cp1251, ';', a title-less blank line, quoted cells with the delimiter inside,
# phones in every shape, two phones in one cell, a bad phone, a bad e-mail, an empty name, a duplicate.
MESSY = (
    "ФИО;Телефон;E-mail;Компания;ИНН;Комментарий\r\n"
    "\r\n"
    "Иванов Иван;+7 (495) 123-45-67;ivanov@example.ru;\"ООО \"\"Ромашка\"\"\";7701234567;\"звонить; после 12\"\r\n"
    "Петров Пётр;8 916 555-00-01, 8-916-555-00-02;;ООО \"Ромашка\";;\r\n"
    ";+74951112233;;;;без имени\r\n"
    "Сидоров;12;sidorov@example.ru;;;\r\n"
    "Кузнецова Анна;;not-an-email;;;\r\n"
    "Иван Иванов (дубль);84951234567;;;;второй раз\r\n"
).encode("cp1251")


def upload(data: bytes, filename: str = "clients.csv", **fields: str) -> FormData:
    form = FormData()
    form.add_field("file", data, filename=filename)
    for name, value in fields.items():
        form.add_field(name, value)
    return form


def xlsx(rows: list[list]) -> bytes:
    book = Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_reading_detects_encoding_and_delimiter():
    table = importer.read_table(MESSY)
    assert (table.format, table.encoding, table.delimiter) == ("csv", "cp1251", ";")
    assert table.headers == ["ФИО", "Телефон", "E-mail", "Компания", "ИНН", "Комментарий"]
    assert table.rows[1] == ["Иванов Иван", "+7 (495) 123-45-67", "ivanov@example.ru", 'ООО "Ромашка"', "7701234567",
                             "звонить; после 12"]
    assert importer.suggest_mapping("contacts", table.headers) == ["name", "phone", "email", "company", "inn", "notes"]
    tabbed = importer.read_table("\ufeffSKU\tName\tPrice\nA-1\tBolt, M6\t1,50\n".encode())
    assert (tabbed.encoding, tabbed.delimiter, tabbed.rows) == ("utf-8", "\t", [["A-1", "Bolt, M6", "1,50"]])
    commas = importer.read_table(b"name,phone\n\"Smith, John\",+1 212 555 0100\n")
    assert (commas.delimiter, commas.rows) == (",", [["Smith, John", "+1 212 555 0100"]])
    book = importer.read_table(xlsx([["Наименование", "Телефон", "ИНН"], ["ООО Вектор", 74957776655, 7712345678],
                                     [None, None, None], ["ИП Лось", "+7 495 777-66-44", None]]), "x.xlsx")
    assert (book.format, book.headers) == ("xlsx", ["Наименование", "Телефон", "ИНН"])
    assert book.rows == [["ООО Вектор", "74957776655", "7712345678"], ["", "", ""], ["ИП Лось", "+7 495 777-66-44", ""]]


@pytest.mark.parametrize("data, message", [
    (b"", "is empty"), (b"   \n", "is empty"), (b"PK\x03\x04broken", "XLSX"), (b"\x00\x01\x02\x00", "CSV"),
])
def test_unreadable_files(data, message):
    with pytest.raises(importer.ValidationError) as caught:
        importer.read_table(data)
    assert message in caught.value.message


async def test_messy_spreadsheet_dry_run_then_import(client, factory, conn):
    await factory.user("head", role="head")
    csrf = await login(client, "head")
    resp = await client.post("/api/import/contacts/preview", data=upload(MESSY), headers=csrf_headers(csrf))
    assert resp.status == 200, await resp.text()
    preview = await resp.json()
    assert (preview["mapping"], preview["encoding"], preview["row_count"]) == (
        ["name", "phone", "email", "company", "inn", "notes"], "cp1251", 7)

    resp = await client.post("/api/import/contacts", data=upload(MESSY, dry_run="1"), headers=csrf_headers(csrf))
    assert resp.status == 200, await resp.text()
    dry = await resp.json()
    expected_errors = [
        {"row": 5, "field": "name", "message": "is empty"},
        {"row": 6, "field": "phone", "message": "'12' is an internal extension, not a phone number"},
        {"row": 7, "field": "email", "message": "'not-an-email' is not an e-mail address"},
    ]
    assert {k: dry[k] for k in ("dry_run", "rows", "created", "updated", "skipped", "errors",
                                "companies_created")} == {
        "dry_run": True, "rows": 6, "created": 2, "updated": 1, "skipped": 0, "errors": expected_errors,
        "companies_created": 1}
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0  # a dry run leaves nothing
    assert await conn.fetchval("SELECT count(*) FROM companies") == 0

    resp = await client.post("/api/import/contacts", data=upload(MESSY), headers=csrf_headers(csrf))
    done = await resp.json()
    assert {k: done[k] for k in ("dry_run", "created", "updated", "skipped", "errors")} == {
        "dry_run": False, "created": 2, "updated": 1, "skipped": 0, "errors": expected_errors}
    rows = await conn.fetch("""
        SELECT c.name, c.notes, co.name AS company, co.tax_id,
               ARRAY(SELECT e164 FROM phones p WHERE p.contact_id = c.id ORDER BY e164) AS phones,
               ARRAY(SELECT email FROM emails e WHERE e.contact_id = c.id) AS emails
        FROM contacts c LEFT JOIN companies co ON co.id = c.company_id ORDER BY c.id""")
    assert [dict(r) for r in rows] == [
        # The duplicate row (same phone written otherwise) updated the first: its name and notes win.
        {"name": "Иван Иванов (дубль)", "notes": "второй раз", "company": 'ООО "Ромашка"', "tax_id": "7701234567",
         "phones": ["+74951234567"], "emails": ["ivanov@example.ru"]},
        {"name": "Петров Пётр", "notes": "", "company": 'ООО "Ромашка"', "tax_id": "7701234567",
         "phones": ["+79165550001", "+79165550002"], "emails": []},
    ]
    # Again, skipping duplicates: nothing new, nothing changed.
    again = await (await client.post("/api/import/contacts", data=upload(MESSY, on_duplicate="skip"),
                                     headers=csrf_headers(csrf))).json()
    assert (again["created"], again["updated"], again["skipped"]) == (0, 0, 3)


async def test_companies_by_inn_and_a_mapping_chosen_by_hand(client, factory, conn):
    await factory.user("admin", role="admin")
    manager = await factory.user("anna", extension="101")
    csrf = await login(client, "admin")
    data = xlsx([["Клиент", "ИНН", "Тел.", "Ответственный", "Лишнее"],
                 ["ООО Вектор", 7712345678, 74957776655, "anna", "x"],
                 ["Вектор (новое имя)", "7712345678", None, "Anna", "y"],
                 ["ООО Бета", None, None, "nobody", "z"]])
    mapping = '{"0": "name", "1": "inn", "2": "phone", "Ответственный": "manager"}'
    resp = await client.post("/api/import/companies", data=upload(data, "c.xlsx", mapping=mapping),
                             headers=csrf_headers(csrf))
    result = await resp.json()
    assert (result["created"], result["updated"], result["errors"]) == (1, 1, [
        {"row": 4, "field": "manager", "message": "no user 'nobody' (give a login or a name)"}])
    assert [dict(r) for r in await conn.fetch("SELECT name, tax_id, manager_id FROM companies")] == [
        {"name": "Вектор (новое имя)", "tax_id": "7712345678", "manager_id": manager.id}]


async def test_products_and_stock(client, factory, conn):
    await factory.user("head", role="head")
    csrf = await login(client, "head")
    products = "Артикул;Наименование;Цена;Ед. изм.;Штрихкод\nA-1;Болт М6;1 250,50;шт;4600000000011\n" \
               "A-2;Гайка М6;0,5;шт;4600000000011\nA-1;Болт М6 оцинк.;;шт;\nA-3;Шайба;abc;шт;\n"
    result = await (await client.post("/api/import/products", data=upload(products.encode()),
                                      headers=csrf_headers(csrf))).json()
    assert (result["created"], result["updated"], result["errors"]) == (1, 1, [
        {"row": 3, "field": "barcode", "message": "belongs to product A-1"},
        {"row": 5, "field": "price", "message": "'abc' is not a number"}])
    product = await stock_db.product_by_sku(conn, "A-1")
    assert (product.name, str(product.price), product.barcode) == ("Болт М6 оцинк.", "1250.50", "4600000000011")

    counted = "SKU;Quantity\nA-1;10\nNOPE;3\nA-1;4\n"
    result = await (await client.post("/api/import/stock", data=upload(counted.encode()),
                                      headers=csrf_headers(csrf))).json()
    assert (result["created"], result["updated"], result["errors"]) == (1, 0, [
        {"row": 3, "field": "sku", "message": "no product with SKU 'NOPE'; import products first"},
        {"row": 4, "field": "sku", "message": "this SKU is already counted on row 2"}])
    assert (await stock_db.balance(conn, product.id)).on_hand == 10
    # A new count lower than on hand writes the difference off.
    result = await (await client.post("/api/import/stock", data=upload(b"SKU;Quantity\nA-1;6,5\n"),
                                      headers=csrf_headers(csrf))).json()
    assert (result["updated"], result["errors"]) == (1, [])
    assert str((await stock_db.balance(conn, product.id)).on_hand) == "6.500"


async def test_bad_requests(client, factory):
    await factory.user("head", role="head")
    await factory.user("mgr1")
    csrf = await login(client, "head")
    cases = [
        ("/api/import/contacts", upload(b"a;b\n1;2\n"), 422, "no column is mapped to name"),
        ("/api/import/contacts", upload(MESSY, mapping="[1"), 422, "must be JSON"),
        ("/api/import/contacts", upload(MESSY, mapping='["name", "name"]'), 422, "two columns are mapped to 'name'"),
        ("/api/import/contacts", upload(MESSY, mapping='["name", "price"]'), 422, "unknown field 'price'"),
        ("/api/import/contacts", upload(MESSY, mapping='{"Nope": "name"}'), 422, "no column 'Nope'"),
        ("/api/import/contacts", upload(MESSY, on_duplicate="merge"), 422, "update or skip"),
        ("/api/import/contacts", FormData({"dry_run": "1"}), 422, "send the file"),
        ("/api/import/stock", upload(b"\x00\x00"), 422, "CSV"),
        ("/api/import/things", upload(MESSY), 404, None),
    ]
    for path, body, status, message in cases:
        resp = await client.post(path, data=body, headers=csrf_headers(csrf))
        assert resp.status == status, (path, await resp.text())
        if message:
            assert message in (await resp.json())["error"]["message"]
    csrf = await login(client, "mgr1")
    assert (await client.post("/api/import/contacts", data=upload(MESSY), headers=csrf_headers(csrf))).status == 403


async def test_a_file_over_the_limit_is_refused(settings, pool, aiohttp_client, factory):
    from dataclasses import replace

    from web.app import create_app

    client = await aiohttp_client(create_app(replace(settings, import_max_bytes=1000), pool))
    await factory.user("head", role="head")
    csrf = await login(client, "head")
    resp = await client.post("/api/import/contacts", data=upload(b"name\n" + b"x\n" * 1000),
                             headers=csrf_headers(csrf))
    assert resp.status == 413


async def test_two_imports_at_once_create_each_contact_once(client, factory, conn):
    await factory.user("head", role="head")
    csrf = await login(client, "head")
    data = "name;phone\n" + "".join(f"Клиент {i};+7 495 700-{i // 100:02d}-{i % 100:02d}\n" for i in range(300))
    answers = await asyncio.gather(*(client.post("/api/import/contacts", data=upload(data.encode()),
                                                 headers=csrf_headers(csrf)) for _ in range(2)))
    results = sorted([(r["created"], r["updated"]) for r in [await a.json() for a in answers]])
    assert results == [(0, 300), (300, 0)]
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 300


async def test_fifty_thousand_rows_import_well_under_a_minute(client, factory, conn):
    await factory.user("head", role="head")
    csrf = await login(client, "head")
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    writer.writerow(["ФИО", "Телефон", "E-mail", "Компания"])
    for i in range(50_000):
        writer.writerow([f"Клиент {i}", f"+7 916 {i // 10000:03d}-{i // 100 % 100:02d}-{i % 100:02d}",
                         f"client{i}@example.ru", f"Компания {i % 500}"])
    started = time.monotonic()
    resp = await client.post("/api/import/contacts", data=upload(out.getvalue().encode("cp1251")),
                             headers=csrf_headers(csrf))
    took = time.monotonic() - started
    result = await resp.json()
    assert (result["created"], result["error_count"], result["companies_created"]) == (50_000, 0, 500)
    assert await conn.fetchval("SELECT count(*) FROM phones") == 50_000
    print(f"\n50,000 contacts imported in {took:.1f} s")
    assert took < 30


async def test_export_every_list_as_csv_and_xlsx(client, factory, conn):
    head = await factory.user("head", role="head")
    await factory.contact("Анна; \"Кавычки\"", manager=head, phones=["+74951234567"], emails=["a@example.ru"])
    await factory.contact("Борис", phones=["+74951234568"])
    await stock_db.create_product(conn, "A-1", "Болт", "pcs", "1250.50", None, False)
    await login(client, "head")
    for name in ("calls", "contacts", "companies", "leads", "deals", "stock"):
        for fmt in ("csv", "xlsx"):
            resp = await client.get(f"/export/{name}.{fmt}")
            assert resp.status == 200, (name, fmt, await resp.text())
            assert resp.headers["Content-Disposition"].startswith(f'attachment; filename="{name}-')
    resp = await client.get("/export/contacts.csv?q=Анна")
    body = await resp.read()
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig")), delimiter=";"))
    assert rows == [["No.", "Name", "Company", "Phones", "E-mails", "Manager", "Notes"],
                    [rows[1][0], "Анна; \"Кавычки\"", "", "+7 495 123-45-67", "a@example.ru", "Head", ""]]
    book = load_workbook(io.BytesIO(await (await client.get("/export/stock.xlsx")).read()), read_only=True)
    assert [list(r) for r in book.worksheets[0].iter_rows(values_only=True)] == [
        ["SKU", "Name", "Unit", "Price", "On hand", "Reserved", "Available"], ["A-1", "Болт", "pcs", 1250.5, 0, 0, 0]]
    for path, status in (("/export/calls.csv?outcome=nope", 422), ("/export/calls.csv?day=2020-13-01", 422),
                         ("/export/leads.csv?status=x", 422), ("/export/deals.xlsx?status=x", 422),
                         ("/export/users.csv", 404), ("/export/calls.pdf", 404)):
        assert (await client.get(path)).status == status, path


async def test_a_manager_exports_only_what_they_see(client, factory):
    anna = await factory.user("anna", extension="101")
    boris = await factory.user("boris", extension="102")
    await factory.contact("Клиент Анны", manager=anna)
    await factory.contact("Клиент Бориса", manager=boris)
    await login(client, "anna")
    body = (await (await client.get("/export/contacts.csv")).read()).decode("utf-8-sig")
    assert [r[1] for r in csv.reader(io.StringIO(body), delimiter=";")] == ["Name", "Клиент Анны"]


async def test_a_search_exports_every_match_once_across_pages(client, factory, monkeypatch):
    from crm import exporter

    monkeypatch.setattr(exporter, "PAGE", 3)  # several pages, across both groups of a search
    await factory.user("head", role="head")
    starting = [f"Петров {n}" for n in range(7)]
    inside = ["Анна Петрова", "Водкин-Петров", "Ипетров"]
    for name in starting + inside + ["Сидоров"]:
        await factory.contact(name)
    await login(client, "head")

    async def exported(query: str) -> list[str]:
        body = (await (await client.get(f"/export/contacts.csv?{query}")).read()).decode("utf-8-sig")
        return [r[1] for r in csv.reader(io.StringIO(body), delimiter=";")][1:]

    # As the page lists them: names starting with the text first, then the other matches, each by name.
    assert await exported("q=петров") == starting + inside
    assert await exported("") == sorted(starting + inside + ["Сидоров"], key=str.lower)
