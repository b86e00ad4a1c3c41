"""Webhooks: subscriptions, the durable delivery outbox (claimed by workers, retried with back-off), signatures."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from crm.errors import NotFound, ValidationError

# Raised by table triggers (migration 0017): call.ended, lead.created, missed.*, deal.*. The others are raised by
# the code that knows them, through enqueue(): call.ringing / call.answered (the call pipeline), payment.received.
EVENTS = ("call.ringing", "call.answered", "call.ended", "missed.created", "missed.resolved", "lead.created",
          "deal.stage_changed", "deal.won", "deal.lost", "payment.received")
TEST_EVENT = "webhook.test"
MAX_ATTEMPTS = 10
MAX_BACKOFF = timedelta(hours=1)
SIGNATURE_HEADER = "X-Callboard-Signature"
TIMESTAMP_HEADER = "X-Callboard-Timestamp"
EVENT_HEADER = "X-Callboard-Event"
DELIVERY_HEADER = "X-Callboard-Delivery"


@dataclass(frozen=True, slots=True)
class Webhook:
    id: int
    url: str
    events: tuple[str, ...]
    active: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    webhook_id: int
    event: str
    body: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery a worker has claimed, with where to send it and the key to sign it with."""

    id: int
    event: str
    body: str
    attempts: int
    url: str
    secret: str


_HOOK_COLUMNS = "id, url, events, active, created_at"
_DELIVERY_COLUMNS = """id, webhook_id, event, body, state, attempts, next_attempt_at, last_status, last_error,
created_at, delivered_at"""
INSERT_WEBHOOK = f"INSERT INTO webhooks (url, secret, events) VALUES ($1, $2, $3) RETURNING {_HOOK_COLUMNS}"
LIST_WEBHOOKS = f"SELECT {_HOOK_COLUMNS} FROM webhooks ORDER BY id"
DELETE_WEBHOOK = "DELETE FROM webhooks WHERE id = $1 RETURNING id"
ENQUEUE = "SELECT callboard_webhook_event($1, $2::jsonb)"
ENQUEUE_TEST = """
INSERT INTO webhook_deliveries (webhook_id, event, body)
SELECT id, $2, jsonb_build_object('id', gen_random_uuid(), 'event', $2::text, 'created_at', now(),
                                  'data', jsonb_build_object('webhook_id', id))::text
FROM webhooks WHERE id = $1 RETURNING id
"""
LIST_DELIVERIES = f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2"
# Claimed for `lease`: several workers (nodes) never send one delivery at once, and a worker that died mid-send
# leaves it to be taken again when the lease runs out.
CLAIM_DUE = """
UPDATE webhook_deliveries d SET claimed_until = $1 + $3::interval, attempts = d.attempts + 1
FROM webhooks w
WHERE d.id IN (SELECT id FROM webhook_deliveries
               WHERE state = 'pending' AND next_attempt_at <= $1 AND (claimed_until IS NULL OR claimed_until < $1)
               ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
  AND w.id = d.webhook_id
RETURNING d.id, d.event, d.body, d.attempts, w.url, w.secret
"""
MARK_DELIVERED = """
UPDATE webhook_deliveries SET state = 'delivered', delivered_at = $2, last_status = $3, last_error = '',
       claimed_until = NULL
WHERE id = $1
"""
MARK_FAILED_ATTEMPT = """
UPDATE webhook_deliveries SET state = CASE WHEN attempts >= $5 THEN 'failed' ELSE 'pending' END,
       next_attempt_at = $2, last_status = $3, last_error = $4, claimed_until = NULL
WHERE id = $1
"""
PURGE_DELIVERED = "DELETE FROM webhook_deliveries WHERE state = 'delivered' AND delivered_at < $1"


def _hook(row: asyncpg.Record) -> Webhook:
    return Webhook(row["id"], row["url"], tuple(row["events"]), row["active"], row["created_at"])


def clean_url(url: object) -> str:
    if not isinstance(url, str) or len(url) > 2000 or "\x00" in url:
        raise ValidationError("url", "must be an http:// or https:// address")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("url", "must be an http:// or https:// address")
    return url.strip()


def clean_events(events: object) -> list[str]:
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise ValidationError("events", f"a list of one or more of {', '.join(EVENTS)}")
    unknown = sorted(set(events) - set(EVENTS))
    if unknown:
        raise ValidationError("events", f"unknown event {unknown[0]!r}; use {', '.join(EVENTS)}")
    return sorted(set(events), key=EVENTS.index)


async def create_webhook(conn: asyncpg.Connection, url: object, events: object, secret: object = None
                         ) -> tuple[Webhook, str]:
    """A subscription and its signing secret (generated unless given; shown once)."""
    if secret is not None and (not isinstance(secret, str) or not 16 <= len(secret) <= 200):
        raise ValidationError("secret", "16 to 200 characters, or leave it out to have one made")
    key = secret or secrets.token_urlsafe(32)
    row = await conn.fetchrow(INSERT_WEBHOOK, clean_url(url), key, clean_events(events))
    return _hook(row), key


async def list_webhooks(conn: asyncpg.Connection) -> list[Webhook]:
    return [_hook(r) for r in await conn.fetch(LIST_WEBHOOKS)]


async def delete_webhook(conn: asyncpg.Connection, webhook_id: int) -> None:
    if await conn.fetchval(DELETE_WEBHOOK, webhook_id) is None:
        raise NotFound("webhook")


async def enqueue(conn: asyncpg.Connection, event: str, data: dict[str, Any]) -> None:
    """Queue `event` for every hook subscribed to it, in the caller's transaction (so it happens iff the change
    does). For events no table trigger raises: call.ringing, call.answered, payment.received."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    await conn.execute(ENQUEUE, event, json.dumps(data, default=str))


async def enqueue_test(conn: asyncpg.Connection, webhook_id: int) -> int:
    """The "send test" button: one delivery of webhook.test to this hook."""
    delivery_id = await conn.fetchval(ENQUEUE_TEST, webhook_id, TEST_EVENT)
    if delivery_id is None:
        raise NotFound("webhook")
    return delivery_id


async def list_deliveries(conn: asyncpg.Connection, webhook_id: int, limit: int = 50) -> list[Delivery]:
    return [Delivery(**dict(r)) for r in await conn.fetch(LIST_DELIVERIES, webhook_id, limit)]


async def claim_due(conn: asyncpg.Connection, now: datetime, limit: int = 20,
                    lease: timedelta = timedelta(minutes=2)) -> list[DueDelivery]:
    return [DueDelivery(**dict(r)) for r in await conn.fetch(CLAIM_DUE, now, limit, lease)]


def backoff(attempts: int, base: float, cap: timedelta = MAX_BACKOFF) -> timedelta:
    """base, 2·base, 4·base … at most `cap` (an hour): after MAX_ATTEMPTS the delivery is given up (state failed).
    The outgoing mail queue waits the same way."""
    return min(timedelta(seconds=base * 2 ** max(attempts - 1, 0)), cap)


async def record_result(conn: asyncpg.Connection, delivery: DueDelivery, now: datetime, status: int | None,
                        error: str, base_delay: float) -> None:
    """A 2xx answer delivers; anything else (another status, a timeout, a refused connection) retries later."""
    if status is not None and 200 <= status < 300:
        await conn.execute(MARK_DELIVERED, delivery.id, now, status)
    else:
        await conn.execute(MARK_FAILED_ATTEMPT, delivery.id, now + backoff(delivery.attempts, base_delay), status,
                           error[:500], MAX_ATTEMPTS)


async def purge_delivered(conn: asyncpg.Connection, before: datetime) -> int:
    return int((await conn.execute(PURGE_DELIVERED, before)).split()[-1])


def sign(secret: str, timestamp: str, body: str) -> str:
    """HMAC-SHA256 of "<timestamp>.<body>" with the hook's secret, hex: the receiver recomputes it and also checks
    that the timestamp is recent, so a captured delivery cannot be replayed later."""
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(delivery: DueDelivery, timestamp: int) -> dict[str, str]:
    return {"Content-Type": "application/json", EVENT_HEADER: delivery.event, DELIVERY_HEADER: str(delivery.id),
            TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(delivery.secret, str(timestamp), delivery.body),
            "User-Agent": "Callboard-Webhooks/1"}
