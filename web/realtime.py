"""socket.io: authenticated connections, rooms per user / extension / board, and the notifier that
turns call events into screen-pops and live updates. The only code that talks to browsers live."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import socketio
from aiohttp import web

from crm import calls as calls_db
from crm import deals as deals_db
from crm import leads as leads_db
from crm import users as users_db
from crm.leads import NewLead
from crm.matching import find_caller
from crm.missed import MissedUpdate
from crm.phones import format_phone
from crm.settings import Settings
from cti.calls import AgentRinging, AgentRingStopped, AgentStateChanged, CallAnswered, CallEnded, CallTransferred
from web import keys
from web.auth import SESSION_COOKIE
from web.deals import StuckDeal
from web.mailserver import MailReceived
from web.sockets import session_room

logger = logging.getLogger(__name__)

BOARD_ROOM = "board"
MANAGERS_ROOM = "managers"  # unassigned missed callers are everyone's to see


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
        await sio.enter_room(sid, MANAGERS_ROOM)
        if user.sees_everything:
            await sio.enter_room(sid, BOARD_ROOM)
            telephony = app.get(keys.TELEPHONY)
            if telephony is not None:
                await sio.emit("agent_states", telephony.agent_states(), to=sid)

    sio.on("connect", connect)


class SocketNotifier:
    """Implements cti.service.Notifier: one method per call event, emits to the right rooms only."""

    def __init__(self, sio: socketio.AsyncServer, pool: asyncpg.Pool, settings: Settings) -> None:
        self.sio = sio
        self.pool = pool
        self.settings = settings
        # Which extensions got a popup for which call, so updates reach exactly them.
        self.popped: dict[tuple[str, str], set[str]] = {}

    async def call_event(self, event: object) -> None:
        if isinstance(event, AgentRinging):
            await self._popup(event)
        elif isinstance(event, AgentRingStopped):
            await self.sio.emit("popup_update", {"call_id": event.call_id, "state": "stopped",
                                                 "answered_by": event.answered_by},
                                room=extension_room(event.extension))
        elif isinstance(event, CallAnswered):
            for extension in self.popped.get((event.pbx, event.call_id), ()):
                await self.sio.emit("popup_update", {"call_id": event.call_id, "state": "answered",
                                                     "answered_by": event.extension},
                                    room=extension_room(extension))
        elif isinstance(event, CallTransferred):
            for extension in self.popped.get((event.pbx, event.call_id), ()):
                await self.sio.emit("popup_update", {"call_id": event.call_id, "state": "transferred",
                                                     "answered_by": event.transfer.to},
                                    room=extension_room(extension))
        elif isinstance(event, CallEnded):
            await self._ended(event)
        elif isinstance(event, NewLead):
            await self.sio.emit("task", {"text": event.text, "lead_id": event.lead_id}, room=BOARD_ROOM)
        elif isinstance(event, StuckDeal):
            body = {"text": f"Deal stuck at “{event.stage_name}”: {event.title}", "deal_id": event.deal_id}
            if event.manager_id is not None:
                await self.sio.emit("task", body, room=user_room(event.manager_id))
            await self.sio.emit("task", body, room=BOARD_ROOM)
        elif isinstance(event, MailReceived):
            await self.sio.emit("task", {"text": event.text}, room=user_room(event.user_id))
        elif isinstance(event, MissedUpdate):
            body = {"row_id": event.row_id, "kind": event.kind}
            await self.sio.emit("missed_changed", body, room=BOARD_ROOM)
            if event.manager_id is not None:
                await self.sio.emit("missed_changed", body, room=user_room(event.manager_id))
            else:
                await self.sio.emit("missed_changed", body, room=MANAGERS_ROOM)
            if event.task_assignee_id is not None:
                await self.sio.emit("task", {"row_id": event.row_id, "text": "New callback task"},
                                    room=user_room(event.task_assignee_id))
        elif isinstance(event, AgentStateChanged):
            await self.sio.emit("agent_state", {"extension": event.extension, "state": event.state},
                                room=BOARD_ROOM)

    async def _popup(self, event: AgentRinging) -> None:
        self.popped.setdefault((event.pbx, event.call_id), set()).add(event.extension)
        try:
            payload = await self.popup_payload(event)
        except (OSError, asyncpg.PostgresError) as exc:
            # The phone rings now: a popup with the number alone beats no popup.
            logger.warning("popup for %s without CRM data: %s", event.call_id, exc)
            payload = {"call_id": event.call_id, "number": event.caller, "display": event.caller,
                       "ringing_since": event.ts,
                       "caller_name": event.caller_name, "direction": event.direction}
        await self.sio.emit("popup", payload, room=extension_room(event.extension))

    async def popup_payload(self, event: AgentRinging) -> dict[str, Any]:
        """What the ringing manager needs at a glance. Plain data: the browser renders it as text."""
        number = event.caller
        payload: dict[str, Any] = {
            "call_id": event.call_id, "pbx": event.pbx, "number": number, "ringing_since": event.ts,
            "display": format_phone(number) if number.startswith("+") else (number or "withheld"),
            "caller_name": event.caller_name, "direction": event.direction, "originated": event.originated,
            "contact": None, "company": None, "manager": None, "lead": None, "history": [], "deals": [],
        }
        if not number.startswith("+"):
            return payload
        async with self.pool.acquire() as conn:
            match = await find_caller(conn, number, self.settings.phone_region, self.settings.suffix_match_digits)
            if match is not None:
                if match.contact_id:
                    payload["contact"] = {"id": match.contact_id, "name": match.contact_name}
                if match.company_id:
                    payload["company"] = {"id": match.company_id, "name": match.company_name}
                payload["manager"] = match.manager_name
                history = await calls_db.list_party_calls(conn, match.contact_id, match.company_id, limit=5)
                payload["deals"] = [{"id": d["id"], "title": d["title"], "stage": d["stage"]} for d in
                                    await deals_db.open_deals_brief(conn, match.contact_id, match.company_id)]
            else:
                lead = await conn.fetchrow(leads_db.OPEN_LEAD_BY_PHONE, number)
                if lead is not None:
                    payload["lead"] = {"id": lead["id"], "status": lead["status"], "name": lead["name"]}
                    history = await calls_db.list_lead_calls(conn, lead["id"], limit=5)
                else:
                    history = []
        payload["history"] = [{"when": c.started_at.isoformat(), "kind": "call", "direction": c.direction,
                               "outcome": c.outcome, "talk_seconds": c.talk_seconds, "who": c.user_name}
                              for c in history]
        return payload

    async def _ended(self, event: CallEnded) -> None:
        record = event.record
        body = {"call_id": record.call_id, "outcome": record.outcome, "talk_seconds": record.talk_seconds,
                "answered_by": record.answered_by}
        for extension in self.popped.pop((event.pbx, event.call_id), ()):
            await self.sio.emit("popup_update", {**body, "state": "ended"}, room=extension_room(extension))
        # "My calls" and the board refresh their rows from the API: only ids travel here.
        owners = {record.answered_by, record.caller if record.direction != "inbound" else None} - {None}
        for extension in owners:
            await self.sio.emit("call_logged", body, room=extension_room(extension))
        await self.sio.emit("call_logged", body, room=BOARD_ROOM)


def setup(app: web.Application) -> None:
    sio = create_sio(app[keys.SETTINGS])
    app[keys.SIO] = sio
    app[keys.NOTIFIER] = SocketNotifier(sio, app[keys.POOL], app[keys.SETTINGS])
    register_handlers(sio, app)
    sio.attach(app)
