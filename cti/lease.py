"""A Redis lease per PBX: with several nodes, exactly one consumes each PBX's AMI stream; when that
node dies its lease expires and another node takes over (and resyncs with CoreShowChannels)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# Renew only a lease we still hold; give it up only if it is ours (never another node's).
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


class PbxLease:
    """Holds `callboard:lease:<pbx>` while it can; calls `acquired` / `lost` on each change."""

    def __init__(self, client: aioredis.Redis, pbx: str, node_id: str, acquired: Callable[[], Awaitable[None]],
                 lost: Callable[[], Awaitable[None]], ttl: float = 10.0) -> None:
        self.client = client
        self.key = f"callboard:lease:{pbx}"
        self.node_id = node_id
        self.acquired, self.lost = acquired, lost
        self.ttl_ms = int(ttl * 1000)
        self.holding = False
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lease-{self.key}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.holding:
            self.holding = False
            await self.lost()
            try:
                await self.client.eval(_RELEASE, 1, self.key, self.node_id)
            except RedisError as exc:
                logger.warning("lease %s not released (%s); it expires by itself", self.key, exc)

    async def _run(self) -> None:
        while True:
            try:
                if self.holding:
                    if not await self.client.eval(_RENEW, 1, self.key, self.node_id, self.ttl_ms):
                        logger.error("lease %s lost to another node; stopping this node's AMI connection", self.key)
                        self.holding = False
                        await self.lost()
                elif await self.client.set(self.key, self.node_id, nx=True, px=self.ttl_ms):
                    logger.info("lease %s taken: this node consumes the PBX's events", self.key)
                    self.holding = True
                    await self.acquired()
            except RedisError as exc:
                # Without Redis we cannot prove the lease is ours: stop consuming rather than duplicate.
                logger.error("lease %s: Redis unavailable (%s)", self.key, exc)
                if self.holding:
                    self.holding = False
                    await self.lost()
            await asyncio.sleep(self.ttl_ms / 3000)
