"""Periodic jobs: a referenced task per job, run every N seconds, cancelled at shutdown; a failure waits a turn."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def background_task(name: str, run: Callable[[web.Application], Awaitable[None]]) -> CleanupContext:
    """A cleanup context owning one referenced task, `run(app)`, cancelled and awaited at shutdown."""
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run(app), name=name)
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return ctx


def periodic_job(name: str, seconds: float, run: Callable[[web.Application], Awaitable[list[Any]]],
                 what: str) -> CleanupContext:
    """A cleanup context running `run(app)` now and every `seconds`; `what` names the things it found in the log
    ("%d deal(s) newly stuck")."""
    async def loop(app: web.Application) -> None:
        while True:
            try:
                found = await run(app)
                if found:
                    logger.info(what, len(found))
            except Exception:
                logger.exception("%s failed; it runs again later", name)
            await asyncio.sleep(seconds)

    return background_task(name, loop)
