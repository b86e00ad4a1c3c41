"""AMI connections on panoramisk 1.4, with its defects mended. The only module importing panoramisk.

What panoramisk 1.4 gets wrong, and where it is mended here:
  a. it decodes each TCP chunk alone with errors='ignore' (a split 'И' vanishes) → `_Protocol.data_received`
     uses an incremental decoder (cti.events.FrameSplitter);
  b. an exception in an event callback kills the connection and loses the rest of the chunk →
     every message is handled under its own try/except;
  c. pings are sent but their replies never checked → `_ping` arms a watchdog that aborts the
     connection when no reply comes within `ping_timeout`;
  d. `close()` does not cancel a pending reconnect → we keep the handle and cancel it;
  e. a wrong password raises nothing and it reconnects forever in silence → state 'auth_failed',
     an error log, /readyz, and a growing back-off (up to AUTH_BACKOFF_CAP, so a wrong secret never hammers);
  f. `reconnect_timeout` and the ping intervals go through int() → floats are kept as given.
Coroutine callbacks lose ordering in panoramisk, so events go to one synchronous sink (a queue).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from panoramisk import Manager
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from crm.settings import PbxSettings
from cti import events as ev

logger = logging.getLogger(__name__)

# Event classes asked for at login; RTCP ('reporting') and security events are left out.
LOGIN_EVENT_CLASSES = "call,agent,dialplan,cdr,system"
# Best effort: ask Asterisk not to send the noisiest event at all (needs manager.conf 'system' write).
SERVER_SIDE_FILTERS = ("!Event: Newexten", "!Event: RTCP*", "!Event: DialState")

EventSink = Callable[[str, ev.AmiEvent, str], None]

# Reconnect back-off: calls go on while we are away, so a PBX that is back must be read again at once.
# 0.2 s doubling to a 2.5 s cap, ±20% jitter (several nodes or PBXes do not retry in lockstep). A
# 30 s cap once added up to 11.5 s of blindness after the PBX was back. A refused login is different:
# retrying fast changes nothing and fills the PBX's security log, so it backs off to AUTH_BACKOFF_CAP.
MIN_BACKOFF = 0.2
MAX_BACKOFF = 2.5
AUTH_BACKOFF_CAP = 30.0
BACKOFF_JITTER = 0.2


@dataclass(frozen=True, slots=True)
class ConnectorState:
    state: str  # connecting / connected / auth_failed / disconnected / closed
    detail: str
    since: float
    events: int


@dataclass(frozen=True, slots=True)
class OriginateResult:
    """How an Async Originate ended: Asterisk's OriginateResponse."""

    success: bool
    reason: str  # Asterisk's Reason code: 4 answered, 3 rang out, 5 busy, 8 congestion, 1 hung up, 0 failed
    channel: str
    uniqueid: str | None


class _OriginateAction(Action):
    """An Originate whose first answer ('successfully queued' or an error) resolves `queued` at once;
    the inherited future waits for the OriginateResponse event, which comes when the first leg
    answers or fails (panoramisk counts it as the action's last message)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queued: asyncio.Future = asyncio.get_running_loop().create_future()

    def add_message(self, message: Message) -> bool:
        if not self.queued.done():
            self.queued.set_result(message)
        return super().add_message(message)


class _Protocol(AMIProtocol):
    """panoramisk's protocol with safe decoding, early filtering and guarded handling."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.splitter = ev.FrameSplitter()

    def data_received(self, data: bytes) -> None:
        messages = self.splitter.feed(data)
        if self.version is None and self.splitter.banner:
            self.version = self.splitter.banner.partition("/")[2].strip()
        for raw in messages:
            try:
                self._handle_raw(raw)
            except Exception:  # one bad message must not cost the connection or the next messages
                logger.exception("AMI message could not be handled: %.120r", raw)

    def _handle_raw(self, raw: str) -> None:
        connector: AmiConnector = self.factory.connector
        connector.last_data_at = time.monotonic()
        if raw.startswith("Event: "):
            event = ev.parse_event(raw, fallback_ts=time.time())
            if event is not None:
                connector.deliver(event, raw)
            # List responses (CoreShowChannel…) and OriginateResponse also complete an action's future.
            if self.responses and "\r\nActionID: " in raw:
                message = Message.from_line(raw)
                if message is not None and (message.id in self.responses):
                    self.handle_message(message)
            return
        message = Message.from_line(raw)
        if message is not None:
            self.handle_message(message)


class _Manager(Manager):
    """panoramisk's Manager with back-off, a ping watchdog, login failure surfaced, a cancellable reconnect."""

    def __init__(self, connector: AmiConnector, **config: Any) -> None:
        super().__init__(**config)
        self.connector = connector
        # panoramisk passes these through int(); keep the floats we were given.
        self.ping_delay = float(config["ping_delay"])
        self.ping_interval = float(config["ping_interval"])
        self.reconnect_timeout = float(config["reconnect_timeout"])
        self.reconnect_handle: asyncio.TimerHandle | None = None
        self.watchdog: asyncio.TimerHandle | None = None
        self.closing = False

    def connect(self, run_forever: bool = False, on_startup=None, on_shutdown=None):
        self.reconnect_handle = None
        if self.closing:
            return None
        self.connector.set_state("connecting", f"{self.config['host']}:{self.config['port']}")
        return super().connect()

    def connection_made(self, f: asyncio.Future) -> None:
        if self.closing:
            if not f.cancelled() and f.exception() is None:
                f.result()[0].close()
            return
        try:
            transport, protocol = f.result()
        except (OSError, asyncio.CancelledError) as exc:
            self.connector.set_state("disconnected", f"cannot connect: {exc}")
            self.schedule_reconnect()
            return
        self.protocol = protocol
        protocol.factory = self
        protocol.encoding = self.encoding = self.config["encoding"]
        self.responses = protocol.responses = {}
        self.authenticated = False
        login = self.send_action({"Action": "Login", "Username": self.config["username"],
                                  "Secret": self.config["secret"], "Events": self.config["events"]})
        login.add_done_callback(self.login)
        # A PBX that accepts the TCP connection but never answers the Login must not hold us forever.
        self.watchdog = self.loop.call_later(self.connector.ping_timeout * 2, self._login_timed_out)

    def _login_timed_out(self) -> None:
        self.watchdog = None
        if not self.authenticated:
            logger.error("AMI %s: no answer to Login within %.0f s; reconnecting", self.connector.name,
                         self.connector.ping_timeout * 2)
            self.connector.set_state("disconnected", "the PBX did not answer the login")
            self.drop()

    def login(self, future: asyncio.Future) -> bool:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        try:
            response = future.result()
        except Exception as exc:  # the connection died during login
            logger.warning("AMI %s: login got no answer: %s", self.connector.name, exc)
            return False
        self.authenticated = bool(response.success)
        if not self.authenticated:
            # Asterisk answers 'Authentication failed' and keeps the socket; panoramisk would sit there.
            self.connector.failures += 1
            self.connector.set_state("auth_failed", str(response.get("Message", "authentication failed")))
            logger.error("AMI %s: login as %r refused (%s); retrying in %.0f s", self.connector.name,
                         self.config["username"], response.get("Message", ""), self.connector.next_delay(True))
            self.drop(auth_failed=True)
            return False
        self.connector.failures = 0
        self.connector.set_state("connected", f"Asterisk Call Manager/{self.protocol.version or '?'}")
        logger.info("AMI %s: logged in to %s:%s", self.connector.name, self.config["host"], self.config["port"])
        self.connector.on_login()
        self.pinger = self.loop.call_later(self.ping_delay, self.ping)
        return True

    def ping(self) -> None:
        self.pinger = self.loop.call_later(self.ping_interval, self.ping)
        if self.watchdog is not None:
            return  # the previous ping is still unanswered; the watchdog will act
        sent = self.send_action({"Action": "Ping"})
        self.watchdog = self.loop.call_later(self.connector.ping_timeout, self._ping_timed_out)
        sent.add_done_callback(self._pong)

    def _pong(self, future: asyncio.Future) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None

    def _ping_timed_out(self) -> None:
        self.watchdog = None
        logger.error("AMI %s: no reply to Ping within %.1f s; reconnecting", self.connector.name,
                     self.connector.ping_timeout)
        self.connector.set_state("disconnected", "PBX stopped answering pings")
        self.drop()

    def drop(self, auth_failed: bool = False) -> None:
        """Abort the transport so connection_lost runs and a reconnect is scheduled."""
        self._stop_timers()
        if self.protocol is not None and not self.protocol.closed:
            self.protocol.closed = True
            self.protocol.transport.abort()
        self.schedule_reconnect(auth_failed)

    def _stop_timers(self) -> None:
        for name in ("pinger", "watchdog"):
            handle = getattr(self, name)
            if handle is not None:
                handle.cancel()
                setattr(self, name, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connected = False
        self._stop_timers()
        self.connector.fail_originates("the connection to the PBX was lost")
        if self.closing:
            return
        if self.connector.state.state == "connected":
            self.connector.set_state("disconnected", f"connection lost: {exc or 'closed by the PBX'}")
            logger.error("AMI %s: connection lost; reconnecting", self.connector.name)
        self.schedule_reconnect()

    def schedule_reconnect(self, auth_failed: bool = False) -> None:
        if self.closing or self.reconnect_handle is not None:
            return
        delay = self.connector.next_delay(auth_failed)
        self.reconnect_handle = self.loop.call_later(delay, self.connect)

    def close(self) -> None:
        self.closing = True
        if self.reconnect_handle is not None:
            self.reconnect_handle.cancel()
            self.reconnect_handle = None
        self._stop_timers()
        if self.protocol is not None:
            self.protocol.close()


class AmiConnector:
    """One PBX: connects, logs in, keeps the link alive, hands events to a synchronous sink."""

    def __init__(self, pbx: PbxSettings, sink: EventSink, *, ping_interval: float = 5.0,
                 ping_timeout: float = 5.0, min_backoff: float = MIN_BACKOFF, max_backoff: float = MAX_BACKOFF) -> None:
        self.name = pbx.name
        self.pbx = pbx
        self.sink = sink
        self.ping_timeout = ping_timeout
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self._rng = random.Random()
        self.failures = 0
        self.attempt = 0
        self.events = 0
        self.last_data_at = 0.0
        self.state = ConnectorState("closed", "not started", time.time(), 0)
        self._manager = _Manager(
            self, host=pbx.host, port=pbx.port, username=pbx.username, secret=pbx.secret,
            events=LOGIN_EVENT_CLASSES, ping_delay=ping_interval, ping_interval=ping_interval,
            reconnect_timeout=min_backoff, protocol_factory=_Protocol, encoding="utf8",
            forgetable_actions=("ping", "login", "coreshowchannels", "extensionstatelist", "filter"))
        self._resync_tasks: set[asyncio.Task] = set()
        self._originates: dict[str, _OriginateAction] = {}
        self._lost_at: float | None = None
        self.last_outage: tuple[float, float] | None = None  # (link lost, logged in again), epoch seconds
        # Called (name, lost_at, back_at) after a reconnect; the service starts the CDR backfill there.
        self.on_outage: Callable[[str, float, float], None] | None = None

    def set_state(self, state: str, detail: str) -> None:
        now = time.time()
        if state == "connected":
            self.attempt = 0
            if self._lost_at is not None:
                # The window a CDR backfill covers: calls begun and ended in it were never seen.
                self.last_outage = (self._lost_at, now)
                self._lost_at = None
                if self.on_outage is not None:
                    try:
                        self.on_outage(self.name, *self.last_outage)
                    except Exception:
                        logger.exception("AMI %s: outage listener failed", self.name)
        elif self.state.state == "connected" and state in ("disconnected", "connecting", "auth_failed"):
            self._lost_at = now
        self.state = ConnectorState(state, detail, now, self.events)

    def next_delay(self, auth_failed: bool = False) -> float:
        """Short jittered exponential back-off; a refused login waits longer so a wrong secret does not
        hammer the PBX."""
        base = self.min_backoff * (10 if auth_failed else 1)
        cap = max(self.max_backoff, AUTH_BACKOFF_CAP) if auth_failed else self.max_backoff
        delay = min(cap, base * (2 ** min(self.attempt, 10)))
        self.attempt += 1
        return delay * self._rng.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)

    def deliver(self, event: ev.AmiEvent, raw: str) -> None:
        self.events += 1
        try:
            self.sink(self.name, event, raw)
        except Exception:  # the sink is ours, but a failure there must not take the connection down
            logger.exception("AMI %s: event sink failed", self.name)

    async def start(self) -> None:
        self._manager.loop = asyncio.get_running_loop()
        self._manager.connect()

    def on_login(self) -> None:
        """Resync: live channels now, agent states now; the tracker closes what ended while away."""
        manager = self._manager
        for pattern in SERVER_SIDE_FILTERS:
            manager.send_action({"Action": "Filter", "Operation": "Add", "Filter": pattern})
        # First who is a phone and who is a trunk (the call model reads EndpointList, PeerEntry and
        # QueueMember), then the live channels classified with that knowledge. A PBX without chan_sip
        # answers SIPpeers with an error: harmless.
        for action in ("PJSIPShowEndpoints", "SIPpeers", "QueueStatus"):
            manager.send_action({"Action": action})
        manager.send_action({"Action": "CoreShowChannels"}, as_list=True)
        manager.send_action({"Action": "ExtensionStateList"}, as_list=True)
        # Every device's state now (Asterisk 13+), so agents are idle/offline from the start, not "unknown"
        # until their first call.
        manager.send_action({"Action": "DeviceStateList"})

    def _originate_action(self, channel: str, context: str, exten: str, caller_id: str, timeout_ms: int,
                          variables: dict[str, str] | None, action_id: str | None) -> dict[str, Any]:
        if self.state.state != "connected":
            raise ConnectionError(f"PBX {self.name} is not connected ({self.state.state})")
        action: dict[str, Any] = {"Action": "Originate", "Channel": channel, "Context": context, "Exten": exten,
                                  "Priority": "1", "CallerID": caller_id, "Timeout": str(timeout_ms), "Async": "true"}
        if action_id:
            action["ActionID"] = action_id
        if variables:
            action["Variable"] = [f"{k}={v}" for k, v in variables.items()]
        return action

    async def originate(self, channel: str, context: str, exten: str, caller_id: str, timeout_ms: int = 30000,
                        variables: dict[str, str] | None = None, action_id: str | None = None) -> Message:
        action = self._originate_action(channel, context, exten, caller_id, timeout_ms, variables, action_id)
        response = await asyncio.wait_for(self._manager.send_action(action), timeout=5)
        if isinstance(response, list):
            response = response[0]
        return response

    async def originate_queued(self, channel: str, context: str, exten: str, caller_id: str, *,
                               action_id: str, channel_id: str = "", timeout_ms: int = 30000,
                               variables: dict[str, str] | None = None) -> asyncio.Future[OriginateResult]:
        """Send an Async Originate and return as soon as the PBX has queued it (milliseconds), with a
        future for its OriginateResponse. `channel_id` becomes the first channel's Uniqueid (Asterisk
        12+), so the call's Linkedid is known before it rings. Raises ConnectionError when the PBX is
        not connected or refuses the action."""
        fields = self._originate_action(channel, context, exten, caller_id, timeout_ms, variables, action_id)
        if channel_id:
            fields["ChannelId"] = channel_id
        action = _OriginateAction(fields)
        result: asyncio.Future[OriginateResult] = asyncio.get_running_loop().create_future()
        self._originates[action.id] = action

        def finished(future: asyncio.Future) -> None:
            self._originates.pop(action.id, None)
            if result.done():
                return
            if future.cancelled() or future.exception() is not None:
                result.set_exception(ConnectionError("the PBX sent no OriginateResponse"))
                return
            answer = future.result()
            final = answer[-1] if isinstance(answer, list) else answer
            # panoramisk calls every event a success: the OriginateResponse says it in 'Response'.
            uniqueid = final.get("Uniqueid") or None
            result.set_result(OriginateResult(str(final.get("Response", "")).lower() == "success",
                                              str(final.get("Reason", "")), str(final.get("Channel", "")),
                                              None if uniqueid == "<null>" else uniqueid))

        action.future.add_done_callback(finished)
        self._manager.send_action(action)
        try:
            first = await asyncio.wait_for(asyncio.shield(action.queued), timeout=5)
        except TimeoutError:
            result.cancel()
            self._forget(action, "the PBX did not answer the Originate")
            raise ConnectionError("the PBX did not answer the Originate within 5 s") from None
        if str(first.get("Response", "")).lower() != "success":
            result.cancel()
            self._forget(action, "refused")
            raise ConnectionError(str(first.get("Message", "the PBX refused the call")))
        return result

    def _forget(self, action: _OriginateAction, why: str) -> None:
        if not action.future.done():
            action.future.set_exception(ConnectionError(why))
        if self._manager.protocol is not None:
            self._manager.protocol.responses.pop(action.id, None)

    def fail_originates(self, why: str) -> None:
        """The link dropped: no OriginateResponse will come on it for the actions sent before."""
        for action in list(self._originates.values()):
            if not action.future.done():
                action.future.set_exception(ConnectionError(why))

    async def close(self) -> None:
        self._manager.close()
        self.set_state("closed", "stopped")
