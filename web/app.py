"""The aiohttp application factory: middlewares, templates, routes, resources."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import jinja2
from aiohttp import web

from crm import errors
from crm.phones import format_phone
from crm.settings import Settings
from web import (
    admin,
    api,
    auth,
    deals,
    health,
    i18n,
    keys,
    leads,
    mailserver,
    missed,
    pages,
    realtime,
    recordings,
    routing,
    telephony,
)
from web.i18n import N_

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

_STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "too_large", 422: "validation_error", 429: "too_many_requests", 500: "server_error",
}


def error_body(status: int, message: str, field: str | None = None) -> dict:
    """The one error shape of the JSON API."""
    return {"error": {"status": status, "code": _STATUS_CODES.get(status, "error"), "message": message,
                      "field": field}}


def _json_error(status: int, message: str, field: str | None = None) -> web.Response:
    return web.json_response(error_body(status, message, field), status=status)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    is_api = request.path.startswith("/api/")
    try:
        return await handler(request)
    except errors.ValidationError as exc:
        if is_api:
            return _json_error(422, exc.message, exc.field)
        problem: web.HTTPException = web.HTTPUnprocessableEntity(text=_for_people(request, str(exc)))
    except errors.NotFound as exc:
        if is_api:
            return _json_error(404, f"{exc} not found")
        problem = web.HTTPNotFound(text=_for_people(request, f"This {exc} does not exist, or it is not yours."))
    except errors.Forbidden as exc:
        if is_api:
            return _json_error(403, str(exc))
        problem = web.HTTPForbidden(text=_for_people(request, str(exc)))
    except errors.Conflict as exc:
        if is_api:
            return _json_error(409, str(exc))
        problem = web.HTTPConflict(text=_for_people(request, str(exc)))
    except web.HTTPException as exc:
        if is_api and exc.status >= 400:
            return _json_error(exc.status, exc.reason if exc.text in (None, "", f"{exc.status}: {exc.reason}")
                               else exc.text)
        problem = exc
    except json.JSONDecodeError:
        if is_api:
            return _json_error(400, "the body is not valid JSON")
        problem = web.HTTPBadRequest()
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        if is_api:
            return _json_error(500, "internal error; it has been logged")
        problem = web.HTTPInternalServerError()
    if problem.status in _ERROR_PAGES and request.method == "GET" and not request.path.startswith(
            ("/static/", "/recordings/", "/mail/")):
        return _error_page(request, problem)
    raise problem


def _for_people(request: web.Request, text: str) -> str:
    """A domain error as the reader's words (the API keeps the English message)."""
    return i18n.request_reader(request).text(text)


_ERROR_PAGES = {403: N_("Not allowed"), 404: N_("Not found")}


def _error_page(request: web.Request, exc: web.HTTPException) -> web.Response:
    """People get a page they can leave from, not a bare status line."""
    from web.pages import render

    fallback = (N_("Your role does not allow this page.") if exc.status == 403
                else N_("There is nothing here, or it is not yours."))
    detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else fallback
    return render(request, "error.html", http_status=exc.status, title=_ERROR_PAGES[exc.status], message=detail)


def make_templates(settings: Settings) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,  # caller IDs and e-mails are chosen by strangers: never markup
        undefined=jinja2.StrictUndefined,
        enable_async=False,
    )
    env.filters["phone"] = lambda e164, ext=None: format_phone(e164, ext)
    i18n.install(env)  # gettext and the locale's formats (dates in the company's zone, money, durations)
    env.globals["demo"] = settings.demo
    return env


def create_app(settings: Settings, pool: asyncpg.Pool) -> web.Application:
    """Build the app around an open pool; telephony and sockets attach through their own keys."""
    app = web.Application(middlewares=[error_middleware, auth.auth_middleware], client_max_size=2 * 1024 * 1024)
    app[keys.SETTINGS] = settings
    app[keys.POOL] = pool
    app[keys.TEMPLATES] = make_templates(settings)
    app[keys.I18N] = i18n.I18n(settings)
    health.setup(app)
    pages.setup(app)
    api.setup(app)
    leads.setup(app)
    missed.setup(app)
    mailserver.setup(app)
    deals.setup(app)
    admin.setup(app)
    recordings.setup(app)
    realtime.setup(app)  # before telephony: the service sends its events to this notifier
    telephony.setup(app)
    routing.setup(app)  # after telephony: the router reads the agents' states
    app.router.add_static("/static/", STATIC_DIR, name="static", append_version=True)
    return app
