"""The company's requisites (INN, KPP, OGRN, bank, logo, VAT) with the checks Russian banks and tax offices make."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

import asyncpg

from crm.errors import Conflict, ValidationError

if TYPE_CHECKING:
    from crm.settings import Settings

# VAT rates as codes: a percentage, or "none" for a seller outside VAT ("Без НДС"). 22 % is the base rate from 2026.
VAT_RATES = ("22", "20", "10", "0", "none")
LOGO_MAX_BYTES = 512 * 1024
LOGO_MAX_SIDE = 4000  # pixels; more is no logo but a decompression bomb or a photograph
LOGO_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg"}

# Free-text fields and their longest accepted length.
TEXT_FIELDS = {"legal_name": 300, "address": 500, "bank_name": 300, "director": 200, "phone": 100, "email": 200,
               "details": 1000}
# Code fields: digits people paste with spaces ("4070 2810 …"); the spaces go.
CODE_FIELDS = ("inn", "kpp", "ogrn", "bic", "settlement_account", "correspondent_account")

# Messages of the checks (the field is named by the error); web/company.py has them in the catalog.
TOO_LONG = "is too long"
INN_LENGTH = "must be 10 digits (an organisation) or 12 (a sole proprietor)"
CHECK_DIGITS = "the check digits do not match: a digit is mistyped"
KPP_FORMAT = "must be 9 characters: 4 digits, 2 digits or capital letters, 3 digits"
KPP_FOR_SOLE_PROPRIETOR = "a sole proprietor (12-digit INN) has no KPP"
OGRN_LENGTH = "must be 13 digits (OGRN) or 15 (OGRNIP)"
OGRN_MISMATCH = "a 13-digit OGRN goes with a 10-digit INN, a 15-digit OGRNIP with a 12-digit INN"
BIC_FORMAT = "must be 9 digits starting with 04"
ACCOUNT_LENGTH = "must be 20 digits"
ACCOUNT_KEY = "does not match the bank's BIC: check the account and the BIC"
ACCOUNT_NEEDS_BIC = "give the bank's BIC: the account is checked against it"
CORRESPONDENT_PREFIX = "a correspondent account starts with 30101"
NOT_AN_EMAIL = "is not an e-mail address"
VAT_CHOICE = "choose one of the listed rates"
LOGO_TYPE = "must be a PNG or JPEG image"
LOGO_SIZE = "must be at most 512 KB"
LOGO_SIDE = "must be at most 4000 pixels on a side"
CHECK_MESSAGES = (TOO_LONG, INN_LENGTH, CHECK_DIGITS, KPP_FORMAT, KPP_FOR_SOLE_PROPRIETOR, OGRN_LENGTH,
                  OGRN_MISMATCH, BIC_FORMAT, ACCOUNT_LENGTH, ACCOUNT_KEY, ACCOUNT_NEEDS_BIC, CORRESPONDENT_PREFIX,
                  NOT_AN_EMAIL, VAT_CHOICE, LOGO_TYPE, LOGO_SIZE, LOGO_SIDE)
STALE = "someone saved the requisites after this page was opened; here is what is stored now: make the change again"


@dataclass(frozen=True, slots=True)
class Requisites:
    """What documents print about the seller; version 0 means "never saved: the settings' values"."""

    legal_name: str
    inn: str = ""
    kpp: str = ""
    ogrn: str = ""
    address: str = ""
    bank_name: str = ""
    bic: str = ""
    settlement_account: str = ""
    correspondent_account: str = ""
    director: str = ""
    phone: str = ""
    email: str = ""
    details: str = ""
    vat_rate: str = "22"
    prices_include_vat: bool = True
    logo: bytes | None = None
    logo_type: str | None = None
    version: int = 0


EDITABLE = tuple(f.name for f in fields(Requisites) if f.name not in ("logo", "logo_type", "version"))


@dataclass(frozen=True, slots=True)
class VatTotals:
    """The VAT lines of a document: net + vat = gross; gross is what the client pays."""

    rate: str
    included: bool
    net: Decimal
    vat: Decimal
    gross: Decimal

    @property
    def percent(self) -> int | None:
        return None if self.rate == "none" else int(self.rate)


def vat_totals(amount: Decimal, rate: str, included: bool) -> VatTotals:
    """VAT of an amount: within it (22/122 of it) when prices include VAT, on top of it (22 %) otherwise."""
    amount = Decimal(amount).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if rate not in VAT_RATES:
        raise ValidationError("vat_rate", VAT_CHOICE)
    percent = Decimal(0) if rate == "none" else Decimal(rate)
    if included:
        vat = (amount * percent / (100 + percent)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        return VatTotals(rate, included, amount - vat, vat, amount)
    vat = (amount * percent / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return VatTotals(rate, included, amount, vat, amount + vat)


# ------------------------------------------------------------------ the checks

def _digits(text: str) -> list[int]:
    return [int(c) for c in text]


def _weighted(digits: list[int], weights: tuple[int, ...]) -> int:
    return sum(d * w for d, w in zip(digits, weights, strict=False))


def check_inn(inn: str) -> None:
    """INN: 10 digits with one check digit (organisations), 12 with two (people and sole proprietors)."""
    if not re.fullmatch(r"\d{10}|\d{12}", inn):
        raise ValidationError("inn", INN_LENGTH)
    d = _digits(inn)
    if len(d) == 10:
        ok = _weighted(d, (2, 4, 10, 3, 5, 9, 4, 6, 8)) % 11 % 10 == d[9]
    else:
        ok = (_weighted(d, (7, 2, 4, 10, 3, 5, 9, 4, 6, 8)) % 11 % 10 == d[10]
              and _weighted(d, (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)) % 11 % 10 == d[11])
    if not ok:
        raise ValidationError("inn", CHECK_DIGITS)


def check_kpp(kpp: str) -> None:
    """KPP: tax office (4 digits), reason (2 digits or capital Latin letters), number (3 digits)."""
    if not re.fullmatch(r"\d{4}[\dA-Z]{2}\d{3}", kpp):
        raise ValidationError("kpp", KPP_FORMAT)


def check_ogrn(ogrn: str) -> None:
    """OGRN (13 digits): the first 12 mod 11, last digit of that; OGRNIP (15): the first 14 mod 13."""
    if not re.fullmatch(r"\d{13}|\d{15}", ogrn):
        raise ValidationError("ogrn", OGRN_LENGTH)
    modulus = 11 if len(ogrn) == 13 else 13
    if int(ogrn[:-1]) % modulus % 10 != int(ogrn[-1]):
        raise ValidationError("ogrn", CHECK_DIGITS)


def check_bic(bic: str) -> None:
    """A Russian bank's BIC: 9 digits, country code 04."""
    if not re.fullmatch(r"04\d{7}", bic):
        raise ValidationError("bic", BIC_FORMAT)


def account_key_ok(account: str, prefix: str) -> bool:
    """The Bank of Russia's key: 3 BIC digits then the 20 of the account, weighted 7-1-3, sum ending in 0."""
    digits = _digits(prefix + account)
    return _weighted(digits, (7, 1, 3) * 8) % 10 == 0


def check_settlement_account(account: str, bic: str) -> None:
    """A settlement account is keyed with the BIC's last 3 digits; at a Bank of Russia office (a BIC ending
    000-002) with "0" and the BIC's digits 5-6."""
    if not re.fullmatch(r"\d{20}", account):
        raise ValidationError("settlement_account", ACCOUNT_LENGTH)
    if not bic:
        raise ValidationError("settlement_account", ACCOUNT_NEEDS_BIC)
    prefix = "0" + bic[4:6] if bic[-3:] in ("000", "001", "002") else bic[-3:]
    if not account_key_ok(account, prefix):
        raise ValidationError("settlement_account", ACCOUNT_KEY)


def check_correspondent_account(account: str, bic: str) -> None:
    """A correspondent account (at the Bank of Russia) starts 30101 and is keyed with "0" + BIC digits 5-6."""
    if not re.fullmatch(r"\d{20}", account):
        raise ValidationError("correspondent_account", ACCOUNT_LENGTH)
    if not account.startswith("30101"):
        raise ValidationError("correspondent_account", CORRESPONDENT_PREFIX)
    if not bic:
        raise ValidationError("correspondent_account", ACCOUNT_NEEDS_BIC)
    if not account_key_ok(account, "0" + bic[4:6]):
        raise ValidationError("correspondent_account", ACCOUNT_KEY)


def clean_requisites(data: Mapping[str, Any], current: Requisites) -> Requisites:
    """The submitted fields, trimmed and checked; the first problem raises ValidationError naming its field."""
    values: dict[str, Any] = {}
    for name, limit in TEXT_FIELDS.items():
        value = data.get(name, "")
        if not isinstance(value, str):
            raise ValidationError(name, "must be text")
        value = value.strip()
        if len(value) > limit or "\x00" in value:
            raise ValidationError(name, TOO_LONG)
        values[name] = value
    for name in CODE_FIELDS:
        value = data.get(name, "")
        if not isinstance(value, str):
            raise ValidationError(name, "must be text")
        values[name] = re.sub(r"[\s-]", "", value).upper()
    if not values["legal_name"]:
        raise ValidationError("legal_name", "is required")
    if values["inn"]:
        check_inn(values["inn"])
    if values["kpp"]:
        check_kpp(values["kpp"])
        if len(values["inn"]) == 12:
            raise ValidationError("kpp", KPP_FOR_SOLE_PROPRIETOR)
    if values["ogrn"]:
        check_ogrn(values["ogrn"])
        if values["inn"] and {len(values["inn"]), len(values["ogrn"])} not in ({10, 13}, {12, 15}):
            raise ValidationError("ogrn", OGRN_MISMATCH)
    if values["bic"]:
        check_bic(values["bic"])
    if values["settlement_account"]:
        check_settlement_account(values["settlement_account"], values["bic"])
    if values["correspondent_account"]:
        check_correspondent_account(values["correspondent_account"], values["bic"])
    if values["email"] and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", values["email"]):
        raise ValidationError("email", NOT_AN_EMAIL)
    rate = data.get("vat_rate", "")
    if rate not in VAT_RATES:
        raise ValidationError("vat_rate", VAT_CHOICE)
    values["vat_rate"] = rate
    included = data.get("prices_include_vat", False)
    values["prices_include_vat"] = included in (True, "on", "true", "1")
    return replace(current, **values)


def check_logo(data: bytes) -> str:
    """The image's MIME type if it is a PNG or JPEG that Pillow decodes whole, within the limits (CPU: call in a
    thread)."""
    from PIL import Image, UnidentifiedImageError  # imported here: only logos need the image decoder

    if len(data) > LOGO_MAX_BYTES:
        raise ValidationError("logo", LOGO_SIZE)
    if not data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
        raise ValidationError("logo", LOGO_TYPE)
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format
            if max(image.size) > LOGO_MAX_SIDE:
                raise ValidationError("logo", LOGO_SIDE)
            image.load()  # decodes every pixel: a truncated or corrupt file fails here, not in the PDF
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValidationError("logo", LOGO_TYPE) from exc
    if kind not in LOGO_TYPES:
        raise ValidationError("logo", LOGO_TYPE)
    return LOGO_TYPES[kind]


# ------------------------------------------------------------------ storage

_COLUMNS = ", ".join(EDITABLE) + ", logo, logo_type, version"
GET_REQUISITES = f"SELECT {_COLUMNS} FROM company_requisites"
INSERT_REQUISITES = f"""
INSERT INTO company_requisites ({", ".join(EDITABLE)}, logo, logo_type, updated_by, updated_at)
VALUES ({", ".join(f"${i}" for i in range(1, len(EDITABLE) + 5))})
ON CONFLICT (id) DO NOTHING
RETURNING {_COLUMNS}
"""
# The version in the WHERE is the claim: of two saves made from the same page, the second finds no row.
UPDATE_REQUISITES = f"""
UPDATE company_requisites SET {", ".join(f"{name} = ${i}" for i, name in enumerate(EDITABLE, 1))},
    logo = CASE WHEN ${len(EDITABLE) + 1} THEN ${len(EDITABLE) + 2} ELSE logo END,
    logo_type = CASE WHEN ${len(EDITABLE) + 1} THEN ${len(EDITABLE) + 3} ELSE logo_type END,
    updated_by = ${len(EDITABLE) + 4}, updated_at = ${len(EDITABLE) + 5}, version = version + 1
WHERE version = ${len(EDITABLE) + 6}
RETURNING {_COLUMNS}
"""


def from_settings(settings: Settings) -> Requisites:
    """What documents print before an admin saves the requisites: the old name and details settings."""
    return Requisites(legal_name=settings.company_name, details=settings.company_details,
                      vat_rate=settings.vat_rate, prices_include_vat=settings.prices_include_vat)


def _row(row: asyncpg.Record) -> Requisites:
    return Requisites(**dict(row))


async def get_requisites(conn: asyncpg.Connection, initial: Requisites) -> Requisites:
    """The stored requisites, or `initial` (version 0) while nobody has saved them."""
    row = await conn.fetchrow(GET_REQUISITES)
    return initial if row is None else _row(row)


async def save_requisites(conn: asyncpg.Connection, edited: Requisites, version: int, user_id: int | None,
                          now: datetime, logo: tuple[bytes, str] | None = None,
                          replace_logo: bool = False) -> Requisites:
    """Store the checked requisites made from `version`; Conflict if someone saved since. `replace_logo` with
    `logo` None removes the logo; without `replace_logo` the stored one stays."""
    values = [getattr(edited, name) for name in EDITABLE]
    data, kind = logo if logo else (None, None)
    if version == 0:
        row = await conn.fetchrow(INSERT_REQUISITES, *values, data, kind, user_id, now)
    else:
        row = await conn.fetchrow(UPDATE_REQUISITES, *values, replace_logo, data, kind, user_id, now, version)
    if row is None:
        raise Conflict(STALE)
    return _row(row)
