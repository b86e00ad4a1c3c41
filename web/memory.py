"""Long-lived objects frozen out of the garbage collector once loaded, so full collections stay short."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from web import keys

logger = logging.getLogger(__name__)

# A full collection after every 100 middle-generation ones instead of CPython's 10: what a full one walks
# (sockets, sessions, pending calls) is worth ~100 ms on a loaded machine, and it came every few seconds
# under 1,000 connected managers (bench/screenpop.py --realistic: 4 pauses over 10 ms in 20 s).
FULL_COLLECTION_EVERY = 100
WATCH_EVERY = 0.5  # seconds between looks at the routing index (it loads, and reloads after a lost listener)


def freeze(why: str) -> None:
    """Everything alive now (modules, templates, settings, the routing index's entries) moves to the
    permanent generation: a full collection no longer walks millions of objects that never die (181–407 ms
    pauses with a 1M-phone index loaded). Freed objects still go by reference counting."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    logger.info("%d long-lived objects frozen out of the collector (%s) in %.0f ms", gc.get_freeze_count(), why,
                (time.perf_counter() - started) * 1000)


async def _follow_index(app: web.Application) -> None:
    router = app.get(keys.ROUTER)
    index = router.index if router is not None else None
    frozen = False
    while index is not None:
        if index.ready and not frozen:
            freeze("routing index loaded")
        frozen = index.ready
        await asyncio.sleep(WATCH_EVERY)


async def memory_ctx(app: web.Application) -> AsyncIterator[None]:
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], FULL_COLLECTION_EVERY)
    freeze("start-up")
    follower = asyncio.create_task(_follow_index(app), name="gc-freeze")
    try:
        yield
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        gc.unfreeze()  # a test process starts many apps: let the next one's start-up be collected
        gc.set_threshold(*thresholds)


def setup(app: web.Application) -> None:
    if not app[keys.SETTINGS].freeze_gc:
        return  # a test process starts hundreds of apps: a full collection at each start costs it minutes
    app.cleanup_ctx.append(memory_ctx)  # after routing's: the router and its index exist by then
