"""Background workers that drain an outbox table: one referenced task per app, a round after another, a pause when a
round found nothing, cancelled at shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from web.jobs import background_task

logger = logging.getLogger(__name__)

Round = Callable[[web.Application], Awaitable[int]]


def polling_ctx(name: str, one_round: Round, pause: float,
                enabled: Callable[[web.Application], bool] = lambda app: True
                ) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx running `one_round` (which answers how much it did) until shutdown. A failing round is logged
    and tried again after the pause: a database away for a while must not end the worker."""
    async def loop(app: web.Application) -> None:
        while True:
            try:
                done = await one_round(app)
            except Exception:
                logger.exception("%s: a round failed; trying again", name)
                done = 0
            if not done:
                await asyncio.sleep(pause)

    running = background_task(name, loop)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if not enabled(app):
            yield
            return
        async for _ in running(app):
            yield

    return ctx
