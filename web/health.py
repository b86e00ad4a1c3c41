"""Liveness and readiness probes with JSON bodies: /readyz says whether the database and Redis answer
and, per PBX, whether this node reads it."""

from __future__ import annotations

import asyncio

from aiohttp import web

from crm.db import pending_migrations
from web import keys


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, object] = {}
    ready = True
    try:
        async with asyncio.timeout(2):
            async with request.app[keys.POOL].acquire() as conn:
                pending = await pending_migrations(conn)
        checks["database"] = "ok"
        checks["migrations"] = "ok" if not pending else f"{len(pending)} pending"
        ready = not pending
    except (OSError, TimeoutError, Exception) as exc:  # any failure means "not ready", never a 500
        checks["database"] = f"unreachable: {type(exc).__name__}"
        ready = False
    telephony = request.app.get(keys.TELEPHONY)
    if telephony is not None:
        redis_state = await telephony.check_redis()
        if redis_state is not None:
            checks["redis"] = redis_state
        pbx_states = telephony.pbx_status()
        checks["pbx"] = pbx_states
        checks["writer"] = telephony.writer_status()
        for state in pbx_states.values():
            # Standing by is fine only while Redis answers: then another node demonstrably holds the
            # lease. Without Redis this node cannot tell whether anyone reads the PBX.
            if not (state["reading"] or (state["state"] == "standby" and redis_state == "ok")):
                ready = False
    return web.json_response({"status": "ready" if ready else "not ready", "checks": checks},
                             status=200 if ready else 503)


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
