"""Doors and sessions: response headers, login CSRF, Secure cookies, sockets cut when their session ends,
and bad input that answers 4xx with a message, never 500."""

import asyncio
from dataclasses import replace

import pytest
import socketio

from crm import users
from tests.conftest import csrf_headers, login, login_form_token, post_login
from tests.web.live import SocketUser, session_cookie
from web.app import create_app


async def test_pages_api_and_static_files_send_the_security_headers(client, factory):
    await factory.user("manager1")
    await login(client, "manager1")
    for path in ("/login", "/contacts", "/api/contacts", "/static/app.js", "/api/contacts/0"):
        resp = await client.get(path)
        assert resp.status < 500, path
        csp = resp.headers.get("Content-Security-Policy", "")
        assert ("script-src 'self';" in csp, "frame-ancestors 'none'" in csp, "'unsafe-inline'" in csp,
                resp.headers.get("X-Frame-Options"), resp.headers.get("Referrer-Policy"),
                resp.headers.get("X-Content-Type-Options")) == (True, True, False, "DENY", "same-origin",
                                                                "nosniff"), path


async def test_pages_carry_no_inline_script_the_policy_would_block(client, factory, conn):
    await factory.user("head", role="head")
    await login(client, "head")
    for path in ("/home", "/calls", "/missed", "/leads", "/contacts", "/deals"):
        page = await (await client.get(path)).text()
        assert "<script>" not in page and " onclick=" not in page and "<style>" not in page, path


async def test_login_form_needs_its_csrf_token(client, factory):
    await factory.user("manager1")
    # Another site's form posting a login (the attacker's account) into this browser is refused.
    resp = await client.post("/login", data={"login": "manager1", "password": "manager1"}, allow_redirects=False)
    assert resp.status == 403
    assert "expired or came from another site" in await resp.text()
    token = await login_form_token(client)
    resp = await client.post("/login", data={"login": "manager1", "password": "manager1", "csrf_token": "x" + token},
                             allow_redirects=False)
    assert resp.status == 403
    client.session.cookie_jar.clear()  # a token without its cookie (read from elsewhere) is no good either
    resp = await client.post("/login", data={"login": "manager1", "password": "manager1", "csrf_token": token},
                             allow_redirects=False)
    assert resp.status == 403
    resp = await post_login(client, "manager1", "manager1")
    assert resp.status == 302, await resp.text()


async def test_cookies_are_secure_when_the_setting_says_https(settings, pool, factory, aiohttp_client):
    await factory.user("manager1")
    plain = await aiohttp_client(create_app(settings, pool))
    resp = await post_login(plain, "manager1", "manager1")
    assert "Secure" not in resp.headers["Set-Cookie"]
    behind_tls = await aiohttp_client(create_app(replace(settings, secure_cookies=True), pool))
    page = await behind_tls.get("/login")
    assert "; Secure" in page.headers["Set-Cookie"]
    # The client speaks plain HTTP to the test server, so it holds Secure cookies back: send it by hand,
    # as the browser would over HTTPS.
    text = await page.text()
    marker = 'name="csrf_token" value="'
    token = text[text.index(marker, text.index('action="/login"')) + len(marker):].split('"', 1)[0]
    cookie = page.cookies["callboard_login_csrf"].value
    resp = await behind_tls.post("/login", data={"login": "manager1", "password": "manager1", "csrf_token": token},
                                 headers={"Cookie": f"callboard_login_csrf={cookie}"}, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    session = [c for c in resp.headers.getall("Set-Cookie") if c.startswith("callboard_session=")]
    assert len(session) == 1 and "; Secure" in session[0] and "HttpOnly" in session[0]
    assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"


async def wait_disconnected(user: SocketUser, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while user.client.connected and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    assert not user.client.connected, "the socket stayed open after its session ended"


async def test_logout_cuts_that_sessions_socket_only(live):
    base_url, _, _ = live
    import aiohttp

    laptop, phone = SocketUser(), SocketUser()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        resp = await post_login(http, "manager1", "manager1", base_url)
        assert resp.status == 302
        await laptop.connect(base_url, resp.cookies["callboard_session"].value)
        await phone.connect(base_url, await session_cookie(base_url, "manager1"))
        page = await (await http.get(f"{base_url}/contacts")).text()
        marker = '<meta name="csrf-token" content="'
        csrf = page[page.index(marker) + len(marker):].split('"', 1)[0]
        resp = await http.post(f"{base_url}/logout", data={"csrf_token": csrf}, allow_redirects=False)
        assert resp.status == 302
    try:
        await wait_disconnected(laptop)
        await asyncio.sleep(0.2)
        assert phone.client.connected  # the other session of the same user is not this logout's business
    finally:
        await phone.close()


@pytest.mark.parametrize("change", [{"active": False}, {"password": "a-new-secret"}])
async def test_deactivation_or_password_reset_cuts_every_socket_of_the_user(live, conn, change):
    base_url, _, app = live
    await conn.execute("INSERT INTO api_tokens (user_id, token_hash, name) SELECT id, $1, 't' FROM users "
                       "WHERE login = 'admin'", users.hash_token("admin-token"))
    manager1, manager2 = SocketUser(), SocketUser()
    cookie = await session_cookie(base_url, "manager1")
    await manager1.connect(base_url, cookie)
    await manager2.connect(base_url, await session_cookie(base_url, "manager2"))
    user_id = await conn.fetchval("SELECT id FROM users WHERE login = 'manager1'")
    import aiohttp

    try:
        async with aiohttp.ClientSession() as http:
            resp = await http.put(f"{base_url}/api/users/{user_id}", json=change,
                                  headers={"Authorization": "Bearer admin-token"})
            assert resp.status == 200, await resp.text()
        await wait_disconnected(manager1)
        assert manager2.client.connected
        # And the old cookie cannot open a new one.
        again = SocketUser()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await again.connect(base_url, cookie)
    finally:
        await manager2.close()


LONG = "9" * 40
BAD_INPUTS = [
    ("GET", f"/api/contacts/{LONG}", None, None),
    ("GET", "/api/contacts/9223372036854775808", None, None),
    ("GET", "/api/contacts/abc", None, None),
    ("GET", f"/api/users/{LONG}", None, None),
    ("GET", f"/contacts/{LONG}", None, None),
    ("GET", f"/contacts/{LONG}/edit", None, None),
    ("GET", "/api/contacts?limit=abc&offset=-1", None, None),
    ("GET", "/api/contacts?q=%00", None, None),
    ("POST", "/api/contacts", None, b"{not json"),
    ("POST", "/api/contacts", None, b"\xff\xfe\x00"),
    ("POST", "/api/contacts", None, b"[1, 2]"),
    ("POST", "/api/contacts", None, b'"just a string"'),
    ("POST", "/api/contacts", {"name": 5}, None),
    ("POST", "/api/contacts", {"name": "N\x00ul"}, None),
    ("POST", "/api/contacts", {"name": "X", "phones": 5}, None),
    ("POST", "/api/contacts", {"name": "X", "phones": [{"raw": 5}]}, None),
    ("POST", "/api/contacts", {"name": "X", "phones": ["\x00"]}, None),
    ("POST", "/api/contacts", {"name": "X", "emails": "a@b.c"}, None),
    ("POST", "/api/contacts", {"name": "X", "manager_id": 2**70}, None),
    ("POST", "/api/contacts", {"name": "X", "company_id": -1}, None),
    ("POST", "/api/contacts", {"name": "X", "company_id": "1; DROP TABLE contacts"}, None),
    ("POST", "/api/companies", {"name": "X", "tax_id": 7707083893}, None),
    ("POST", "/api/contacts", {"name": "x" * 100_000}, None),
    ("POST", "/api/contacts", {"name": "X", "notes": {"a": 1}}, None),
    ("PUT", f"/api/contacts/{LONG}", {"name": "X"}, None),
    ("PUT", f"/api/users/{LONG}", {"role": "admin"}, None),
    ("POST", "/api/users", {"login": ["a"], "password": "x", "role": "manager", "display_name": "A"}, None),
    ("POST", "/api/users", {"login": "ab", "password": "pass", "role": "manager", "display_name": "A",
                            "extension": {"x": 1}}, None),
    ("POST", "/api/calls", None, b"{"),
    ("POST", "/api/calls", {"number": 5}, None),
    ("POST", "/api/calls", {"number": "+7 916 000-00-00", "contact_id": 2**70}, None),
    ("POST", "/api/calls", {"number": "+7 916 000-00-00", "pbx": ["lab"]}, None),
    ("POST", "/api/calls", {"number": "+7 916 000-00-00", "contact_id": True}, None),
    ("GET", "/recordings/..%2f..%2fetc%2fpasswd", None, None),
    ("GET", f"/recordings/{LONG}", None, None),
    ("GET", f"/mail/{LONG}/attachments/{LONG}", None, None),
    ("GET", "/static/..%2f..%2fcrm%2fusers.py", None, None),
]


@pytest.mark.parametrize(("method", "path", "body", "raw"), BAD_INPUTS)
async def test_bad_input_answers_4xx_with_a_message(client, factory, method, path, body, raw):
    await factory.user("admin", role="admin", extension="100")
    csrf = await login(client, "admin")
    headers = csrf_headers(csrf)
    if raw is not None:
        headers["Content-Type"] = "application/json"
    resp = await client.request(method, path, json=body if raw is None and body is not None else None,
                                data=raw, headers=headers)
    text = await resp.text()
    assert 400 <= resp.status < 500, (resp.status, text[:300])
    if path.startswith("/api/"):
        error = (await resp.json())["error"]
        assert error["message"] and error["status"] == resp.status


async def test_script_in_fields_is_stored_as_text_and_shown_escaped(client, factory):
    await factory.user("manager1")
    csrf = await login(client, "manager1")
    name = "<script>alert(1)</script>"
    resp = await client.post("/api/contacts", json={"name": name, "notes": name}, headers=csrf_headers(csrf))
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert (created["name"], created["notes"]) == (name, name)
    page = await (await client.get(f"/contacts/{created['id']}")).text()
    assert name not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
