"""Money in pages and /api: contracts, invoices (and their printable page), bank statements and payments,
receivables; the overdue-invoice job."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from aiohttp import BodyPartReader, web

from crm import contacts as contacts_db
from crm import contracts as contracts_db
from crm import documents as documents_db
from crm import errors
from crm import invoices as invoices_db
from crm import payments as payments_db
from crm import receivables as receivables_db
from crm import requisites as requisites_db
from crm.bankstatement import parse_statement
from crm.contracts import Contract
from crm.invoices import Invoice
from crm.payments import ImportSummary, Payment
from crm.requisites import VatTotals
from web import keys
from web.api import read_json
from web.auth import CSRF_HEADER, current_user, require_role
from web.deals import int_field, text_field
from web.documents import DocumentContext, Line, make_pdf, pdf_response, seller_lines
from web.errors import path_id
from web.i18n import Reader, request_reader
from web.jobs import periodic_job
from web.render import render

logger = logging.getLogger(__name__)

OVERDUE_CHECK_SECONDS = 600
MAX_STATEMENT_BYTES = 20 * 1024 * 1024  # a year of a busy account is a few MB; more is not a statement
EXPIRING_DAYS = 30
_CHUNK = 64 * 1024


def _now() -> datetime:
    return datetime.now(UTC)


def _today(request_or_app: web.Request | web.Application) -> date:
    """Today in the company's time zone: an invoice is overdue from the company's midnight."""
    app = request_or_app.app if isinstance(request_or_app, web.Request) else request_or_app
    return _now().astimezone(ZoneInfo(app[keys.SETTINGS].timezone)).date()


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def _day(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def contract_json(c: Contract) -> dict[str, Any]:
    return {"id": c.id, "number": c.number, "signed_on": _day(c.signed_on), "company_id": c.company_id,
            "company_name": c.company_name, "kind": c.kind, "valid_until": _day(c.valid_until),
            "prepayment_percent": c.prepayment_percent, "deferral_days": c.deferral_days, "notes": c.notes,
            "scan": f"/contracts/{c.id}/scan" if c.scan_name else None, "version": c.version}


def invoice_json(i: Invoice, items: list | None = None, paid_by: list[dict] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": i.id, "year": i.year, "number": i.number, "issued_on": _day(i.issued_on), "due_on": _day(i.due_on),
        "deal_id": i.deal_id, "manager_id": i.manager_id, "contract_id": i.contract_id, "company_id": i.company_id,
        "buyer": i.buyer, "buyer_tax_id": i.buyer_tax_id, "vat_percent": i.vat_percent,
        "prices_include_vat": i.prices_include_vat, "net": _money(i.net), "vat": _money(i.vat),
        "total": _money(i.total), "paid": _money(i.paid), "owed": _money(i.owed), "state": i.state,
        "print": f"/invoices/{i.id}/print"}
    if items is not None:
        body["items"] = [{"position": x.position, "deal_item_id": x.deal_item_id, "sku": x.sku, "name": x.name,
                          "unit": x.unit, "quantity": str(x.quantity), "price": _money(x.price),
                          "amount": _money(x.amount)} for x in items]
    if paid_by is not None:
        body["payments"] = [{"payment_id": p["id"], "doc_number": p["doc_number"], "received_on": _day(
            p["received_on"]), "amount": _money(p["amount"]), "matched_by": p["matched_by"]} for p in paid_by]
    return body


def payment_json(p: Payment) -> dict[str, Any]:
    return {"id": p.id, "source": p.source, "doc_number": p.doc_number, "doc_date": _day(p.doc_date),
            "received_on": _day(p.received_on), "amount": _money(p.amount), "payer_name": p.payer_name,
            "payer_inn": p.payer_inn, "payer_account": p.payer_account, "purpose": p.purpose,
            "company_id": p.company_id, "allocated": _money(p.allocated), "unallocated": _money(p.unallocated),
            "dismissed": p.dismissed,
            "allocations": [{"invoice_id": a.invoice_id, "year": a.year, "number": a.number,
                             "amount": _money(a.amount), "matched_by": a.matched_by} for a in p.allocations]}


def summary_json(s: ImportSummary) -> dict[str, Any]:
    return {"statement_id": s.statement_id, "documents": s.documents, "incoming": s.incoming,
            "outgoing": s.outgoing, "matched": s.matched, "to_match": s.to_match, "duplicates": s.duplicates,
            "problems": [{"line": line, "problem": what} for line, what in s.problems], "payment_ids": s.payment_ids}


def debt_json(d: receivables_db.Debt) -> dict[str, Any]:
    return {"id": d.key if not isinstance(d.key, str) else None, "name": d.name, "owed": _money(d.owed),
            "overdue": _money(d.overdue), "expected_this_month": _money(d.expected_this_month),
            "buckets": {k: _money(v) for k, v in d.buckets.items()}, "invoices": d.invoices}


# ------------------------------------------------------------------ shared by pages and the API

async def _create_contract(request: web.Request, data: dict[str, Any]) -> Contract:
    async with request.app[keys.POOL].acquire() as conn:
        return await contracts_db.create_contract(
            conn, current_user(request), number=text_field(data, "number"), signed_on=data.get("signed_on"),
            company_id=int_field(data, "company_id"), kind=text_field(data, "kind"),
            valid_until=data.get("valid_until"), prepayment_percent=data.get("prepayment_percent"),
            deferral_days=data.get("deferral_days"), notes=text_field(data, "notes"))


async def _issue(request: web.Request, data: dict[str, Any]) -> Invoice:
    settings = request.app[keys.SETTINGS]
    async with request.app[keys.POOL].acquire() as conn:
        return await invoices_db.issue_invoice(
            conn, current_user(request), path_id(request, "deal_id"), _today(request),
            vat_percent=settings.vat_percent, prices_include_vat=settings.prices_include_vat,
            lines=data.get("items"), due_on=data.get("due_on") or None)


async def _read_upload(request: web.Request) -> tuple[str, bytes]:
    """The statement file, read in chunks and refused past MAX_STATEMENT_BYTES (413), never held unbounded:
    a multipart field `file`, or the whole body (text/plain, application/octet-stream)."""
    if request.content_type == "multipart/form-data" and not request.get(keys.VIA_TOKEN) and CSRF_HEADER not in \
            request.headers:
        # A page's form: the CSRF check has read it whole already, within the app's body limit.
        form = await request.post()
        field = form.get("file")
        if not isinstance(field, web.FileField):
            raise errors.ValidationError("file", "choose the statement file")
        return field.filename or "statement.txt", field.file.read()
    if request.content_type == "multipart/form-data":
        reader = await request.multipart()
        async for part in reader:
            if isinstance(part, BodyPartReader) and part.name == "file":
                return part.filename or "statement.txt", await _read_capped(part.read_chunk)
        raise errors.ValidationError("file", "send the statement as the multipart field `file`")
    return "statement.txt", await _read_capped(request.content.read, _CHUNK)


async def _read_capped(read, *args: Any) -> bytes:
    data = bytearray()
    while chunk := await read(*args):
        data += chunk
        if len(data) > MAX_STATEMENT_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_STATEMENT_BYTES, actual_size=len(data),
                                                text="the statement is larger than 20 MB")
    return bytes(data)


async def _import(request: web.Request) -> ImportSummary:
    user = require_role(request, "head", "admin", "accountant")
    name, data = await _read_upload(request)
    statement = await asyncio.to_thread(parse_statement, data)
    async with request.app[keys.POOL].acquire() as conn:
        summary = await payments_db.import_statement(conn, user, statement, name, _now())
    logger.info("statement %s imported by %s: %d incoming, %d new, %d matched", name, user.login, summary.incoming,
                summary.incoming - summary.duplicates, summary.matched)
    return summary


def _allocations_from_form(form: Any) -> list[dict[str, Any]]:
    """`invoice_id` and `amount` fields repeated, one pair per row; empty rows skipped."""
    ids, amounts = form.getall("invoice_id", []), form.getall("amount", [])
    return [{"invoice_id": i, "amount": a} for i, a in zip(ids, amounts, strict=False) if str(a).strip()]


async def _enter(request: web.Request, data: dict[str, Any], allocations: Any) -> Payment:
    user = require_role(request, "head", "admin", "accountant")
    async with request.app[keys.POOL].acquire() as conn:
        return await payments_db.enter_payment(
            conn, user, _now(), doc_number=text_field(data, "doc_number"), doc_date=data.get("doc_date"),
            amount=data.get("amount"), received_on=data.get("received_on") or None,
            payer_name=text_field(data, "payer_name"), payer_inn=text_field(data, "payer_inn"),
            payer_account=text_field(data, "payer_account"), purpose=text_field(data, "purpose"),
            company_id=int_field(data, "company_id"), allocations=allocations)


def _as_of(request: web.Request) -> date:
    value = request.query.get("as_of")
    return contracts_db.parse_date(value, "as_of") if value else _today(request)


# ------------------------------------------------------------------ API

async def contracts_api(request: web.Request) -> web.Response:
    company_id = int_field(dict(request.query), "company_id")
    async with request.app[keys.POOL].acquire() as conn:
        found = await contracts_db.list_contracts(conn, current_user(request), company_id)
    return web.json_response({"items": [contract_json(c) for c in found]})


async def expiring_api(request: web.Request) -> web.Response:
    days = contracts_db.parse_whole(request.query.get("days"), "days", 1, 3650, EXPIRING_DAYS)
    async with request.app[keys.POOL].acquire() as conn:
        found = await contracts_db.expiring_contracts(conn, current_user(request), _today(request), days)
    return web.json_response({"items": [contract_json(c) for c in found], "days": days})


async def create_contract_api(request: web.Request) -> web.Response:
    return web.json_response(contract_json(await _create_contract(request, await read_json(request))), status=201)


async def contract_api(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        contract = await contracts_db.get_contract(conn, current_user(request), path_id(request, "contract_id"))
    return web.json_response(contract_json(contract))


async def deal_contract_api(request: web.Request) -> web.Response:
    body = await read_json(request)
    deal_id = path_id(request, "deal_id")
    async with request.app[keys.POOL].acquire() as conn:
        await contracts_db.set_deal_contract(conn, current_user(request), deal_id, int_field(body, "contract_id"))
        contract = await contracts_db.deal_contract(conn, current_user(request), deal_id)
    return web.json_response({"deal_id": deal_id, "contract": contract_json(contract) if contract else None})


async def invoices_api(request: web.Request) -> web.Response:
    query = dict(request.query)
    async with request.app[keys.POOL].acquire() as conn:
        found = await invoices_db.list_invoices(conn, current_user(request), deal_id=int_field(query, "deal_id"),
                                                state=query.get("state") or None,
                                                company_id=int_field(query, "company_id"))
    return web.json_response({"items": [invoice_json(i) for i in found]})


async def issue_api(request: web.Request) -> web.Response:
    invoice = await _issue(request, await read_json(request))
    async with request.app[keys.POOL].acquire() as conn:
        items = await invoices_db.list_items(conn, invoice.id)
    return web.json_response(invoice_json(invoice, items, []), status=201)


async def invoice_api(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        invoice = await invoices_db.get_invoice(conn, current_user(request), path_id(request, "invoice_id"))
        items = await invoices_db.list_items(conn, invoice.id)
        paid_by = await payments_db.invoice_payments(conn, invoice.id)
    return web.json_response(invoice_json(invoice, items, paid_by))


async def cancel_api(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        invoice = await invoices_db.cancel_invoice(conn, current_user(request), path_id(request, "invoice_id"),
                                                   _now())
    return web.json_response(invoice_json(invoice))


async def statements_api(request: web.Request) -> web.Response:
    return web.json_response(summary_json(await _import(request)), status=201)


async def payments_api(request: web.Request) -> web.Response:
    to_match = request.query.get("to_match") in ("1", "true", "yes")
    async with request.app[keys.POOL].acquire() as conn:
        found = await payments_db.list_payments(conn, current_user(request), to_match)
    return web.json_response({"items": [payment_json(p) for p in found]})


async def enter_payment_api(request: web.Request) -> web.Response:
    body = await read_json(request)
    return web.json_response(payment_json(await _enter(request, body, body.get("allocations"))), status=201)


async def payment_api(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        payment = await payments_db.get_payment(conn, current_user(request), path_id(request, "payment_id"))
    return web.json_response(payment_json(payment))


async def _payment_action(request: web.Request, action: str, data: dict[str, Any], allocations: Any) -> Payment:
    user = current_user(request)
    payment_id = path_id(request, "payment_id")
    async with request.app[keys.POOL].acquire() as conn:
        if action == "allocate":
            return await payments_db.allocate(conn, user, payment_id, allocations, _now())
        if action == "unallocate":
            return await payments_db.unallocate(conn, user, payment_id, int_field(data, "invoice_id", True), _now())
        dismissed = data.get("dismissed", True)
        if isinstance(dismissed, str):
            dismissed = dismissed not in ("0", "false", "no", "")
        if not isinstance(dismissed, bool):
            raise errors.ValidationError("dismissed", "must be true or false")
        return await payments_db.dismiss_payment(conn, user, payment_id, dismissed)


async def payment_action_api(request: web.Request) -> web.Response:
    body = await read_json(request)
    payment = await _payment_action(request, request.match_info["action"], body, body.get("allocations"))
    return web.json_response(payment_json(payment))


async def receivables_api(request: web.Request) -> web.Response:
    as_of = _as_of(request)
    async with request.app[keys.POOL].acquire() as conn:
        report = await receivables_db.receivables(conn, current_user(request), as_of)
    return web.json_response({
        "as_of": as_of.isoformat(), "total": debt_json(report.total),
        "clients": [debt_json(d) for d in report.clients], "managers": [debt_json(d) for d in report.managers],
        "invoices": [{"id": i["id"], "year": i["year"], "number": i["number"], "client": i["client"],
                      "manager_id": i["manager_id"], "due_on": _day(i["due_on"]), "owed": _money(i["owed"]),
                      "days_overdue": i["days_overdue"], "bucket": i["bucket"]} for i in report.invoices]})


# ------------------------------------------------------------------ pages

async def contracts_page(request: web.Request) -> web.Response:
    user = current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        found = await contracts_db.list_contracts(conn, user)
        soon = await contracts_db.expiring_contracts(conn, user, _today(request), EXPIRING_DAYS)
        companies = await contacts_db.list_parties(conn, user, "company", None,
                                                   request.app[keys.SETTINGS].phone_region, 500, 0)
    return render(request, "contracts.html", contracts=found, expiring=soon, today=_today(request),
                  days=EXPIRING_DAYS, kinds=contracts_db.KINDS, companies=companies)


async def contract_page(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        contract = await contracts_db.get_contract(conn, current_user(request), path_id(request, "contract_id"))
    return render(request, "contract.html", contract=contract, today=_today(request))


async def new_contract_form(request: web.Request) -> web.Response:
    contract = await _create_contract(request, dict(await request.post()))
    raise web.HTTPFound(f"/contracts/{contract.id}")


async def scan_form(request: web.Request) -> web.Response:
    form = await request.post()
    field = form.get("scan")
    if not isinstance(field, web.FileField):
        raise errors.ValidationError("scan", "choose the scanned file")
    contract_id = path_id(request, "contract_id")
    content = await asyncio.to_thread(field.file.read)
    async with request.app[keys.POOL].acquire() as conn:
        await contracts_db.attach_scan(conn, current_user(request), contract_id, field.filename, field.content_type,
                                       content)
    raise web.HTTPFound(f"/contracts/{contract_id}")


async def scan_file(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        name, content_type, content = await contracts_db.get_scan(conn, current_user(request),
                                                                  path_id(request, "contract_id"))
    # A scan is shown, never run: a stored content type is one of contracts_db.SCAN_TYPES.
    return web.Response(body=content, content_type=content_type,
                        headers={"Content-Disposition": f"inline; filename*=UTF-8''{quote(name, safe='')}"})


async def deal_contract_form(request: web.Request) -> web.Response:
    form = await request.post()
    deal_id = path_id(request, "deal_id")
    async with request.app[keys.POOL].acquire() as conn:
        await contracts_db.set_deal_contract(conn, current_user(request), deal_id, int_field(dict(form),
                                                                                               "contract_id"))
    raise web.HTTPFound(f"/deals/{deal_id}")


async def issue_form(request: web.Request) -> web.Response:
    form = await request.post()
    invoice = await _issue(request, {"due_on": form.get("due_on") or None})
    raise web.HTTPFound(f"/invoices/{invoice.id}")


async def invoices_page(request: web.Request) -> web.Response:
    state = request.query.get("state") or None
    async with request.app[keys.POOL].acquire() as conn:
        found = await invoices_db.list_invoices(conn, current_user(request), state=state)
    return render(request, "invoices.html", invoices=found, state_filter=state or "", states=invoices_db.STATES,
                  today=_today(request))


async def invoice_page(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        invoice = await invoices_db.get_invoice(conn, current_user(request), path_id(request, "invoice_id"))
        items = await invoices_db.list_items(conn, invoice.id)
        paid_by = await payments_db.invoice_payments(conn, invoice.id)
    return render(request, "invoice.html", invoice=invoice, items=items, paid_by=paid_by, today=_today(request))


async def invoice_document(request: web.Request, invoice_id: int, reader: Reader | None = None) -> dict[str, Any]:
    """The invoice's document context with the seller's stored requisites; the reader must be allowed
    to see the invoice."""
    settings = request.app[keys.SETTINGS]
    async with request.app[keys.POOL].acquire() as conn:
        await invoices_db.get_invoice(conn, current_user(request), invoice_id)
        document = await invoices_db.invoice_document(conn, invoice_id)
        seller = await requisites_db.get_requisites(conn, requisites_db.from_settings(settings))
        document["client"] = await documents_db.get_client(conn, document["invoice"].deal_id)
    document["seller"] = {"name": seller.legal_name or settings.company_name,
                          "details": "\n".join(seller_lines(seller, reader or request_reader(request))),
                          "requisites": seller}
    return document


async def invoice_pdf(request: web.Request) -> web.Response:
    """The invoice as a PDF: the same machinery, requisites and words as the commercial offer."""
    pdf, filename = await invoice_pdf_bytes(request, path_id(request, "invoice_id"), request_reader(request))
    return pdf_response(pdf, filename, download="inline" not in request.query)


async def invoice_pdf_bytes(request: web.Request, invoice_id: int, reader: Reader) -> tuple[bytes, str]:
    """The invoice's PDF in the reader's language and its file name (the download, a reminder's attachment)."""
    settings = request.app[keys.SETTINGS]
    document = await invoice_document(request, invoice_id, reader)
    invoice: Invoice = document["invoice"]
    rate = "none" if invoice.vat_percent is None else str(invoice.vat_percent)
    context = DocumentContext(
        number=f"{invoice.number}", day=invoice.issued_on, seller=document["seller"]["requisites"],
        client=document["client"], subject=invoice.deal_title,
        lines=tuple(Line(i.name, i.sku, i.quantity, i.unit, i.price) for i in document["items"]),
        # The totals the invoice was issued with (VAT rate and inclusion frozen on the invoice).
        vat=VatTotals(rate, invoice.prices_include_vat, invoice.net, invoice.vat, invoice.total),
        manager_name=invoice.manager_name or "", manager_extension=None, valid_until=invoice.due_on,
        timezone=settings.timezone, currency=settings.currency)
    pdf = await make_pdf("invoice", context, reader.language)
    return pdf, f"{reader.gettext('Invoice for payment')} {invoice.number}.pdf"


async def invoice_print(request: web.Request) -> web.Response:
    document = await invoice_document(request, path_id(request, "invoice_id"))
    return render(request, "invoice_print.html", **document)


async def cancel_form(request: web.Request) -> web.Response:
    invoice_id = path_id(request, "invoice_id")
    async with request.app[keys.POOL].acquire() as conn:
        await invoices_db.cancel_invoice(conn, current_user(request), invoice_id, _now())
    raise web.HTTPFound(f"/invoices/{invoice_id}")


async def payments_page(request: web.Request, summary: ImportSummary | None = None) -> web.Response:
    user = current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        waiting = await payments_db.list_payments(conn, user, to_match=True) if user.sees_everything else []
        recent = await payments_db.list_payments(conn, user, limit=100)
    return render(request, "payments.html", waiting=waiting, recent=recent, summary=summary, today=_today(request))


async def import_form(request: web.Request) -> web.Response:
    return await payments_page(request, await _import(request))


async def new_payment_form(request: web.Request) -> web.Response:
    form = await request.post()
    payment = await _enter(request, dict(form), _allocations_from_form(form) or None)
    raise web.HTTPFound(f"/payments/{payment.id}")


async def payment_page(request: web.Request) -> web.Response:
    user = current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        payment = await payments_db.get_payment(conn, user, path_id(request, "payment_id"))
        candidates = [i for i in await invoices_db.list_invoices(conn, user, company_id=payment.company_id)
                      if i.owed > 0] if user.sees_everything else []
    return render(request, "payment.html", payment=payment, candidates=candidates)


async def payment_action_form(request: web.Request) -> web.Response:
    form = await request.post()
    payment = await _payment_action(request, request.match_info["action"], dict(form), _allocations_from_form(form))
    raise web.HTTPFound(f"/payments/{payment.id}")


async def receivables_page(request: web.Request) -> web.Response:
    as_of = _as_of(request)
    async with request.app[keys.POOL].acquire() as conn:
        report = await receivables_db.receivables(conn, current_user(request), as_of)
    reminded = request.query.get("reminded", "")
    return render(request, "receivables.html", report=report, buckets=receivables_db.BUCKETS,
                  reminded=int(reminded) if reminded.isdigit() and len(reminded) < 4 else None,
                  today=_today(request))


# ------------------------------------------------------------------ the periodic job

async def check_overdue_invoices(app: web.Application) -> list[dict]:
    async with app[keys.POOL].acquire() as conn:
        return await invoices_db.flag_overdue_invoices(conn, _today(app), _now())


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(periodic_job("overdue-invoices", OVERDUE_CHECK_SECONDS, check_overdue_invoices,
                                        "%d invoice(s) newly overdue"))
    r = app.router
    r.add_get("/contracts", contracts_page)
    r.add_post("/contracts/new", new_contract_form)
    r.add_get("/contracts/{contract_id:\\d+}", contract_page)
    r.add_post("/contracts/{contract_id:\\d+}/scan", scan_form)
    r.add_get("/contracts/{contract_id:\\d+}/scan", scan_file)
    r.add_post("/deals/{deal_id:\\d+}/contract", deal_contract_form)
    r.add_post("/deals/{deal_id:\\d+}/invoice", issue_form)
    r.add_get("/invoices", invoices_page)
    r.add_get("/invoices/{invoice_id:\\d+}", invoice_page)
    r.add_get("/invoices/{invoice_id:\\d+}/print", invoice_print)
    r.add_get("/invoices/{invoice_id:\\d+}/pdf", invoice_pdf)
    r.add_post("/invoices/{invoice_id:\\d+}/cancel", cancel_form)
    r.add_get("/payments", payments_page)
    r.add_post("/payments/import", import_form)
    r.add_post("/payments/new", new_payment_form)
    r.add_get("/payments/{payment_id:\\d+}", payment_page)
    r.add_post("/payments/{payment_id:\\d+}/{action:allocate|unallocate|dismiss}", payment_action_form)
    r.add_get("/receivables", receivables_page)
    r.add_get("/api/contracts", contracts_api)
    r.add_post("/api/contracts", create_contract_api)
    r.add_get("/api/contracts/expiring", expiring_api)
    r.add_get("/api/contracts/{contract_id:\\d+}", contract_api)
    r.add_post("/api/deals/{deal_id:\\d+}/contract", deal_contract_api)
    r.add_get("/api/invoices", invoices_api)
    r.add_post("/api/deals/{deal_id:\\d+}/invoices", issue_api)
    r.add_get("/api/invoices/{invoice_id:\\d+}", invoice_api)
    r.add_post("/api/invoices/{invoice_id:\\d+}/cancel", cancel_api)
    r.add_post("/api/bank-statements", statements_api)
    r.add_get("/api/payments", payments_api)
    r.add_post("/api/payments", enter_payment_api)
    r.add_get("/api/payments/{payment_id:\\d+}", payment_api)
    r.add_post("/api/payments/{payment_id:\\d+}/{action:allocate|unallocate|dismiss}", payment_action_api)
    r.add_get("/api/receivables", receivables_api)
