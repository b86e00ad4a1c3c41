"""The one call pipeline: call events from the trackers → the caller's card (looked up once per call),
the lead rule, the notifier (never waited for) and the durable writer. `apply` does not await."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Protocol

import asyncpg

from crm import webhooks as webhooks_db
from crm.callers import CallerCard, CardLead, load_card
from crm.calls import SavedCall, lead_for_unknown_caller
from crm.leads import Lead, NewLead
from crm.matching import CallerMatch, find_caller
from crm.missed import MissedUpdate
from crm.phones import format_phone
from crm.routing_index import RoutingIndex
from crm.settings import Settings
from cti.calls import (
    AgentRinging,
    AgentRingStopped,
    AgentStateChanged,
    CallAnswered,
    CallEnded,
    CallRecord,
    CallStarted,
    CallTransferred,
)
from cti.writer import CallWriter

logger = logging.getLogger(__name__)

# With the routing index in memory a popup goes out at once with what the index knows (the name, company
# and manager of a known caller; the number of an unknown one) and the full card (the lead, recent calls)
# follows as a second popup for the same call: the phone is ringing now. Without the index the quick card
# is a bare number, so the popup waits this long for the database's card first. Short: with the database
# busy (a head's report, a burst of new leads) a 250 ms wait put popups at a p99 of 160+ ms, and even
# 30 ms was most of the p99 with the index loaded (bench/screenpop.py --realistic).
CARD_WAIT = 0.03
CARD_TIMEOUT = 5.0  # a lookup still running after this is given up (the database hangs)
_NOT_LOOKED_UP = object()


class CallNotifier(Protocol):
    """What the pipeline tells the outside world (browsers); web/ implements it. One method per event."""

    async def ringing(self, event: AgentRinging, card: CallerCard) -> None: ...

    async def ring_stopped(self, event: AgentRingStopped) -> None: ...

    async def answered(self, event: CallAnswered) -> None: ...

    async def transferred(self, event: CallTransferred) -> None: ...

    async def ended(self, event: CallEnded) -> None: ...

    async def call_logged(self, record: CallRecord, call_row_id: int) -> None: ...

    async def agent_state(self, event: AgentStateChanged) -> None: ...

    async def new_lead(self, event: NewLead) -> None: ...

    async def missed_changed(self, event: MissedUpdate) -> None: ...


class QuietNotifier:
    """For processes with nobody to tell (replay tools, tests of storage alone)."""

    async def ringing(self, event: AgentRinging, card: CallerCard) -> None:
        return None

    async def ring_stopped(self, event: AgentRingStopped) -> None:
        return None

    async def answered(self, event: CallAnswered) -> None:
        return None

    async def transferred(self, event: CallTransferred) -> None:
        return None

    async def ended(self, event: CallEnded) -> None:
        return None

    async def call_logged(self, record: CallRecord, call_row_id: int) -> None:
        return None

    async def agent_state(self, event: AgentStateChanged) -> None:
        return None

    async def new_lead(self, event: NewLead) -> None:
        return None

    async def missed_changed(self, event: MissedUpdate) -> None:
        return None

    async def call_event(self, event: object) -> None:
        return None


def new_lead_event(lead: Lead) -> NewLead:
    """The heads hear of it; the manager a distribution rule gave it to hears too."""
    return NewLead(lead.id, f"New lead: call from {format_phone(lead.phone_e164) if lead.phone_e164 else lead.title}",
                   lead.manager_id if lead.auto_assigned else None)


class CallPipeline:
    """Owns the live calls' cards and the order of notifications per call; hands finished calls to
    the writer. Notifications of one call are delivered in order; different calls never wait for
    each other, and nothing here waits for the database before a popup more than CARD_WAIT."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, notifier: CallNotifier, writer: CallWriter,
                 index: RoutingIndex | None = None, card_wait: float = CARD_WAIT) -> None:
        self.settings = settings
        self.pool = pool
        self.notifier = notifier
        self.writer = writer
        self.index = index  # the routing door's in-memory index, when there is one
        self.card_wait = card_wait
        self.lookups = 0  # card lookups started (one per call and number)
        self._cards: dict[tuple[str, str], tuple[str, asyncio.Task[CallerCard]]] = {}
        self._chains: dict[Hashable, asyncio.Task] = {}
        writer.on_saved = self._saved

    # ------------------------------------------------------------ the entry point (no await)

    def apply(self, pbx: str, events: list, generation: int = 0) -> None:
        for event in events:
            try:
                self._apply(event, generation)
            except Exception:
                logger.exception("call event %s of %s not applied", type(event).__name__, pbx)

    def _apply(self, event: object, generation: int) -> None:
        if isinstance(event, CallStarted):
            if event.direction == "inbound":
                self._card(event.pbx, event.call_id, event.caller, event.callee, event.caller_name, True)
            elif event.direction == "outbound":
                self._card(event.pbx, event.call_id, event.callee, "", "", False)
        elif isinstance(event, AgentRinging):
            card = self._card(event.pbx, event.call_id, event.caller, "", event.caller_name, False)
            self._notify((event.pbx, event.call_id), lambda: self._ringing(event, card))
            self._webhook("call.ringing", event, {"extension": event.extension, "caller": event.caller,
                                                  "caller_name": event.caller_name, "direction": event.direction})
        elif isinstance(event, AgentRingStopped):
            self._notify((event.pbx, event.call_id), lambda: self.notifier.ring_stopped(event))
        elif isinstance(event, CallAnswered):
            self._notify((event.pbx, event.call_id), lambda: self.notifier.answered(event))
            self._webhook("call.answered", event, {"extension": event.extension})
        elif isinstance(event, CallTransferred):
            self._notify((event.pbx, event.call_id), lambda: self.notifier.transferred(event))
        elif isinstance(event, CallEnded):
            self.writer.submit_call(event.record, generation)
            self._notify((event.pbx, event.call_id), lambda: self._ended(event))
        elif isinstance(event, AgentStateChanged):
            self._notify(("agent", event.pbx, event.extension), lambda: self.notifier.agent_state(event))

    def _webhook(self, name: str, event: AgentRinging | CallAnswered, data: dict) -> None:
        """Live call events for subscribed webhooks: queued in their own chain, never before or instead of a
        popup (the ended call is raised by the calls table's own trigger)."""
        body = {"pbx": event.pbx, "call_id": event.call_id, "at": event.ts, **data}

        async def enqueue() -> None:
            async with self.pool.acquire() as conn:
                await webhooks_db.enqueue(conn, name, body)

        self._notify(("webhook", event.pbx, event.call_id), enqueue)

    def forget(self, pbx: str) -> None:
        """The PBX's tracker starts afresh (lease lost): its live calls' cards go."""
        for key in [k for k in self._cards if k[0] == pbx]:
            self._cards.pop(key)[1].cancel()

    async def stop(self) -> None:
        for _, task in self._cards.values():
            task.cancel()
        pending = list(self._chains.values()) + [task for _, task in self._cards.values()]
        await asyncio.gather(*pending, return_exceptions=True)
        self._cards.clear()

    # ------------------------------------------------------------ notifications in order per call

    def _notify(self, key: Hashable, deliver: Callable[[], Awaitable[None]]) -> None:
        previous = self._chains.get(key)
        task = asyncio.create_task(self._after(previous, deliver))
        self._chains[key] = task
        task.add_done_callback(lambda done: self._chains.pop(key, None) if self._chains.get(key) is done else None)

    @staticmethod
    async def _after(previous: asyncio.Task | None, deliver: Callable[[], Awaitable[None]]) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        try:
            await deliver()
        except Exception:
            logger.exception("the notifier failed")

    async def _ringing(self, event: AgentRinging, card: asyncio.Task[CallerCard]) -> None:
        key = (event.pbx, event.call_id)
        try:
            if card.done() or self.index is None or not self.index.ready:
                shown = await asyncio.wait_for(asyncio.shield(card), self.card_wait)
            else:
                raise TimeoutError  # the index answers now; no loop turn spent waiting on the card
        except asyncio.CancelledError:
            if not card.cancelled():
                raise
            shown = self._quick_card(event.caller)
        except Exception:  # slow or failed: the phone rings now, a quick card beats no popup
            shown = self._quick_card(event.caller)
            if not card.done():
                card.add_done_callback(lambda _: self._notify(key, lambda: self._late_card(event, card)))
        await self.notifier.ringing(event, shown)

    async def _late_card(self, event: AgentRinging, card: asyncio.Task[CallerCard]) -> None:
        if (event.pbx, event.call_id) in self._cards and not card.cancelled() and card.exception() is None:
            await self.notifier.ringing(event, card.result())

    async def _ended(self, event: CallEnded) -> None:
        entry = self._cards.pop((event.pbx, event.call_id), None)
        if entry is not None and not entry[1].done():
            entry[1].cancel()
        await self.notifier.ended(event)

    def _saved(self, record: CallRecord, saved: SavedCall) -> None:
        key = (record.pbx, record.call_id)
        if saved.new_lead is not None:
            self._notify(key, lambda: self.notifier.new_lead(new_lead_event(saved.new_lead)))
        if saved.written:
            self._notify(key, lambda: self.notifier.call_logged(record, saved.id))
        for update in saved.missed_updates:
            self._notify(key, lambda update=update: self.notifier.missed_changed(update))

    # ------------------------------------------------------------ the caller's card, once per call

    def _card(self, pbx: str, call_id: str, number: str, line: str, caller_name: str,
              inbound: bool) -> asyncio.Task[CallerCard]:
        key = (pbx, call_id)
        known = self._cards.get(key)
        if known is not None and known[0] == number:
            return known[1]
        self.lookups += 1
        task = asyncio.create_task(self._look_up(number, line, caller_name, inbound), name=f"card-{call_id}")
        task.add_done_callback(_quiet)
        self._cards[key] = (number, task)
        return task

    def _indexed(self, number: str) -> object:
        if self.index is not None and self.index.ready:
            return self.index.find(number, self.settings.phone_region)
        return _NOT_LOOKED_UP

    def _quick_card(self, number: str) -> CallerCard:
        match = self._indexed(number)
        return CallerCard(number, match if isinstance(match, CallerMatch) else None)

    async def _look_up(self, number: str, line: str, caller_name: str, inbound: bool) -> CallerCard:
        if not number.startswith("+"):
            return CallerCard(number, complete=True)  # an extension or a withheld number: nothing to look up
        match = self._indexed(number)
        async with asyncio.timeout(CARD_TIMEOUT):
            async with self.pool.acquire() as conn:
                if match is _NOT_LOOKED_UP:
                    match = await find_caller(conn, number, self.settings.phone_region,
                                              self.settings.suffix_match_digits)
                lead = None
                if match is None and inbound:
                    caller_lead = await lead_for_unknown_caller(conn, number, line, caller_name)
                    if caller_lead is not None:
                        lead = CardLead(caller_lead.lead.id, caller_lead.lead.status, caller_lead.lead.name)
                        if caller_lead.created:
                            logger.info("new lead %d from a call of %s", lead.id, number)
                            event = new_lead_event(caller_lead.lead)
                            self._notify(("lead", lead.id), lambda: self.notifier.new_lead(event))
                return await load_card(conn, number, match, lead)

    async def lead_for_caller(self, number: str, line: str, caller_name: str = "") -> Lead | None:
        """The routing door's way to the one lead rule: the heads hear of a new lead live."""
        async with self.pool.acquire() as conn:
            caller_lead = await lead_for_unknown_caller(conn, number, line, caller_name)
        if caller_lead is None:
            return None
        if caller_lead.created:
            event = new_lead_event(caller_lead.lead)
            self._notify(("lead", caller_lead.lead.id), lambda: self.notifier.new_lead(event))
        return caller_lead.lead


def _quiet(task: asyncio.Task) -> None:
    """A lookup that failed is not an error of the call: the popup shows the quick card."""
    if not task.cancelled() and task.exception() is not None:
        logger.warning("caller lookup failed: %s", task.exception())
