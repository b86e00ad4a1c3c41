"""E-mail intake over real SMTP (smtplib against our server): forms, chats, clients, bad input."""

import asyncio
import smtplib
import socket
from dataclasses import replace
from email.message import EmailMessage

import pytest

from crm import leads as leads_db
from tests.conftest import FIXTURES, login
from web import keys
from web.app import create_app
from web.keys import SMTP_PORT

MAIL = FIXTURES / "mail"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
async def smtp(settings, pool, aiohttp_client):
    """The app with its SMTP door on a free port; returns (http client, send(raw, rcpt, **login))."""
    app = create_app(replace(settings, smtp_port=free_port(), smtp_max_bytes=200_000), pool)
    client = await aiohttp_client(app)
    port = app[SMTP_PORT]

    async def send(raw: bytes, to: str = "sales@callboard.local", sender: str = "web@example.com") -> dict:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # on the wire, lines end in CRLF

        def blocking() -> dict:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as server:
                return server.sendmail(sender, [to], raw)
        return await asyncio.to_thread(blocking)

    return client, send, port


async def test_a_russian_web_form_becomes_a_lead_with_its_fields(smtp, conn, factory):
    await factory.user("head", role="head")
    _, send, _ = smtp
    await send((MAIL / "web_form_ru.eml").read_bytes())
    lead = (await leads_db.list_leads(conn, await _head(conn)))[0]
    assert (lead.source, lead.name, lead.phone_e164, lead.email, lead.company_name) == (
        "web_form", "Анна Кузнецова", "+79165551234", "anna.k@example.ru", "ООО «Стройкомплект»")
    assert lead.first_message.startswith("Нужен расчёт на 20 подшипников")
    assert await conn.fetchval("SELECT count(*) FROM notifications WHERE kind = 'new_lead'") == 1


async def _head(conn):
    from crm.users import get_user_by_login
    return await get_user_by_login(conn, "head")


async def test_html_only_form_and_koi8r_chat_transcript(smtp, conn, factory):
    await factory.user("head", role="head")
    _, send, _ = smtp
    await send((MAIL / "web_form_en_html.eml").read_bytes(), to="info@callboard.local")
    await send((MAIL / "jivo_chat_koi8r.eml").read_bytes())
    leads = {lead.source: lead for lead in await leads_db.list_leads(conn, await _head(conn))}
    assert (leads["web_form"].name, leads["web_form"].phone_e164) == ("John Smith", "+442079460958")
    assert "alert" not in leads["web_form"].first_message
    chat = leads["chat"]
    assert (chat.name, chat.phone_e164, chat.email) == ("Пётр", "+79123456789", "petr@example.ru")
    assert chat.first_message.startswith("[14:02:11] Пётр: Здравствуйте!")


async def test_a_known_client_gets_history_a_reply_task_and_an_attachment_only_allowed_users_open(
        smtp, conn, factory):
    manager = await factory.user("manager1", extension="101")
    await factory.user("manager2", extension="102")
    contact = await factory.contact("Demo Client", manager=manager, emails=["client@demo-industries.example"])
    client, send, _ = smtp
    await send((MAIL / "known_client_cp1251_attachment.eml").read_bytes())
    message = await conn.fetchrow("SELECT id, contact_id, lead_id, kind, subject, status FROM mail_messages")
    assert (message["contact_id"], message["lead_id"], message["kind"], message["subject"], message["status"]) == (
        contact.id, None, "email", "Счёт на оплату", "parsed")
    task = await conn.fetchrow("SELECT kind, assignee_id, state FROM tasks")
    assert tuple(task) == ("reply", manager.id, "open")
    assert await conn.fetchval("SELECT count(*) FROM leads") == 0
    await login(client, "manager1")
    card = await (await client.get(f"/contacts/{contact.id}")).text()
    assert "Счёт на оплату" in card and "Спецификация.pdf" in card
    attachment = await conn.fetchval("SELECT id FROM mail_attachments")
    resp = await client.get(f"/mail/{message['id']}/attachments/{attachment}")
    assert resp.status == 200 and (await resp.read()).startswith(b"%PDF")
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    await login(client, "manager2")
    assert (await client.get(f"/mail/{message['id']}/attachments/{attachment}")).status == 404


async def test_a_call_and_an_email_with_the_same_phone_make_one_lead(smtp, conn, factory):
    await factory.user("head", role="head")
    _, send, _ = smtp
    called, _ = await leads_db.get_or_create_phone_lead(conn, "+79165551234", "74951234567")
    await send((MAIL / "web_form_ru.eml").read_bytes())
    leads = await leads_db.list_leads(conn, await _head(conn))
    assert [lead.id for lead in leads] == [called.id]
    assert leads[0].email == "anna.k@example.ru"
    assert await conn.fetchval("SELECT lead_id FROM mail_messages") == called.id


async def test_unknown_recipient_is_refused_and_nothing_is_stored(smtp, conn):
    _, send, _ = smtp
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await send((MAIL / "web_form_ru.eml").read_bytes(), to="ceo@callboard.local")
    assert refused.value.recipients["ceo@callboard.local"][0] == 550
    assert await conn.fetchval("SELECT count(*) FROM mail_messages") == 0
    client, _, _ = smtp
    assert client.server.app[keys.MAIL_HANDLER].refused == 1  # counted for /metrics (callboard_mail_refused)


async def test_too_large_is_552(smtp, conn):
    _, send, _ = smtp
    big = EmailMessage()
    big["From"], big["To"], big["Subject"] = "a@example.com", "sales@callboard.local", "big"
    big.set_content("x" * 300_000)
    with pytest.raises(smtplib.SMTPException) as error:
        await send(bytes(big))
    assert "552" in str(error.value)


@pytest.mark.parametrize("name", ["no_from.eml", "broken_mime.eml"])
async def test_odd_messages_are_stored_and_filed_never_lost(smtp, conn, factory, name):
    await factory.user("head", role="head")
    _, send, _ = smtp
    raw = (MAIL / name).read_bytes()
    await send(raw)
    row = await conn.fetchrow("SELECT raw, status, lead_id FROM mail_messages")
    assert bytes(row["raw"]).strip() == raw.strip()  # byte for byte, as received
    assert row["status"] == "parsed" and row["lead_id"] is not None


async def test_an_attachment_bomb_is_kept_raw_and_shown_unparsed_to_the_admin(smtp, conn, factory):
    await factory.user("admin", role="admin")
    client, send, _ = smtp
    bomb = EmailMessage()
    bomb["From"], bomb["To"], bomb["Subject"] = "bomb@example.com", "sales@callboard.local", "many files"
    bomb.set_content("see attached")
    for i in range(60):
        bomb.add_attachment(b"x", maintype="application", subtype="octet-stream", filename=f"f{i}.bin")
    await send(bytes(bomb))
    row = await conn.fetchrow("SELECT status, error, length(raw) > 0 AS kept FROM mail_messages")
    assert (row["status"], row["kept"]) == ("unparsed", True)
    assert "attachments" in row["error"]
    await login(client, "admin")
    page = await (await client.get("/mail")).text()
    assert "unparsed" in page and "more than 50 attachments" in page


async def test_auth_and_allowlist(settings, pool, aiohttp_client):
    app = create_app(replace(settings, smtp_port=free_port(), smtp_users=("site:s3cret",)), pool)
    await aiohttp_client(app)
    port = app[SMTP_PORT]
    raw = (MAIL / "no_from.eml").read_bytes()

    def unauthenticated():
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as server:
            server.sendmail("a@example.com", ["sales@x"], raw)

    def authenticated():
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as server:
            server.login("site", "s3cret")
            server.sendmail("a@example.com", ["sales@x"], raw)

    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        await asyncio.to_thread(unauthenticated)
    assert refused.value.smtp_code == 530
    await asyncio.to_thread(authenticated)
    fenced = create_app(replace(settings, smtp_port=free_port(), smtp_allowlist=("10.0.0.0/8",)), pool)
    await aiohttp_client(fenced)

    def from_outside():
        with smtplib.SMTP("127.0.0.1", fenced[SMTP_PORT], timeout=10) as server:
            server.sendmail("a@example.com", ["sales@x"], raw)

    with pytest.raises(smtplib.SMTPSenderRefused) as blocked:
        await asyncio.to_thread(from_outside)
    assert blocked.value.smtp_code == 554
