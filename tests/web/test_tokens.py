"""API tokens: created on "My settings" and by the API, shown once, stored hashed, scoped, revoked."""

import asyncio
import re

from crm import tokens as tokens_db
from crm.users import hash_token
from tests.conftest import csrf_headers, login


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_create_use_and_revoke_through_the_api(client, factory, conn):
    await factory.user("integrator", role="head")
    csrf = await login(client, "integrator")
    resp = await client.post("/api/tokens", json={"name": "1C exchange", "scope": "full"}, headers=csrf_headers(csrf))
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    secret = created.pop("token")
    assert secret.startswith("cb_") and len(secret) > 40
    assert {k: created[k] for k in ("name", "scope", "hint", "user_login", "last_used_at")} == {
        "name": "1C exchange", "scope": "full", "hint": secret[-4:], "user_login": "integrator", "last_used_at": None}
    # Stored hashed: the secret is nowhere in the table.
    stored = await conn.fetchval("SELECT token_hash FROM api_tokens WHERE id = $1", created["id"])
    assert stored == hash_token(secret) and secret not in stored

    resp = await client.post("/api/contacts", json={"name": "Made by 1C"}, headers=bearer(secret))
    assert resp.status == 201, await resp.text()
    listed = await (await client.get("/api/tokens", headers=bearer(secret))).json()
    assert [t["id"] for t in listed["items"]] == [created["id"]]
    assert "token" not in listed["items"][0] and listed["items"][0]["last_used_at"] is not None

    resp = await client.delete(f"/api/tokens/{created['id']}", headers=csrf_headers(csrf))
    assert resp.status == 200, await resp.text()
    assert (await client.get("/api/contacts", headers=bearer(secret))).status == 401
    # Revoking twice: the second finds nothing.
    assert (await client.delete(f"/api/tokens/{created['id']}", headers=csrf_headers(csrf))).status == 404


async def test_scopes(client, factory, conn):
    user = await factory.user("head1", role="head")
    _, read = await tokens_db.create_token(conn, user.id, "reader", "read")
    _, routing = await tokens_db.create_token(conn, user.id, "dialplan", "routing")
    assert (await client.get("/api/contacts", headers=bearer(read))).status == 200
    resp = await client.post("/api/contacts", json={"name": "X"}, headers=bearer(read))
    assert resp.status == 403 and "scope (read)" in (await resp.json())["error"]["message"]
    assert (await client.get("/api/contacts", headers=bearer(routing))).status == 403


async def test_only_the_owner_or_an_admin_revokes(client, factory, conn):
    owner = await factory.user("owner1")
    await factory.user("other1")
    await factory.user("admin", role="admin")
    token, _ = await tokens_db.create_token(conn, owner.id, "mine")
    csrf = await login(client, "other1")
    assert (await client.delete(f"/api/tokens/{token.id}", headers=csrf_headers(csrf))).status == 404
    everyone = await (await client.get("/api/tokens?all=1")).json()
    assert everyone["items"] == []  # a manager's ?all=1 is their own list
    csrf = await login(client, "admin")
    everyone = await (await client.get("/api/tokens?all=1")).json()
    assert [t["user_login"] for t in everyone["items"]] == ["owner1"]
    assert (await client.delete(f"/api/tokens/{token.id}", headers=csrf_headers(csrf))).status == 200


async def test_bad_input(client, factory):
    await factory.user("mgr1")
    csrf = await login(client, "mgr1")
    for body, field in (({}, "name"), ({"name": " "}, "name"), ({"name": 5}, "name"), ({"name": "x" * 101}, "name"),
                        ({"name": "a", "scope": "root"}, "scope"), ({"name": "a\x00"}, "name")):
        resp = await client.post("/api/tokens", json=body, headers=csrf_headers(csrf))
        assert resp.status == 422, (body, await resp.text())
        assert (await resp.json())["error"]["field"] == field
    assert (await client.post("/api/tokens", data="[", headers=csrf_headers(csrf))).status == 400
    assert (await client.delete("/api/tokens/abc", headers=csrf_headers(csrf))).status == 404
    assert (await client.delete("/api/tokens/99999999999999999999", headers=csrf_headers(csrf))).status == 404


async def test_the_settings_page_shows_the_secret_once(client, factory, conn):
    await factory.user("mgr1")
    csrf = await login(client, "mgr1")
    resp = await client.post("/password/tokens", data={"name": "Website", "scope": "read", "csrf_token": csrf})
    assert resp.status == 200, await resp.text()
    page = await resp.text()
    secret = re.search(r'<code class="secret" id="new-token">([^<]+)</code>', page).group(1)
    assert (await client.get("/api/contacts", headers=bearer(secret))).status == 200
    later = await (await client.get("/password")).text()
    assert "Website" in later and secret not in later and f"…{secret[-4:]}" in later
    token_id = await conn.fetchval("SELECT id FROM api_tokens")
    resp = await client.post(f"/password/tokens/{token_id}/revoke", data={"csrf_token": csrf}, allow_redirects=False)
    assert resp.status == 302
    assert "Website" not in await (await client.get("/password")).text()


async def test_two_creations_at_once_respect_the_limit(client, factory, conn, pool):
    user = await factory.user("mgr1")
    for i in range(tokens_db.MAX_TOKENS_PER_USER - 1):
        await tokens_db.create_token(conn, user.id, f"t{i}")

    async def one(name):
        async with pool.acquire() as c:
            try:
                return (await tokens_db.create_token(c, user.id, name))[0].name
            except Exception as exc:
                return type(exc).__name__

    assert sorted(await asyncio.gather(one("a"), one("b"))) in (["ValidationError", "a"], ["ValidationError", "b"])
