"""Payment reminders to clients: from the receivables page (per client or per overdue invoice) and
POST /api/receivables/reminders. The e-mail lists the overdue invoices with what is owed and when it was due, in
the client's language (Russian unless asked otherwise), with each invoice's PDF attached; it goes through the
outbox (sent by its worker, then kept in the client's history). An invoice is reminded of once a day."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from crm import errors
from crm import outbox as outbox_db
from crm import reminders as reminders_db
from crm.invoices import Invoice
from crm.outbox import Attachment, Links, OutgoingMail
from crm.settings import LANGUAGES
from web import keys
from web.api import read_json
from web.auth import current_user, require_role
from web.errors import MAX_ID
from web.i18n import Reader
from web.money import _today, invoice_pdf_bytes
from web.outmail import mail_json

CLIENT_LANGUAGE = "ru"  # clients are written to in Russian unless the request names another language


def reminder_text(reader: Reader, invoices: list[Invoice], today: date, sender_name: str, company: str
                  ) -> tuple[str, str]:
    """The subject and body of a reminder, in the reader's language."""
    lines = []
    for invoice in invoices:
        days = invoice.overdue_days(today)
        lines.append("— " + reader.gettext("Invoice № %(number)s of %(issued)s: %(owed)s, due %(due)s") % {
            "number": invoice.number, "issued": reader.moment(invoice.issued_on, "date"),
            "owed": reader.money(invoice.owed), "due": reader.moment(invoice.due_on, "date")}
            + " (" + reader.ngettext("%(days)s day overdue", "%(days)s days overdue", days) % {"days": days} + ")")
    total = sum((i.owed for i in invoices), Decimal(0))
    subject = reader.gettext("Payment reminder: %(company)s") % {"company": company}
    body = reader.gettext(
        "Good day!\n\nAccording to our records, these invoices are not paid yet:\n\n%(lines)s\n\n"
        "Overdue in total: %(total)s.\n\nPlease pay them or let us know when you will. If you have paid already, "
        "please disregard this letter. The invoices are attached.\n\nKind regards,\n%(name)s\n%(company)s") % {
        "lines": "\n".join(lines), "total": reader.money(total), "name": sender_name, "company": company}
    return subject, body


def _ids(value: Any) -> list[int] | None:
    if value in (None, "", []):
        return None
    if not isinstance(value, list) or len(value) > 100:
        raise errors.ValidationError("invoice_ids", "a list of at most 100 invoice ids")
    out = []
    for item in value:
        if isinstance(item, bool) or not str(item).isdigit() or not 0 < int(item) <= MAX_ID:
            raise errors.ValidationError("invoice_ids", "each is an invoice id")
        out.append(int(item))
    return sorted(set(out))


def _company(value: Any) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool) or not str(value).isdigit() or not 0 < int(value) <= MAX_ID:
        raise errors.ValidationError("company_id", "a company id")
    return int(value)


async def send_reminder(request: web.Request, fields: dict[str, Any]) -> tuple[OutgoingMail, list[Invoice]]:
    require_role(request, "admin", "head", "accountant", "manager")
    user, settings = current_user(request), request.app[keys.SETTINGS]
    language = fields.get("language") or CLIENT_LANGUAGE
    if language not in LANGUAGES:
        raise errors.ValidationError("language", f"one of {', '.join(LANGUAGES)}")
    reader = request.app[keys.I18N].readers[language]
    today = _today(request)
    pool = request.app[keys.POOL]
    async with pool.acquire() as conn:
        found = await reminders_db.reminder_invoices(conn, user, today, _company(fields.get("company_id")),
                                                     _ids(fields.get("invoice_ids")))
        to = fields.get("to") or await reminders_db.client_email(conn, found[0])
    if not to:
        raise errors.ValidationError("to", "the client has no e-mail address: give one")
    # The PDFs before the transaction: rendering takes a while, and the rows it claims stay locked until commit.
    pdfs = {i.id: await invoice_pdf_bytes(request, i.id, reader) for i in found}
    async with pool.acquire() as conn, conn.transaction():
        claimed = await reminders_db.claim(conn, [i.id for i in found], today, user.id)
        listed = [i for i in found if i.id in claimed]
        subject, text = reminder_text(reader, listed, today, user.display_name, settings.company_name)
        deals = {i.deal_id for i in listed}
        mail = await outbox_db.queue_mail(
            conn, user=user, sender=settings.mail_from, to=to, subject=subject, text=text,
            attachments=[Attachment(pdfs[i.id][1], "application/pdf", pdfs[i.id][0]) for i in listed],
            links=Links(listed[0].contact_id if listed[0].company_id is None else None, listed[0].company_id,
                        None, deals.pop() if len(deals) == 1 else None))
        await reminders_db.record_mail(conn, claimed, today, mail.id)
    return mail, listed


async def reminders_api(request: web.Request) -> web.Response:
    """POST /api/receivables/reminders {company_id | invoice_ids, to?, language?}: queued (202)."""
    mail, listed = await send_reminder(request, await read_json(request))
    return web.json_response({"mail": mail_json(mail), "invoice_ids": [i.id for i in listed]}, status=202)


async def reminder_form(request: web.Request) -> web.Response:
    form = await request.post()
    fields = {"company_id": form.get("company_id"),
              "invoice_ids": [form["invoice_id"]] if form.get("invoice_id") else None}
    try:
        _, listed = await send_reminder(request, fields)
        result = {"reminded": str(len(listed))}
    except errors.Conflict:
        result = {"reminded": "0"}  # a second click: the first one's reminder is in the outbox
    raise web.HTTPFound("/receivables?" + urlencode(result))


def setup(app: web.Application) -> None:
    app.router.add_post("/receivables/reminders", reminder_form)
    app.router.add_post("/api/receivables/reminders", reminders_api)
