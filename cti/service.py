"""Telephony service: AMI connectors → one ordered queue → CallTracker per PBX → the call pipeline.

The one consumer task feeds the trackers and hands their call events to the pipeline; it awaits
nothing but its queue (no database, no Redis, no browsers)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from crm import calls as calls_db
from crm.devices import list_device_map
from crm.routing_index import RoutingIndex
from crm.settings import PbxSettings, Settings
from cti import events as ev
from cti.ami import AmiConnector
from cti.backfill import backfill
from cti.calls import AgentStateChanged, CallEnded, CallTracker, DirectionRules
from cti.lease import PbxLease
from cti.pipeline import CallNotifier, CallPipeline, QuietNotifier
from cti.writer import CallWriter

__all__ = ["CallNotifier", "QuietNotifier", "TelephonyService", "rules_from"]

logger = logging.getLogger(__name__)

JOURNAL_FLUSH_SECONDS = 1.0
JOURNAL_KEEP = timedelta(days=14)
DEVICES_REFRESH_SECONDS = 30.0
# How long a backfill waits for the resync, and how old a gap a restart still backfills.
RESYNC_WAIT_SECONDS = 15.0
BACKFILL_HORIZON = 24 * 3600.0
STATES_SHARE_SECONDS = 0.25


def rules_from(settings: Settings) -> DirectionRules:
    return DirectionRules(frozenset(settings.trunk_endpoints), frozenset(settings.inbound_contexts),
                          settings.phone_region, settings.devices)


def _linkedid(event: ev.AmiEvent) -> str | None:
    channel = getattr(event, "channel", None) or getattr(event, "dest", None) or getattr(event, "caller", None)
    return channel.linkedid if isinstance(channel, ev.ChannelInfo) else None


class TelephonyService:
    """Owns the connectors, the trackers, the leases and the one consumer task."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, notifier: CallNotifier,
                 pbxes: tuple[PbxSettings, ...] | None = None,
                 connector_factory: Callable[..., AmiConnector] = AmiConnector,
                 index: RoutingIndex | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.notifier = notifier
        self.rules = rules_from(settings)
        pbx_list = settings.pbxes if pbxes is None else pbxes
        self.pbxes = {pbx.name: pbx for pbx in pbx_list}
        self.connector_factory = connector_factory
        # (pbx, epoch, event, raw): events of a connector from before a lost lease are dropped.
        self.queue: asyncio.Queue[tuple[str, int, ev.AmiEvent, str]] = asyncio.Queue()
        self._epochs = {pbx.name: 0 for pbx in pbx_list}
        self.trackers = {pbx.name: CallTracker(pbx.name, self.rules) for pbx in pbx_list}
        self.connectors = {pbx.name: self._new_connector(pbx.name) for pbx in pbx_list}
        self.writer = CallWriter(settings, pool)
        self.pipeline = CallPipeline(settings, pool, notifier, self.writer, index)
        self.leases: dict[str, PbxLease] = {}
        self._redis = None
        self._shared_states: dict[str, dict[str, str]] = {}  # agent states of PBXes another node holds
        self._states_out: dict[str, dict[str, str]] = {}  # agent states to publish for the PBXes we hold
        self._devices: dict[str, str] | None = None
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._journal: list[tuple[str, datetime, str | None, str]] = []
        self._tasks: list[asyncio.Task] = []
        self._backfills: set[asyncio.Task] = set()

    @property
    def saved_calls(self) -> int:
        """Calls written to the database by this process (replays of the spool included)."""
        return self.writer.saved_calls

    def use_index(self, index: RoutingIndex | None) -> None:
        """The routing door's in-memory index: the pipeline looks callers up there first."""
        self.pipeline.index = index

    def _new_connector(self, name: str) -> AmiConnector:
        epoch = self._epochs[name]

        def sink(pbx: str, event: ev.AmiEvent, raw: str) -> None:
            self.queue.put_nowait((pbx, epoch, event, raw))
        connector = self.connector_factory(self.pbxes[name], sink)
        connector.on_outage = self._on_outage
        return connector

    # The synchronous sink panoramisk's callback path calls: order is kept by the queue.
    def sink(self, pbx: str, event: ev.AmiEvent, raw: str) -> None:
        self.queue.put_nowait((pbx, self._epochs.get(pbx, 0), event, raw))

    async def start(self) -> None:
        await self.writer.start()
        self._tasks = [asyncio.create_task(self._consume(), name="ami-consumer"),
                       asyncio.create_task(self._every(JOURNAL_FLUSH_SECONDS, self._flush), name="ami-journal"),
                       asyncio.create_task(self._every(3600, self._purge_journal), name="journal-retention"),
                       asyncio.create_task(self._every(DEVICES_REFRESH_SECONDS, self.refresh_devices, at_once=True),
                                           name="device-map")]
        if self.settings.redis_url and self.pbxes:
            # Several nodes: each PBX is consumed by the node holding its lease, the others stand by.
            self._redis = aioredis.from_url(self.settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
            for name in self.pbxes:
                self.leases[name] = PbxLease(self._redis, name, self.node_id, self._acquired(name), self._lost(name))
                await self.leases[name].start()
            self._tasks += [asyncio.create_task(self._every(1.0, self._read_shared_states), name="agent-states"),
                            asyncio.create_task(self._every(STATES_SHARE_SECONDS, self._share_states),
                                                name="agent-states-out")]
        else:
            for connector in self.connectors.values():
                await connector.start()
        self._tasks += [asyncio.create_task(self._backfill_after_restart(name), name=f"backfill-start-{name}")
                        for name in self.pbxes]

    def _fresh_tracker(self, name: str) -> None:
        self.trackers[name] = CallTracker(name, self.rules)
        if self._devices is not None:
            self.trackers[name].set_devices(self._devices)

    def _acquired(self, name: str):
        async def start(generation: int) -> None:
            # Whatever this node knew of the PBX's calls is stale now: the resync on login rebuilds it.
            self._fresh_tracker(name)
            self.pipeline.forget(name)
            await self.connectors[name].start()
        return start

    def _lost(self, name: str):
        async def stop() -> None:
            # A closed connector cannot reconnect: a fresh one waits for the lease to come back.
            self._epochs[name] += 1
            await self.connectors[name].close()
            self.connectors[name] = self._new_connector(name)
            self.pipeline.forget(name)
        return stop

    async def stop(self) -> None:
        for lease in self.leases.values():
            await lease.stop()
        if self._redis is not None:
            await self._redis.aclose()
        for connector in self.connectors.values():
            await connector.close()
        await self.drain()
        for task in [*self._tasks, *self._backfills]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._backfills, return_exceptions=True)
        await self._flush()
        await self.pipeline.stop()
        await self.writer.stop()

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued event has been applied and written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while (self.queue.qsize() or self.queue._unfinished_tasks) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await self._flush()
        await self.writer.drain(max(0.0, deadline - time.monotonic()))

    async def _every(self, seconds: float, job: Callable[[], Awaitable[object]], at_once: bool = False) -> None:
        if not at_once:
            await asyncio.sleep(seconds)
        while True:
            try:
                await job()
            except Exception:
                logger.exception("periodic job %s failed; it runs again later", job.__name__)
            await asyncio.sleep(seconds)

    async def _consume(self) -> None:
        while True:
            pbx, epoch, event, raw = await self.queue.get()
            try:
                if epoch != self._epochs[pbx]:
                    continue  # sent before this node lost the PBX's lease
                self._journal.append((pbx, datetime.now(UTC), _linkedid(event), raw))
                call_events = self.trackers[pbx].handle(event)
                lease = self.leases.get(pbx)
                self.pipeline.apply(pbx, call_events, lease.generation if lease is not None else 0)
                if self._redis is not None:
                    for change in call_events:
                        if isinstance(change, AgentStateChanged):
                            self._states_out.setdefault(pbx, {})[change.extension] = change.state
            except Exception:
                logger.exception("AMI event from %s could not be applied: %.120r", pbx, raw)
            finally:
                self.queue.task_done()

    async def _share_states(self) -> None:
        """Routing on any node needs to know whose phone is busy: the lease holder publishes states."""
        pending, self._states_out = self._states_out, {}
        for pbx, states in pending.items():
            try:
                await self._redis.hset(f"callboard:agents:{pbx}", mapping=states)
            except RedisError as exc:
                logger.warning("agent states of %s not shared: %s", pbx, exc)

    async def _read_shared_states(self) -> None:
        for name, lease in self.leases.items():
            if not lease.holding:
                raw = await self._redis.hgetall(f"callboard:agents:{name}")
                self._shared_states[name] = {k.decode(): v.decode() for k, v in raw.items()}

    async def refresh_devices(self) -> None:
        """Reload the users' devices: at start, every DEVICES_REFRESH_SECONDS (changes made on another
        node), and at once when this node's admin page or API changes them. A poll, not LISTEN: a
        connection held for ever per node and per purpose starves small pools."""
        async with self.pool.acquire() as conn:
            self._set_devices(await list_device_map(conn))

    def _set_devices(self, devices: dict[str, str]) -> None:
        """Device names (SIP/150010001) → the users' extensions."""
        # Devices given in the settings count too; the users page wins where both name one.
        self._devices = devices = {**dict(self.settings.devices), **devices}
        for tracker in self.trackers.values():
            tracker.set_devices(devices)

    # ------------------------------------------------------------ calls that happened while we were away

    def _on_outage(self, pbx: str, lost: float, back: float) -> None:
        """The link to a PBX was down from `lost` to `back`: the PBX's CDR may hold the calls of the gap."""
        if not (self.settings.cdr_url or self.settings.cdr_csv):
            return
        task = asyncio.create_task(self._backfill(pbx, lost, back), name=f"backfill-{pbx}")
        self._backfills.add(task)
        task.add_done_callback(self._backfills.discard)

    async def _backfill_after_restart(self, pbx: str) -> None:
        """After a restart (or a kill -9) the gap starts at the last event this PBX sent us."""
        if not (self.settings.cdr_url or self.settings.cdr_csv):
            return
        async with self.pool.acquire() as conn:
            last = await calls_db.last_journal_time(conn, pbx)
        if last is None or time.time() - last.timestamp() > BACKFILL_HORIZON:
            return
        deadline = time.monotonic() + 60
        while self.connectors[pbx].state.state != "connected" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await self._backfill(pbx, last.timestamp(), time.time())

    async def _backfill(self, pbx: str, lost: float, back: float) -> None:
        # Wait for the resync first: calls still live, or known, are the tracker's, never the CDR's.
        deadline = time.monotonic() + RESYNC_WAIT_SECONDS
        while self.trackers[pbx].resyncing and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        records = await backfill(self.settings, pbx, lost, back, self.trackers[pbx].known_call_ids())
        if records:
            lease = self.leases.get(pbx)
            self.pipeline.apply(pbx, [CallEnded(pbx, r.call_id, r.ended_at or back, r) for r in records],
                                lease.generation if lease is not None else 0)
            logger.info("%s: %d call(s) of the outage backfilled from the CDR", pbx, len(records))

    async def _flush(self) -> None:
        rows, self._journal = self._journal, []
        self.writer.submit_journal(rows)

    async def _purge_journal(self) -> None:
        async with self.pool.acquire() as conn:
            removed = await calls_db.purge_journal(conn, JOURNAL_KEEP, datetime.now(UTC))
        if removed:
            logger.info("AMI journal: removed %d events older than %s", removed, JOURNAL_KEEP)

    # ------------------------------------------------------------ what the web asks

    def pbx_status(self) -> dict[str, dict[str, object]]:
        """Per PBX: the link's state, and whether this node reads it (`reading`) or stands by."""
        status = {}
        for name, c in self.connectors.items():
            state, detail = c.state.state, c.state.detail
            lease = self.leases.get(name)
            if lease is not None and not lease.holding:
                state, detail = "standby", ("another node holds this PBX's lease" if lease.redis_ok
                                            else "Redis unreachable: cannot tell whether another node reads this PBX")
            status[name] = {"state": state, "detail": detail, "events": c.events,
                            "reading": state == "connected",
                            "since": datetime.fromtimestamp(c.state.since, UTC).isoformat(timespec="seconds")}
            if lease is not None:
                status[name]["lease"] = {"holding": lease.holding, "generation": lease.generation}
        return status

    def sees_calls(self, pbx: str | None = None) -> bool:
        """Whether the call pipeline sees that PBX's calls now (every PBX's, without a name): this node
        reads its AMI, or another node holds its lease. Not when a link is down or Redis cannot tell."""
        names = [pbx] if pbx in self.connectors else list(self.connectors)
        if not names:
            return False
        for name in names:
            lease = self.leases.get(name)
            if lease is not None and not lease.holding:
                if not lease.redis_ok:
                    return False
            elif self.connectors[name].state.state != "connected":
                return False
        return True

    def redis_status(self) -> str | None:
        """None without Redis; 'ok' or 'unreachable' as the leases last heard it."""
        if not self.leases:
            return None
        return "unreachable" if any(lease.redis_ok is False for lease in self.leases.values()) else "ok"

    async def check_redis(self) -> str | None:
        """None without Redis; whether it answers a PING now ('ok' / 'unreachable')."""
        if self._redis is None:
            return None
        try:
            async with asyncio.timeout(1):
                await self._redis.ping()
        except (RedisError, OSError, TimeoutError):
            return "unreachable"
        return "ok"

    def writer_status(self) -> dict[str, object]:
        return {"waiting": self.writer.waiting, "failures": self.writer.failures,
                "last_error": self.writer.last_error if self.writer.failures else ""}

    def agent_states(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for tracker in self.trackers.values():
            merged.update(tracker.agent_states())
        return merged

    def agent_state(self, extension: str, pbx: str | None = None) -> str | None:
        """The extension's state on that PBX (or on any), None when never seen."""
        names = [pbx] if pbx in self.trackers else list(self.trackers)
        for name in names:
            lease = self.leases.get(name)
            states = (self._shared_states.get(name, {}) if lease is not None and not lease.holding
                      else self.trackers[name].agent_states())
            if extension in states:
                return states[extension]
        return None

    def default_pbx(self) -> str | None:
        return next(iter(self.connectors), None)
