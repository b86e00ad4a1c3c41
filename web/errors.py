"""Errors to HTTP: the JSON API's one error shape, friendly pages for people, never a bare 500 for bad input."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from crm import errors
from web import i18n
from web.i18n import N_

logger = logging.getLogger(__name__)

_STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "too_large", 422: "validation_error", 429: "too_many_requests", 500: "server_error",
    503: "unavailable",
}
_ERROR_PAGES = {403: N_("Not allowed"), 404: N_("Not found")}
# The largest id PostgreSQL's bigint holds: a longer number in a path is simply nothing we have.
MAX_ID = 2**63 - 1


def error_body(status: int, message: str, field: str | None = None) -> dict:
    """The one error shape of the JSON API."""
    return {"error": {"status": status, "code": _STATUS_CODES.get(status, "error"), "message": message,
                      "field": field}}


def json_error(status: int, message: str, field: str | None = None) -> web.Response:
    return web.json_response(error_body(status, message, field), status=status)


def path_id(request: web.Request, name: str) -> int:
    """An id from the path; one that is no number or beyond bigint is 404, not a database error."""
    text = request.match_info.get(name, "")
    if not text.isdigit() or len(text) > 19 or int(text) > MAX_ID:
        raise errors.NotFound(name.removesuffix("_id").replace("_", " ") or "item")
    return int(text)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    is_api = request.path.startswith("/api/")
    try:
        return await handler(request)
    except errors.ValidationError as exc:
        if is_api:
            return json_error(422, exc.message, exc.field)
        problem: web.HTTPException = web.HTTPUnprocessableEntity(text=_for_people(request, str(exc)))
    except errors.NotFound as exc:
        if is_api:
            return json_error(404, f"{exc} not found")
        problem = web.HTTPNotFound(text=_for_people(request, f"This {exc} does not exist, or it is not yours."))
    except errors.Forbidden as exc:
        if is_api:
            return json_error(403, str(exc))
        problem = web.HTTPForbidden(text=_for_people(request, str(exc)))
    except errors.Conflict as exc:
        if is_api:
            return json_error(409, str(exc))
        problem = web.HTTPConflict(text=_for_people(request, str(exc)))
    except web.HTTPException as exc:
        if is_api and exc.status >= 400:
            return json_error(exc.status, exc.reason if exc.text in (None, "", f"{exc.status}: {exc.reason}")
                              else exc.text)
        problem = exc
    except (json.JSONDecodeError, UnicodeDecodeError):
        if is_api:
            return json_error(400, "the body is not valid JSON in UTF-8")
        problem = web.HTTPBadRequest(text=_for_people(request, "The form could not be read."))
    except asyncpg.DataError as exc:
        # A value the database cannot hold (a number past bigint, a NUL in text): the input is wrong, not us.
        logger.info("input refused by the database on %s %s: %s", request.method, request.path, exc)
        if is_api:
            return json_error(422, "a value is out of range or holds characters that cannot be stored")
        problem = web.HTTPUnprocessableEntity(text=_for_people(
            request, "A value is out of range or holds characters that cannot be stored."))
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        if is_api:
            return json_error(500, "internal error; it has been logged")
        problem = web.HTTPInternalServerError()
    if problem.status in _ERROR_PAGES and request.method == "GET" and not request.path.startswith(
            ("/static/", "/recordings/", "/mail/")):
        return _error_page(request, problem)
    raise problem


def _for_people(request: web.Request, text: str) -> str:
    """A domain error as the reader's words (the API keeps the English message)."""
    return i18n.request_reader(request).text(text)


def _error_page(request: web.Request, exc: web.HTTPException) -> web.Response:
    """People get a page they can leave from, not a bare status line."""
    from web.render import render

    fallback = (N_("Your role does not allow this page.") if exc.status == 403
                else N_("There is nothing here, or it is not yours."))
    detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else fallback
    return render(request, "error.html", http_status=exc.status, title=_ERROR_PAGES[exc.status], message=detail)
