"""Outgoing mail: send the offer from a deal and reply to a client's mail (page forms and API), the outbox page,
and the worker that hands queued messages to the configured SMTP relay (aiosmtplib), retrying."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import aiosmtplib
from aiohttp import web

from crm import outbox as outbox_db
from crm.outbox import Attachment, DueMail, Links, OutgoingMail
from crm.settings import Settings
from web import keys
from web.api import read_json
from web.auth import current_user
from web.errors import path_id
from web.i18n import request_reader
from web.pollers import polling_ctx
from web.render import render

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0


def mail_json(m: OutgoingMail) -> dict[str, Any]:
    return {"id": m.id, "sender": m.sender, "to": m.recipients, "subject": m.subject, "message_id": m.message_id,
            "state": m.state, "attempts": m.attempts, "last_error": m.last_error, "deal_id": m.deal_id,
            "contact_id": m.contact_id, "created_at": m.created_at.isoformat(),
            "sent_at": m.sent_at.isoformat() if m.sent_at else None}


async def offer_attachment(request: web.Request, deal_id: int) -> Attachment:
    """The deal's commercial offer as a PDF, in the sender's language (the same document as the download)."""
    from web.documents import deal_context, make_pdf

    reader = request_reader(request)
    async with request.app[keys.POOL].acquire() as conn:
        context = await deal_context(conn, request.app[keys.SETTINGS], current_user(request), deal_id,
                                     datetime.now(UTC))
    pdf = await make_pdf("offer", context, reader.language)
    return Attachment(f"{reader.gettext('Commercial offer')} {context.number}.pdf", "application/pdf", pdf)


async def _send_offer(request: web.Request, fields: dict[str, Any]) -> OutgoingMail:
    user, settings = current_user(request), request.app[keys.SETTINGS]
    deal_id = path_id(request, "deal_id")
    reader = request_reader(request)
    async with request.app[keys.POOL].acquire() as conn:
        deal = await outbox_db.deal_address(conn, user, deal_id)
        attachment = await offer_attachment(request, deal_id)
        subject = fields.get("subject") or reader.gettext("Commercial offer: %(title)s") % {"title": deal["title"]}
        text = fields.get("text") or reader.gettext(
            "Good day!\n\nPlease find our commercial offer attached.\n\nKind regards,\n%(name)s\n%(company)s") % {
            "name": user.display_name, "company": settings.company_name}
        return await outbox_db.queue_mail(
            conn, user=user, sender=settings.mail_from, to=fields.get("to") or deal["email"] or [], subject=subject,
            text=text, attachments=[attachment],
            links=Links(deal["contact_id"], deal["company_id"], deal["lead_id"], deal_id))


async def _reply(request: web.Request, fields: dict[str, Any]) -> OutgoingMail:
    user, settings = current_user(request), request.app[keys.SETTINGS]
    mail_id = path_id(request, "message_id")
    async with request.app[keys.POOL].acquire() as conn:
        original, message_id, references = await outbox_db.reply_context(conn, user, mail_id)
        subject = original["subject"] or ""
        subject = fields.get("subject") or (subject if subject.lower().startswith("re:") else f"Re: {subject}")
        return await outbox_db.queue_mail(
            conn, user=user, sender=settings.mail_from, to=fields.get("to") or original["sender_email"],
            subject=subject, text=fields.get("text"), in_reply_to=message_id, references=references,
            links=Links(original["contact_id"], original["company_id"], original["lead_id"], original["deal_id"],
                        mail_id))


async def send_offer_api(request: web.Request) -> web.Response:
    """POST /api/deals/{id}/send-offer {to?, subject?, text?}: queued (202); sent by the worker."""
    return web.json_response(mail_json(await _send_offer(request, await read_json(request))), status=202)


async def reply_api(request: web.Request) -> web.Response:
    """POST /api/mail/{id}/reply {text, subject?, to?}"""
    return web.json_response(mail_json(await _reply(request, await read_json(request))), status=202)


def _form_fields(form: Any) -> dict[str, Any]:
    return {k: str(form.get(k, "")).strip() or None for k in ("to", "subject")} | {"text": str(form.get("text", ""))}


async def send_offer_form(request: web.Request) -> web.Response:
    await _send_offer(request, _form_fields(await request.post()) | {"text": None})
    raise web.HTTPFound(f"/deals/{path_id(request, 'deal_id')}?sent=1")


async def reply_form(request: web.Request) -> web.Response:
    await _reply(request, _form_fields(await request.post()))
    raise web.HTTPFound("/mail/outbox")


async def outbox_api(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        found = await outbox_db.list_mail(conn, current_user(request))
    return web.json_response({"items": [mail_json(m) for m in found]})


async def outbox_page(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        found = await outbox_db.list_mail(conn, current_user(request))
    return render(request, "outbox.html", mails=found, relay=bool(request.app[keys.SETTINGS].mail_relay_host))


# ------------------------------------------------------------------------------------------------ the worker


async def relay(settings: Settings, due: DueMail) -> None:
    """Hand one message to the relay; raises what aiosmtplib raises."""
    await aiosmtplib.send(
        due.message, sender=due.sender, recipients=due.recipients, hostname=settings.mail_relay_host,
        port=settings.mail_relay_port, username=settings.mail_relay_user or None,
        password=settings.mail_relay_password or None, use_tls=settings.mail_relay_security == "ssl",
        start_tls=True if settings.mail_relay_security == "starttls" else False, timeout=60)


async def send_due(app: web.Application) -> int:
    pool, settings = app[keys.POOL], app[keys.SETTINGS]
    async with pool.acquire() as conn:
        due = await outbox_db.claim_due(conn, datetime.now(UTC))
    for item in due:
        try:
            await relay(settings, item)
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError, OSError, TimeoutError) as exc:
            logger.warning("outgoing mail %s: relay unreachable (attempt %s): %s", item.id, item.attempts, exc)
            async with pool.acquire() as conn:
                await outbox_db.mark_failed_attempt(conn, item, datetime.now(UTC), f"relay unreachable: {exc}",
                                                    settings.mail_backoff)
        except aiosmtplib.SMTPException as exc:
            # A 5xx answer (unknown mailbox, refused sender) will not change by waiting: give it up now.
            code = getattr(exc, "code", 0) or 0
            permanent = 500 <= code < 600 or isinstance(exc, aiosmtplib.SMTPRecipientsRefused)
            logger.warning("outgoing mail %s not sent (attempt %s%s): %s", item.id, item.attempts,
                           ", given up" if permanent else "", exc)
            async with pool.acquire() as conn:
                await outbox_db.mark_failed_attempt(conn, item, datetime.now(UTC), str(exc), settings.mail_backoff,
                                                    permanent)
        else:
            async with pool.acquire() as conn:
                await outbox_db.mark_sent(conn, item.id, datetime.now(UTC))
            logger.info("outgoing mail %s sent to %s", item.id, ", ".join(item.recipients))
    return len(due)


def setup(app: web.Application) -> None:
    app.router.add_post("/api/deals/{deal_id:\\d+}/send-offer", send_offer_api)
    app.router.add_post("/deals/{deal_id:\\d+}/send-offer", send_offer_form)
    app.router.add_post("/api/mail/{message_id:\\d+}/reply", reply_api)
    app.router.add_post("/mail/{message_id:\\d+}/reply", reply_form)
    app.router.add_get("/api/outbox", outbox_api)
    app.router.add_get("/mail/outbox", outbox_page)
    # Runs only with a relay configured; until then mail waits in the queue.
    app.cleanup_ctx.append(polling_ctx("mail-worker", send_due, POLL_SECONDS,
                                       lambda app: bool(app[keys.SETTINGS].mail_relay_host)))
