"""socket.io: authenticated connections, rooms per user / extension / board, and the notifier that
turns call events into screen-pops and live updates. The only code that talks to browsers live."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import socketio
from aiohttp import web

from crm import users as users_db
from crm.callers import CallerCard
from crm.leadrules import LeadsWaiting
from crm.leads import NewLead
from crm.missed import MissedUpdate
from crm.phones import format_phone
from crm.settings import Settings
from crm.tasks import Reminder
from cti.calls import (
    AgentRinging,
    AgentRingStopped,
    AgentStateChanged,
    CallAnswered,
    CallEnded,
    CallRecord,
    CallTransferred,
)
from web import keys
from web.auth import SESSION_COOKIE
from web.deals import StuckDeal
from web.mailserver import MailReceived
from web.metrics import METRICS
from web.sockets import session_room
from web.tasks import reminder_json

logger = logging.getLogger(__name__)

BOARD_ROOM = "board"
# Unassigned missed callers are every manager's to see, but only a manager with the board open needs
# to hear of them: the page joins this room ("watch"), so a missed call is not sent to every socket.
MISSED_WATCH_ROOM = "missed-watch"
# Board changes within this window go out as one small event per room (the changed row ids):
# a burst of missed calls is one delta for the board, not one page refresh per call.
MISSED_COALESCE = 0.25


def user_room(user_id: int) -> str:
    return f"user:{user_id}"


def extension_room(extension: str) -> str:
    return f"ext:{extension}"


def create_sio(settings: Settings) -> socketio.AsyncServer:
    """With REDIS_URL, events emitted on one node reach sockets connected to any node."""
    manager = socketio.AsyncRedisManager(settings.redis_url) if settings.redis_url else None
    return socketio.AsyncServer(async_mode="aiohttp", client_manager=manager, logger=False, engineio_logger=False)


def register_handlers(sio: socketio.AsyncServer, app: web.Application) -> None:
    async def connect(sid: str, environ: dict, auth: Any = None) -> None:
        request: web.Request = environ["aiohttp.request"]
        token = request.cookies.get(SESSION_COOKIE)
        session = None
        if token:
            async with app[keys.POOL].acquire() as conn:
                session = await users_db.get_session(conn, token, app[keys.SETTINGS].session_secret)
        if session is None:
            raise socketio.exceptions.ConnectionRefusedError("log in first")
        user = session.user
        await sio.save_session(sid, {"user_id": user.id, "role": user.role, "extension": user.extension})
        await sio.enter_room(sid, session_room(app, token))  # logout cuts it (web.sockets)
        await sio.enter_room(sid, user_room(user.id))
        if user.extension:
            await sio.enter_room(sid, extension_room(user.extension))
        if user.sees_everything:
            await sio.enter_room(sid, BOARD_ROOM)
            telephony = app.get(keys.TELEPHONY)
            if telephony is not None:
                await sio.emit("agent_states", telephony.agent_states(), to=sid)

    async def watch(sid: str, page: Any = None) -> None:
        """A page with live rows says what it shows; heads hear of every row in the board room already."""
        session = await sio.get_session(sid)
        if page == "missed" and session.get("role") not in ("head", "admin"):
            await sio.enter_room(sid, MISSED_WATCH_ROOM)

    sio.on("connect", connect)
    sio.on("watch", watch)


class SocketNotifier:
    """Implements cti.pipeline.CallNotifier: one method per event, emits to the right rooms only.
    Runs no SQL: the caller's card comes from the pipeline."""

    def __init__(self, sio: socketio.AsyncServer, coalesce: float = MISSED_COALESCE) -> None:
        self.sio = sio
        self.coalesce = coalesce
        # Which extensions got a popup for which call, so updates reach exactly them.
        self.popped: dict[tuple[str, str], set[str]] = {}
        self._missed: dict[str, dict[int, str]] = {}  # room → changed row id → latest kind, not yet sent
        self._flusher: asyncio.Task | None = None
        self.on_popup: Callable[[float], None] | None = None  # the metrics' popup delay histogram

    # ------------------------------------------------------------ call events

    async def ringing(self, event: AgentRinging, card: CallerCard) -> None:
        popped = self.popped.setdefault((event.pbx, event.call_id), set())
        first = event.extension not in popped  # not the full card following the quick one
        popped.add(event.extension)
        await self.sio.emit("popup", popup_payload(event, card), room=extension_room(event.extension))
        if self.on_popup is not None and first:
            self.on_popup(max(0.0, time.time() - event.ts))

    async def ring_stopped(self, event: AgentRingStopped) -> None:
        await self.sio.emit("popup_update", {"call_id": event.call_id, "state": "stopped",
                                             "answered_by": event.answered_by},
                            room=extension_room(event.extension))

    async def answered(self, event: CallAnswered) -> None:
        await self._update_popped(event.pbx, event.call_id, {"call_id": event.call_id, "state": "answered",
                                                             "answered_by": event.extension})

    async def transferred(self, event: CallTransferred) -> None:
        """The agent who passed the call on is told it left them ("transferred_away": the popup closes) and
        follows it no further; whoever still shows it learns where it went."""
        popped = self.popped.get((event.pbx, event.call_id), set())
        source = event.transfer.from_
        for extension in sorted(popped):
            state = "transferred_away" if extension == source else "transferred"
            await self.sio.emit("popup_update", {"call_id": event.call_id, "state": state,
                                                 "answered_by": event.transfer.to, "from": source},
                                room=extension_room(extension))
        if source is not None and source != event.transfer.to:
            popped.discard(source)

    async def ended(self, event: CallEnded) -> None:
        body = _ended_body(event.record)
        for extension in self.popped.pop((event.pbx, event.call_id), ()):
            await self.sio.emit("popup_update", {**body, "state": "ended"}, room=extension_room(extension))

    async def call_logged(self, record: CallRecord, call_row_id: int) -> None:
        """The row is in the call log now: "My calls" and the board refresh from the API (ids only)."""
        body = {**_ended_body(record), "id": call_row_id}
        owners = {record.answered_by, record.caller if record.direction != "inbound" else None} - {None}
        for extension in owners:
            await self.sio.emit("call_logged", body, room=extension_room(extension))
        await self.sio.emit("call_logged", body, room=BOARD_ROOM)

    async def agent_state(self, event: AgentStateChanged) -> None:
        await self.sio.emit("agent_state", {"extension": event.extension, "state": event.state}, room=BOARD_ROOM)

    async def new_lead(self, event: NewLead) -> None:
        await self.sio.emit("task", {"text": event.text, "lead_id": event.lead_id}, room=BOARD_ROOM)
        if event.manager_id is not None:  # a distribution rule gave it to this manager
            await self.sio.emit("task", {"text": event.text, "lead_id": event.lead_id, "assigned": True},
                                room=user_room(event.manager_id))

    async def leads_waiting(self, event: LeadsWaiting) -> None:
        """Leads past the head's limits (nobody assigned, or nobody acted): told to the heads, once each."""
        for text, lead_id in event.alerts:
            await self.sio.emit("task", {"text": text, "lead_id": lead_id, "waiting": True}, room=BOARD_ROOM)

    async def missed_changed(self, event: MissedUpdate) -> None:
        """Only noted here; the coalesced room emits leave from their own task (see _flush_missed)."""
        self._note_missed(BOARD_ROOM, event)
        self._note_missed(user_room(event.manager_id) if event.manager_id is not None else MISSED_WATCH_ROOM, event)
        if event.task_assignee_id is not None:
            await self.sio.emit("task", {"row_id": event.row_id, "text": "New callback task"},
                                room=user_room(event.task_assignee_id))

    # ------------------------------------------------------------ other domain events

    async def stuck_deal(self, event: StuckDeal) -> None:
        body = {"text": f"Deal stuck at “{event.stage_name}”: {event.title}", "deal_id": event.deal_id}
        if event.manager_id is not None:
            await self.sio.emit("task", body, room=user_room(event.manager_id))
        await self.sio.emit("task", body, room=BOARD_ROOM)

    async def mail_received(self, event: MailReceived) -> None:
        await self.sio.emit("task", {"text": event.text}, room=user_room(event.user_id))

    async def task_reminder(self, reminder: Reminder) -> None:
        """A task's reminder, at its time, to its assignee only (web.tasks sends each once)."""
        await self.sio.emit("reminder", reminder_json(reminder), room=user_room(reminder.assignee_id))

    async def call_event(self, event: object) -> None:
        """For the web doors that hand over any domain event (deals, mail, missed board)."""
        if isinstance(event, AgentRinging):
            await self.ringing(event, CallerCard(event.caller))
        elif isinstance(event, NewLead):
            await self.new_lead(event)
        elif isinstance(event, LeadsWaiting):
            await self.leads_waiting(event)
        elif isinstance(event, MissedUpdate):
            await self.missed_changed(event)
        elif isinstance(event, StuckDeal):
            await self.stuck_deal(event)
        elif isinstance(event, MailReceived):
            await self.mail_received(event)
        elif isinstance(event, AgentStateChanged):
            await self.agent_state(event)
        elif isinstance(event, Reminder):
            await self.task_reminder(event)
        else:
            logger.debug("no live push for %s", type(event).__name__)

    def _note_missed(self, room: str, event: MissedUpdate) -> None:
        self._missed.setdefault(room, {})[event.row_id] = event.kind
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_missed(), name="missed-board-flush")

    async def _flush_missed(self) -> None:
        """One emit per room for every board change of the window: {"rows": [{"row_id", "kind"}, …]}."""
        await asyncio.sleep(self.coalesce)
        pending, self._missed, self._flusher = self._missed, {}, None
        for room, rows in pending.items():
            body = {"rows": [{"row_id": row_id, "kind": kind} for row_id, kind in rows.items()]}
            try:
                await self.sio.emit("missed_changed", body, room=room)
            except Exception:
                logger.exception("missed-board update to %s not sent", room)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None

    async def _update_popped(self, pbx: str, call_id: str, body: dict[str, Any]) -> None:
        for extension in self.popped.get((pbx, call_id), ()):
            await self.sio.emit("popup_update", body, room=extension_room(extension))


def _ended_body(record: CallRecord) -> dict[str, Any]:
    return {"call_id": record.call_id, "outcome": record.outcome, "talk_seconds": record.talk_seconds,
            "answered_by": record.answered_by}


def popup_payload(event: AgentRinging, card: CallerCard) -> dict[str, Any]:
    """What the ringing manager needs at a glance. Plain data: the browser renders it as text."""
    number = event.caller
    match = card.match
    return {
        "call_id": event.call_id, "pbx": event.pbx, "number": number, "ringing_since": event.ts,
        "display": format_phone(number) if number.startswith("+") else (number or "withheld"),
        "caller_name": event.caller_name, "direction": event.direction, "originated": event.originated,
        "contact": {"id": match.contact_id, "name": match.contact_name} if match and match.contact_id else None,
        "company": {"id": match.company_id, "name": match.company_name} if match and match.company_id else None,
        "manager": match.manager_name if match else None,
        "manager_id": match.manager_id if match else None,
        "lead": {"id": card.lead.id, "status": card.lead.status, "name": card.lead.name} if card.lead else None,
        "history": [{"when": c.when.isoformat(), "kind": "call", "direction": c.direction, "outcome": c.outcome,
                     "talk_seconds": c.talk_seconds, "who": c.who} for c in card.history],
        "deals": [{"id": d.id, "title": d.title, "stage": d.stage} for d in card.deals],
        "complete": card.complete,
    }


def setup(app: web.Application) -> None:
    sio = create_sio(app[keys.SETTINGS])
    app[keys.SIO] = sio
    notifier = app[keys.NOTIFIER] = SocketNotifier(sio)
    if METRICS in app:  # metrics.setup ran first: popups feed its delay histogram
        notifier.on_popup = app[METRICS].popup.observe
    register_handlers(sio, app)

    async def close_notifier(app: web.Application) -> None:
        await notifier.close()

    app.on_cleanup.append(close_notifier)
    sio.attach(app)
