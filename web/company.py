"""The company's requisites: the admin's page and /api/company; the logo documents print."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from crm import errors
from crm import requisites as requisites_db
from crm.requisites import LOGO_MAX_BYTES, VAT_RATES, Requisites
from web import keys
from web.api import read_json
from web.auth import current_user, require_role
from web.i18n import N_, request_reader
from web.pages import render

logger = logging.getLogger(__name__)

# Field names as the page labels them (errors name the field).
FIELD_LABELS = {
    "legal_name": N_("Legal name"), "inn": N_("INN"), "kpp": N_("KPP"), "ogrn": N_("OGRN / OGRNIP"),
    "address": N_("Legal address"), "bank_name": N_("Bank"), "bic": N_("BIC"),
    "settlement_account": N_("Settlement account"), "correspondent_account": N_("Correspondent account"),
    "director": N_("Director"), "phone": N_("Phone"), "email": N_("E-mail"),
    "details": N_("Other details"), "vat_rate": N_("VAT rate"), "prices_include_vat": N_("Prices include VAT"),
    "logo": N_("Logo"), "version": N_("version"),
}
# crm.requisites' check messages, for the catalog (tests/crm/test_requisites.py keeps the two lists equal).
CHECK_MESSAGES = (
    N_("is too long"), N_("must be 10 digits (an organisation) or 12 (a sole proprietor)"),
    N_("the check digits do not match: a digit is mistyped"),
    N_("must be 9 characters: 4 digits, 2 digits or capital letters, 3 digits"),
    N_("a sole proprietor (12-digit INN) has no KPP"), N_("must be 13 digits (OGRN) or 15 (OGRNIP)"),
    N_("a 13-digit OGRN goes with a 10-digit INN, a 15-digit OGRNIP with a 12-digit INN"),
    N_("must be 9 digits starting with 04"), N_("must be 20 digits"),
    N_("does not match the bank's BIC: check the account and the BIC"),
    N_("give the bank's BIC: the account is checked against it"), N_("a correspondent account starts with 30101"),
    N_("is not an e-mail address"), N_("choose one of the listed rates"), N_("must be a PNG or JPEG image"),
    N_("must be at most 512 KB"), N_("must be at most 4000 pixels on a side"), N_("must be text"),
)
STALE_MESSAGE = N_("someone saved the requisites after this page was opened; here is what is stored now: make the "
                   "change again")
VAT_LABELS = {"22": "22 %", "20": "20 %", "10": "10 %", "0": "0 %", "none": N_("without VAT")}


def _now() -> datetime:
    return datetime.now(UTC)


def _version(value: Any) -> int:
    text = str(value if value is not None else "").strip()
    if not text.isdigit() or len(text) > 9:
        raise errors.ValidationError("version", "is not a number; reload the page")
    return int(text)


def requisites_json(req: Requisites) -> dict[str, Any]:
    body = {k: v for k, v in asdict(req).items() if k not in ("logo", "logo_type")}
    body["logo"] = req.logo is not None
    return body


async def _read_logo(form: MultiDictProxy) -> tuple[bytes, str] | None:
    upload = form.get("logo")
    if not isinstance(upload, web.FileField):
        return None
    data = upload.file.read(LOGO_MAX_BYTES + 1)
    if not data:
        return None  # the file input left empty: the stored logo stays
    return data, await asyncio.to_thread(requisites_db.check_logo, data)


async def company_page(request: web.Request) -> web.Response:
    require_role(request, "admin")
    async with request.app[keys.POOL].acquire() as conn:
        stored = await requisites_db.get_requisites(conn, requisites_db.from_settings(request.app[keys.SETTINGS]))
    return _page(request, stored, stored)


def _page(request: web.Request, values: Requisites, stored: Requisites, status: int = 200,
          error: str | None = None, error_field: str | None = None, saved: bool = False) -> web.Response:
    return render(request, "company.html", http_status=status, values=values, stored=stored, error=error,
                  error_field=error_field, saved=saved, vat_rates=[(r, VAT_LABELS[r]) for r in VAT_RATES],
                  logo_kb=LOGO_MAX_BYTES // 1024)


def _problem(request: web.Request, exc: errors.ValidationError) -> str:
    """'INN: the check digits do not match…' in the reader's words."""
    reader = request_reader(request)
    label = FIELD_LABELS.get(exc.field, exc.field)
    return f"{reader.gettext(label)}: {reader.gettext(exc.message)}"


async def company_save(request: web.Request) -> web.Response:
    user = require_role(request, "admin")
    form = await request.post()
    settings = request.app[keys.SETTINGS]
    async with request.app[keys.POOL].acquire() as conn:
        stored = await requisites_db.get_requisites(conn, requisites_db.from_settings(settings))
        submitted = stored
        try:
            submitted = requisites_db.clean_requisites(form, stored)
            version = _version(form.get("version"))
            logo = await _read_logo(form)
            remove = form.get("remove_logo") == "on"
            saved = await requisites_db.save_requisites(conn, submitted, version, user.id, _now(), logo=logo,
                                                        replace_logo=logo is not None or remove)
        except errors.ValidationError as exc:
            shown = submitted if submitted is not stored else _as_typed(form, stored)
            return _page(request, shown, stored, 422, _problem(request, exc), exc.field)
        except errors.Conflict:
            current = await requisites_db.get_requisites(conn, requisites_db.from_settings(settings))
            return _page(request, current, current, 409, request_reader(request).gettext(STALE_MESSAGE))
    logger.info("company requisites saved by user %s (version %s)", user.id, saved.version)
    return _page(request, saved, saved, saved=True)


def _as_typed(form: MultiDictProxy, stored: Requisites) -> Requisites:
    """What the admin typed, shown again beside the error (nothing of it is stored)."""
    typed = {name: str(form.get(name, "")) for name in requisites_db.EDITABLE
             if name not in ("vat_rate", "prices_include_vat")}
    return replace(stored, **typed, prices_include_vat=form.get("prices_include_vat") == "on",
                   vat_rate=str(form.get("vat_rate", stored.vat_rate)))


async def logo(request: web.Request) -> web.Response:
    current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        stored = await requisites_db.get_requisites(conn, requisites_db.from_settings(request.app[keys.SETTINGS]))
    if stored.logo is None:
        raise errors.NotFound("logo")
    return web.Response(body=stored.logo, content_type=stored.logo_type or "application/octet-stream",
                        headers={"Cache-Control": "private, max-age=60"})


async def company_api(request: web.Request) -> web.Response:
    require_role(request, "admin")
    async with request.app[keys.POOL].acquire() as conn:
        stored = await requisites_db.get_requisites(conn, requisites_db.from_settings(request.app[keys.SETTINGS]))
    return web.json_response(requisites_json(stored))


async def company_put_api(request: web.Request) -> web.Response:
    """Save the requisites (the logo stays: it is uploaded on the page); `version` as read, 409 if stale."""
    user = require_role(request, "admin")
    body = await read_json(request)
    version = body.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 10**9:
        raise errors.ValidationError("version", "is required: the version you read")
    async with request.app[keys.POOL].acquire() as conn:
        stored = await requisites_db.get_requisites(conn, requisites_db.from_settings(request.app[keys.SETTINGS]))
        edited = requisites_db.clean_requisites(body, stored)
        saved = await requisites_db.save_requisites(conn, edited, version, user.id, _now())
    return web.json_response(requisites_json(saved))


def setup(app: web.Application) -> None:
    app.router.add_get("/admin/company", company_page)
    app.router.add_post("/admin/company", company_save)
    app.router.add_get("/company/logo", logo)
    app.router.add_get("/api/company", company_api)
    app.router.add_put("/api/company", company_put_api)
