"""Company requisites: the Russian checks (INN, KPP, OGRN, BIC, accounts), VAT totals, the versioned row."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from PIL import Image

from crm import requisites
from crm.errors import Conflict, ValidationError
from crm.requisites import Requisites, VatTotals, clean_requisites, vat_totals
from crm.settings import Settings

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
# A fictional seller whose codes pass every check (Sberbank's real BIC and correspondent account).
GOOD = {"legal_name": "ООО «Промтехника»", "inn": "7709123453", "kpp": "770901001", "ogrn": "1027700123450",
        "address": "109012, г. Москва, ул. Ильинка, д. 4", "bank_name": "ПАО Сбербанк", "bic": "044525225",
        "settlement_account": "40702810938000012345", "correspondent_account": "30101810400000000225",
        "director": "Петров П. П.", "phone": "+7 495 100-20-30", "email": "sales@promtech.example",
        "details": "", "vat_rate": "22", "prices_include_vat": "on"}
BLANK = Requisites(legal_name="Your Company LLC")


def test_good_requisites_pass_and_spaces_in_codes_go():
    typed = {**GOOD, "settlement_account": "4070 2810 9380 0001 2345", "inn": " 7709123453 ", "kpp": "770901001"}
    cleaned = clean_requisites(typed, BLANK)
    assert cleaned == Requisites(**{**GOOD, "prices_include_vat": True})
    # KPP's reason letters are capital Latin; typed small, they are raised.
    assert clean_requisites({**GOOD, "kpp": "7709ab001"}, BLANK).kpp == "7709AB001"


@pytest.mark.parametrize("inn", ["7707083893", "500100732259", "7709123453"])
def test_real_inns_pass(inn):
    requisites.check_inn(inn)


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"legal_name": "  "}, "legal_name", "is required"),
    ({"legal_name": "x" * 301}, "legal_name", requisites.TOO_LONG),
    ({"inn": "770912345"}, "inn", requisites.INN_LENGTH),
    ({"inn": "77091234531"}, "inn", requisites.INN_LENGTH),
    ({"inn": "770912345X"}, "inn", requisites.INN_LENGTH),
    ({"inn": "7709123454"}, "inn", requisites.CHECK_DIGITS),
    ({"inn": "500100732258", "kpp": "", "ogrn": ""}, "inn", requisites.CHECK_DIGITS),
    ({"kpp": "77090100"}, "kpp", requisites.KPP_FORMAT),
    ({"kpp": "7709!B001"}, "kpp", requisites.KPP_FORMAT),
    ({"kpp": "77090100Ж"}, "kpp", requisites.KPP_FORMAT),
    ({"inn": "500100732259", "kpp": "770901001", "ogrn": ""}, "kpp", requisites.KPP_FOR_SOLE_PROPRIETOR),
    ({"ogrn": "102770012345"}, "ogrn", requisites.OGRN_LENGTH),
    ({"ogrn": "1027700123451"}, "ogrn", requisites.CHECK_DIGITS),
    ({"ogrn": "304500116000158"}, "ogrn", requisites.CHECK_DIGITS),
    ({"ogrn": "304500116000157"}, "ogrn", requisites.OGRN_MISMATCH),  # an OGRNIP beside a 10-digit INN
    ({"bic": "04452522"}, "bic", requisites.BIC_FORMAT),
    ({"bic": "144525225"}, "bic", requisites.BIC_FORMAT),
    ({"settlement_account": "4070281093800001234"}, "settlement_account", requisites.ACCOUNT_LENGTH),
    ({"settlement_account": "40702810938000012346"}, "settlement_account", requisites.ACCOUNT_KEY),
    ({"bic": "044525593"}, "settlement_account", requisites.ACCOUNT_KEY),  # the account is not at that bank
    ({"bic": ""}, "settlement_account", requisites.ACCOUNT_NEEDS_BIC),
    ({"correspondent_account": "40101810400000000225"}, "correspondent_account", requisites.CORRESPONDENT_PREFIX),
    ({"correspondent_account": "30101810400000000226"}, "correspondent_account", requisites.ACCOUNT_KEY),
    ({"email": "sales at promtech"}, "email", requisites.NOT_AN_EMAIL),
    ({"vat_rate": "18"}, "vat_rate", requisites.VAT_CHOICE),
    ({"vat_rate": ["22"]}, "vat_rate", requisites.VAT_CHOICE),
    ({"inn": 7709123453}, "inn", "must be text"),
    ({"address": None}, "address", "must be text"),
])
def test_bad_requisites_name_the_field_and_the_fault(changes, field, message):
    with pytest.raises(ValidationError) as caught:
        clean_requisites({**GOOD, **changes}, BLANK)
    assert (caught.value.field, caught.value.message) == (field, message)


def test_every_single_mistyped_digit_of_an_account_is_caught():
    account, bic = GOOD["settlement_account"], GOOD["bic"]
    for position in range(20):
        for digit in "0123456789":
            if digit == account[position]:
                continue
            typo = account[:position] + digit + account[position + 1:]
            with pytest.raises(ValidationError):
                requisites.check_settlement_account(typo, bic)


def test_a_sole_proprietor_with_ogrnip_and_no_kpp_passes():
    cleaned = clean_requisites({**GOOD, "inn": "500100732259", "kpp": "", "ogrn": "304500116000157"}, BLANK)
    assert (cleaned.inn, cleaned.kpp, cleaned.ogrn) == ("500100732259", "", "304500116000157")


@pytest.mark.parametrize(("amount", "rate", "included", "expected"), [
    ("250050.00", "22", True, VatTotals("22", True, Decimal("204959.02"), Decimal("45090.98"), Decimal("250050.00"))),
    ("250050.00", "20", False, VatTotals("20", False, Decimal("250050.00"), Decimal("50010.00"),
                                         Decimal("300060.00"))),
    ("100.00", "10", True, VatTotals("10", True, Decimal("90.91"), Decimal("9.09"), Decimal("100.00"))),
    ("100.00", "0", False, VatTotals("0", False, Decimal("100.00"), Decimal("0.00"), Decimal("100.00"))),
    ("100.00", "none", True, VatTotals("none", True, Decimal("100.00"), Decimal("0.00"), Decimal("100.00"))),
])
def test_vat_totals(amount, rate, included, expected):
    assert vat_totals(Decimal(amount), rate, included) == expected


def _png(width: int = 120, height: int = 40) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (20, 80, 160)).save(out, "PNG")
    return out.getvalue()


def test_logo_checks():
    assert requisites.check_logo(_png()) == "image/png"
    jpeg = io.BytesIO()
    Image.new("RGB", (50, 50)).save(jpeg, "JPEG")
    assert requisites.check_logo(jpeg.getvalue()) == "image/jpeg"
    for data, message in [(b"<svg xmlns='http://www.w3.org/2000/svg'/>", requisites.LOGO_TYPE),
                          (b"GIF89a" + b"\0" * 20, requisites.LOGO_TYPE),
                          (_png()[:60], requisites.LOGO_TYPE),  # cut short
                          (b"\x89PNG\r\n\x1a\n" + b"\0" * (600 * 1024), requisites.LOGO_SIZE),
                          (_png(4100, 10), requisites.LOGO_SIDE)]:
        with pytest.raises(ValidationError) as caught:
            requisites.check_logo(data)
        assert (caught.value.field, caught.value.message) == ("logo", message)


async def test_saved_once_then_versioned_and_a_stale_save_is_refused(conn, factory):
    admin = await factory.user("boss", "admin")
    initial = requisites.from_settings(Settings(company_name="ООО «Ромашка»", company_details="г. Москва",
                                                vat_rate="20", prices_include_vat=False))
    assert await requisites.get_requisites(conn, initial) == Requisites(
        legal_name="ООО «Ромашка»", details="г. Москва", vat_rate="20", prices_include_vat=False, version=0)
    edited = clean_requisites(GOOD, initial)
    logo = (_png(), "image/png")
    first = await requisites.save_requisites(conn, edited, 0, admin.id, NOW, logo=logo, replace_logo=True)
    assert first == Requisites(**{**GOOD, "prices_include_vat": True}, logo=logo[0], logo_type="image/png",
                               version=1)
    assert await requisites.get_requisites(conn, initial) == first
    with pytest.raises(Conflict):  # a second "first save" from a page opened before the first one
        await requisites.save_requisites(conn, edited, 0, admin.id, NOW)
    second = await requisites.save_requisites(conn, clean_requisites({**GOOD, "director": "Иванов И. И."}, first),
                                              1, admin.id, NOW)
    assert (second.version, second.director, second.logo) == (2, "Иванов И. И.", logo[0])  # the logo stayed
    with pytest.raises(Conflict):
        await requisites.save_requisites(conn, edited, 1, admin.id, NOW)
    third = await requisites.save_requisites(conn, second, 2, admin.id, NOW, replace_logo=True)
    assert (third.version, third.logo, third.logo_type) == (3, None, None)


async def test_two_saves_from_the_same_page_at_once_give_one_save(pool, factory):
    admin = await factory.user("boss", "admin")

    async def save(director: str):
        async with pool.acquire() as c:
            return await requisites.save_requisites(c, clean_requisites({**GOOD, "director": director}, BLANK),
                                                    0, admin.id, NOW)

    results = await asyncio.gather(save("А"), save("Б"), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "Requisites"]
    async with pool.acquire() as c:
        stored = await requisites.get_requisites(c, BLANK)
    assert stored.version == 1 and stored == next(r for r in results if isinstance(r, Requisites))


def test_vat_settings_name_themselves_when_wrong():
    from crm.settings import SettingsError, load_settings

    loaded = load_settings(env={"CALLBOARD_VAT_RATE": "20 %", "CALLBOARD_PRICES_INCLUDE_VAT": "off"})
    assert (loaded.vat_rate, loaded.prices_include_vat) == ("20", False)
    assert load_settings(env={"CALLBOARD_VAT_RATE": "none"}).vat_rate == "none"
    with pytest.raises(SettingsError, match="CALLBOARD_VAT_RATE: unknown VAT rate '18'"):
        load_settings(env={"CALLBOARD_VAT_RATE": "18"})
