"""Who is asking: session cookies for pages, Bearer tokens for machines, CSRF for state changes."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from crm import tokens as tokens_db
from crm import users as users_db
from crm.users import User
from web import keys

logger = logging.getLogger(__name__)

SESSION_COOKIE = "callboard_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Paths that authenticate on their own (or need no user at all).
# Doors that check their callers themselves (a token, an allowlist, a form key and a rate limit).
SELF_CHECKING = ("/api/forms/", "/api/chats/")
PUBLIC_PREFIXES = ("/login", "/healthz", "/readyz", "/static/", "/api/openapi.json", "/favicon")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def current_user(request: web.Request) -> User:
    user = request.get(keys.USER)
    if user is None:
        raise web.HTTPUnauthorized()
    return user


def require_role(request: web.Request, *roles: str) -> User:
    user = current_user(request)
    if user.role not in roles:
        raise web.HTTPForbidden(reason="your role does not allow this")
    return user


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in ("/api/route", "/metrics", "/1c/exchange") or request.path.startswith(SELF_CHECKING):
        return await handler(request)  # the dialplan's door, metrics, 1C and website forms check on their own
    settings = request.app[keys.SETTINGS]
    pool = request.app[keys.POOL]
    request[keys.USER] = None
    request[keys.CSRF] = None
    request[keys.VIA_TOKEN] = False
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        async with pool.acquire() as conn:
            use = await tokens_db.use_token(conn, authorization[7:].strip())
        if use is None:
            raise web.HTTPUnauthorized(reason="invalid API token")
        if use.scope == "routing" or (use.scope == "read" and request.method not in SAFE_METHODS):
            raise web.HTTPForbidden(reason=f"this API token's scope ({use.scope}) does not allow this")
        request[keys.USER], request[keys.VIA_TOKEN] = use.user, True
    elif SESSION_COOKIE in request.cookies:
        async with pool.acquire() as conn:
            session = await users_db.get_session(conn, request.cookies[SESSION_COOKIE], settings.session_secret)
        if session is not None:
            request[keys.USER], request[keys.CSRF] = session.user, session.csrf_token

    if request.path.startswith(PUBLIC_PREFIXES) or request.path == "/socket.io/":
        return await handler(request)
    if request[keys.USER] is None:
        if _is_api(request):
            raise web.HTTPUnauthorized(reason="log in or send an API token")
        raise web.HTTPFound(f"/login?next={request.path_qs if request.method == 'GET' else '/'}")
    if request.method not in SAFE_METHODS and not request[keys.VIA_TOKEN]:
        await _check_csrf(request)
    return await handler(request)


async def _check_csrf(request: web.Request) -> None:
    """A page's form or fetch() must echo the session's CSRF token; a token client needs none."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        sent = (await request.post()).get(CSRF_FIELD)
    expected = request[keys.CSRF] or ""
    if not sent or not expected or not hmac.compare_digest(str(sent), expected):
        logger.warning("CSRF check failed for %s %s", request.method, request.path)
        raise web.HTTPForbidden(reason="CSRF token missing or wrong; reload the page")
