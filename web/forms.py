"""Website forms and chats straight in: `POST /api/forms/{key}` (form-encoded or JSON, CORS for the site's
origin) and `POST /api/chats/{key}` (the chat widget's webhook).

A submission becomes a message in the mail intake's own shape and goes through the same door: the raw bytes
are stored first, then the same rules file it (a lead for a stranger, the client's history and a reply task
for a known one), and the same people are told. Spam protection: a honeypot field a person never fills, and a
per-address rate limit.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from email.message import EmailMessage
from typing import Any

import asyncpg
from aiohttp import web

from crm import mail as mail_db
from web import keys
from web.errors import json_error
from web.mailserver import file_stored

logger = logging.getLogger(__name__)

# What sites call their fields → the intake's labels ("Name:", "Phone:" …), which the mail parser reads.
FIELDS = {
    "Name": ("name", "fio", "fullname", "full_name", "your-name", "имя", "фио"),
    "Phone": ("phone", "tel", "telephone", "phone_number", "your-phone", "телефон"),
    "Email": ("email", "e-mail", "mail", "your-email", "почта"),
    "Company": ("company", "organization", "organisation", "firm", "компания", "организация"),
    "Message": ("message", "comment", "comments", "text", "question", "your-message", "сообщение", "вопрос"),
}
# Filled only by robots: the site hides it from people.
HONEYPOTS = ("website", "url", "homepage", "hp")
MAX_FIELD = 5000
RATE_WINDOW = 60.0
RATE_LIMIT = 10  # submissions per address per minute and form


class RateLimiter:
    """A sliding window per (form, address); per node, which is enough against a form-spamming script."""

    def __init__(self, limit: int = RATE_LIMIT, window: float = RATE_WINDOW) -> None:
        self.limit, self.window = limit, window
        self._seen: dict[tuple[str, str], deque[float]] = defaultdict(deque)

    def allow(self, key: tuple[str, str], now: float) -> bool:
        times = self._seen[key]
        while times and now - times[0] > self.window:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        if len(self._seen) > 10_000:  # forget idle addresses rather than grow without bound
            for stale in [k for k, v in self._seen.items() if not v or now - v[-1] > self.window]:
                del self._seen[stale]
        return True


LIMITER = web.AppKey("form_rate_limiter", RateLimiter)


def _cors(request: web.Request, origin: str) -> dict[str, str]:
    sent = request.headers.get("Origin", "")
    if origin == "*" or (sent and sent == origin):
        return {"Access-Control-Allow-Origin": sent or "*", "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": "Content-Type", "Vary": "Origin"}
    return {}


def as_message(key: str, fields: dict[str, str]) -> bytes:
    """The submission as a plain-text message labelled the way the intake reads web forms."""
    message = EmailMessage()
    message["From"] = f"Website form <form-{key}@forms.invalid>"
    message["To"] = f"form-{key}@forms.invalid"
    message["Subject"] = f"Website form: {key}"
    message.set_content("\n".join(f"{label}: {value}" for label, value in fields.items() if value) + "\n")
    return bytes(message)


async def _fields(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        body = await request.json()
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object")
        return body
    return dict(await request.post())


async def form_preflight(request: web.Request) -> web.Response:
    origin = dict(request.app[keys.SETTINGS].forms).get(request.match_info["key"])
    if origin is None:
        return json_error(404, "no such form")
    return web.Response(status=204, headers=_cors(request, origin))


async def submit_form(request: web.Request) -> web.Response:
    """POST /api/forms/{key}: 202 once the submission is stored (it is filed right after)."""
    key = request.match_info["key"]
    origin = dict(request.app[keys.SETTINGS].forms).get(key)
    if origin is None:
        return json_error(404, "no such form")
    headers = _cors(request, origin)
    if not request.app[LIMITER].allow((key, request.remote or ""), time.monotonic()):
        return web.json_response({"error": {"status": 429, "code": "too_many_requests",
                                             "message": "too many submissions; try again in a minute"}},
                                 status=429, headers=headers)
    try:
        raw_fields = await _fields(request)
    except ValueError:
        return web.json_response({"error": {"status": 400, "code": "bad_request", "message": "unreadable body"}},
                                 status=400, headers=headers)
    lowered = {str(k).strip().lower(): v for k, v in raw_fields.items()}
    if any(str(lowered.get(name) or "").strip() for name in HONEYPOTS):
        logger.info("form %s: a robot filled the honeypot (%s); dropped", key, request.remote)
        return web.json_response({"status": "accepted"}, status=202, headers=headers)  # never tell the robot
    fields = {label: str(next((lowered[n] for n in names if lowered.get(n) not in (None, "")), ""))[:MAX_FIELD]
              .replace("\x00", "").strip() for label, names in FIELDS.items()}
    if not (fields["Phone"] or fields["Email"]):
        return web.json_response({"error": {"status": 422, "code": "validation_error", "field": "phone",
                                            "message": "a phone or an e-mail is needed to answer you"}},
                                 status=422, headers=headers)
    raw = as_message(key, fields)
    try:
        async with request.app[keys.POOL].acquire() as conn:
            message_id = await mail_db.store_raw(conn, raw, request.remote or "", f"form:{key}", [f"form:{key}"])
    except (OSError, asyncpg.PostgresError) as exc:
        logger.error("form %s not stored (%s); answered 503", key, exc)
        return web.json_response({"error": {"status": 503, "code": "unavailable", "message": "try again later"}},
                                 status=503, headers=headers)
    await file_stored(request.app, message_id, raw)
    return web.json_response({"status": "accepted", "id": message_id}, status=202, headers=headers)


# The chat widget's webhook (JivoSite's shape: event_name, visitor{name, email, phone}, chat{messages[]} or an
# offline message): the finished conversation is filed as a chat transcript, like one forwarded by e-mail.
CHAT_EVENTS = ("chat_finished", "offline_message")


def chat_as_message(key: str, body: dict[str, Any]) -> bytes | None:
    """A finished chat (or an offline message) as a transcript the intake reads as a chat; None: not one."""
    if body.get("event_name") not in CHAT_EVENTS:
        return None
    visitor = body.get("visitor") if isinstance(body.get("visitor"), dict) else {}
    lines = [f"{label}: {str(visitor.get(field) or '').strip()[:MAX_FIELD]}"
             for label, field in (("Name", "name"), ("Phone", "phone"), ("Email", "email"))
             if str(visitor.get(field) or "").strip()]
    chat = body.get("chat") if isinstance(body.get("chat"), dict) else {}
    messages = chat.get("messages") if isinstance(chat.get("messages"), list) else []
    who = {"visitor": str(visitor.get("name") or "Visitor").strip()[:60] or "Visitor", "agent": "Manager"}
    for item in messages[:500]:
        if isinstance(item, dict) and str(item.get("message") or item.get("text") or "").strip():
            text = str(item.get("message") or item.get("text")).replace("\n", " ").strip()[:MAX_FIELD]
            lines.append(f"{who.get(str(item.get('type')), 'Manager')}: {text}")
    if body.get("event_name") == "offline_message" and str(body.get("message") or "").strip():
        lines.append(f"Message: {str(body['message']).strip()[:MAX_FIELD]}")
    message = EmailMessage()
    message["From"] = f"Website chat <chat-{key}@forms.invalid>"
    message["To"] = f"chat-{key}@forms.invalid"
    message["Subject"] = f"Chat transcript ({body['event_name'].replace('_', ' ')}): {key}"
    message.set_content("\n".join(line.replace("\x00", "") for line in lines) + "\n")
    return bytes(message)


async def chat_webhook(request: web.Request) -> web.Response:
    """POST /api/chats/{key}: the chat widget's webhook; answers 200 to events it does not file."""
    key = request.match_info["key"]
    if dict(request.app[keys.SETTINGS].forms).get(key) is None:
        return json_error(404, "no such form")
    try:
        body = await request.json()
    except ValueError:
        return json_error(400, "the body is not valid JSON")
    raw = chat_as_message(key, body) if isinstance(body, dict) else None
    if raw is None:
        return web.json_response({"result": "ok", "filed": False})
    try:
        async with request.app[keys.POOL].acquire() as conn:
            message_id = await mail_db.store_raw(conn, raw, request.remote or "", f"chat:{key}", [f"chat:{key}"])
    except (OSError, asyncpg.PostgresError) as exc:
        logger.error("chat %s not stored (%s); answered 503", key, exc)
        return json_error(503, "try again later")  # the widget's service retries
    await file_stored(request.app, message_id, raw)
    return web.json_response({"result": "ok", "filed": True, "id": message_id})


def setup(app: web.Application) -> None:
    app[LIMITER] = RateLimiter()
    app.router.add_post("/api/forms/{key:[A-Za-z0-9_-]{1,64}}", submit_form)
    app.router.add_route("OPTIONS", "/api/forms/{key:[A-Za-z0-9_-]{1,64}}", form_preflight)
    app.router.add_post("/api/chats/{key:[A-Za-z0-9_-]{1,64}}", chat_webhook)
