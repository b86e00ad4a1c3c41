"""The call model: typed AMI events in, call events out. Pure: no I/O, no clock, no await.

A *call* is what the customer lived, keyed by Linkedid; a *leg* is one channel, keyed by Uniqueid.
`CallTracker.handle(event)` returns the call events that event caused, and changes nothing for
events it does not understand or that arrive twice, so replays and reconnects are harmless.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache

from crm.phones import normalise_caller
from cti import events as ev
from cti.events import ChannelInfo, channel_endpoint

logger = logging.getLogger(__name__)

UP, RINGING, RING = 6, 5, 4
# Hang-up causes that mean the network or a channel failed, not a person.
FAILURE_CAUSES = frozenset({27, 34, 38, 41, 42, 44, 47, 58, 66, 88, 102, 111})
# Without HangupRequest events, these causes on the caller's leg mean the caller cleared the call.
# 127 is how chan_pjsip reports a caller's CANCEL ('Interworking, unspecified'), not 16 or 487.
CALLER_CLEARED_CAUSES = frozenset({16, 127, 487})
# The caller's own Dial ended without an answer because the phones did (not because the caller left).
RANG_OUT = frozenset({"NOANSWER", "BUSY", "CHANUNAVAIL", "CONGESTION"})
FINISHED_MEMORY = 50_000
AMENDABLE_MEMORY = 1_000
SWEEP_EVERY = 60.0
# After the caller's hang-up, how long other legs may go on (a conference, say) before their lost
# Hangup events are given up on.
CALLER_GONE_GRACE = 1800.0
SILENT_CALL_LIMIT = 6 * 3600.0
ORIGINATE_WAIT = 5.0
# Channel technologies that are never a person or a line: media plumbing, parking, messages.
PLUMBING_TECHS = frozenset({"Message", "Parked", "Bridge", "Snoop", "Recorder", "Announcer", "CBAnn", "CBRec",
                            "MulticastRTP", "UnicastRTP", "AudioSocket", "ConfBridge", "Console", "Surrogate"})
# Fallbacks when no trunk is configured: context and endpoint names that operators give to lines.
_INBOUND_CONTEXT = re.compile(r"(trunk|pstn|external|inbound|incoming|from-did|did-|provider|(^|[-_])in$)", re.I)
_TRUNK_NAME = re.compile(r"(trunk|provider|gateway|pstn|sbc|carrier|siproute|upstream|itsp)", re.I)
_EXTENSION = re.compile(r"\d{2,6}")
_EXTENSION_PREFIX = re.compile(r"(\d{2,6})(?:\D|$)")
_OUTSIDE_NUMBER = re.compile(r"\+?\d{7,}")


@dataclass(frozen=True, slots=True)
class DirectionRules:
    """How to tell inbound, outbound and internal calls apart."""

    trunk_endpoints: frozenset[str] = frozenset({"trunk"})
    inbound_contexts: frozenset[str] = frozenset({"from-trunk", "from-pstn", "from-external"})
    region: str = "RU"
    # The users' devices: ('SIP/150010001', '201'), … (also set later with CallTracker.set_devices).
    devices: tuple[tuple[str, str], ...] = ()


# ---------------------------------------------------------------- call events (what we emit)

@dataclass(frozen=True, slots=True)
class Transfer:
    from_: str | None
    to: str | None
    kind: str  # blind / attended


@dataclass(frozen=True, slots=True)
class LegRecord:
    uniqueid: str
    channel: str
    kind: str  # trunk / agent / local / other
    extension: str | None
    created_at: float
    answered_at: float | None
    ended_at: float | None
    hangup_cause: int | None


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One finished call, as the call log keeps it."""

    pbx: str
    call_id: str
    direction: str
    caller: str
    caller_name: str
    callee: str
    started_at: float
    answered_at: float | None
    ended_at: float | None  # None only for a call still in progress (replay)
    outcome: str
    reason: str
    answered_by: str | None
    agents_rang: tuple[str, ...]
    queue: str | None
    ring_seconds: int
    talk_seconds: int
    recording: str | None
    transfers: tuple[Transfer, ...]
    talk_by_agent: tuple[tuple[str, int], ...]
    legs: tuple[LegRecord, ...]
    recovered: bool  # parts were rebuilt after an AMI reconnect
    originated: bool
    backfilled: bool = False  # rebuilt from the PBX's CDR for a call that began and ended while we were away

    @property
    def caller_e164(self) -> str | None:
        return self.caller if self.caller.startswith("+") else None

    def to_json(self) -> dict:
        """The replay / API shape: ISO 8601 times, transfers as {from, to, kind}."""
        body = asdict(self)
        for key in ("started_at", "answered_at", "ended_at"):
            body[key] = iso(body[key])
        body["transfers"] = [{"from": t.from_, "to": t.to, "kind": t.kind} for t in self.transfers]
        body["agents_rang"] = list(self.agents_rang)
        body["talk_by_agent"] = dict(self.talk_by_agent)
        body["legs"] = [{**asdict(leg), "created_at": iso(leg.created_at), "answered_at": iso(leg.answered_at),
                         "ended_at": iso(leg.ended_at)} for leg in self.legs]
        return body


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class CallEvent:
    pbx: str
    call_id: str
    ts: float


@dataclass(frozen=True, slots=True)
class CallStarted(CallEvent):
    direction: str
    caller: str
    caller_name: str
    callee: str


@dataclass(frozen=True, slots=True)
class AgentRinging(CallEvent):
    extension: str
    direction: str
    caller: str
    caller_name: str
    originated: bool


@dataclass(frozen=True, slots=True)
class AgentRingStopped(CallEvent):
    extension: str
    answered_by: str | None  # another agent took it, or None (cancelled, no answer, busy)


@dataclass(frozen=True, slots=True)
class CallAnswered(CallEvent):
    extension: str | None


@dataclass(frozen=True, slots=True)
class CallTransferred(CallEvent):
    transfer: Transfer


@dataclass(frozen=True, slots=True)
class CallEnded(CallEvent):
    record: CallRecord


@dataclass(frozen=True, slots=True)
class AgentStateChanged:
    pbx: str
    extension: str
    state: str  # idle / ringing / in_call / offline / unknown
    ts: float


# ---------------------------------------------------------------- working state

@dataclass(slots=True)
class Leg:
    uniqueid: str
    call_id: str
    name: str
    tech: str
    endpoint: str
    kind: str  # agent (a person's phone) / trunk / local (Local/…;1/;2 halves) / other (plumbing)
    created: float
    caller_num: str
    caller_name: str
    exten: str
    context: str
    answered: float | None = None  # the channel went Up (not yet a person talking to the caller)
    connected: float | None = None  # first joined to the caller through bridges (and Local pairs)
    ended: float | None = None
    cause: int | None = None
    ringing: bool = False
    hangup_by: str | None = None  # 'far_end' (HangupRequest) or 'pbx' (SoftHangupRequest), first seen
    confirmed: bool = True
    dialled_by: str | None = None  # Uniqueid of the channel whose Dial created this one
    dial_number: str | None = None  # the number a trunk leg was dialled with
    bridges: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Call:
    call_id: str
    first_leg: str
    started: float
    legs: list[str] = field(default_factory=list)
    originated: bool = False
    originate_number: str | None = None
    originate_failed: str | None = None
    awaiting_originate: float | None = None
    queue: str | None = None
    queue_abandoned_at: float | None = None
    dial_after_abandon: bool = False
    agents_rang: list[str] = field(default_factory=list)
    dial_results: dict[str, str] = field(default_factory=dict)
    caller_dial_status: str | None = None  # the last DialEnd status of a dial the caller placed
    dialled_number: str | None = None
    answered_at: float | None = None
    answered_by: str | None = None
    answer_estimated: bool = False
    pending_answerer: str | None = None
    fallback_answer: tuple[str, float] | None = None
    recording: str | None = None
    transfers: list[Transfer] = field(default_factory=list)
    transfer_keys: set[tuple] = field(default_factory=set)
    recovered: bool = False
    cdr_agents: list[str] = field(default_factory=list)
    queue_talk_time: int | None = None


class CallTracker:
    """Feeds on typed AMI events of one PBX; returns call events. State keyed by Linkedid / Uniqueid."""

    def __init__(self, pbx: str, rules: DirectionRules | None = None) -> None:
        self.pbx = pbx
        self.rules = rules or DirectionRules()
        self.now = 0.0
        self.legs: dict[str, Leg] = {}
        self.calls: dict[str, Call] = {}
        self._bridges: dict[str, set[str]] = {}
        self._local_pairs: dict[str, dict[str, str]] = {}  # 'Local/x@ctx-0001' → {'1': uid, '2': uid}
        self._merged: dict[str, str] = {}  # consultation call id → the customer call it joined
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._finished_legs: OrderedDict[str, None] = OrderedDict()
        self._amendable: OrderedDict[str, CallRecord] = OrderedDict()
        self._awaiting: dict[str, float] = {}  # call id → since when it waits for its OriginateResponse
        self._agent_states: dict[str, str] = {}
        self._devices: dict[str, str] = {}
        self.set_devices(dict(self.rules.devices))
        self._trunks: set[str] = {t.lower() for t in self.rules.trunk_endpoints}
        self._phones: set[str] = set()  # 'SIP/150010001': endpoints the PBX or a queue says are phones
        self._learned_extensions: dict[str, str] = {}  # 'SIP/150010001' → '201', from the stream itself
        self._bridge_events_seen = False
        self._bridgeless_calls = 0
        self._session_open = False
        self._booted = False
        self._uptime: int | None = None
        self._resyncing = False
        self._next_sweep = 0.0
        self._handlers = {
            ev.ChannelCreated: self._on_channel_created,
            ev.ChannelStateChanged: self._on_state,
            ev.CallerIdChanged: self._on_callerid,
            ev.DialStarted: self._on_dial_started,
            ev.DialEnded: self._on_dial_ended,
            ev.HangupRequested: self._on_hangup_requested,
            ev.ChannelHungUp: self._on_hangup,
            ev.BridgeEntered: self._on_bridge_entered,
            ev.BridgeLeft: self._on_bridge_left,
            ev.LocalBridged: self._on_local_bridged,
            ev.QueueJoined: self._on_queue_joined,
            ev.QueueAbandoned: self._on_queue_abandoned,
            ev.AgentEvent: self._on_agent_event,
            ev.BlindTransferred: self._on_blind_transfer,
            ev.AttendedTransferred: self._on_attended_transfer,
            ev.RecordingStarted: self._on_recording,
            ev.OriginateResult: self._on_originate_result,
            ev.DeviceStateChanged: self._on_device_state,
            ev.ExtensionStateChanged: self._on_extension_state,
            ev.EndpointListed: self._on_endpoint_listed,
            ev.QueueMemberListed: self._on_queue_member,
            ev.SessionStarted: self._on_session_started,
            ev.Booted: self._on_booted,
            ev.ChannelListed: self._on_channel_listed,
            ev.ChannelListComplete: self._on_list_complete,
            ev.CdrRecord: self._on_cdr,
        }

    def set_devices(self, devices: dict[str, str]) -> None:
        """Users' devices: 'SIP/150010001' (or a bare endpoint name) → the user's extension."""
        self._devices = {_device_key(device): extension for device, extension in devices.items() if device}

    # ------------------------------------------------------------ entry point

    def handle(self, event: ev.AmiEvent) -> list:
        if event.ts is not None and event.ts > self.now:
            self.now = event.ts
        handler = self._handlers.get(type(event))
        out = handler(event) if handler is not None else []
        if self._awaiting:
            # A failed originate waits a little for its OriginateResponse (which names the number).
            for call_id in [c for c, since in self._awaiting.items() if self.now - since > ORIGINATE_WAIT]:
                call = self.calls.get(call_id)
                del self._awaiting[call_id]
                if call is not None:
                    out.append(self._finish(call))
        if self.now >= self._next_sweep:
            out += self._sweep()
        return out

    def _sweep(self) -> list:
        """A safety net, on event time: a call whose caller left long ago, or that has been silent
        for hours, is closed with what is known (a lost Hangup must not keep it in memory forever)."""
        self._next_sweep = self.now + SWEEP_EVERY
        out = []
        for call in list(self.calls.values()):
            legs = [self.legs[u] for u in call.legs if u in self.legs]
            if not legs:
                del self.calls[call.call_id]
                continue
            first = self.legs.get(call.first_leg)
            last_seen = max(max(leg.created, leg.answered or 0.0, leg.ended or 0.0) for leg in legs)
            caller_gone = first is not None and first.ended is not None and self.now - first.ended > CALLER_GONE_GRACE
            if caller_gone or self.now - last_seen > SILENT_CALL_LIMIT:
                logger.warning("call %s closed by the sweep: %s", call.call_id,
                               "its caller left long ago" if caller_gone else "no event for hours")
                end = first.ended if caller_gone and first is not None else self.now
                for leg in legs:
                    if leg.ended is None:
                        leg.ended, leg.ringing, leg.confirmed = end, False, False
                call.recovered = True
                out.append(self._finish(call))
        return out

    @property
    def live_calls(self) -> list[Call]:
        return list(self.calls.values())

    @property
    def resyncing(self) -> bool:
        """After a new AMI session, until CoreShowChannelsComplete."""
        return self._resyncing

    def known_call_ids(self) -> set[str]:
        """Calls live now or finished lately (merged consultation calls included)."""
        return set(self.calls) | set(self._finished) | set(self._merged)

    # ------------------------------------------------------------ who is a person's phone

    def _classify(self, channel: ChannelInfo, first: bool) -> str:
        tech, endpoint = channel_endpoint(channel.name)
        if tech == "Local":
            return "local"
        if tech in PLUMBING_TECHS or not endpoint:
            return "other"
        key = _device_key(f"{tech}/{endpoint}")
        if key in self._devices or endpoint in self._devices:
            return "agent"
        if key in self._trunks or endpoint.lower() in self._trunks:
            return "trunk"
        if key in self._phones:
            return "agent"
        if first and self._looks_like_trunk_call(channel, endpoint):
            # An outside call comes in on a trunk: learn it, so its later (outgoing) legs are trunks too.
            self._trunks.add(key)
            return "trunk"
        if _TRUNK_NAME.search(endpoint) and not _EXTENSION_PREFIX.match(endpoint):
            return "trunk"
        return "agent"

    def _looks_like_trunk_call(self, channel: ChannelInfo, endpoint: str) -> bool:
        """A call's first channel that arrives from outside: an inbound context, or an outside caller ID
        presented by an endpoint that is not a phone's own number."""
        if channel.context in self.rules.inbound_contexts or _INBOUND_CONTEXT.search(channel.context or ""):
            return True
        number = (channel.caller_num or "").lstrip("+")
        return bool(_OUTSIDE_NUMBER.fullmatch(channel.caller_num or "")) and number != endpoint \
            and not _EXTENSION_PREFIX.match(endpoint) and not endpoint.isdigit()

    def _extension(self, leg: Leg) -> str | None:
        """A phone by its user's extension when known, else by what the stream taught, else its endpoint."""
        if leg.kind != "agent":
            return None
        key = _device_key(f"{leg.tech}/{leg.endpoint}")
        found = self._devices.get(key) or self._devices.get(leg.endpoint)
        if found:
            return found
        match = _EXTENSION_PREFIX.match(leg.endpoint)
        if match:
            return match.group(1)  # PJSIP/101, PJSIP/101-mobile: named by extension
        return self._learned_extensions.get(key) or leg.endpoint

    def _learn_extension(self, leg: Leg, number: str) -> None:
        """A phone named by account (SIP/150010001) shows its extension as the caller ID the dialplan
        sets when it places a call, or is reached through Local/201@… : remember it for this PBX."""
        if leg.kind != "agent" or not _EXTENSION.fullmatch(number or "") or _EXTENSION_PREFIX.match(leg.endpoint):
            return
        self._learned_extensions.setdefault(_device_key(f"{leg.tech}/{leg.endpoint}"), number)

    def _identity(self, leg: Leg) -> str:
        """How a party is reported: a phone by extension, an outside party by its number."""
        if leg.kind == "agent":
            return self._extension(leg) or leg.endpoint
        return self._number(leg.dial_number or leg.caller_num or leg.exten)

    def _call_id_of(self, channel: ChannelInfo) -> str:
        leg = self.legs.get(channel.uniqueid)
        if leg is not None:
            return leg.call_id
        return self._merged.get(channel.linkedid, channel.linkedid)

    def _number(self, text: str) -> str:
        """E.164 when it is a phone number, else as given (extensions, 'anonymous')."""
        return _normalised(text or "", self.rules.region)

    # ------------------------------------------------------------ legs and calls

    def _ensure_leg(self, channel: ChannelInfo, ts: float) -> tuple[Leg | None, list]:
        """The leg for a channel, creating it (and its call) on first sight."""
        leg = self.legs.get(channel.uniqueid)
        if leg is not None:
            return leg, []
        if channel.uniqueid in self._finished_legs:
            return None, []
        call_id = self._merged.get(channel.linkedid, channel.linkedid)
        if call_id in self._finished:
            return None, []  # an event delivered again after its call ended
        out: list = []
        call = self.calls.get(call_id)
        # Asterisk gives a call's first channel Uniqueid == Linkedid; met late (we joined mid-call),
        # it still becomes the call's first leg.
        originator = channel.uniqueid == channel.linkedid == call_id
        first = call is None or (originator and call.first_leg != channel.uniqueid)
        tech, endpoint = channel_endpoint(channel.name)
        leg = Leg(channel.uniqueid, call_id, channel.name, tech, endpoint, self._classify(channel, first), ts,
                  channel.caller_num, channel.caller_name, channel.exten, channel.context)
        self.legs[leg.uniqueid] = leg
        if tech == "Local" and channel.name[-2:] in (";1", ";2"):
            self._local_pairs.setdefault(channel.name[:-2], {})[channel.name[-1]] = leg.uniqueid
        if call is None:
            call = Call(call_id, leg.uniqueid, ts)
            self.calls[call_id] = call
            call.legs.append(leg.uniqueid)
            direction, caller, caller_name, callee = self._parties(call)
            out.append(CallStarted(self.pbx, call_id, ts, direction, caller, caller_name, callee))
        elif first:
            call.legs.insert(0, leg.uniqueid)
            call.first_leg, call.started = leg.uniqueid, min(call.started, ts)
        else:
            call.legs.append(leg.uniqueid)
        if first and leg.kind == "agent":
            self._learn_extension(leg, channel.caller_num)
        return leg, out

    def _partner(self, leg: Leg) -> Leg | None:
        """The other half of a Local channel pair (;1 ↔ ;2)."""
        if leg.kind != "local" or leg.name[-2:] not in (";1", ";2"):
            return None
        pair = self._local_pairs.get(leg.name[:-2], {})
        other = pair.get("2" if leg.name[-1] == "1" else "1")
        return self.legs.get(other) if other else None

    def _on_channel_created(self, event: ev.ChannelCreated) -> list:
        leg, out = self._ensure_leg(event.channel, self._ts(event))
        if leg is not None and event.channel.state == UP and leg.answered is None:
            leg.answered = self._ts(event)
        return out

    def _ts(self, event: ev.AmiEvent) -> float:
        return event.ts if event.ts is not None else self.now

    def _on_callerid(self, event: ev.CallerIdChanged) -> list:
        leg = self.legs.get(event.channel.uniqueid)
        if leg is not None:
            leg.caller_num = event.channel.caller_num or leg.caller_num
            leg.caller_name = event.channel.caller_name or leg.caller_name
            call = self.calls.get(leg.call_id)
            if call is not None and call.first_leg == leg.uniqueid:
                self._learn_extension(leg, leg.caller_num)
        return []

    def _on_state(self, event: ev.ChannelStateChanged) -> list:
        leg, out = self._ensure_leg(event.channel, self._ts(event))
        if leg is None or leg.ended is not None:
            return out
        if event.channel.state == RINGING:
            out += self._agent_rings(leg, self._ts(event))
        elif event.channel.state == UP and leg.answered is None:
            leg.answered = self._ts(event)
        return out

    def _agent_rings(self, leg: Leg, ts: float) -> list:
        call = self.calls.get(leg.call_id)
        if call is None or leg.kind != "agent" or leg.ringing or leg.answered is not None:
            return []
        leg.ringing = True
        extension = self._extension(leg) or ""
        if extension and extension not in call.agents_rang:
            call.agents_rang.append(extension)
        direction, caller, caller_name, callee = self._parties(call)
        own_originate = call.originated and leg.uniqueid == self._origin_uid(call)
        if own_originate and callee:
            # Click-to-call rings the agent's own phone first: show whom they are about to call.
            caller, caller_name = callee, ""
        return [AgentRinging(self.pbx, call.call_id, ts, extension, direction, caller, caller_name, own_originate)]

    # ------------------------------------------------------------ the answer: a person bridged with the caller

    def _origin_uid(self, call: Call) -> str:
        """The caller's channel: the first one, or — for an Originate through a Local channel — the
        first real channel that the Local chain reached (the agent's phone)."""
        first = self.legs.get(call.first_leg)
        if first is None or first.kind != "local":
            return call.first_leg
        for uniqueid in call.legs:
            leg = self.legs.get(uniqueid)
            if leg is not None and leg.kind in ("agent", "trunk"):
                return uniqueid
        return call.first_leg

    def _connected_parties(self, start: Leg) -> list[Leg]:
        """Real channels joined to `start` now: through shared bridges and across Local pairs."""
        seen = {start.uniqueid}
        queue = [start]
        found: list[Leg] = []
        while queue:
            leg = queue.pop(0)
            neighbours: list[str] = []
            for bridge in leg.bridges:
                neighbours += self._bridges.get(bridge, ())
            partner = self._partner(leg)
            if partner is not None and partner.ended is None:
                neighbours.append(partner.uniqueid)
            for uniqueid in neighbours:
                if uniqueid in seen:
                    continue
                seen.add(uniqueid)
                other = self.legs.get(uniqueid)
                if other is None or other.ended is not None:
                    continue
                if other.kind == "local":
                    queue.append(other)
                elif other.kind != "other":
                    found.append(other)
        return found

    def _check_connected(self, call: Call, ts: float) -> list:
        """Called when bridges change: has a person (or an outside party) joined the caller?"""
        origin = self.legs.get(self._origin_uid(call))
        if origin is None or origin.ended is not None or origin.kind == "local":
            return []
        return self._connect(call, origin, self._connected_parties(origin), ts)

    def _connect(self, call: Call, origin: Leg, parties: list[Leg], ts: float) -> list:
        if not parties:
            return []
        for party in parties:
            other = self.calls.get(party.call_id)
            if other is not None and other is not call and other.legs == [party.uniqueid]:
                # A lone channel of a call of its own joined this caller: a pickup (*8, **201) whose
                # picker was not dialled into the call. It answered this call; it is no call of its own.
                self._merge_into(call, other.call_id)
        out: list = []
        if origin.connected is None:
            origin.connected = ts
        direction = self._direction(call)
        for party in parties:
            newly = party.connected is None
            if newly:
                party.connected = ts
            if call.answered_at is None:
                call.answered_at = ts
                call.answered_by = self._identity(origin) if direction == "outbound" else self._identity(party)
                out.append(CallAnswered(self.pbx, call.call_id, ts, self._extension(origin)
                                        if direction == "outbound" else self._extension(party)))
                answerer = party if direction != "outbound" else None
                party.ringing = False
                for other_id in call.legs:
                    other = self.legs.get(other_id)
                    if other is not None and other is not answerer and other.ringing and other.ended is None:
                        other.ringing = False
                        out.append(AgentRingStopped(self.pbx, call.call_id, ts, self._extension(other) or "",
                                                    call.answered_by if direction != "outbound" else None))
            elif newly and party.kind == "agent" and party.uniqueid != origin.uniqueid:
                # Another phone joins later (a transfer target picks up): its screen shows the call.
                party.ringing = False
                out.append(CallAnswered(self.pbx, call.call_id, ts, self._extension(party)))
        return out

    def _on_bridge_entered(self, event: ev.BridgeEntered) -> list:
        ts = self._ts(event)
        self._bridge_events_seen = True
        leg, out = self._ensure_leg(event.channel, ts)
        if leg is None or not event.bridge_id:
            return out
        self._join_bridge(leg, event.bridge_id)
        if leg.answered is None:
            leg.answered = ts
        return out + self._check_bridge(event.bridge_id, ts)

    def _join_bridge(self, leg: Leg, bridge_id: str) -> None:
        leg.bridges.add(bridge_id)
        self._bridges.setdefault(bridge_id, set()).add(leg.uniqueid)

    def _check_bridge(self, bridge_id: str, ts: float) -> list:
        out: list = []
        call_ids = {self.legs[u].call_id for u in self._bridges.get(bridge_id, ()) if u in self.legs}
        for call_id in sorted(call_ids):
            call = self.calls.get(call_id)
            if call is not None:
                out += self._check_connected(call, ts)
        return out

    def _leave_bridges(self, leg: Leg, bridge_id: str | None = None) -> None:
        for bridge in [bridge_id] if bridge_id else list(leg.bridges):
            leg.bridges.discard(bridge)
            members = self._bridges.get(bridge)
            if members is not None:
                members.discard(leg.uniqueid)
                if not members:
                    del self._bridges[bridge]

    def _on_bridge_left(self, event: ev.BridgeLeft) -> list:
        leg = self.legs.get(event.channel.uniqueid)
        if leg is not None:
            self._leave_bridges(leg, event.bridge_id)
        return []

    def _on_local_bridged(self, event: ev.LocalBridged) -> list:
        for channel in (event.local_one, event.local_two):
            if channel is not None:
                self._ensure_leg(channel, self._ts(event))
        return []

    # ------------------------------------------------------------ dialling

    def _on_dial_started(self, event: ev.DialStarted) -> list:
        ts = self._ts(event)
        out: list = []
        if event.caller is None:
            # An Originate: Asterisk dials the first channel itself and sends only Dest* headers.
            leg, out = self._ensure_leg(event.dest, ts)
            if leg is not None:
                call = self.calls[leg.call_id]
                if call.first_leg == leg.uniqueid:
                    call.originated = True
                out += self._agent_rings(leg, ts)
            return out
        caller_leg, out = self._ensure_leg(event.caller, ts)
        dest_leg, more = self._ensure_leg(event.dest, ts)
        out += more
        if caller_leg is None or dest_leg is None:
            return out
        call = self.calls.get(caller_leg.call_id)
        if call is None:
            return out
        if dest_leg.call_id != call.call_id:
            # A pickup: the picker's own channel (its own Linkedid) is dialled into this call.
            self._move_leg(dest_leg, call)
        dest_leg.dialled_by = dest_leg.dialled_by or caller_leg.uniqueid
        if caller_leg.uniqueid in (call.first_leg, self._origin_uid(call)):
            call.caller_dial_status = None  # dialling again: the last result no longer decides
        if call.queue_abandoned_at is not None:
            call.dial_after_abandon = True
        number = self._trunk_number(event.dial_string, dest_leg)
        if number is not None and dest_leg.kind == "agent" and dest_leg.uniqueid != call.first_leg:
            # PJSIP/+79161234567@provider, SIP/provider/79161234567: an outside number through an endpoint.
            dest_leg.kind = "trunk"
            self._trunks.add(_device_key(f"{dest_leg.tech}/{dest_leg.endpoint}"))
        if dest_leg.kind == "trunk":
            dest_leg.dial_number = dest_leg.dial_number or number or _dialled_exten(event.dest.exten) \
                or _dialled_exten(event.caller.exten)
            if call.dialled_number is None and dest_leg.dial_number:
                call.dialled_number = dest_leg.dial_number
        elif caller_leg.uniqueid == self._origin_uid(call) and call.dialled_number is None:
            call.dialled_number = _dialled_exten(event.caller.exten)
        if dest_leg.kind == "agent":
            self._learn_from_local_chain(dest_leg)
            out += self._agent_rings(dest_leg, ts)
        return out

    def _trunk_number(self, dial_string: str, dest: Leg) -> str | None:
        """The outside number in a dial string that reaches a real endpoint, if there is one."""
        if dest.kind == "local":
            return None  # Local/x@context is dialplan, never a trunk
        target = dial_string.rpartition("/")[2] if dial_string.count("/") == 1 and "@" not in dial_string \
            and dial_string.split("/")[0] in (dest.endpoint, f"{dest.tech}") else dial_string
        user, at, host = target.partition("@")
        if at:
            user = user.rpartition("/")[2].removeprefix("sip:").removeprefix("tel:")
        elif "/" in dial_string:
            # SIP/peer/number (chan_sip): the number dialled through that peer
            parts = dial_string.split("/")
            user = parts[1] if len(parts) > 1 and parts[0] == dest.endpoint and parts[1] != dest.endpoint else ""
        else:
            return None
        return user if _OUTSIDE_NUMBER.fullmatch(user) else None

    def _learn_from_local_chain(self, leg: Leg) -> None:
        """A phone reached through Local/201@context was dialled as extension 201."""
        hops = 0
        parent = self.legs.get(leg.dialled_by or "")
        while parent is not None and parent.kind == "local" and hops < 6:
            exten = parent.endpoint.split("@")[0]
            if _EXTENSION.fullmatch(exten):
                self._learn_extension(leg, exten)
                return
            partner = self._partner(parent)
            parent = self.legs.get(partner.dialled_by or "") if partner is not None else None
            hops += 1

    def _move_leg(self, leg: Leg, call: Call) -> None:
        old = self.calls.get(leg.call_id)
        if old is not None and leg.uniqueid in old.legs:
            old.legs.remove(leg.uniqueid)
            if not old.legs:
                del self.calls[old.call_id]
                self._merged[old.call_id] = call.call_id
        leg.call_id = call.call_id
        call.legs.append(leg.uniqueid)

    def _on_dial_ended(self, event: ev.DialEnded) -> list:
        leg = self.legs.get(event.dest.uniqueid)
        if leg is None:
            return []
        call = self.calls.get(leg.call_id)
        if call is None:
            return []
        ts = self._ts(event)
        if event.caller is not None and event.caller.uniqueid in (call.first_leg, self._origin_uid(call)) \
                and event.status not in ("", "ANSWER"):
            call.caller_dial_status = event.status
        if event.status == "ANSWER":
            if leg.answered is None:
                leg.answered = ts
            if leg.kind == "agent" and event.caller is not None and call.answered_at is None:
                call.pending_answerer = leg.uniqueid  # the bridge follows; other phones stop ringing now
            origin = self.legs.get(self._origin_uid(call))
            if not self._bridge_events_seen and event.caller is not None and origin is not None \
                    and event.caller.uniqueid == origin.uniqueid and leg.kind in ("agent", "trunk"):
                # A stream without Bridge events (an AMI user whose eventfilter drops them): the caller's
                # own Dial answered is the best evidence left that they talk. Until such a stream is
                # recognised (a call ended with no bridge seen), it waits for a bridge that may come.
                if call.fallback_answer is None:
                    call.fallback_answer = (leg.uniqueid, ts)
                if self._bridgeless_calls:
                    return self._connect(call, origin, [leg], ts)
            return []
        # Ringall queues report CANCEL twice for the same channel; the first result stays.
        if leg.kind != "local":
            call.dial_results.setdefault(leg.uniqueid, event.status)
        if leg.ringing:
            leg.ringing = False
            return [AgentRingStopped(self.pbx, call.call_id, ts, self._extension(leg) or "", self._taker(call))]
        return []

    def _taker(self, call: Call) -> str | None:
        """Who took the call, as far as known when another phone stops ringing."""
        if call.answered_by is not None:
            return call.answered_by
        pending = self.legs.get(call.pending_answerer or "")
        return self._extension(pending) if pending is not None and pending.ended is None else None

    def _on_hangup_requested(self, event: ev.HangupRequested) -> list:
        leg = self.legs.get(event.channel.uniqueid)
        if leg is not None and leg.hangup_by is None and leg.ended is None:
            leg.hangup_by = "pbx" if event.soft else "far_end"
        return []

    def _on_hangup(self, event: ev.ChannelHungUp) -> list:
        leg = self.legs.get(event.channel.uniqueid)
        if leg is None or leg.ended is not None:
            return []
        ts = self._ts(event)
        leg.ended, leg.cause = ts, event.cause
        self._leave_bridges(leg)
        out: list = []
        call = self.calls.get(leg.call_id)
        if call is None:
            return out
        if leg.ringing:
            leg.ringing = False
            out.append(AgentRingStopped(self.pbx, call.call_id, ts, self._extension(leg) or "", self._taker(call)))
        if leg.kind in ("agent", "trunk") and leg.answered is None and event.cause == 17 \
                and leg.uniqueid != call.first_leg:
            call.dial_results[leg.uniqueid] = "BUSY"
        out += self._maybe_finish(call)
        return out

    def _maybe_finish(self, call: Call) -> list:
        if not all(self.legs[u].ended is not None for u in call.legs if u in self.legs):
            return []
        if call.answered_at is None and call.fallback_answer is not None and not self._bridge_events_seen:
            self._bridgeless_calls += 1
            uniqueid, ts = call.fallback_answer
            origin, party = self.legs.get(self._origin_uid(call)), self.legs.get(uniqueid)
            if origin is not None and party is not None:
                self._connect(call, origin, [party], ts)
        origin = self.legs.get(self._origin_uid(call))
        if call.originated and call.answered_at is None and call.originate_number is None \
                and call.awaiting_originate is None and (origin is None or origin.answered is None):
            # Asterisk sends OriginateResponse after the channel is gone; it names the number dialled.
            call.awaiting_originate = self._awaiting[call.call_id] = self.now
            return []
        return [self._finish(call)]

    # ------------------------------------------------------------ queues

    def _on_queue_joined(self, event: ev.QueueJoined) -> list:
        leg, out = self._ensure_leg(event.channel, self._ts(event))
        if leg is not None:
            call = self.calls[leg.call_id]
            call.queue = call.queue or event.queue
        return out

    def _on_queue_abandoned(self, event: ev.QueueAbandoned) -> list:
        # Asterisk sends QueueCallerAbandon both when the caller hangs up and when Queue() times out;
        # only a hang-up that follows at once (no dialling in between) makes it the caller's doing.
        leg = self.legs.get(event.channel.uniqueid)
        call = self.calls.get(leg.call_id) if leg else None
        if call is not None and call.queue_abandoned_at is None:
            call.queue_abandoned_at = self._ts(event)
        return []

    def _on_agent_event(self, event: ev.AgentEvent) -> list:
        call = self.calls.get(self._call_id_of(event.caller))
        if call is None:
            return []
        call.queue = call.queue or event.queue or None
        if event.kind == "called":
            # The member is offered the call even if its phone never gets to ring.
            extension = self._extension_of_interface(event.interface)
            if extension and extension not in call.agents_rang:
                call.agents_rang.append(extension)
        elif event.kind == "complete" and event.talk_time is not None:
            call.queue_talk_time = event.talk_time
        return []

    def _extension_of_interface(self, interface: str) -> str | None:
        """'PJSIP/101', 'SIP/150010001', 'Local/101@from-queue/n' → the member's extension."""
        tech, _, rest = (interface or "").partition("/")
        if not rest:
            return None
        if tech == "Local":
            exten = rest.split("@")[0]
            return exten if _EXTENSION.fullmatch(exten) else None
        endpoint = rest.split("/")[0]
        found = self._devices.get(_device_key(f"{tech}/{endpoint}")) or self._devices.get(endpoint)
        if found:
            return found
        match = _EXTENSION_PREFIX.match(endpoint)
        return match.group(1) if match else self._learned_extensions.get(_device_key(f"{tech}/{endpoint}"), endpoint)

    def _on_queue_member(self, event: ev.QueueMemberListed) -> list:
        """Queue members are people: their devices are phones whatever their names look like."""
        for interface in (event.state_interface, event.interface):
            tech, _, rest = (interface or "").partition("/")
            if rest and tech not in ("Local", "") and tech not in PLUMBING_TECHS:
                self._phones.add(_device_key(f"{tech}/{rest.split('/')[0]}"))
        return []

    def _on_endpoint_listed(self, event: ev.EndpointListed) -> list:
        """PJSIPShowEndpoints / SIPpeers: an endpoint that registers to someone else (outbound auth) or
        a chan_sip peer with a fixed host is a trunk; one that phones register to is a phone."""
        key = _device_key(f"{event.tech}/{event.name}")
        if key in self._devices or event.name in self._devices:
            return []
        if event.trunk is True:
            self._trunks.add(key)
        elif event.trunk is False:
            self._phones.add(key)
        return []

    # ------------------------------------------------------------ transfers

    def _record_transfer(self, call: Call, transfer: Transfer, key: tuple, ts: float) -> list:
        if key in call.transfer_keys:
            return []  # the same transfer event delivered twice
        call.transfer_keys.add(key)
        call.transfers.append(transfer)
        return [CallTransferred(self.pbx, call.call_id, ts, transfer)]

    def _on_blind_transfer(self, event: ev.BlindTransferred) -> list:
        if not event.success or event.transferee is None:
            return []
        call = self.calls.get(self._call_id_of(event.transferee))
        if call is None:
            return []
        source = self.legs.get(event.transferer.uniqueid) if event.transferer else None
        transfer = Transfer(self._extension(source) if source else None, event.extension or None, "blind")
        key = ("blind", event.transferer.uniqueid if event.transferer else None, event.transferee.uniqueid,
               event.extension)
        return self._record_transfer(call, transfer, key, self._ts(event))

    def _on_attended_transfer(self, event: ev.AttendedTransferred) -> list:
        if not event.success or event.orig_transferer is None:
            return []
        ts = self._ts(event)
        customer = self.calls.get(self._call_id_of(event.orig_transferer))
        if customer is None:
            return []
        second_call = self.calls.get(self._call_id_of(event.second_transferer)) if event.second_transferer else None
        target = self._transfer_target(event, second_call)
        source = self.legs.get(event.orig_transferer.uniqueid)
        source_ext = self._extension(source) if source else None
        key = ("attended", event.orig_transferer.uniqueid,
               event.second_transferer.uniqueid if event.second_transferer else None)
        consultation = second_call is not None and second_call is not customer and (
            second_call.first_leg == event.second_transferer.uniqueid
            or self._origin_uid(second_call) == event.second_transferer.uniqueid)
        out: list = []
        if second_call is not None and second_call is not customer and not consultation:
            # Two real calls joined (A called B, C called B, B joins A and C): both stay calls of their own;
            # each tells where its caller went.
            other_party = self.legs.get(self._origin_uid(second_call))
            out += self._record_transfer(customer, Transfer(source_ext, self._identity(other_party)
                                                            if other_party else target, "attended"), key, ts)
            mine = self.legs.get(self._origin_uid(customer))
            second_source = self.legs.get(event.second_transferer.uniqueid)
            out += self._record_transfer(second_call, Transfer(
                self._extension(second_source) if second_source else None,
                self._identity(mine) if mine else None, "attended"), key, ts)
            return out
        if consultation:
            # The transferer's own consultation call joins the customer's call, which keeps its identity;
            # the consultation is never logged as a call of its own.
            self._merge_into(customer, second_call.call_id)
        for channel in (event.target, event.transferee):
            other = self.calls.get(self._call_id_of(channel)) if channel is not None else None
            if other is not None and other is not customer and self._is_consultation(other, source):
                self._merge_into(customer, other.call_id)
        out += self._record_transfer(customer, Transfer(source_ext, target, "attended"), key, ts)
        return out

    def _is_consultation(self, other: Call, transferer: Leg | None) -> bool:
        """A call made for the transfer: Atxfer's Local channels, or the transferer's phone calling out."""
        first = self.legs.get(other.first_leg)
        if first is None:
            return False
        return first.kind == "local" or (transferer is not None and first.endpoint == transferer.endpoint
                                         and first.tech == transferer.tech)

    def _merge_into(self, call: Call, other_id: str) -> None:
        other = self.calls.get(other_id)
        if other is None or other is call:
            return
        for uniqueid in other.legs:
            leg = self.legs.get(uniqueid)
            if leg is not None:
                leg.call_id = call.call_id
                call.legs.append(uniqueid)
        for extension in other.agents_rang:
            if extension not in call.agents_rang:
                call.agents_rang.append(extension)
        del self.calls[other_id]
        self._merged[other_id] = call.call_id

    def _transfer_target(self, event: ev.AttendedTransferred, second_call: Call | None) -> str | None:
        source = self.legs.get(event.orig_transferer.uniqueid) if event.orig_transferer else None
        transferer = self._extension(source) if source else None
        # 1. The channel the transferee goes to, when Asterisk names one (TransferTarget*) and we know
        #    that phone's extension.
        leg = self.legs.get(event.target.uniqueid) if event.target else None
        if leg is not None and leg.kind == "agent" and self._known_extension(leg) not in (None, transferer):
            return self._known_extension(leg)
        # 2. A Local target (Atxfer dials Local/102@from-internal): the phone its other half dialled.
        if leg is not None and leg.kind == "local":
            partner = self._partner(leg)
            for uniqueid in self.calls[leg.call_id].legs if leg.call_id in self.calls else ():
                dialled = self.legs.get(uniqueid)
                if dialled is not None and dialled.kind == "agent" and partner is not None \
                        and dialled.dialled_by == partner.uniqueid:
                    return self._identity(dialled)
            exten = leg.endpoint.split("@")[0]
            if _dialled_exten(exten):
                return exten
        # 3. What the transferer dialled for the consultation: an extension, a group, an outside number.
        customer_id = self._call_id_of(event.orig_transferer) if event.orig_transferer else None
        if second_call is not None and second_call.call_id != customer_id and second_call.dialled_number:
            return self._number(second_call.dialled_number)
        for channel in (event.second_transferer, event.target):
            exten = _dialled_exten(channel.exten) if channel is not None else None
            if exten and exten != transferer:
                return self._number(exten)
        # 4. Whom the consultation call rang or reached (its phones other than the transferer's).
        if second_call is not None and second_call.call_id != customer_id:
            second_uid = event.second_transferer.uniqueid if event.second_transferer else None
            for uniqueid in second_call.legs:
                other = self.legs.get(uniqueid)
                if other is not None and other.uniqueid != second_uid and other.kind in ("agent", "trunk") \
                        and (source is None or other.endpoint != source.endpoint):
                    return self._identity(other)
        if leg is not None and leg.kind in ("agent", "trunk"):
            return self._identity(leg)
        for channel in (event.target, event.second_transferer):
            if channel is None:
                continue
            tech, endpoint = channel_endpoint(channel.name)
            if tech == "Local":
                return endpoint.split("@")[0]
            if _EXTENSION.fullmatch(channel.connected_num or "") and channel.connected_num != transferer:
                return channel.connected_num
        return None

    def _known_extension(self, leg: Leg) -> str | None:
        """The extension of a phone when configured, named by it, or learned; None for a bare account."""
        extension = self._extension(leg)
        return extension if extension and extension != leg.endpoint or _EXTENSION.fullmatch(leg.endpoint) else None

    # ------------------------------------------------------------ recording, originate

    def _on_recording(self, event: ev.RecordingStarted) -> list:
        leg, out = self._ensure_leg(event.channel, self._ts(event))
        if leg is not None:
            call = self.calls[leg.call_id]
            if event.filename:
                call.recording = call.recording or event.filename
        return out

    def _on_originate_result(self, event: ev.OriginateResult) -> list:
        call = None
        leg = self.legs.get(event.uniqueid or "")
        if leg is not None:
            call = self.calls.get(leg.call_id)
        if call is None:
            # A failed originate has no Uniqueid: find the originated call on that device, if any.
            tech, _, rest = event.channel_name.partition("/")
            wanted = _device_key(f"{tech}/{rest.split('@')[0].split('/')[0]}") if rest else ""
            for candidate in reversed(list(self.calls.values())):
                first = self.legs.get(candidate.first_leg)
                if candidate.originated and first is not None and (
                        _device_key(f"{first.tech}/{first.endpoint}") == wanted
                        or first.name.startswith(event.channel_name)):
                    call = candidate
                    break
        if call is None:
            return []
        call.originated = True
        number = _dialled_exten(event.exten)
        if number:
            call.originate_number = self._number(number)
        if not event.success:
            call.originate_failed = event.reason or "failed"
        if call.awaiting_originate is not None:
            return [self._finish(call)]
        return []

    # ------------------------------------------------------------ agent states

    def _set_agent_state(self, extension: str, state: str, ts: float) -> list:
        if self._agent_states.get(extension) == state:
            return []
        self._agent_states[extension] = state
        return [AgentStateChanged(self.pbx, extension, state, ts)]

    def _on_device_state(self, event: ev.DeviceStateChanged) -> list:
        tech, _, endpoint = event.device.partition("/")
        if tech in ("Queue", "Local", "") or tech in PLUMBING_TECHS:
            return []
        key = _device_key(event.device)
        if key in self._trunks or endpoint.lower() in self._trunks:
            return []
        extension = self._devices.get(key) or self._devices.get(endpoint)
        if extension is None:
            match = _EXTENSION_PREFIX.match(endpoint)
            extension = match.group(1) if match else self._learned_extensions.get(key)
        if not extension:
            return []
        return self._set_agent_state(extension, _DEVICE_STATES.get(event.state, "unknown"), self._ts(event))

    def _on_extension_state(self, event: ev.ExtensionStateChanged) -> list:
        if not _EXTENSION.fullmatch(event.exten):
            return []
        return self._set_agent_state(event.exten, _EXTENSION_STATES.get(event.status, "unknown"), self._ts(event))

    def agent_states(self) -> dict[str, str]:
        return self._agent_states.copy()

    # ------------------------------------------------------------ reconnects

    def _on_session_started(self, event: ev.SessionStarted) -> list:
        """A new AMI connection (its banner): the next FullyBooted opens a resync."""
        self._session_open = True
        return []

    def _on_booted(self, event: ev.Booted) -> list:
        """FullyBooted. On a new AMI session (or a PBX that restarted) what happened while we were away is
        unknown until the channel list arrives. A FullyBooted on a session already booted (a module reload
        sends one) changes nothing: the link never dropped, so nothing was missed."""
        restarted = event.uptime is not None and self._uptime is not None and event.uptime < self._uptime
        if event.uptime is not None:
            self._uptime = event.uptime
        if self._booted and not self._session_open and not restarted:
            logger.debug("FullyBooted on a live session ignored (module reload)")
            return []
        self._booted, self._session_open = True, False
        self._resyncing = True
        for leg in self.legs.values():
            if leg.ended is None:
                leg.confirmed = False
        return []

    def _on_channel_listed(self, event: ev.ChannelListed) -> list:
        ts = self._ts(event)
        created = ts - event.seconds if event.seconds is not None else ts
        known = event.channel.uniqueid in self.legs
        leg, out = self._ensure_leg(event.channel, created)
        if leg is None:
            return out
        leg.confirmed = True
        call = self.calls[leg.call_id]
        if not known:
            call.recovered = True
            call.started = min(call.started, created)
            if event.application == "Queue" and event.application_data:
                call.queue = call.queue or event.application_data.split(",")[0]
        if event.channel.state == UP and leg.answered is None:
            # Answered while we were away: the moment is unknown (the Cdr may tell later). A leg we knew
            # counts from the resync (talk time a lower bound); one we meet now, from its creation.
            leg.answered = ts if known else created
            call.answer_estimated = call.answered_at is None
        if event.bridge_id:
            self._join_bridge(leg, event.bridge_id)
            was_answered = call.answered_at is not None
            for call_event in self._check_bridge(event.bridge_id, ts):
                out.append(call_event)
            for uniqueid in self._bridges.get(event.bridge_id, ()):
                member = self.legs.get(uniqueid)
                if member is not None and member.connected and member.answered and member.answered < member.connected:
                    member.connected = member.answered  # joined in the gap, not at the resync
            if not was_answered and call.answered_at is not None:
                # The answer happened in the gap: date it by the answering leg, not the resync.
                answered_leg = max((self.legs[u].answered or 0.0 for u in call.legs if u in self.legs
                                    and self.legs[u].uniqueid != self._origin_uid(call)), default=0.0)
                call.answered_at = answered_leg or call.answered_at
                call.answer_estimated = call.recovered = True
        return out

    def _on_list_complete(self, event: ev.ChannelListComplete) -> list:
        """Legs not listed ended while we were away; calls with nothing left are closed now."""
        if not self._resyncing:
            return []
        self._resyncing = False
        ts = self._ts(event)
        out: list = []
        for call in list(self.calls.values()):
            for uniqueid in call.legs:
                leg = self.legs.get(uniqueid)
                if leg is not None and not leg.confirmed and leg.ended is None:
                    leg.ended, leg.ringing = ts, False
                    self._leave_bridges(leg)
                    call.recovered = True
            if call.call_id in self.calls and all(
                    self.legs[u].ended is not None for u in call.legs if u in self.legs):
                out.append(self._finish(call))
        return out

    def _on_cdr(self, event: ev.CdrRecord) -> list:
        """cdr_manager fills what a reconnect lost: start, answer and agents tried."""
        leg = self.legs.get(event.uniqueid)
        call = self.calls.get(leg.call_id) if leg else None
        if call is None:
            return self._amend(event)
        if not (call.recovered or call.answer_estimated):
            return []
        if event.start is not None and call.recovered:
            call.started = min(call.started, event.start)
        extension = self._cdr_extension(event)
        if extension and extension not in call.cdr_agents:
            call.cdr_agents.append(extension)
        if event.disposition == "ANSWERED" and event.answer is not None and extension:
            if call.answered_at is None or call.answer_estimated:
                call.answered_at, call.answered_by, call.answer_estimated = event.answer, extension, False
        return []

    def _cdr_extension(self, event: ev.CdrRecord) -> str | None:
        tech, endpoint = channel_endpoint(event.dest_channel) if event.dest_channel else ("", "")
        if not tech or tech == "Local":
            return None
        key = _device_key(f"{tech}/{endpoint}")
        extension = self._devices.get(key) or self._devices.get(endpoint)
        if extension is None and key not in self._trunks:
            match = _EXTENSION_PREFIX.match(endpoint)
            extension = match.group(1) if match else self._learned_extensions.get(key, endpoint)
        return extension

    def _amend(self, event: ev.CdrRecord) -> list:
        """The Cdr of a call already written with a guessed answer (it came after the last Hangup):
        the call is written again with the PBX's own answer time; the writer upserts it."""
        record = self._amendable.get(event.uniqueid)
        extension = self._cdr_extension(event)
        if record is None or event.disposition != "ANSWERED" or event.answer is None or not extension:
            return []
        del self._amendable[event.uniqueid]
        ended = record.ended_at or event.answer
        talk = _seconds(ended - event.answer)
        answered_by = record.answered_by if record.outcome == "answered" and record.answered_by else extension
        amended = replace(
            record, answered_at=event.answer, outcome="answered", reason="answered", answered_by=answered_by,
            ring_seconds=_seconds(event.answer - record.started_at), talk_seconds=talk,
            talk_by_agent=((answered_by, talk),) if len(record.talk_by_agent) <= 1 else record.talk_by_agent)
        return [CallEnded(self.pbx, record.call_id, ended, amended)]

    # ------------------------------------------------------------ the end of a call

    def _direction(self, call: Call) -> str:
        origin = self.legs.get(self._origin_uid(call))
        if origin is None:
            return "inbound"
        if origin.kind == "trunk":
            # An outside party who called in; or the first leg of an Originate to an outside number.
            return "outbound" if call.originated else "inbound"
        dialled = call.originate_number or call.dialled_number or ""
        if _OUTSIDE_NUMBER.fullmatch(dialled):
            return "outbound"
        if _EXTENSION.fullmatch(dialled.lstrip("*#")):
            return "internal"  # an extension, a group or a feature code, even if it forwards outside later
        if any(self.legs[u].kind == "trunk" for u in call.legs if u in self.legs and u != origin.uniqueid):
            return "outbound"
        return "internal"

    def _parties(self, call: Call) -> tuple[str, str, str, str]:
        origin = self.legs[self._origin_uid(call)] if self._origin_uid(call) in self.legs else None
        if origin is None:
            return "inbound", "", "", ""
        direction = self._direction(call)
        if direction == "inbound":
            return direction, self._number(origin.caller_num), origin.caller_name, self._number(origin.exten)
        caller = self._identity(origin)
        name = origin.caller_name if origin.kind != "local" else ""
        callee = call.originate_number or call.dialled_number or ""
        if not callee or (direction == "internal" and not _EXTENSION.fullmatch(callee.lstrip("*#"))):
            others = [self.legs[u] for u in call.legs if u in self.legs and u != origin.uniqueid]
            reached = [leg for leg in others if leg.connected is not None and leg.kind != "local"] or \
                [leg for leg in others if leg.kind in ("agent", "trunk")]
            callee = self._identity(reached[0]) if reached else callee
        return direction, caller, name, self._number(callee)

    def _finish(self, call: Call) -> CallEnded:
        legs = [self.legs[u] for u in call.legs if u in self.legs]
        origin = self.legs[self._origin_uid(call)]
        direction, caller, caller_name, callee = self._parties(call)
        if direction == "inbound":
            customer_end = origin.ended or self.now
        else:
            customer_legs = [leg for leg in legs if leg.kind == "trunk" and leg.connected is not None] or [origin]
            customer_end = max((leg.ended or self.now) for leg in customer_legs)
        ended = customer_end
        outcome, reason = self._outcome(call, direction, origin, legs)
        answered_at = call.answered_at if outcome == "answered" else None
        ring_end = answered_at if answered_at is not None else ended
        talk_by_agent: dict[str, float] = {}
        for leg in legs:
            if leg.kind == "agent" and leg.connected is not None and answered_at is not None \
                    and (leg is not origin or direction == "outbound"):
                extension = self._extension(leg) or leg.endpoint
                # From the agent's own answer (a transfer target's consultation included), never before
                # the caller's call was answered.
                start = max(leg.answered or leg.connected, answered_at)
                talk_by_agent[extension] = talk_by_agent.get(extension, 0.0) + max(0.0, (leg.ended or ended) - start)
        agents = list(call.cdr_agents) + [a for a in call.agents_rang if a not in call.cdr_agents]
        talk = max(0.0, ended - answered_at) if answered_at is not None else 0.0
        if call.recovered and call.queue_talk_time is not None and answered_at is not None:
            # After a reconnect the answer time is a CDR guess to the second; the queue counted exactly.
            talk = float(call.queue_talk_time)
        record = CallRecord(
            pbx=self.pbx,
            call_id=call.call_id,
            direction=direction,
            caller=caller,
            caller_name=caller_name if caller_name not in ("<unknown>",) else "",
            callee=callee,
            started_at=call.started,
            answered_at=answered_at,
            ended_at=ended,
            outcome=outcome,
            reason=reason,
            answered_by=call.answered_by if outcome == "answered" else None,
            agents_rang=tuple(agents),
            queue=call.queue,
            ring_seconds=_seconds(ring_end - call.started),
            talk_seconds=_seconds(talk),
            # The file MixMonitor was told to write, whatever the outcome: with option b a call nobody
            # talked in leaves a header-only file; pages offer a player only when someone talked.
            recording=call.recording,
            transfers=tuple(call.transfers),
            talk_by_agent=tuple((ext, _seconds(secs)) for ext, secs in talk_by_agent.items()),
            legs=tuple(LegRecord(leg.uniqueid, leg.name, leg.kind, self._extension(leg), leg.created, leg.answered,
                                 leg.ended, leg.cause) for leg in legs),
            recovered=call.recovered,
            originated=call.originated,
        )
        self._forget(call)
        self._awaiting.pop(call.call_id, None)
        if call.answer_estimated or (call.recovered and outcome in ("answered", "unknown")):
            # A Cdr may still come (cdr_manager posts it after the hang-up) and tell the real answer.
            self._amendable[call.first_leg] = record
            if len(self._amendable) > AMENDABLE_MEMORY:
                self._amendable.popitem(last=False)
        return CallEnded(self.pbx, call.call_id, ended, record)

    def _forget(self, call: Call) -> None:
        for uniqueid in call.legs:
            leg = self.legs.pop(uniqueid, None)
            if leg is not None:
                self._leave_bridges(leg)
                if leg.kind == "local":
                    pair = self._local_pairs.get(leg.name[:-2])
                    if pair is not None:
                        pair.pop(leg.name[-1], None)
                        if not pair:
                            del self._local_pairs[leg.name[:-2]]
            self._remember(self._finished_legs, uniqueid)
        self.calls.pop(call.call_id, None)
        self._remember(self._finished, call.call_id)

    def _outcome(self, call: Call, direction: str, origin: Leg, legs: list[Leg]) -> tuple[str, str]:
        if call.answered_at is not None:
            return "answered", "answered"
        if call.originated and origin.kind == "agent" and origin.answered is None:
            return "failed", "agent_did_not_answer"
        if call.originate_failed and origin.connected is None and not call.dial_results:
            return "failed", "originate_failed"
        if call.recovered and any(not leg.confirmed for leg in legs):
            return "unknown", "ended_while_disconnected"
        people = [leg for leg in legs if leg.kind in ("agent", "trunk") and leg is not origin]
        results = [status for uniqueid, status in call.dial_results.items() if uniqueid != origin.uniqueid]
        if self._caller_cleared(call, origin):
            if any(leg.kind == "agent" for leg in people):
                return "abandoned", "abandoned_while_ringing"
            return "abandoned", "abandoned_in_queue" if call.queue else "abandoned_before_routing"
        if results and all(status == "BUSY" for status in results):
            return "busy", "busy"
        if direction != "inbound" and results and all(s in ("CONGESTION", "CHANUNAVAIL") for s in results):
            return "failed", "congestion"
        if not results and not people and origin.cause in FAILURE_CAUSES:
            return "failed", "channel_error"
        if call.queue and not any(leg.kind == "agent" for leg in people) and not call.agents_rang:
            return "missed", "no_agent_available"
        return "missed", "no_answer"

    def _caller_cleared(self, call: Call, origin: Leg) -> bool:
        """Did the caller hang up first? Asterisk 12+ says so with HangupRequest (the far end) versus
        SoftHangupRequest (dialplan, application, AMI); older streams leave the dial status and causes."""
        if call.caller_dial_status in RANG_OUT:
            # The phones rang out (or were busy) before the caller left: the call was missed, even if the
            # caller hung up later in voicemail or a message.
            return False
        if call.queue_abandoned_at is not None:
            # Asterisk sends QueueCallerAbandon both when the caller hangs up and when Queue() times out;
            # only a caller's hang-up that follows at once, with no dialling after it, is the caller's doing.
            if origin.hangup_by == "pbx" or call.dial_after_abandon or origin.ended is None:
                return False
            return origin.ended - call.queue_abandoned_at <= 2.0
        if origin.hangup_by is not None:
            return origin.hangup_by == "far_end"
        if call.caller_dial_status == "CANCEL":
            return True  # the caller's own Dial was cancelled: the caller hung up while it rang
        return origin.cause in CALLER_CLEARED_CAUSES

    @staticmethod
    def _remember(memory: OrderedDict[str, None], key: str) -> None:
        memory[key] = None
        if len(memory) > FINISHED_MEMORY:
            memory.popitem(last=False)

    def close_all(self) -> list[CallEnded]:
        """Shutdown: close what is still live, as far as it is known."""
        out = []
        for call in list(self.calls.values()):
            for uniqueid in call.legs:
                leg = self.legs.get(uniqueid)
                if leg is not None and leg.ended is None:
                    leg.confirmed = False
                    leg.ended = self.now
            call.recovered = True
            out.append(self._finish(call))
        return out

    def finish_waiting(self) -> list[CallEnded]:
        """End of input: calls that only waited for an OriginateResponse are finished as they are."""
        return [self._finish(call) for call in list(self.calls.values()) if call.awaiting_originate is not None]

    def in_progress(self) -> list[CallRecord]:
        """The calls still live, as records with outcome 'in_progress' (replay of a cut capture)."""
        records = []
        for call in self.calls.values():
            if self._origin_uid(call) not in self.legs:
                continue
            direction, caller, caller_name, callee = self._parties(call)
            answered_at = call.answered_at
            records.append(CallRecord(
                pbx=self.pbx, call_id=call.call_id, direction=direction, caller=caller,
                caller_name=caller_name if caller_name != "<unknown>" else "", callee=callee,
                started_at=call.started, answered_at=answered_at, ended_at=None, outcome="in_progress",
                reason="in_progress", answered_by=call.answered_by, agents_rang=tuple(call.agents_rang),
                queue=call.queue, ring_seconds=_seconds((answered_at or self.now) - call.started),
                talk_seconds=_seconds(self.now - answered_at) if answered_at is not None else 0,
                recording=call.recording, transfers=tuple(call.transfers), talk_by_agent=(), legs=(),
                recovered=call.recovered, originated=call.originated))
        return records


@lru_cache(maxsize=8192)
def _normalised(text: str, region: str) -> str:
    # phonenumbers is slow (~50 µs); the same few numbers recur on every event of a call.
    return normalise_caller(text, region) or text


@lru_cache(maxsize=16384)
def _device_key(device: str) -> str:
    """'sip/150010001', 'SIP/150010001-0000003c' → 'SIP/150010001'; a bare endpoint stays as given.

    Cached (a pure function of the text): classifying a leg and naming its extension ask again and again."""
    tech, sep, rest = device.strip().partition("/")
    if not sep:
        return tech
    tech = {"sip": "SIP", "pjsip": "PJSIP", "iax2": "IAX2", "dahdi": "DAHDI"}.get(tech.lower(), tech)
    return f"{tech}/{channel_endpoint(f'{tech}/{rest}')[1] if '-' in rest else rest}"


def _dialled_exten(exten: str | None) -> str | None:
    """The number a channel dialled, or None for dialplan names ('s', 'h', 'ID730151', 'onhangup')."""
    exten = (exten or "").strip()
    if not exten or not re.fullmatch(r"[+*#]?[\d*#]+", exten):
        return None
    return exten


def _seconds(value: float) -> int:
    return max(0, int(value + 0.5))


_DEVICE_STATES = {"NOT_INUSE": "idle", "INUSE": "in_call", "BUSY": "in_call", "RINGING": "ringing",
                  "RINGINUSE": "ringing", "ONHOLD": "in_call", "UNAVAILABLE": "offline", "INVALID": "offline",
                  "UNKNOWN": "unknown"}
# ExtensionStatus codes: -1 removed, 0 idle, 1 in use, 2 busy, 4 unavailable, 8 ringing, 16 on hold.
_EXTENSION_STATES = {0: "idle", 1: "in_call", 2: "in_call", 4: "offline", 8: "ringing", 9: "ringing",
                     16: "in_call", 17: "in_call", -1: "offline", -2: "offline"}
