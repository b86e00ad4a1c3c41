"""The SMTP door under misuse: a wrong AUTH is refused at once, a mail with NUL bytes is kept and shown."""

import asyncio
import smtplib
import time
from dataclasses import replace

import pytest

from tests.conftest import login
from tests.web.test_mail import free_port, smtp  # noqa: F401  (the fixture)
from web.app import create_app
from web.keys import SMTP_PORT


async def test_a_wrong_smtp_password_gets_535_at_once(settings, pool, aiohttp_client):
    app = create_app(replace(settings, smtp_port=free_port(), smtp_users=("site:s3cret",)), pool)
    await aiohttp_client(app)

    def wrong_login() -> float:
        started = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", app[SMTP_PORT], timeout=10) as server:
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                server.login("site", "guess")
            assert refused.value.smtp_code == 535
            server.login("site", "s3cret")  # the same connection may still try the right one
        return time.perf_counter() - started

    assert await asyncio.to_thread(wrong_login) < 2


async def test_a_mail_with_a_nul_byte_is_stored_and_shown_unparsed(smtp, conn, factory):  # noqa: F811
    await factory.user("admin", role="admin")
    client, send, _ = smtp
    raw = (b"From: Site <form@example.com>\r\nTo: sales@callboard.local\r\nSubject: Form\x00 order\r\n\r\n"
           b"Name: Ivan\r\nPhone: +7 916 123-45-67\r\nMessage: hello\x00world\r\n")
    await send(raw)
    row = await conn.fetchrow("SELECT raw, status, error FROM mail_messages")
    assert (bytes(row["raw"]).replace(b"\r\n", b"\n"), row["status"]) == (raw.replace(b"\r\n", b"\n"), "unparsed")
    assert "NUL" in row["error"]
    await login(client, "admin")
    page = await (await client.get("/mail")).text()
    assert "unparsed" in page and "NUL bytes" in page
