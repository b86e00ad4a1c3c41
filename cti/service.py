"""Telephony service: AMI connectors → one ordered queue → CallTracker per PBX → call log + notifier."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from crm import calls as calls_db
from crm.leads import NewLead, get_or_create_phone_lead
from crm.matching import find_caller
from crm.settings import PbxSettings, Settings
from cti import events as ev
from cti.ami import AmiConnector
from cti.calls import AgentStateChanged, CallEnded, CallStarted, CallTracker, DirectionRules
from cti.lease import PbxLease

logger = logging.getLogger(__name__)

JOURNAL_FLUSH_SECONDS = 1.0
JOURNAL_KEEP = timedelta(days=14)
SAVE_RETRY_SECONDS = 2.0


class Notifier(Protocol):
    """What cti tells the outside world (browsers); web/ implements it. Must not raise."""

    async def call_event(self, event: object) -> None: ...


class QuietNotifier:
    """For processes with nobody to tell (replay tools, tests of storage alone)."""

    async def call_event(self, event: object) -> None:
        return None


def rules_from(settings: Settings) -> DirectionRules:
    return DirectionRules(frozenset(settings.trunk_endpoints), frozenset(settings.inbound_contexts),
                          settings.phone_region)


def _linkedid(event: ev.AmiEvent) -> str | None:
    channel = getattr(event, "channel", None) or getattr(event, "dest", None) or getattr(event, "caller", None)
    return channel.linkedid if isinstance(channel, ev.ChannelInfo) else None


class TelephonyService:
    """Owns the connectors, the trackers and the one consumer task; applies call events in order."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, notifier: Notifier,
                 pbxes: tuple[PbxSettings, ...] | None = None,
                 connector_factory: Callable[..., AmiConnector] = AmiConnector) -> None:
        self.settings = settings
        self.pool = pool
        self.notifier = notifier
        self.rules = rules_from(settings)
        pbx_list = settings.pbxes if pbxes is None else pbxes
        self.pbxes = {pbx.name: pbx for pbx in pbx_list}
        self.connector_factory = connector_factory
        self.queue: asyncio.Queue[tuple[str, ev.AmiEvent, str]] = asyncio.Queue()
        self.trackers = {pbx.name: CallTracker(pbx.name, self.rules) for pbx in pbx_list}
        self.connectors = {pbx.name: connector_factory(pbx, self.sink) for pbx in pbx_list}
        self.leases: dict[str, PbxLease] = {}
        self._redis = None
        self._shared_states: dict[str, dict[str, str]] = {}  # agent states of PBXes another node holds
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._journal: list[tuple[str, datetime, str | None, str]] = []
        self._unsaved: list[CallEnded] = []
        self._tasks: list[asyncio.Task] = []
        self.saved_calls = 0

    # The synchronous sink panoramisk's callback path calls: order is kept by the queue.
    def sink(self, pbx: str, event: ev.AmiEvent, raw: str) -> None:
        self.queue.put_nowait((pbx, event, raw))

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._consume(), name="ami-consumer"),
                       asyncio.create_task(self._every(JOURNAL_FLUSH_SECONDS, self._flush), name="ami-journal"),
                       asyncio.create_task(self._every(3600, self._purge_journal), name="journal-retention")]
        if self.settings.redis_url and self.pbxes:
            # Several nodes: each PBX is consumed by the node holding its lease, the others stand by.
            self._redis = aioredis.from_url(self.settings.redis_url)
            for name in self.pbxes:
                self.leases[name] = PbxLease(self._redis, name, self.node_id, self._acquired(name), self._lost(name))
                await self.leases[name].start()
            self._tasks.append(asyncio.create_task(self._every(1.0, self._read_shared_states), name="agent-states"))
        else:
            for connector in self.connectors.values():
                await connector.start()

    def _acquired(self, name: str):
        async def start() -> None:
            await self.connectors[name].start()
        return start

    def _lost(self, name: str):
        async def stop() -> None:
            # A closed connector cannot reconnect: a fresh one waits for the lease to come back.
            await self.connectors[name].close()
            self.connectors[name] = self.connector_factory(self.pbxes[name], self.sink)
        return stop

    async def stop(self) -> None:
        for lease in self.leases.values():
            await lease.stop()
        if self._redis is not None:
            await self._redis.aclose()
        for connector in self.connectors.values():
            await connector.close()
        await self.drain()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._flush()

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued event has been applied (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while (self.queue.qsize() or self.queue._unfinished_tasks) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _every(self, seconds: float, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:
                logger.exception("periodic job %s failed; it runs again later", job.__name__)

    async def _consume(self) -> None:
        while True:
            pbx, event, raw = await self.queue.get()
            try:
                self._journal.append((pbx, datetime.now(UTC), _linkedid(event), raw))
                for call_event in self.trackers[pbx].handle(event):
                    await self._apply(call_event)
            except Exception:
                logger.exception("AMI event from %s could not be applied: %.120r", pbx, raw)
            finally:
                self.queue.task_done()

    async def _apply(self, call_event: object) -> None:
        if isinstance(call_event, CallEnded):
            self._unsaved.append(call_event)
            await self._save_pending()
        elif isinstance(call_event, CallStarted) and call_event.direction == "inbound":
            await self._lead_for_unknown_caller(call_event)
        elif isinstance(call_event, AgentStateChanged) and self._redis is not None:
            await self._share_state(call_event)
        try:
            await self.notifier.call_event(call_event)
        except Exception:
            logger.exception("notifier failed on %s", type(call_event).__name__)

    async def _save_pending(self) -> None:
        """Write finished calls; on a database failure keep them and try again, never drop one."""
        while self._unsaved:
            ended = self._unsaved[0]
            try:
                async with self.pool.acquire() as conn:
                    saved = await calls_db.save_call(
                        conn, ended.record, self.settings.phone_region, self.settings.suffix_match_digits,
                        self.settings.hours, timedelta(minutes=self.settings.callback_minutes))
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                logger.error("call %s not saved yet (%s); %d waiting", ended.call_id, exc, len(self._unsaved))
                asyncio.get_running_loop().call_later(SAVE_RETRY_SECONDS, self._retry_save)
                return
            self._unsaved.pop(0)
            self.saved_calls += 1
            for update in saved.missed_updates:
                try:
                    await self.notifier.call_event(update)
                except Exception:
                    logger.exception("notifier failed on a missed-call update")

    async def _share_state(self, change: AgentStateChanged) -> None:
        """Routing on any node needs to know whose phone is busy: the lease holder publishes states."""
        try:
            await self._redis.hset(f"callboard:agents:{change.pbx}", change.extension, change.state)
        except RedisError as exc:
            logger.warning("agent state of %s not shared: %s", change.extension, exc)

    async def _read_shared_states(self) -> None:
        for name, lease in self.leases.items():
            if not lease.holding:
                raw = await self._redis.hgetall(f"callboard:agents:{name}")
                self._shared_states[name] = {k.decode(): v.decode() for k, v in raw.items()}

    async def _lead_for_unknown_caller(self, started: CallStarted) -> None:
        """An unknown number becomes a lead as soon as its call appears (withheld numbers never do)."""
        if not started.caller.startswith("+"):
            return
        created = False
        try:
            async with self.pool.acquire() as conn:
                if await find_caller(conn, started.caller, self.settings.phone_region,
                                     self.settings.suffix_match_digits) is None:
                    lead, created = await get_or_create_phone_lead(conn, started.caller, started.callee,
                                                                   started.caller_name)
            if created:
                logger.info("new lead %d from a call of %s", lead.id, started.caller)
                await self.notifier.call_event(NewLead(lead.id, f"New lead: call from {started.caller}"))
        except (OSError, asyncpg.PostgresError) as exc:
            # The call's end links the lead again (save_call), so nothing is lost.
            logger.warning("lead for %s not created at call start: %s", started.caller, exc)

    def _retry_save(self) -> None:
        task = asyncio.create_task(self._save_pending())
        self._tasks.append(task)

    async def _flush(self) -> None:
        if not self._journal:
            return
        rows, self._journal = self._journal, []
        try:
            async with self.pool.acquire() as conn:
                await calls_db.append_journal(conn, rows)
        except (OSError, asyncpg.PostgresError) as exc:
            logger.error("AMI journal not written (%s); keeping %d rows for the next try", exc, len(rows))
            self._journal = rows + self._journal

    async def _purge_journal(self) -> None:
        async with self.pool.acquire() as conn:
            removed = await calls_db.purge_journal(conn, JOURNAL_KEEP, datetime.now(UTC))
        if removed:
            logger.info("AMI journal: removed %d events older than %s", removed, JOURNAL_KEEP)

    # ------------------------------------------------------------ what the web asks

    def pbx_status(self) -> dict[str, dict[str, object]]:
        status = {}
        for name, c in self.connectors.items():
            state, detail = c.state.state, c.state.detail
            if name in self.leases and not self.leases[name].holding:
                state, detail = "standby", "another node holds this PBX's lease"
            status[name] = {"state": state, "detail": detail, "events": c.events,
                            "since": datetime.fromtimestamp(c.state.since, UTC).isoformat(timespec="seconds")}
        return status

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

    async def originate(self, pbx: str, extension: str, number: str, caller_name: str) -> str:
        """Click-to-call: ring the agent's phone, then dial the number from it (outbound context)."""
        connector = self.connectors.get(pbx)
        if connector is None:
            raise LookupError(f"no PBX named {pbx!r}")
        # Everything below goes into an AMI action: no line breaks, no header smuggling.
        if not re.fullmatch(r"\d{2,6}", extension) or not re.fullmatch(r"\+?\d{3,20}", number):
            raise ValueError("extension must be 2-6 digits and the number 3-20 digits")
        caller_name = re.sub(r'[\r\n"<>\\]', "", caller_name)[:40]
        action_id = f"c2c-{extension}-{int(time.time() * 1000)}"
        channel = self.settings.originate_channel.format(extension=extension)
        response = await connector.originate(channel, self.settings.outbound_context, number,
                                             f'"{caller_name}" <{extension}>', action_id=action_id)
        if not response.success:
            raise ConnectionError(response.get("Message", "the PBX refused the call"))
        return action_id
