"""API tokens for integrators: create (the secret shown once), list and revoke, on "My settings" and by the API."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from crm import tokens as tokens_db
from crm.tokens import ApiToken
from web import keys
from web.api import read_json
from web.auth import current_user
from web.errors import path_id
from web.render import render


def token_json(token: ApiToken) -> dict[str, Any]:
    return {"id": token.id, "user_id": token.user_id, "user_login": token.user_login, "name": token.name,
            "scope": token.scope, "hint": token.hint, "created_at": token.created_at.isoformat(),
            "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None}


async def token_context(request: web.Request) -> dict[str, Any]:
    """What the tokens section of "My settings" shows: the person's own tokens."""
    async with request.app[keys.POOL].acquire() as conn:
        return {"tokens": await tokens_db.list_tokens(conn, current_user(request).id),
                "token_scopes": tokens_db.SCOPES, "new_token": None}


async def list_api(request: web.Request) -> web.Response:
    """Own tokens; an admin asking ?all=1 sees everyone's (never the secrets: only their last characters)."""
    user = current_user(request)
    everyone = user.role == "admin" and request.query.get("all") in ("1", "true")
    async with request.app[keys.POOL].acquire() as conn:
        tokens = await tokens_db.list_tokens(conn, None if everyone else user.id)
    return web.json_response({"items": [token_json(t) for t in tokens]})


async def create_api(request: web.Request) -> web.Response:
    body = await read_json(request)
    async with request.app[keys.POOL].acquire() as conn:
        token, secret = await tokens_db.create_token(conn, current_user(request).id, body.get("name"),
                                                     body.get("scope", "full"))
    return web.json_response({**token_json(token), "token": secret}, status=201)


async def revoke_api(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        await tokens_db.revoke_token(conn, current_user(request), path_id(request, "token_id"))
    return web.json_response({"revoked": True})


async def create_form(request: web.Request) -> web.Response:
    form = await request.post()
    async with request.app[keys.POOL].acquire() as conn:
        token, secret = await tokens_db.create_token(conn, current_user(request).id, str(form.get("name", "")),
                                                     str(form.get("scope", "full")))
    # The secret is on this one answer only: no redirect, so a reload does not create another.
    context = {**await token_context(request), "new_token": secret, "new_token_name": token.name}
    return render(request, "password.html", error=None, done=False, **context)


async def revoke_form(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        await tokens_db.revoke_token(conn, current_user(request), path_id(request, "token_id"))
    raise web.HTTPFound("/password#tokens")


def setup(app: web.Application) -> None:
    app.router.add_get("/api/tokens", list_api)
    app.router.add_post("/api/tokens", create_api)
    app.router.add_delete("/api/tokens/{token_id}", revoke_api)
    app.router.add_post("/password/tokens", create_form)
    app.router.add_post("/password/tokens/{token_id}/revoke", revoke_form)
