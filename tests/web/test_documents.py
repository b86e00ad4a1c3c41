"""The commercial offer as a PDF (text read back with pypdf), attached to the deal; the requisites page."""

from __future__ import annotations

import asyncio
import io
import re
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from aiohttp import FormData
from PIL import Image
from pypdf import PdfReader

from crm import deals, stock
from crm import requisites as requisites_db
from crm import users as users_db
from crm.demo import seed_demo
from crm.requisites import CHECK_MESSAGES, STALE, clean_requisites
from tests.conftest import csrf_headers, login
from tests.crm.test_requisites import GOOD
from web.app import create_app
from web.company import CHECK_MESSAGES as CATALOGUED_CHECKS
from web.company import STALE_MESSAGE

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
WORDS = "Двести пятьдесят тысяч пятьдесят рублей 00 копеек"


@pytest.fixture
async def ru_client(settings, pool, aiohttp_client):
    return await aiohttp_client(create_app(replace(settings, language="ru"), pool))


def png(width: int = 240, height: int = 80) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (20, 80, 160)).save(out, "PNG")
    return out.getvalue()


async def seed_deal(conn, with_logo: bool = True) -> int:
    """The Russian demo, our requisites saved, and a deal of manager1 for Дмитрий Клиентов of 250 050,00."""
    await seed_demo(conn, "RU", "ru")
    admin = await users_db.get_user_by_login(conn, "admin")
    await requisites_db.save_requisites(conn, clean_requisites(GOOD, requisites_db.Requisites("")), 0, admin.id,
                                        NOW, logo=(png(), "image/png") if with_logo else None,
                                        replace_logo=with_logo)
    head = await users_db.get_user_by_login(conn, "head")
    manager = await users_db.get_user_by_login(conn, "manager1")
    contact = await conn.fetchrow("SELECT id, company_id FROM contacts WHERE name = 'Дмитрий Клиентов'")
    pump = await stock.create_product(conn, "PMP-K80", "Насос центробежный К 80-50-200", "шт.", 125025, None, True)
    deal = await deals.create_deal(conn, head, "Насосы для станции", NOW, contact_id=contact["id"],
                                   company_id=contact["company_id"], manager_id=manager.id)
    await deals.add_item(conn, head, deal.id, pump.id, 2)
    return deal.id


def pdf_text(body: bytes) -> str:
    reader = PdfReader(io.BytesIO(body))
    return "\n".join(page.extract_text() for page in reader.pages)


async def test_the_offer_pdf_reads_back_with_requisites_client_total_and_words(ru_client, conn):
    deal_id = await seed_deal(conn)
    await login(ru_client, "manager1")
    resp = await ru_client.get(f"/deals/{deal_id}/offer.pdf")
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/pdf"
    assert "attachment" in resp.headers["Content-Disposition"]
    body = await resp.read()
    text = pdf_text(body)
    for expected in ["ООО «Промтехника»", "ИНН 7709123453", "КПП 770901001", "ОГРН 1027700123450",
                     "40702810938000012345", "044525225", "30101810400000000225",
                     "ООО «Демо Индастриз»", "ИНН 7701234567", "Дмитрий Клиентов", "+7 495 123-45-67",
                     "Насос центробежный К 80-50-200", "PMP-K80", "шт.", "125 025,00", "250 050,00",
                     "В том числе НДС 22 %:", "45 090,98", "Всего к оплате:", WORDS,
                     "Алексей Иванов", "доб. 101", "Петров П. П."]:
        assert expected in text, (expected, text)
    assert re.search(rf"Коммерческое предложение № {deal_id} от \d\d\.\d\d\.\d{{4}}", text), text
    assert re.search(r"Предложение действительно до \d\d\.\d\d\.\d{4}\.", text), text
    # The font is embedded (a subset of DejaVu Sans) and the logo is on the page.
    page = PdfReader(io.BytesIO(body)).pages[0]
    fonts = [font.get_object() for font in page["/Resources"]["/Font"].values()]
    assert sorted(str(f["/BaseFont"]).split("+")[1] for f in fonts) == ["DejaVuSansBold", "DejaVuSansBook"]
    assert all("/FontFile2" in f["/DescendantFonts"][0].get_object()["/FontDescriptor"] for f in fonts)
    assert len(page.images) == 1


async def test_the_offer_in_english_for_an_english_reader(client, conn):
    deal_id = await seed_deal(conn, with_logo=False)
    await login(client, "manager1")
    text = pdf_text(await (await client.get(f"/deals/{deal_id}/offer.pdf")).read())
    for expected in ["Commercial offer No.", "INN 7709123453", "ООО «Демо Индастриз»", "250,050.00",
                     "Including VAT 22 %:", "45,090.98", "Your manager: Алексей Иванов"]:
        assert expected in text, (expected, text)
    assert "копеек" not in text  # the sum in words is a Russian document's line


async def test_vat_on_top_of_the_prices(ru_client, conn):
    deal_id = await seed_deal(conn, with_logo=False)
    stored = await requisites_db.get_requisites(conn, requisites_db.Requisites(""))
    await requisites_db.save_requisites(conn, replace(stored, vat_rate="20", prices_include_vat=False),
                                        stored.version, None, NOW)
    await login(ru_client, "manager1")
    text = pdf_text(await (await ru_client.get(f"/deals/{deal_id}/offer.pdf")).read())
    assert "НДС 20 %: 50 010,00" in text.replace("\n", " ") or ("НДС 20 %:" in text and "50 010,00" in text)
    assert "300 060,00" in text and "Триста тысяч шестьдесят рублей 00 копеек" in text


async def test_the_printable_page_still_works_with_the_same_figures(ru_client, conn):
    deal_id = await seed_deal(conn)
    await login(ru_client, "manager1")
    resp = await ru_client.get(f"/deals/{deal_id}/offer")
    assert resp.status == 200, await resp.text()
    page = await resp.text()
    for expected in ["<h1>Коммерческое предложение</h1>", "ИНН 7709123453", "250\xa0050,00\xa0₽", WORDS,
                     f'href="/deals/{deal_id}/offer.pdf"', 'src="/company/logo?v=1"', "Скачать PDF"]:
        assert expected in page, expected
    logo = await ru_client.get("/company/logo?v=1")
    assert (logo.status, logo.content_type, await logo.read()) == (200, "image/png", png())


async def test_attach_twice_at_once_keeps_one_document_in_the_deal(ru_client, conn):
    deal_id = await seed_deal(conn)
    csrf = await login(ru_client, "manager1")
    attach = [ru_client.post(f"/deals/{deal_id}/offer/attach", data={"csrf_token": csrf}, allow_redirects=False)
              for _ in range(2)]
    answers = await asyncio.gather(*attach)
    assert [a.status for a in answers] == [302, 302]
    rows = await conn.fetch("SELECT id, kind, number, language, amount FROM deal_documents")
    assert [dict(r) | {"id": 0} for r in rows] == [
        {"id": 0, "kind": "offer", "number": str(deal_id), "language": "ru", "amount": Decimal("250050.00")}]
    page = await (await ru_client.get(f"/deals/{deal_id}")).text()
    assert f'href="/deals/{deal_id}/documents/{rows[0]["id"]}.pdf"' in page and "Алексей Иванов" in page
    stored = await ru_client.get(f"/deals/{deal_id}/documents/{rows[0]['id']}.pdf")
    assert stored.status == 200 and "inline" in stored.headers["Content-Disposition"]
    assert WORDS in pdf_text(await stored.read())
    # The API answers 200 with the same document (nothing changed), then 201 once the deal has changed.
    again = await ru_client.post(f"/api/deals/{deal_id}/offer/attach", headers=csrf_headers(csrf))
    assert (again.status, (await again.json())["id"], (await again.json())["new"]) == (200, rows[0]["id"], False)
    await conn.execute("UPDATE deal_items SET quantity = 3 WHERE deal_id = $1", deal_id)
    changed = await ru_client.post(f"/api/deals/{deal_id}/offer/attach", headers=csrf_headers(csrf))
    assert changed.status == 201, await changed.text()
    listed = await (await ru_client.get(f"/api/deals/{deal_id}/documents")).json()
    assert [(d["kind"], d["amount"]) for d in listed["items"]] == [("offer", "375075.00"), ("offer", "250050.00")]


async def test_another_managers_deal_and_its_documents_are_not_found(ru_client, conn):
    deal_id = await seed_deal(conn)
    csrf = await login(ru_client, "manager1")
    attached = await (await ru_client.post(f"/api/deals/{deal_id}/offer/attach", headers=csrf_headers(csrf))).json()
    csrf = await login(ru_client, "manager2")
    for path in (f"/deals/{deal_id}/offer.pdf", f"/deals/{deal_id}/offer", attached["url"],
                 f"/api/deals/{deal_id}/documents", f"/deals/{deal_id}/documents/999999999999999999999.pdf"):
        assert (await ru_client.get(path)).status == 404, path
    assert (await ru_client.post(f"/api/deals/{deal_id}/offer/attach", headers=csrf_headers(csrf))).status == 404
    assert await conn.fetchval("SELECT count(*) FROM deal_documents") == 1


# ------------------------------------------------------------------ the requisites page

def form(csrf: str, version: int | str = 0, **changes) -> FormData:
    data = FormData()
    for name, value in {**GOOD, "csrf_token": csrf, "version": str(version), **changes}.items():
        if isinstance(value, bytes):
            data.add_field(name, value, filename="logo.png", content_type="application/octet-stream")
        elif value is not None:
            data.add_field(name, value)
    return data


async def test_the_requisites_page_starts_from_the_settings_and_saves(settings, pool, aiohttp_client, conn):
    app = create_app(replace(settings, language="ru", company_name="ООО «Старое имя»",
                             company_details="ИНН 7709123453, г. Москва"), pool)
    http = await aiohttp_client(app)
    await seed_demo(conn, "RU", "ru")
    csrf = await login(http, "admin")
    page = await (await http.get("/admin/company")).text()
    assert 'value="ООО «Старое имя»"' in page and "ИНН 7709123453, г. Москва" in page
    assert 'name="version" value="0"' in page and "Реквизиты компании" in page
    saved = await http.post("/admin/company", data=form(csrf, 0, logo=png()))
    assert saved.status == 200, await saved.text()
    assert "Сохранено." in await saved.text()
    stored = await requisites_db.get_requisites(conn, requisites_db.Requisites(""))
    assert (stored.version, stored.inn, stored.logo, stored.logo_type) == (1, "7709123453", png(), "image/png")
    # The same page sent again (a second tab, a double click): refused, the stored values shown, nothing lost.
    stale = await http.post("/admin/company", data=form(csrf, 0, director="Другой Д. Д."))
    assert stale.status == 409
    body = await stale.text()
    assert "кто-то сохранил реквизиты" in body and 'name="version" value="1"' in body
    assert (await requisites_db.get_requisites(conn, stored)).director == "Петров П. П."
    # Saving without a new file keeps the logo; the box removes it.
    kept = await http.post("/admin/company", data=form(csrf, 1, director="Сидоров С. С."))
    assert kept.status == 200
    assert (await requisites_db.get_requisites(conn, stored)).logo == png()
    removed = await http.post("/admin/company", data=form(csrf, 2, remove_logo="on"))
    assert removed.status == 200
    assert (await requisites_db.get_requisites(conn, stored)).logo is None
    assert (await http.get("/company/logo")).status == 404


async def test_two_saves_of_one_page_at_once_give_one_save(ru_client, conn):
    await seed_demo(conn, "RU", "ru")
    csrf = await login(ru_client, "admin")
    answers = await asyncio.gather(*(ru_client.post("/admin/company", data=form(csrf, 0, director=name))
                                     for name in ("А", "Б")))
    assert sorted(a.status for a in answers) == [200, 409]
    assert (await requisites_db.get_requisites(conn, requisites_db.Requisites(""))).version == 1


@pytest.mark.parametrize(("changes", "message"), [
    ({"inn": "7709123454"}, "ИНН: контрольные цифры не сходятся: где-то опечатка"),
    ({"inn": "123"}, "ИНН: 10 цифр (организация) или 12 (ИП)"),
    ({"kpp": "77090100"}, "КПП: 9 знаков: 4 цифры, 2 цифры или заглавные латинские буквы, 3 цифры"),
    ({"ogrn": "1027700123451"}, "ОГРН / ОГРНИП: контрольные цифры не сходятся: где-то опечатка"),
    ({"bic": "12345"}, "БИК: 9 цифр, начиная с 04"),
    ({"settlement_account": "40702810938000012346"},
     "Расчётный счёт: не сходится с БИК банка: проверьте счёт и БИК"),
    ({"correspondent_account": "123"}, "Корреспондентский счёт: 20 цифр"),
    ({"email": "нет"}, "E-mail: это не адрес электронной почты"),
    ({"vat_rate": "18"}, "Ставка НДС: выберите одну из ставок списка"),
    ({"legal_name": ""}, "Полное наименование: обязательно"),
    ({"logo": b"not an image"}, "Логотип: нужен рисунок PNG или JPEG"),
    ({"logo": b"\x89PNG\r\n\x1a\n" + b"\0" * (520 * 1024)}, "Логотип: не больше 512 КБ"),
    ({"version": "x"}, "версия: не число; обновите страницу"),
])
async def test_bad_requisites_are_refused_with_a_clear_message(ru_client, conn, changes, message):
    await seed_demo(conn, "RU", "ru")
    csrf = await login(ru_client, "admin")
    resp = await ru_client.post("/admin/company", data=form(csrf, **changes))
    assert resp.status == 422, await resp.text()
    page = await resp.text()
    assert message in page, page[page.find('class="error"'):][:300]
    assert await conn.fetchval("SELECT count(*) FROM company_requisites") == 0
    if "logo" not in changes and "version" not in changes:  # what was typed is shown again, the field marked
        field = next(iter(changes))
        assert 'class="invalid"' in page and f'name="{field}"' in page


async def test_only_an_admin_edits_the_requisites(client, conn):
    await seed_demo(conn, "RU")
    for who in ("manager1", "head"):
        csrf = await login(client, who)
        assert (await client.get("/admin/company")).status == 403
        assert (await client.post("/admin/company", data=form(csrf, 0))).status == 403
        assert (await client.put("/api/company", json={**GOOD, "version": 0}, headers=csrf_headers(csrf))).status == 403


async def test_the_requisites_api_saves_with_a_version(client, conn):
    await seed_demo(conn, "RU")
    csrf = await login(client, "admin")
    read = await (await client.get("/api/company")).json()
    assert (read["legal_name"], read["version"], read["logo"]) == ("Your Company LLC", 0, False)
    body = {**GOOD, "prices_include_vat": True, "version": 0}
    saved = await client.put("/api/company", json=body, headers=csrf_headers(csrf))
    assert saved.status == 200, await saved.text()
    assert await saved.json() == {**GOOD, "prices_include_vat": True, "logo": False, "version": 1}
    stale = await client.put("/api/company", json=body, headers=csrf_headers(csrf))
    assert stale.status == 409 and (await stale.json())["error"]["message"] == STALE
    for bad, field in [({"version": None}, "version"), ({"version": "1"}, "version"), ({"inn": "1"}, "inn"),
                       ({"inn": 7709123453}, "inn"), ({"vat_rate": 22}, "vat_rate")]:
        resp = await client.put("/api/company", json={**body, "version": 1, **bad}, headers=csrf_headers(csrf))
        assert (resp.status, (await resp.json())["error"]["field"]) == (422, field), bad
    assert (await client.put("/api/company", data="{", headers=csrf_headers(csrf))).status == 400


def test_every_check_message_is_in_the_catalog():
    assert set(CHECK_MESSAGES) | {"must be text"} == set(CATALOGUED_CHECKS)
    assert STALE == STALE_MESSAGE
