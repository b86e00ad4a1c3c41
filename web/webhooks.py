"""Webhooks: the admin's page and API (subscribe, delete, send a test, the delivery log), and the worker that posts
the outbox's deliveries, signed, retrying with back-off, apart from the call pipeline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from crm import webhooks as webhooks_db
from crm.webhooks import Delivery, DueDelivery, Webhook
from web import keys
from web.api import read_json
from web.auth import require_role
from web.errors import path_id
from web.i18n import N_
from web.pollers import polling_ctx
from web.render import render

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
SEND_TIMEOUT = aiohttp.ClientTimeout(total=10)
KEEP_DELIVERED = timedelta(days=30)
MAX_ANSWER_BYTES = 64 * 1024  # what we read of a receiver's answer before letting it go
# The page names events in words; the codes are in the API, the bodies and the README.
EVENT_NAMES = {
    "call.ringing": N_("A call rings"), "call.answered": N_("A call is answered"), "call.ended": N_("A call ended"),
    "missed.created": N_("A missed caller on the board"), "missed.resolved": N_("A missed caller resolved"),
    "lead.created": N_("A new lead"), "deal.stage_changed": N_("A deal moved to another stage"),
    "deal.won": N_("A deal is won"), "deal.lost": N_("A deal is lost"), "payment.received": N_("A payment came in"),
    webhooks_db.TEST_EVENT: N_("Test"),
}


def webhook_json(hook: Webhook) -> dict[str, Any]:
    return {"id": hook.id, "url": hook.url, "events": list(hook.events), "active": hook.active,
            "created_at": hook.created_at.isoformat()}


def delivery_json(d: Delivery) -> dict[str, Any]:
    return {"id": d.id, "event": d.event, "state": d.state, "attempts": d.attempts, "last_status": d.last_status,
            "last_error": d.last_error, "created_at": d.created_at.isoformat(),
            "next_attempt_at": d.next_attempt_at.isoformat() if d.state == "pending" else None,
            "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None}


async def list_api(request: web.Request) -> web.Response:
    require_role(request, "admin")
    async with request.app[keys.POOL].acquire() as conn:
        hooks = await webhooks_db.list_webhooks(conn)
    return web.json_response({"items": [webhook_json(h) for h in hooks], "events": list(webhooks_db.EVENTS)})


async def create_api(request: web.Request) -> web.Response:
    require_role(request, "admin")
    body = await read_json(request)
    async with request.app[keys.POOL].acquire() as conn:
        hook, secret = await webhooks_db.create_webhook(conn, body.get("url"), body.get("events"), body.get("secret"))
    return web.json_response({**webhook_json(hook), "secret": secret}, status=201)


async def delete_api(request: web.Request) -> web.Response:
    require_role(request, "admin")
    async with request.app[keys.POOL].acquire() as conn:
        await webhooks_db.delete_webhook(conn, path_id(request, "webhook_id"))
    return web.json_response({"deleted": True})


async def test_api(request: web.Request) -> web.Response:
    require_role(request, "admin")
    async with request.app[keys.POOL].acquire() as conn:
        delivery_id = await webhooks_db.enqueue_test(conn, path_id(request, "webhook_id"))
    return web.json_response({"delivery_id": delivery_id}, status=202)


async def deliveries_api(request: web.Request) -> web.Response:
    require_role(request, "admin")
    async with request.app[keys.POOL].acquire() as conn:
        found = await webhooks_db.list_deliveries(conn, path_id(request, "webhook_id"))
    return web.json_response({"items": [delivery_json(d) for d in found]})


async def page(request: web.Request, new_secret: str | None = None, http_status: int = 200,
               error: str | None = None) -> web.Response:
    require_role(request, "admin")
    async with request.app[keys.POOL].acquire() as conn:
        hooks = await webhooks_db.list_webhooks(conn)
        deliveries = {h.id: await webhooks_db.list_deliveries(conn, h.id, 10) for h in hooks}
    return render(request, "webhooks.html", http_status=http_status, hooks=hooks, deliveries=deliveries,
                  events=webhooks_db.EVENTS, event_names=EVENT_NAMES, new_secret=new_secret,
                  error=error)


async def page_get(request: web.Request) -> web.Response:
    return await page(request)


async def page_action(request: web.Request) -> web.Response:
    require_role(request, "admin")
    form = await request.post()
    action = request.match_info["action"]
    async with request.app[keys.POOL].acquire() as conn:
        if action == "new":
            _, secret = await webhooks_db.create_webhook(conn, str(form.get("url", "")),
                                                         [str(e) for e in form.getall("events", [])])
            return await page(request, new_secret=secret)  # shown once: no redirect
        webhook_id = path_id(request, "webhook_id")
        if action == "test":
            await webhooks_db.enqueue_test(conn, webhook_id)
        else:
            await webhooks_db.delete_webhook(conn, webhook_id)
    raise web.HTTPFound("/admin/webhooks")


async def raise_live_event(app: web.Application, event: str, data: dict[str, Any]) -> None:
    """For events no table raises (call.ringing, call.answered, payment.received): queue it, and never let a
    database hiccup reach the caller (a popup must not fail because a webhook could not be queued)."""
    try:
        async with app[keys.POOL].acquire() as conn:
            await webhooks_db.enqueue(conn, event, data)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        logger.warning("webhook event %s not queued: %s", event, exc)


# ------------------------------------------------------------------------------------------------ the worker


async def send(session: aiohttp.ClientSession, delivery: DueDelivery) -> tuple[int | None, str]:
    """POST one delivery: (status or None, what went wrong)."""
    headers = webhooks_db.signed_headers(delivery, int(time.time()))
    try:
        async with session.post(delivery.url, data=delivery.body.encode(), headers=headers, timeout=SEND_TIMEOUT,
                                allow_redirects=False) as resp:
            await resp.content.read(MAX_ANSWER_BYTES)
            return resp.status, "" if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return None, f"{exc.__class__.__name__}: {exc}"[:500]


async def deliver_due(app: web.Application, session: aiohttp.ClientSession) -> int:
    """Claim what is due, send it all at once, record each answer; how many were sent."""
    pool, settings = app[keys.POOL], app[keys.SETTINGS]
    async with pool.acquire() as conn:
        due = await webhooks_db.claim_due(conn, datetime.now(UTC))
    if not due:
        return 0
    answers = await asyncio.gather(*(send(session, d) for d in due))
    async with pool.acquire() as conn:
        for delivery, (status, error) in zip(due, answers, strict=True):
            if error:
                logger.info("webhook delivery %s (%s) to %s failed, attempt %s: %s", delivery.id, delivery.event,
                            delivery.url, delivery.attempts, error)
            await webhooks_db.record_result(conn, delivery, datetime.now(UTC), status, error,
                                            settings.webhook_backoff_seconds)
    return len(due)


class _Sender:
    """One HTTP session for the app's life; the old delivered rows are purged about hourly."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None
        self.purged_at = 0.0

    async def round(self, app: web.Application) -> int:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession()
        sent = await deliver_due(app, self.session)
        if time.monotonic() - self.purged_at > 3600:
            async with app[keys.POOL].acquire() as conn:
                await webhooks_db.purge_delivered(conn, datetime.now(UTC) - KEEP_DELIVERED)
            self.purged_at = time.monotonic()
        return sent


async def sender_ctx(app: web.Application) -> AsyncIterator[None]:
    """Several nodes share the outbox: deliveries are claimed with SKIP LOCKED."""
    sender = _Sender()
    async for _ in polling_ctx("webhook-worker", sender.round, POLL_SECONDS)(app):
        yield
    if sender.session is not None:
        await sender.session.close()


def setup(app: web.Application) -> None:
    app.router.add_get("/api/webhooks", list_api)
    app.router.add_post("/api/webhooks", create_api)
    app.router.add_delete("/api/webhooks/{webhook_id}", delete_api)
    app.router.add_post("/api/webhooks/{webhook_id}/test", test_api)
    app.router.add_get("/api/webhooks/{webhook_id}/deliveries", deliveries_api)
    app.router.add_get("/admin/webhooks", page_get)
    app.router.add_post("/admin/webhooks/{action:new}", page_action)
    app.router.add_post("/admin/webhooks/{webhook_id}/{action:test|delete}", page_action)
    app.cleanup_ctx.append(sender_ctx)
