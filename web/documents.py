"""Documents as PDF (fpdf2, an embedded DejaVu font): the commercial offer now, the invoice from the same blocks."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp import web
from babel.numbers import format_decimal, get_currency_symbol
from fpdf import FPDF
from fpdf.fonts import FontFace

from crm import deals as deals_db
from crm import documents as documents_db
from crm import requisites as requisites_db
from crm.documents import Client
from crm.phones import format_phone
from crm.requisites import Requisites, VatTotals
from crm.settings import Settings
from crm.users import User, get_user
from crm.words import roubles_in_words
from web import keys
from web.auth import current_user
from web.errors import path_id
from web.i18n import JS_DOMAIN, N_, Reader, load_translations, request_reader

logger = logging.getLogger(__name__)

FONTS_DIR = Path(__file__).resolve().parent / "fonts"
FONT = "DejaVu"
OFFER_VALID_DAYS = 14
TITLES = {"offer": N_("Commercial offer"), "invoice": N_("Invoice for payment")}


@dataclass(frozen=True, slots=True)
class Line:
    """One row of a document's item table."""

    name: str
    sku: str
    quantity: Decimal
    unit: str
    price: Decimal

    @property
    def total(self) -> Decimal:
        return self.quantity * self.price


@dataclass(frozen=True, slots=True)
class DocumentContext:
    """Everything a document prints; built from the database by `deal_context`, or by hand for another kind."""

    number: str
    day: date  # the document's date, in the company's zone
    seller: Requisites
    client: Client
    subject: str
    lines: tuple[Line, ...]
    vat: VatTotals
    manager_name: str
    manager_extension: str | None
    valid_until: date | None
    timezone: str = "Europe/Moscow"
    currency: str = "RUB"


@lru_cache(maxsize=16)
def document_reader(language: str, timezone: str, currency: str) -> Reader:
    """The words and formats of one language (built once: loading catalogs is not free)."""
    return Reader(language, ZoneInfo(timezone), currency, load_translations(language),
                  load_translations(language, JS_DOMAIN))


def render_pdf(kind: str, context: DocumentContext, language: str) -> bytes:
    """The document as PDF bytes, in `language` ('ru', 'en'). CPU-bound: call it through `make_pdf` on the loop.
    The same context gives the same bytes (the creation date is the document's day), so attaching twice is one
    document."""
    if kind not in _LAYOUTS:
        raise ValueError(f"no layout for documents of kind {kind!r}")
    pdf = _Pdf(document_reader(language, context.timezone, context.currency))
    pdf.set_creation_date(datetime.combine(context.day, datetime.min.time(), UTC))
    pdf.set_title(pdf.title_of(kind, context))
    pdf.set_author(context.seller.legal_name)
    pdf.set_lang(language)
    pdf.add_page()
    _LAYOUTS[kind](pdf, context)
    return bytes(pdf.output())


async def make_pdf(kind: str, context: DocumentContext, language: str) -> bytes:
    """render_pdf off the event loop: a page of layout and font subsetting takes tens of milliseconds."""
    return await asyncio.to_thread(render_pdf, kind, context, language)


def _plain(text: str) -> str:
    """Babel puts no-break spaces into numbers; a PDF's reader searches and copies plain ones ('250 050,00')."""
    return text.replace("\xa0", " ").replace("\u202f", " ")


class _Pdf(FPDF):
    """A4 with our font and the reader's words; the blocks documents are made of."""

    def __init__(self, reader: Reader) -> None:
        super().__init__(format="A4")
        self.reader = reader
        self.add_font(FONT, "", str(FONTS_DIR / "DejaVuSans.ttf"))
        self.add_font(FONT, "B", str(FONTS_DIR / "DejaVuSans-Bold.ttf"))
        self.set_margins(15, 15, 15)
        self.set_auto_page_break(True, 18)
        self.set_font(FONT, size=9)
        self.alias_nb_pages()

    def _(self, message: str) -> str:
        return self.reader.gettext(message)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(FONT, size=7)
        self.cell(0, 5, self._("Page %(page)s of %(pages)s") % {"page": self.page_no(), "pages": "{nb}"},
                  align="R")

    def title_of(self, kind: str, context: DocumentContext) -> str:
        return self._("%(title)s No. %(number)s of %(date)s") % {
            "title": self._(TITLES[kind]), "number": context.number, "date": self.reader.moment(context.day)}

    def amount(self, value: Decimal) -> str:
        return _plain(format_decimal(value, format="#,##0.00", locale=self.reader.locale))

    def money(self, value: Decimal) -> str:
        return _plain(self.reader.money(value))

    def text(self, value: str, size: float = 9, bold: bool = False, align: str = "L", gap: float = 0) -> None:
        self.set_font(FONT, "B" if bold else "", size)
        self.multi_cell(0, size * 0.5, value, align=align, new_x="LMARGIN", new_y="NEXT")
        if gap:
            self.ln(gap)

    # ---------------------------------------------------------------- blocks

    def seller_header(self, seller: Requisites) -> None:
        """Logo at the left, the seller's name and requisites beside it, a rule under both."""
        top = self.get_y()
        if seller.logo:
            self.image(io.BytesIO(seller.logo), x=self.l_margin, y=top, w=0, h=18, keep_aspect_ratio=True)
            self.set_left_margin(self.l_margin + 50)
            self.set_xy(self.l_margin, top)
        self.text(seller.legal_name, 11, bold=True)
        for line in seller_lines(seller, self.reader):
            self.text(line, 8)
        if seller.details:
            self.text(seller.details, 8)
        if seller.logo:
            self.set_left_margin(15)
            self.set_y(max(self.get_y(), top + 20))
        self.ln(2)
        self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.ln(4)

    def heading(self, kind: str, context: DocumentContext) -> None:
        self.text(self.title_of(kind, context), 14, bold=True, align="C", gap=3)

    def client_block(self, context: DocumentContext, label: str = N_("To: %(client)s")) -> None:
        client = context.client
        to = client.name + (", " + self._("INN %(inn)s") % {"inn": client.tax_id} if client.tax_id else "")
        self.text(self._(label) % {"client": to}, 10)
        reach = [client.contact_name, format_phone(client.phone) if client.phone else "", client.email]
        if any(reach):
            self.text(self._("Contact person: %(who)s") % {"who": ", ".join(p for p in reach if p)}, 9)
        if context.subject:
            self.text(self._("Re: %(title)s") % {"title": context.subject}, 9)
        self.ln(3)

    def items_table(self, context: DocumentContext) -> None:
        symbol = get_currency_symbol(context.currency, locale=self.reader.locale)
        heads = ("№", self._("Item"), self._("SKU"), self._("Qty"), self._("Unit"),
                 self._("Price, %(currency)s") % {"currency": symbol},
                 self._("Amount, %(currency)s") % {"currency": symbol})
        self.set_font(FONT, size=8.5)
        with self.table(col_widths=(7, 62, 24, 14, 12, 26, 28), line_height=4.6, padding=1.2,
                        text_align=("RIGHT", "LEFT", "LEFT", "RIGHT", "LEFT", "RIGHT", "RIGHT"),
                        headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235)),
                        repeat_headings=1) as table:
            row = table.row()
            for head in heads:
                row.cell(head)
            for number, line in enumerate(context.lines, 1):
                row = table.row()
                for value in (str(number), line.name, line.sku, _plain(self.reader.number(line.quantity)),
                              self.reader.label(line.unit), self.amount(line.price), self.amount(line.total)):
                    row.cell(value)
        self.ln(2)

    def totals(self, context: DocumentContext) -> None:
        """Total, the VAT line and the sum to pay, right-aligned; then the sum in words (roubles, Russian)."""
        vat = context.vat
        rows = [(self._("Total:"), self.amount(vat.gross if vat.included else vat.net))]
        if vat.percent is None:
            rows.append((self._("Without VAT"), ""))
        elif vat.included:
            rows.append((self._("Including VAT %(rate)s %%:") % {"rate": vat.percent}, self.amount(vat.vat)))
        else:
            rows.append((self._("VAT %(rate)s %%:") % {"rate": vat.percent}, self.amount(vat.vat)))
        rows.append((self._("Total to pay:"), self.amount(vat.gross)))
        for label, value in rows:
            self.set_font(FONT, "B", 9)
            self.cell(self.epw - 30, 5, label, align="R")
            self.cell(30, 5, value, align="R", new_x="LMARGIN", new_y="NEXT")
        self.ln(2)
        self.text(self._("Items: %(count)s, to the sum of %(amount)s") % {
            "count": len(context.lines), "amount": self.money(vat.gross)}, 9)
        words = amount_in_words(context, self.reader.language)
        if words:
            self.text(words, 9, bold=True)
        self.ln(3)

    def manager_block(self, context: DocumentContext) -> None:
        seller = context.seller
        reach = []
        if seller.phone:
            reach.append(self._("phone %(phone)s") % {"phone": seller.phone} + (
                ", " + self._("ext. %(ext)s") % {"ext": context.manager_extension}
                if context.manager_extension else ""))
        elif context.manager_extension:
            reach.append(self._("ext. %(ext)s") % {"ext": context.manager_extension})
        if seller.email:
            reach.append(self._("e-mail %(email)s") % {"email": seller.email})
        who = ", ".join([context.manager_name or seller.legal_name, *reach])
        self.text(self._("Your manager: %(who)s") % {"who": who}, 9, gap=6)

    def signature(self, seller: Requisites) -> None:
        if seller.director:
            self.text(self._("Director") + " ____________________ " + seller.director, 9)

    def bank_box(self, seller: Requisites) -> None:
        """The payee's bank details as Russian invoices open with them."""
        self.set_font(FONT, size=8.5)
        with self.table(col_widths=(95, 20, 55), line_height=4.6, padding=1.2, first_row_as_headings=False) as t:
            row = t.row()
            row.cell(seller.bank_name + "\n" + self._("Payee's bank"), rowspan=2)
            row.cell(self._("BIC"))
            row.cell(seller.bic)
            row = t.row()
            row.cell(self._("Acc. No."))
            row.cell(seller.correspondent_account)
            row = t.row()
            row.cell(self._("INN %(inn)s") % {"inn": seller.inn} + "    "
                     + (self._("KPP %(kpp)s") % {"kpp": seller.kpp} if seller.kpp else ""))
            row.cell(self._("Acc. No."), rowspan=2)
            row.cell(seller.settlement_account, rowspan=2)
            row = t.row()
            row.cell(seller.legal_name + "\n" + self._("Payee"))
        self.ln(4)


def amount_in_words(context: DocumentContext, language: str) -> str | None:
    """The sum to pay in words: Russian documents in roubles carry it; others do not."""
    if context.currency != "RUB" or language != "ru":
        return None
    return roubles_in_words(context.vat.gross)


def seller_lines(seller: Requisites, reader: Reader) -> list[str]:
    """The seller's requisites as lines (the PDF header and the printable page print the same)."""
    _ = reader.gettext
    ids = []
    if seller.inn:
        ids.append(_("INN %(inn)s") % {"inn": seller.inn})
    if seller.kpp:
        ids.append(_("KPP %(kpp)s") % {"kpp": seller.kpp})
    if seller.ogrn:
        ids.append((_("OGRN %(ogrn)s") if len(seller.ogrn) == 13 else _("OGRNIP %(ogrn)s")) % {"ogrn": seller.ogrn})
    lines = [", ".join(ids)] if ids else []
    if seller.address:
        lines.append(seller.address)
    reach = [_("phone %(phone)s") % {"phone": seller.phone} if seller.phone else "",
             _("e-mail %(email)s") % {"email": seller.email} if seller.email else ""]
    if any(reach):
        lines.append(", ".join(r for r in reach if r))
    if seller.settlement_account:
        lines.append(_("Account %(account)s at %(bank)s, BIC %(bic)s, corr. account %(corr)s") % {
            "account": seller.settlement_account, "bank": seller.bank_name or "—", "bic": seller.bic or "—",
            "corr": seller.correspondent_account or "—"})
    return lines


def _offer(pdf: _Pdf, context: DocumentContext) -> None:
    pdf.seller_header(context.seller)
    pdf.heading("offer", context)
    pdf.client_block(context)
    pdf.text(pdf._("We are pleased to offer you:"), 9, gap=1)
    pdf.items_table(context)
    pdf.totals(context)
    if context.valid_until:
        pdf.text(pdf._("This offer is valid until %(date)s.") % {"date": pdf.reader.moment(context.valid_until)}, 9)
    pdf.text(pdf._("Lead times: items in stock ship within 3 working days; the rest as agreed."), 9, gap=3)
    pdf.manager_block(context)
    pdf.signature(context.seller)


def _invoice(pdf: _Pdf, context: DocumentContext) -> None:
    pdf.seller_header(context.seller)
    pdf.bank_box(context.seller)
    pdf.heading("invoice", context)
    pdf.client_block(context, N_("Buyer: %(client)s"))
    pdf.items_table(context)
    pdf.totals(context)
    if context.valid_until:
        pdf.text(pdf._("Payable by %(date)s.") % {"date": pdf.reader.moment(context.valid_until)}, 9, gap=8)
    pdf.signature(context.seller)


_LAYOUTS: dict[str, Callable[[_Pdf, DocumentContext], None]] = {"offer": _offer, "invoice": _invoice}


# ------------------------------------------------------------------ from the database

def company_day(settings: Settings, now: datetime) -> date:
    return now.astimezone(ZoneInfo(settings.timezone)).date()


async def deal_context(conn: asyncpg.Connection, settings: Settings, viewer: User, deal_id: int,
                       now: datetime, valid_days: int = OFFER_VALID_DAYS) -> DocumentContext:
    """A deal as a document: its items, the client, the seller's stored requisites and VAT, the manager."""
    deal = await deals_db.get_deal(conn, viewer, deal_id)
    items = await deals_db.list_items(conn, deal.id)
    seller = await requisites_db.get_requisites(conn, requisites_db.from_settings(settings))
    client = await documents_db.get_client(conn, deal.id)
    manager = await get_user(conn, deal.manager_id) if deal.manager_id else None
    day = company_day(settings, now)
    return DocumentContext(
        number=str(deal.id), day=day, seller=seller, client=client, subject=deal.title,
        lines=tuple(Line(i.name, i.sku, i.quantity, i.unit, i.price) for i in items),
        vat=requisites_db.vat_totals(deal.amount, seller.vat_rate, seller.prices_include_vat),
        manager_name=deal.manager_name or "", manager_extension=manager.extension if manager else None,
        valid_until=day + timedelta(days=valid_days), timezone=settings.timezone, currency=settings.currency)


def pdf_response(pdf: bytes, filename: str, download: bool = True) -> web.Response:
    disposition = "attachment" if download else "inline"
    return web.Response(body=pdf, content_type="application/pdf", headers={
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(filename)}",
        "Cache-Control": "private, no-store"})


def _filename(reader: Reader, kind: str, number: str) -> str:
    return f"{reader.gettext(TITLES[kind])} {number}.pdf"


async def offer_pdf(request: web.Request) -> web.Response:
    user = current_user(request)
    reader = request_reader(request)
    async with request.app[keys.POOL].acquire() as conn:
        context = await deal_context(conn, request.app[keys.SETTINGS], user, path_id(request, "deal_id"),
                                     datetime.now(UTC))
    pdf = await make_pdf("offer", context, reader.language)
    return pdf_response(pdf, _filename(reader, "offer", context.number), download="inline" not in request.query)


async def attach_offer(request: web.Request) -> web.Response:
    """Keep the offer as it is now in the deal's history; a form's button or the API (201, or 200 if kept)."""
    user = current_user(request)
    deal_id = path_id(request, "deal_id")
    reader = request_reader(request)
    now = datetime.now(UTC)
    async with request.app[keys.POOL].acquire() as conn:
        context = await deal_context(conn, request.app[keys.SETTINGS], user, deal_id, now)
        pdf = await make_pdf("offer", context, reader.language)
        document_id, new = await documents_db.attach_document(conn, deal_id, "offer", context.number,
                                                              reader.language, context.vat.gross, pdf, user.id, now)
    if new:
        logger.info("offer for deal %s attached as document %s by user %s", deal_id, document_id, user.id)
    if request.path.startswith("/api/"):
        return web.json_response({"id": document_id, "deal_id": deal_id, "kind": "offer", "new": new,
                                  "url": f"/deals/{deal_id}/documents/{document_id}.pdf"},
                                 status=201 if new else 200)
    raise web.HTTPFound(f"/deals/{deal_id}#documents")


async def document_pdf(request: web.Request) -> web.Response:
    user = current_user(request)
    deal_id = path_id(request, "deal_id")
    async with request.app[keys.POOL].acquire() as conn:
        await deals_db.get_deal(conn, user, deal_id)  # only who may see the deal sees its documents
        document, pdf = await documents_db.get_document(conn, deal_id, path_id(request, "document_id"))
    reader = request.app[keys.I18N].reader(document.language)
    return pdf_response(pdf, _filename(reader, document.kind, document.number), download=False)


async def documents_api(request: web.Request) -> web.Response:
    user = current_user(request)
    deal_id = path_id(request, "deal_id")
    async with request.app[keys.POOL].acquire() as conn:
        await deals_db.get_deal(conn, user, deal_id)
        found = await documents_db.list_documents(conn, deal_id)
    return web.json_response({"items": [
        {"id": d.id, "kind": d.kind, "number": d.number, "language": d.language, "amount": f"{d.amount:.2f}",
         "created_by": d.created_by_name, "created_at": d.created_at.isoformat(), "size": d.size,
         "url": f"/deals/{deal_id}/documents/{d.id}.pdf"} for d in found]})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/deals/{deal_id:\\d+}/offer.pdf", offer_pdf)
    r.add_post("/deals/{deal_id:\\d+}/offer/attach", attach_offer)
    r.add_get("/deals/{deal_id:\\d+}/documents/{document_id:\\d+}.pdf", document_pdf)
    r.add_get("/api/deals/{deal_id:\\d+}/documents", documents_api)
    r.add_post("/api/deals/{deal_id:\\d+}/offer/attach", attach_offer)
