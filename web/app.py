"""The aiohttp application factory: middlewares, templates, routes, resources, response headers."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg
from aiohttp import web

from crm.settings import Settings
from web import (
    admin,
    api,
    auth,
    board,
    company,
    deals,
    documents,
    exchange,
    forms,
    health,
    i18n,
    keys,
    leadrules,
    leads,
    mailserver,
    memory,
    metrics,
    missed,
    money,
    onec,
    outmail,
    pages,
    realtime,
    recordings,
    reminders,
    reports,
    routing,
    sockets,
    stock,
    tasks,
    telephony,
    timeline,
    tokens,
    webhooks,
)
from web.errors import error_middleware
from web.render import make_templates

logger = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 32 * 1024 * 1024

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Scripts and styles come from our own files only (no inline code: pages hook in through static/*.js), so
# markup slipped into a caller ID or an e-mail cannot run; nobody may frame us (clickjacking).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


async def set_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer, pages, API, errors and static files alike."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.app[keys.SETTINGS].secure_cookies:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")


def create_app(settings: Settings, pool: asyncpg.Pool) -> web.Application:
    """Build the app around an open pool; telephony and sockets attach through their own keys."""
    # Bank statements, contract scans, spreadsheets and 1C catalogues come as uploads (the CSRF check reads a
    # page's whole form first); each door that takes files sets its own, smaller limit on what it keeps.
    app = web.Application(middlewares=[metrics.metrics_middleware, error_middleware, auth.auth_middleware],
                          client_max_size=max(MAX_REQUEST_BYTES, settings.import_max_bytes + 1024 * 1024))
    app[keys.SETTINGS] = settings
    app[keys.POOL] = pool
    app[keys.TEMPLATES] = make_templates(settings)
    app.on_response_prepare.append(set_security_headers)
    app.on_shutdown.append(sockets.disconnect_all)
    app[keys.I18N] = i18n.I18n(settings)
    health.setup(app)
    metrics.setup(app)
    pages.setup(app)
    api.setup(app)
    leads.setup(app)
    leadrules.setup(app)
    missed.setup(app)
    mailserver.setup(app)
    forms.setup(app)
    deals.setup(app)
    stock.setup(app)  # the warehouse's screens (web/stock.py)
    board.setup(app)  # the deals board, editing, stage rules
    money.setup(app)
    reminders.setup(app)
    documents.setup(app)
    company.setup(app)
    admin.setup(app)
    tokens.setup(app)
    exchange.setup(app)
    webhooks.setup(app)
    outmail.setup(app)
    onec.setup(app)
    recordings.setup(app)
    timeline.setup(app)  # the cards' timeline, notes, call results, merges
    realtime.setup(app)  # before telephony: the service sends its events to this notifier
    reports.setup(app)  # after realtime: the wallboard's socket event
    tasks.setup(app)  # after realtime: reminders go out through its notifier
    telephony.setup(app)
    routing.setup(app)  # after telephony: the router reads the agents' states
    memory.setup(app)  # last: freezes what start-up and the routing index loaded
    app.router.add_static("/static/", STATIC_DIR, name="static", append_version=True)
    return app
