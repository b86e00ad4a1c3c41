"""The SMTP door: aiosmtpd's SMTP protocol on our own event loop; mail pages and attachments."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from crm import mail as mail_db
from crm import paging
from crm.leads import NewLead
from crm.settings import Settings
from web import keys
from web.auth import current_user, require_role
from web.errors import path_id
from web.paging import next_url, page_args
from web.render import render

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MailReceived:
    """Told to the notifier: the manager of a known sender hears of it at once."""

    user_id: int
    text: str


class IntakeHandler:
    """aiosmtpd handler: recipients checked, the raw message stored before anything else."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, app: web.Application) -> None:
        self.settings = settings
        self.pool = pool
        self.app = app
        self.processed = 0
        self.refused = 0  # senders and recipients turned away (554 address, 550 mailbox), for /metrics

    def _recipient_ok(self, address: str) -> bool:
        address = address.strip().lower()
        local = address.split("@", 1)[0]
        return any(address == r or (("@" not in r) and local == r) for r in self.settings.smtp_recipients)

    def _peer_ok(self, session: Session) -> bool:
        if not self.settings.smtp_allowlist:
            return True
        try:
            peer = ipaddress.ip_address(session.peer[0])
        except (ValueError, TypeError, IndexError):
            return False
        return any(peer in ipaddress.ip_network(n, strict=False) for n in self.settings.smtp_allowlist)

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        if not self._peer_ok(session):
            self.refused += 1
            return "554 5.7.1 Your address may not send mail here"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if not self._recipient_ok(address):
            self.refused += 1
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        peer = str(session.peer[0]) if session.peer else ""
        try:
            async with self.pool.acquire() as conn:
                message_id = await mail_db.store_raw(conn, raw, peer, envelope.mail_from or "",
                                                     list(envelope.rcpt_tos))
        except (OSError, asyncpg.PostgresError) as exc:
            # Not stored: the sender's server keeps it and tries again later. Nothing is lost.
            logger.error("mail from %s not stored (%s); answered 451", envelope.mail_from, exc)
            return "451 4.3.0 Temporary failure, try again later"
        if await file_stored(self.app, message_id, raw) is None:
            return "250 OK stored"
        self.processed += 1
        return f"250 OK message {message_id} accepted"


async def file_stored(app: web.Application, message_id: int, raw: bytes) -> mail_db.IntakeResult | None:
    """After the raw bytes are stored: parse and file them (lead, client history, reply task) and tell people.
    Used by every door that takes messages in (SMTP, website forms). None: kept unparsed, with the reason."""
    pool, settings = app[keys.POOL], app[keys.SETTINGS]
    try:
        async with pool.acquire() as conn:
            result = await mail_db.process_stored(conn, message_id, raw, settings.phone_region, hours=settings.hours)
    except Exception as exc:
        # Stored already: accepted, and marked unparsed so the admin sees it and the reason on the mail page.
        logger.exception("message %d stored but not processed", message_id)
        try:
            async with pool.acquire() as conn:
                await mail_db.mark_unparsed(conn, message_id, f"{type(exc).__name__}: {exc}")
        except (OSError, asyncpg.PostgresError):
            logger.error("message %d could not be marked unparsed; it stays 'received'", message_id)
        return None
    notifier = app.get(keys.NOTIFIER)
    if notifier is not None and result.notify_user_id is not None:
        await notifier.call_event(MailReceived(result.notify_user_id, "New e-mail from a client"))
    if notifier is not None and result.lead_created:
        await notifier.call_event(NewLead(result.lead_id, f"New lead ({result.kind.replace('_', ' ')})",
                                          result.lead_manager_id))
    return result


def _authenticator(settings: Settings):
    users = dict(item.split(":", 1) for item in settings.smtp_users)

    def check(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        expected = users.get(login)
        ok = expected is not None and hmac.compare_digest(auth_data.password.decode("utf-8", "replace"), expected)
        # handled=False: aiosmtpd answers 535 itself. With the default (handled=True) it answered nothing and
        # the sender hung until its own timeout.
        return AuthResult(success=ok, handled=False)

    return check


async def smtp_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    server = None
    if settings.smtp_port:
        handler = IntakeHandler(settings, app[keys.POOL], app)
        app[keys.MAIL_HANDLER] = handler
        loop = asyncio.get_running_loop()
        auth = bool(settings.smtp_users)

        def protocol() -> SMTP:
            return SMTP(handler, data_size_limit=settings.smtp_max_bytes, enable_SMTPUTF8=True,
                        hostname="callboard", ident="Callboard intake", auth_required=auth,
                        auth_require_tls=False, authenticator=_authenticator(settings) if auth else None,
                        timeout=60, loop=loop)

        try:
            server = await loop.create_server(protocol, settings.smtp_host, settings.smtp_port)
            app[keys.SMTP_PORT] = server.sockets[0].getsockname()[1]
            logger.info("SMTP intake on %s:%d for %s", settings.smtp_host, app[keys.SMTP_PORT],
                        ", ".join(settings.smtp_recipients))
        except OSError as exc:
            logger.error("SMTP port %s:%d unavailable (%s); e-mail intake is off", settings.smtp_host,
                         settings.smtp_port, exc.strerror)
    try:
        yield
    finally:
        if server is not None:
            server.close()
            await server.wait_closed()


async def attachment(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        filename, content_type, data = await mail_db.get_attachment(
            conn, current_user(request), path_id(request, "message_id"), path_id(request, "att_id"))
    # Always a download, never rendered inline: an attached HTML file must not run in our origin.
    quoted = filename.replace('"', "")
    return web.Response(body=data, content_type="application/octet-stream", headers={
        "Content-Disposition": f"attachment; filename*=UTF-8''{_rfc5987(quoted)}",
        "X-Content-Type-Options": "nosniff", "X-Original-Content-Type": content_type[:100]})


def _rfc5987(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


async def mail_page(request: web.Request) -> web.Response:
    require_role(request, "admin", "head")
    async with request.app[keys.POOL].acquire() as conn:
        limit, after = page_args(request, 200)
        page = paging.page(await mail_db.list_recent(conn, limit + 1, after), limit, mail_db.message_key)
        messages = page.items
    return render(request, "mail.html", messages=messages, next_url=next_url(request, page))


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(smtp_ctx)
    app.router.add_get("/mail", mail_page)
    app.router.add_get("/mail/{message_id:\\d+}/attachments/{att_id:\\d+}", attachment)
