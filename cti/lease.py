"""A Redis lease per PBX: with several nodes, exactly one consumes each PBX's AMI stream; when that
node dies its lease expires and another node takes over (and resyncs with CoreShowChannels). Each
taking of the lease gets a new generation (INCR), which the node's call writes carry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# Take a free lease and number this taking, in one step: no two holders ever share a generation.
_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return redis.call('incr', KEYS[2]) end
return 0
"""
# Renew only a lease we still hold; give it up only if it is ours (never another node's).
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


class PbxLease:
    """Holds `callboard:lease:<pbx>` while it can; calls `acquired(generation)` / `lost()` on each change.

    When Redis cannot be reached, a holder keeps holding (and its node keeps consuming): writes are
    idempotent per call, so a possible second consumer costs duplicate popups at worst, while
    nobody consuming loses calls. When Redis answers again, a lease that expired meanwhile is taken
    again if free (a new generation), or given up if another node took it.
    """

    def __init__(self, client: aioredis.Redis, pbx: str, node_id: str,
                 acquired: Callable[[int], Awaitable[None]], lost: Callable[[], Awaitable[None]],
                 ttl: float = 10.0) -> None:
        self.client = client
        self.key = f"callboard:lease:{pbx}"
        self.generation_key = f"callboard:lease-generation:{pbx}"
        self.node_id = node_id
        self.acquired, self.lost = acquired, lost
        self.ttl_ms = int(ttl * 1000)
        self.holding = False
        self.generation = 0
        self.redis_ok: bool | None = None  # None until the first answer (or failure)
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

    async def _take(self) -> int:
        return int(await self.client.eval(_ACQUIRE, 2, self.key, self.generation_key, self.node_id, self.ttl_ms))

    async def step(self) -> None:
        """One round: renew or take; what the background task does every third of the TTL."""
        try:
            if self.holding:
                if not await self.client.eval(_RENEW, 1, self.key, self.node_id, self.ttl_ms):
                    generation = await self._take()
                    if generation:
                        logger.warning("lease %s had expired (Redis away?); taken again, generation %d",
                                       self.key, generation)
                        self.generation = generation
                    else:
                        logger.error("lease %s lost to another node; stopping this node's AMI connection",
                                     self.key)
                        self.holding = False
                        await self.lost()
            elif generation := await self._take():
                logger.info("lease %s taken (generation %d): this node consumes the PBX's events",
                            self.key, generation)
                self.holding, self.generation = True, generation
                await self.acquired(generation)
            if self.redis_ok is False:
                logger.info("lease %s: Redis answers again", self.key)
            self.redis_ok = True
        except (RedisError, OSError) as exc:
            if self.redis_ok is not False:
                logger.error("lease %s: Redis unavailable (%s); %s", self.key, exc,
                             "this node keeps consuming the PBX it holds" if self.holding
                             else "this node stays on standby")
            self.redis_ok = False

    async def _run(self) -> None:
        while True:
            await self.step()
            await asyncio.sleep(self.ttl_ms / 3000)
