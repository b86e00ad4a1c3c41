"""Periodic jobs: a referenced task per job, run every N seconds, cancelled at shutdown; a failure waits a turn."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def periodic_job(name: str, seconds: float, run: Callable[[web.Application], Awaitable[list[Any]]],
                 what: str) -> CleanupContext:
    """A cleanup context running `run(app)` now and every `seconds`; `what` names the things it found in the log
    ("%d deal(s) newly stuck")."""
    async def job_ctx(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                try:
                    found = await run(app)
                    if found:
                        logger.info(what, len(found))
                except Exception:
                    logger.exception("%s failed; it runs again later", name)
                await asyncio.sleep(seconds)

        task = asyncio.create_task(loop(), name=name)
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return job_ctx
