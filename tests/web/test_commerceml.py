"""Exchange with 1C by CommerceML 2: catalogue, prices and stock from files of several versions and layouts
(2.04 in windows-1251 without a namespace, 2.05, 2.08 with a namespace and two warehouses, 2.10 <Остатки>), the
/1c/exchange protocol as 1C drives it (basic auth, cookie, zip sent in parts, "progress"), orders handed to 1C,
and the manual upload."""

import base64
import io
import tracemalloc
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from crm import commerceml
from crm import deals as deals_db
from crm import stock as stock_db
from tests.conftest import FIXTURES, csrf_headers, login
from web.app import create_app

CML = FIXTURES / "commerceml"
UPS, CRANE, MAGNA = ("c5d1a3f0-9b1e-11e3-8f38-0015179e6a31", "c5d1a3f1-9b1e-11e3-8f38-0015179e6a31",
                     "c5d1a3f3-9b1e-11e3-8f38-0015179e6a31")


async def products(conn) -> list[tuple]:
    rows = await conn.fetch("SELECT id, external_id, sku, name, unit, price, barcode FROM products ORDER BY sku")
    out = []
    for r in rows:
        on_hand = (await stock_db.balance(conn, r["id"])).on_hand
        out.append((r["external_id"], r["sku"], r["name"], r["unit"], str(r["price"]), r["barcode"], str(on_hand)))
    return out


async def test_catalogue_prices_and_stock_in_several_shapes(conn, factory, tmp_path):
    head = await factory.user("head", role="head")
    # A product typed in by hand earlier, with the same SKU: it becomes 1C's product (its id and stock stay).
    mine = await stock_db.create_product(conn, "MAG-1", "Насос Магна", "pcs", "1", None, False)
    now = datetime.now(UTC)
    result = await commerceml.import_files(conn, head, [CML / "offers_208.xml", CML / "import_204.xml"], now,
                                           "Розничная")
    assert result.as_json() == {
        "files": ["import_204.xml", "offers_208.xml"], "products_created": 2, "products_updated": 1,
        "prices_set": 3, "stock_created": 3, "stock_updated": 0, "stock_unchanged": 0,
        "errors": ["offer 99999999-0000-4000-8000-000000000000: no such product in the catalogue"]}
    assert await products(conn) == [
        (MAGNA, "MAG-1", "Насос MAGNA1 32-80 (характеристики)", "шт", "85000.00", None, "3.000"),
        (UPS, "UPS 25-40", "Насос циркуляционный UPS 25-40 180", "шт", "12450.50", "4601234567893", "12.000"),
        (CRANE, CRANE, 'Кран шаровой 1/2"', "Штука", "350.00", None, "120.000"),
    ]
    assert await conn.fetchval("SELECT id FROM products WHERE sku = 'MAG-1'") == mine.id
    # Stock only, 2.10 layout: 3 + 0 on two warehouses; a negative figure counts as none.
    await commerceml.import_files(conn, head, [CML / "rests_210.xml"], now)
    # 2.05 layout, a variant of MAG-1: 4 + 2.5.
    await commerceml.import_files(conn, head, [CML / "offers_205.xml"], now)
    assert [(p[1], p[6]) for p in await products(conn)] == [("MAG-1", "6.500"), ("UPS 25-40", "3.000"),
                                                            (CRANE, "0.000")]
    # Again: nothing new, nothing doubled.
    again = await commerceml.import_files(conn, head, [CML / "import_204.xml"], now)
    assert (again.products_created, again.products_updated) == (0, 3)
    assert await conn.fetchval("SELECT count(*) FROM products") == 3


def test_the_first_price_type_when_none_is_chosen():
    offers = [i for i in commerceml.iter_file(CML / "offers_208.xml") if isinstance(i, commerceml.Offer)]
    assert [(o.external_id[:8], o.price, o.quantity) for o in offers] == [
        ("c5d1a3f0", Decimal("9800"), Decimal("12")), ("c5d1a3f1", Decimal("350"), Decimal("120")),
        ("c5d1a3f3", Decimal("85000"), Decimal("2")), ("c5d1a3f3", Decimal("85000"), Decimal("1")),
        ("99999999", None, Decimal("3"))]


def test_a_big_catalogue_is_read_in_little_memory(tmp_path):
    path = tmp_path / "import.xml"
    item = ("<Товар><Ид>{i:08d}-0000-4000-8000-000000000000</Ид><Артикул>SKU-{i}</Артикул>"
            "<Наименование>Товар номер {i} с довольно длинным наименованием для объёма</Наименование>"
            "<БазоваяЕдиница Код=\"796\">шт</БазоваяЕдиница><Описание>" + "Описание. " * 20 + "</Описание></Товар>\n")
    with open(path, "w", encoding="utf-8") as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n<КоммерческаяИнформация xmlns="urn:1C.ru:commerceml_2" '
                  'ВерсияСхемы="2.08"><Каталог><Товары>\n')
        for i in range(40_000):
            out.write(item.format(i=i))
        out.write("</Товары></Каталог></КоммерческаяИнформация>\n")
    size = path.stat().st_size
    tracemalloc.start()
    count = sum(1 for _ in commerceml.iter_file(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 40_000 and size > 20_000_000
    assert peak < 4_000_000, f"{peak} bytes held to read {size} bytes"


@pytest.mark.parametrize("text, message", [
    (b"<a><b></a>", "not well-formed"), (b"", "not well-formed"),
])
def test_broken_files(tmp_path, text, message):
    path = tmp_path / "import.xml"
    path.write_bytes(text)
    with pytest.raises(commerceml.ValidationError) as caught:
        list(commerceml.iter_file(path))
    assert message in caught.value.message


def zipped(*paths: Path) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in paths:
            archive.write(path, f"webdata/000000001/{path.name.split('_')[0]}.xml")
    return out.getvalue()


def basic(login_name: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{login_name}:{password}".encode()).decode()}


async def test_the_exchange_as_1c_drives_it(settings, pool, aiohttp_client, factory, conn):
    client = await aiohttp_client(create_app(replace(settings, onec_progress_wait=0.001,
                                                     onec_price_type="Розничная"), pool))
    head = await factory.user("head", role="head")
    await factory.user("mgr1")
    url = "/1c/exchange"

    resp = await client.get(url, params={"type": "catalog", "mode": "checkauth"}, headers=basic("head", "wrong"))
    assert (await resp.text()).splitlines()[0] == "failure"
    resp = await client.get(url, params={"type": "catalog", "mode": "checkauth"}, headers=basic("mgr1", "mgr1"))
    assert (await resp.text()).startswith("failure\nthis login may not exchange with 1C")
    assert (await client.get(url, params={"type": "catalog", "mode": "init"})).status == 200
    assert (await (await client.get(url, params={"type": "catalog", "mode": "init"})).text()).startswith("failure")

    resp = await client.get(url, params={"type": "catalog", "mode": "checkauth"}, headers=basic("head", "head"))
    status, cookie_name, cookie = (await resp.text()).splitlines()
    assert (status, cookie_name) == ("success", "callboard_session")
    client.session.cookie_jar.clear()
    jar = {cookie_name: cookie}  # 1C sends the cookie it was given, as a header
    resp = await client.get(url, params={"type": "catalog", "mode": "init"}, cookies=jar)
    assert (await resp.text()).splitlines() == ["zip=yes", f"file_limit={8 * 1024 * 1024}"]
    archive = zipped(CML / "import_204.xml", CML / "offers_208.xml")
    half = len(archive) // 2
    for part in (archive[:half], archive[half:]):  # a file bigger than file_limit comes in parts
        resp = await client.post(url, params={"type": "catalog", "mode": "file", "filename": "webdata.zip"},
                                 data=part, cookies=jar)
        assert await resp.text() == "success\n"
    # Pictures are accepted and not kept.
    resp = await client.post(url, params={"type": "catalog", "mode": "file",
                                          "filename": "import_files/c5/c5d1a3f0.jpg"}, data=b"\xff\xd8", cookies=jar)
    assert await resp.text() == "success\n"
    for name in ("import.xml", "offers.xml"):
        answers = []
        for _ in range(200):
            resp = await client.get(url, params={"type": "catalog", "mode": "import", "filename": name}, cookies=jar)
            answers.append((await resp.text()).splitlines()[0])
            if answers[-1] != "progress":
                break
        assert answers[-1] == "success", answers
    assert [(p[1], p[4], p[6]) for p in await products(conn)] == [
        ("MAG-1", "85000.00", "3.000"), ("UPS 25-40", "12450.50", "12.000"), (CRANE, "350.00", "120.000")]

    # Orders: a deal at the invoice stage with an item goes to 1C until 1C says success.
    company = await factory.company("ООО Ромашка")
    await conn.execute("UPDATE companies SET tax_id = '7701234567' WHERE id = $1", company.id)
    now = datetime.now(UTC)
    deal = await deals_db.create_deal(conn, head, "Насосы для котельной", now, company_id=company.id,
                                      manager_id=head.id)
    ups = await conn.fetchval("SELECT id FROM products WHERE sku = 'UPS 25-40'")
    await deals_db.add_item(conn, head, deal.id, ups, "2", "12000")
    await deals_db.move_stage(conn, head, deal.id, "invoice", now)
    resp = await client.get(url, params={"type": "sale", "mode": "checkauth"}, headers=basic("head", "head"))
    jar = {"callboard_session": (await resp.text()).splitlines()[2]}
    await client.get(url, params={"type": "sale", "mode": "init"}, cookies=jar)
    resp = await client.get(url, params={"type": "sale", "mode": "query"}, cookies=jar)
    assert resp.headers["Content-Type"].startswith("application/xml")
    root = ET.fromstring(await resp.read())
    docs = root.findall("Документ")
    assert [(d.findtext("Номер"), d.findtext("ХозОперация"), d.findtext("Сумма"),
             d.findtext("Контрагенты/Контрагент/ИНН"), d.findtext("Контрагенты/Контрагент/Роль")) for d in docs] == [
        (str(deal.id), "Заказ товара", "24000.00", "7701234567", "Покупатель")]
    goods = [(g.findtext("Ид"), g.findtext("Артикул"), g.findtext("ЦенаЗаЕдиницу"), g.findtext("Количество"),
              g.findtext("Сумма")) for g in docs[0].findall("Товары/Товар")]
    assert goods == [(UPS, "UPS 25-40", "12000.00", "2", "24000.00")]
    # Not acknowledged yet: asked again, 1C gets it again; after success, not any more.
    assert len(ET.fromstring(await (await client.get(url, params={"type": "sale", "mode": "query"},
                                                     cookies=jar)).read()).findall("Документ")) == 1
    assert await (await client.get(url, params={"type": "sale", "mode": "success"}, cookies=jar)).text() == "success\n"
    assert ET.fromstring(await (await client.get(url, params={"type": "sale", "mode": "query"},
                                                 cookies=jar)).read()).findall("Документ") == []
    # A change (the next stage) hands it over again.
    await deals_db.move_stage(conn, head, deal.id, "reservation", datetime.now(UTC))
    assert len(ET.fromstring(await (await client.get(url, params={"type": "sale", "mode": "query"},
                                                     cookies=jar)).read()).findall("Документ")) == 1
    for params in ({"type": "bogus", "mode": "init"}, {"type": "catalog", "mode": "query"},
                   {"type": "catalog", "mode": "import", "filename": "../../etc/passwd"},
                   {"type": "catalog", "mode": "import", "filename": "missing.xml"}):
        text = ""
        for _ in range(200):
            text = await (await client.get(url, params=params, cookies=jar)).text()
            if not text.startswith("progress"):
                break
        assert text.startswith("failure\n"), (params, text)


async def test_manual_upload(client, factory, conn):
    await factory.user("head", role="head")
    await factory.user("mgr1")
    from aiohttp import FormData

    def form(data: bytes, name: str) -> FormData:
        body = FormData()
        body.add_field("file", data, filename=name)
        return body

    csrf = await login(client, "head")
    resp = await client.post("/api/import/commerceml", data=form(zipped(CML / "import_204.xml",
                                                                        CML / "offers_208.xml"), "1c.zip"),
                             headers=csrf_headers(csrf))
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert (result["files"], result["products_created"], result["prices_set"]) == (
        ["import.xml", "offers.xml"], 3, 3)
    resp = await client.post("/api/import/commerceml", data=form((CML / "rests_210.xml").read_bytes(), "rests.xml"),
                             headers=csrf_headers(csrf))
    assert (await resp.json())["stock_updated"] == 2
    for data, name, message in ((b"<a>", "x.xml", "not well-formed"), (b"PK\x03\x04zz", "x.zip", "not a zip"),
                                (zipped(), "empty.zip", "no .xml file")):
        resp = await client.post("/api/import/commerceml", data=form(data, name), headers=csrf_headers(csrf))
        assert resp.status == 422, await resp.text()
        assert message in (await resp.json())["error"]["message"]
    csrf = await login(client, "mgr1")
    resp = await client.post("/api/import/commerceml", data=form(b"<a/>", "x.xml"), headers=csrf_headers(csrf))
    assert resp.status == 403
