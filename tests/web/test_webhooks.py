"""Webhooks: a local receiver checks every signature, answers 500 once and gets the retry; events come from the
tables (call ended, lead, missed caller, deal stage / won / lost); the outbox survives a restart."""

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from aiohttp import web

from crm import calls as calls_db
from crm import deals as deals_db
from crm import leads as leads_db
from crm import webhooks as webhooks_db
from tests.conftest import csrf_headers, login
from tests.web.test_calls import record
from web.app import create_app


class Receiver:
    """A small HTTP server on 127.0.0.1 that records what it gets; it answers `fail_first` 500s first."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.received: list[dict] = []
        self.secret = ""
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        stamp = request.headers["X-Callboard-Timestamp"]
        expected = "sha256=" + hmac.new(self.secret.encode(), f"{stamp}.{body}".encode(), hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(request.headers["X-Callboard-Signature"], expected)
        self.received.append({"event": request.headers["X-Callboard-Event"], "signed": signed,
                              "fresh": abs(time.time() - int(stamp)) < 60, "body": json.loads(body),
                              "delivery": request.headers["X-Callboard-Delivery"]})
        self.arrived.set()
        if self.fail_first:
            self.fail_first -= 1
            return web.Response(status=500, text="try later")
        return web.Response(text="ok")

    async def wait_for(self, count: int, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while len([r for r in self.received]) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def receiver(aiohttp_server):
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hooks.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    hooks.url = str(server.make_url("/hook"))
    return hooks


@pytest.fixture
async def fast_client(settings, pool, aiohttp_client):
    return await aiohttp_client(create_app(replace(settings, webhook_backoff_seconds=0.2), pool))


async def test_events_are_signed_retried_and_logged(fast_client, receiver, factory, conn):
    client = fast_client
    await factory.user("admin", role="admin")
    head = await factory.user("head", role="head")
    csrf = await login(client, "admin")
    resp = await client.post("/api/webhooks", headers=csrf_headers(csrf), json={
        "url": receiver.url, "events": ["lead.created", "call.ended", "deal.stage_changed", "deal.won"]})
    assert resp.status == 201, await resp.text()
    hook = await resp.json()
    receiver.secret = hook.pop("secret")
    receiver.fail_first = 1

    lead, _ = await leads_db.get_or_create_phone_lead(conn, "+79165550001", "sales")
    await receiver.wait_for(2)  # the 500, then the retry
    assert [(r["event"], r["signed"], r["fresh"]) for r in receiver.received] == [
        ("lead.created", True, True), ("lead.created", True, True)]
    first, retry = receiver.received
    assert first["body"] == retry["body"] and first["delivery"] == retry["delivery"]  # the same bytes again
    assert {k: first["body"]["data"][k] for k in ("id", "phone_e164", "source", "status")} == {
        "id": lead.id, "phone_e164": "+79165550001", "source": "phone", "status": "new"}

    await calls_db.save_call(conn, record("900.1", "+74951234567"))
    await calls_db.save_call(conn, record("900.1", "+74951234567"))  # the same call again: no second event
    now = datetime.now(UTC)
    deal = await deals_db.create_deal(conn, head, "Насосы", now, manager_id=head.id)
    await deals_db.move_stage(conn, head, deal.id, "offer", now)
    await deals_db.close_deal(conn, head, deal.id, "won", None, now)
    await receiver.wait_for(6)
    await asyncio.sleep(0.5)
    # Sent side by side, so in any order; by delivery id they are in the order they happened.
    later = sorted(receiver.received[2:], key=lambda r: int(r["delivery"]))
    assert [(r["event"], r["signed"]) for r in later] == [
        ("lead.created", True), ("call.ended", True), ("deal.stage_changed", True), ("deal.won", True)]
    assert later[1]["body"]["data"]["outcome"] == "answered"  # the unknown caller became a lead first
    assert later[2]["body"]["data"] | {"id": 0} == {
        "id": 0, "title": "Насосы", "stage": "offer", "previous_stage": "selection", "status": "in_progress",
        "manager_id": head.id, "contact_id": None, "company_id": None}

    log = await (await client.get(f"/api/webhooks/{hook['id']}/deliveries")).json()
    assert [(d["event"], d["state"], d["attempts"], d["last_status"]) for d in reversed(log["items"])] == [
        ("lead.created", "delivered", 2, 200), ("lead.created", "delivered", 1, 200),
        ("call.ended", "delivered", 1, 200),
        ("deal.stage_changed", "delivered", 1, 200), ("deal.won", "delivered", 1, 200)]
    # "Send test", and the page shows the log.
    resp = await client.post(f"/api/webhooks/{hook['id']}/test", headers=csrf_headers(csrf))
    assert resp.status == 202
    await receiver.wait_for(7)
    assert receiver.received[-1]["event"] == "webhook.test" and receiver.received[-1]["signed"]
    page = await (await client.get("/admin/webhooks")).text()
    assert receiver.url in page and "deal.won" in page


async def test_the_outbox_survives_a_restart(settings, pool, aiohttp_client, receiver, conn):
    hook, receiver.secret = await webhooks_db.create_webhook(conn, receiver.url, ["lead.created", "missed.created"])
    # Written while no Callboard runs (or just before it died): only the outbox knows.
    await leads_db.get_or_create_phone_lead(conn, "+79165550002", "sales")
    assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'") == 1
    await aiohttp_client(create_app(settings, pool))
    await receiver.wait_for(1)
    assert [(r["event"], r["signed"]) for r in receiver.received] == [("lead.created", True)]


async def test_a_dead_receiver_is_given_up_after_the_last_attempt(conn):
    hook, _ = await webhooks_db.create_webhook(conn, "http://127.0.0.1:9/hook", ["lead.created"])
    await leads_db.get_or_create_phone_lead(conn, "+79165550003", "sales")
    for attempt in range(1, webhooks_db.MAX_ATTEMPTS + 1):
        due = await webhooks_db.claim_due(conn, datetime(2100, 1, 1, tzinfo=UTC))
        assert [d.attempts for d in due] == [attempt]
        # A second worker at the same moment finds nothing: the delivery is claimed.
        assert await webhooks_db.claim_due(conn, datetime(2100, 1, 1, tzinfo=UTC)) == []
        await webhooks_db.record_result(conn, due[0], datetime(2000, 1, 1, tzinfo=UTC), None, "refused", 1.0)
    row = await conn.fetchrow("SELECT state, attempts, last_error FROM webhook_deliveries")
    assert dict(row) == {"state": "failed", "attempts": webhooks_db.MAX_ATTEMPTS, "last_error": "refused"}
    assert [webhooks_db.backoff(n, 30).total_seconds() for n in (1, 2, 3, 8, 20)] == [30, 60, 120, 3600, 3600]


async def test_admin_only_and_bad_input(client, factory):
    await factory.user("admin", role="admin")
    await factory.user("head", role="head")
    csrf = await login(client, "head")
    assert (await client.get("/api/webhooks")).status == 403
    assert (await client.get("/admin/webhooks")).status == 403
    csrf = await login(client, "admin")
    for body, field in (({"url": "ftp://x", "events": ["lead.created"]}, "url"),
                        ({"url": "http://", "events": ["lead.created"]}, "url"),
                        ({"url": 5, "events": ["lead.created"]}, "url"),
                        ({"url": "http://127.0.0.1/h", "events": []}, "events"),
                        ({"url": "http://127.0.0.1/h", "events": ["deal.eaten"]}, "events"),
                        ({"url": "http://127.0.0.1/h", "events": "lead.created"}, "events"),
                        ({"url": "http://127.0.0.1/h", "events": ["lead.created"], "secret": "short"}, "secret")):
        resp = await client.post("/api/webhooks", json=body, headers=csrf_headers(csrf))
        assert resp.status == 422, body
        assert (await resp.json())["error"]["field"] == field
    for path in ("/api/webhooks/999/test", "/api/webhooks/abc/test"):
        assert (await client.post(path, headers=csrf_headers(csrf))).status == 404
    assert (await client.delete("/api/webhooks/999", headers=csrf_headers(csrf))).status == 404


async def test_live_events_are_queued_for_their_subscribers(client, conn):
    from web.webhooks import raise_live_event

    await webhooks_db.create_webhook(conn, "http://127.0.0.1:9/hook", ["call.ringing"])
    app = client.server.app
    await raise_live_event(app, "call.ringing", {"caller": "+74951234567", "extension": "101"})
    await raise_live_event(app, "call.answered", {"caller": "+74951234567"})  # nobody subscribed
    rows = await conn.fetch("SELECT event, body::jsonb -> 'data' AS data FROM webhook_deliveries")
    assert [(r["event"], json.loads(r["data"])) for r in rows] == [
        ("call.ringing", {"caller": "+74951234567", "extension": "101"})]
    with pytest.raises(ValueError):
        await raise_live_event(app, "call.exploded", {})
