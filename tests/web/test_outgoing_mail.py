"""Outgoing mail: the offer from a deal and a reply to a client's mail reach an aiosmtpd sink through the relay,
join the client's history, thread with the original, and are retried while the relay is away."""

import asyncio
import email
import email.policy
import io
import socket
from dataclasses import replace
from datetime import UTC, datetime

import pypdf
import pytest
from aiosmtpd.controller import Controller

from crm import deals as deals_db
from crm import mail as mail_db
from tests.conftest import csrf_headers, login
from web.app import create_app


class Sink:
    """An SMTP server's handler that keeps what it receives; RCPT to refuse@… gets a permanent 550."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refuse@"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def relay_port():
    return free_port()


@pytest.fixture
def sink(relay_port):
    handler = Sink()
    controller = Controller(handler, hostname="127.0.0.1", port=relay_port)
    controller.start()
    yield handler
    controller.stop()


@pytest.fixture
async def mail_client(settings, pool, aiohttp_client, relay_port):
    app = create_app(replace(settings, mail_relay_host="127.0.0.1", mail_relay_port=relay_port,
                             mail_relay_security="none", mail_from="sales@example.ru", mail_backoff=0.2), pool)
    return await aiohttp_client(app)


async def wait_until(check, timeout: float = 10):
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def test_the_offer_reaches_the_client_and_joins_their_history(sink, mail_client, factory, conn):
    manager = await factory.user("anna", extension="101")
    contact = await factory.contact("Дмитрий Клиентов", manager=manager, emails=["client@example.com"])
    deal = await deals_db.create_deal(conn, manager, "Насосы для котельной", datetime.now(UTC),
                                      contact_id=contact.id, manager_id=manager.id)
    csrf = await login(mail_client, "anna")
    resp = await mail_client.post(f"/api/deals/{deal.id}/send-offer", json={}, headers=csrf_headers(csrf))
    assert resp.status == 202, await resp.text()
    queued = await resp.json()
    assert (queued["to"], queued["state"], queued["subject"]) == (
        ["client@example.com"], "pending", "Commercial offer: Насосы для котельной")

    await wait_until(lambda: asyncio.sleep(0, bool(sink.messages)))
    sender, recipients, message = sink.messages[0]
    assert (sender, recipients) == ("sales@example.ru", ["client@example.com"])
    assert (str(message["From"]), message["Subject"], message["Message-ID"]) == (
        "Anna <sales@example.ru>", "Commercial offer: Насосы для котельной", queued["message_id"])
    attachments = [(p.get_filename(), p.get_content_type()) for p in message.iter_attachments()]
    assert attachments == [(f"Commercial offer {deal.id}.pdf", "application/pdf")]
    pdf = pypdf.PdfReader(io.BytesIO(next(message.iter_attachments()).get_content()))
    assert "Насосы для котельной" in " ".join("".join(p.extract_text() for p in pdf.pages).split())
    assert "Please find our commercial offer attached" in message.get_body(("plain",)).get_content()

    await wait_until(lambda: conn.fetchval("SELECT state = 'sent' FROM outgoing_mail"))
    history = await conn.fetchrow("SELECT direction, subject, contact_id, deal_id, sender_email, "
                                  "(SELECT count(*) FROM mail_attachments a WHERE a.message_id = m.id) AS files "
                                  "FROM mail_messages m")
    assert dict(history) == {"direction": "out", "subject": "Commercial offer: Насосы для котельной",
                             "contact_id": contact.id, "deal_id": deal.id, "sender_email": "sales@example.ru",
                             "files": 1}
    card = await (await mail_client.get(f"/contacts/{contact.id}")).text()
    assert "Commercial offer: Насосы для котельной" in card
    outbox = await (await mail_client.get("/api/outbox")).json()
    assert [(m["state"], m["attempts"]) for m in outbox["items"]] == [("sent", 1)]


async def test_a_reply_threads_with_the_clients_mail(sink, mail_client, factory, conn, settings):
    await factory.user("head", role="head")
    raw = (b"From: Client <client@example.com>\r\nTo: sales@example.ru\r\nSubject: =?utf-8?b?0KHRh9C10YI=?=\r\n"
           b"Message-ID: <abc@client.example>\r\nReferences: <root@client.example>\r\n\r\nPlease send the invoice\r\n")
    mail_id = await mail_db.store_raw(conn, raw, "127.0.0.1", "client@example.com", ["sales@example.ru"])
    await mail_db.process_stored(conn, mail_id, raw, "RU")
    csrf = await login(mail_client, "head")
    resp = await mail_client.post(f"/api/mail/{mail_id}/reply", json={"text": "Счёт во вложении."},
                                  headers=csrf_headers(csrf))
    assert resp.status == 202, await resp.text()
    await wait_until(lambda: asyncio.sleep(0, bool(sink.messages)))
    _, recipients, message = sink.messages[0]
    assert (recipients, message["Subject"], message["In-Reply-To"], message["References"]) == (
        ["client@example.com"], "Re: Счет", "<abc@client.example>", "<root@client.example> <abc@client.example>")
    assert message.get_body(("plain",)).get_content().strip() == "Счёт во вложении."


async def test_retried_while_the_relay_is_away_and_given_up_on_a_550(mail_client, relay_port, factory, conn):
    manager = await factory.user("anna", extension="101")
    contact = await factory.contact("Клиент", manager=manager, emails=["client@example.com"])
    deal = await deals_db.create_deal(conn, manager, "Сделка", datetime.now(UTC), contact_id=contact.id,
                                      manager_id=manager.id)
    csrf = await login(mail_client, "anna")
    for to in ("client@example.com", "refuse@example.com"):
        resp = await mail_client.post(f"/api/deals/{deal.id}/send-offer", json={"to": to}, headers=csrf_headers(csrf))
        assert resp.status == 202
    await wait_until(lambda: conn.fetchval("SELECT min(attempts) >= 2 FROM outgoing_mail"))
    assert await conn.fetchval("SELECT bool_and(last_error LIKE 'relay unreachable%') FROM outgoing_mail")
    handler = Sink()
    controller = Controller(handler, hostname="127.0.0.1", port=relay_port)
    controller.start()  # the relay is back
    try:
        await wait_until(lambda: conn.fetchval("SELECT count(*) = 0 FROM outgoing_mail WHERE state = 'pending'"))
    finally:
        controller.stop()
    rows = await conn.fetch("SELECT recipients[1] AS to, state FROM outgoing_mail ORDER BY id")
    assert [tuple(r) for r in rows] == [("client@example.com", "sent"), ("refuse@example.com", "failed")]
    assert [m[1] for m in handler.messages] == [["client@example.com"]]


async def test_bad_requests(mail_client, settings, pool, aiohttp_client, factory, conn):
    anna = await factory.user("anna", extension="101")
    boris = await factory.user("boris", extension="102")
    nobody = await factory.contact("Без почты", manager=anna)
    deal = await deals_db.create_deal(conn, anna, "Сделка", datetime.now(UTC), contact_id=nobody.id,
                                      manager_id=anna.id)
    other = await deals_db.create_deal(conn, boris, "Чужая", datetime.now(UTC), manager_id=boris.id)
    csrf = await login(mail_client, "anna")
    for path, body, status, field in (
            (f"/api/deals/{deal.id}/send-offer", {}, 422, "to"),
            (f"/api/deals/{deal.id}/send-offer", {"to": "not an address"}, 422, "email"),
            (f"/api/deals/{deal.id}/send-offer", {"to": ["a@example.com"] * 0 + [5]}, 422, "to"),
            (f"/api/deals/{deal.id}/send-offer", {"to": "a@example.com", "subject": "x" * 501}, 422, "subject"),
            (f"/api/deals/{other.id}/send-offer", {"to": "a@example.com"}, 404, None),
            ("/api/deals/99999999999999999999/send-offer", {"to": "a@example.com"}, 404, None),
            ("/api/mail/12345/reply", {"text": "hi"}, 404, None)):
        resp = await mail_client.post(path, json=body, headers=csrf_headers(csrf))
        assert resp.status == status, (path, body, await resp.text())
        if field:
            assert (await resp.json())["error"]["field"] == field
    assert await conn.fetchval("SELECT count(*) FROM outgoing_mail") == 0
    unconfigured = await aiohttp_client(create_app(settings, pool))
    csrf = await login(unconfigured, "anna")
    resp = await unconfigured.post(f"/api/deals/{deal.id}/send-offer", json={"to": "a@example.com"},
                                   headers=csrf_headers(csrf))
    assert resp.status == 422 and "CALLBOARD_MAIL_FROM" in (await resp.json())["error"]["message"]
