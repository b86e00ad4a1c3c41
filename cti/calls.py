"""The call model: typed AMI events in, call events out. Pure: no I/O, no clock, no await.

A *call* is what the customer lived, keyed by Linkedid; a *leg* is one channel, keyed by Uniqueid.
`CallTracker.handle(event)` returns the call events that event caused, and changes nothing for
events it does not understand or that arrive twice, so replays and reconnects are harmless.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
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
FINISHED_MEMORY = 50_000
SWEEP_EVERY = 60.0
# After the caller's hang-up, how long other legs may go on (a conference, say) before their lost
# Hangup events are given up on.
CALLER_GONE_GRACE = 1800.0
SILENT_CALL_LIMIT = 6 * 3600.0
_EXTENSION = re.compile(r"\d{2,6}")
_EXTENSION_PREFIX = re.compile(r"(\d{2,6})(?:\D|$)")
_OUTSIDE_NUMBER = re.compile(r"\+?\d{7,}")


@dataclass(frozen=True, slots=True)
class DirectionRules:
    """How to tell inbound, outbound and internal calls apart."""

    trunk_endpoints: frozenset[str] = frozenset({"trunk"})
    inbound_contexts: frozenset[str] = frozenset({"from-trunk", "from-pstn", "from-external"})
    region: str = "RU"


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
    ended_at: float
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
    kind: str
    extension: str | None
    created: float
    caller_num: str
    caller_name: str
    exten: str
    context: str
    answered: float | None = None
    ended: float | None = None
    cause: int | None = None
    ringing: bool = False
    hangup_by: str | None = None  # 'far_end' (HangupRequest) or 'pbx' (SoftHangupRequest), first seen
    confirmed: bool = True


@dataclass(slots=True)
class Call:
    call_id: str
    first_leg: str
    started: float
    legs: list[str] = field(default_factory=list)
    originated: bool = False
    queue: str | None = None
    agents_rang: list[str] = field(default_factory=list)
    dial_results: dict[str, str] = field(default_factory=dict)
    dialled_number: str | None = None
    answered_at: float | None = None
    answered_by: str | None = None
    answer_estimated: bool = False
    recording: str | None = None
    transfers: list[Transfer] = field(default_factory=list)
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
        self._merged: dict[str, str] = {}  # consultation call id → the customer call it joined
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._finished_legs: OrderedDict[str, None] = OrderedDict()
        self._agent_states: dict[str, str] = {}
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
            ev.QueueJoined: self._on_queue_joined,
            ev.AgentEvent: self._on_agent_event,
            ev.BlindTransferred: self._on_blind_transfer,
            ev.AttendedTransferred: self._on_attended_transfer,
            ev.RecordingStarted: self._on_recording,
            ev.OriginateResult: self._on_originate_result,
            ev.DeviceStateChanged: self._on_device_state,
            ev.ExtensionStateChanged: self._on_extension_state,
            ev.Booted: self._on_booted,
            ev.ChannelListed: self._on_channel_listed,
            ev.ChannelListComplete: self._on_list_complete,
            ev.CdrRecord: self._on_cdr,
        }

    # ------------------------------------------------------------ entry point

    def handle(self, event: ev.AmiEvent) -> list:
        if event.ts is not None and event.ts > self.now:
            self.now = event.ts
        handler = self._handlers.get(type(event))
        out = handler(event) if handler is not None else []
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
            first = self.legs.get(call.first_leg)
            last_seen = max(max(leg.created, leg.answered or 0.0, leg.ended or 0.0) for leg in legs)
            caller_gone = first is not None and first.ended is not None and self.now - first.ended > CALLER_GONE_GRACE
            if caller_gone or self.now - last_seen > SILENT_CALL_LIMIT:
                logger.warning("call %s closed by the sweep: %s", call.call_id,
                               "its caller left long ago" if caller_gone else "no event for hours")
                end = first.ended if caller_gone else self.now
                for leg in legs:
                    if leg.ended is None:
                        leg.ended, leg.ringing, leg.confirmed = end, False, False
                call.recovered = True
                out.append(self._finish(call))
        return out

    @property
    def live_calls(self) -> list[Call]:
        return list(self.calls.values())

    # ------------------------------------------------------------ classification

    def _classify(self, channel: ChannelInfo, dial_string: str = "", first: bool = False) -> tuple[str, str | None]:
        tech, endpoint = channel_endpoint(channel.name)
        if tech == "Local":
            return "local", None
        if endpoint in self.rules.trunk_endpoints or "@" in dial_string:
            return "trunk", None
        if first and channel.context in self.rules.inbound_contexts:
            return "trunk", None
        match = _EXTENSION_PREFIX.match(endpoint)
        if match:
            return "agent", match.group(1)
        if _EXTENSION.fullmatch(channel.caller_num or ""):
            return "agent", channel.caller_num
        return "other", None

    def _call_id_of(self, channel: ChannelInfo) -> str:
        leg = self.legs.get(channel.uniqueid)
        if leg is not None:
            return leg.call_id
        return self._merged.get(channel.linkedid, channel.linkedid)

    def _number(self, text: str) -> str:
        """E.164 when it is a phone number, else as given (extensions, 'anonymous')."""
        return _normalised(text or "", self.rules.region)

    # ------------------------------------------------------------ legs and calls

    def _ensure_leg(self, channel: ChannelInfo, ts: float, dial_string: str = "") -> tuple[Leg | None, list]:
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
        kind, extension = self._classify(channel, dial_string, first=first)
        leg = Leg(channel.uniqueid, call_id, channel.name, kind, extension, ts, channel.caller_num,
                  channel.caller_name, channel.exten, channel.context)
        self.legs[leg.uniqueid] = leg
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
        return leg, out

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
        return []

    def _on_state(self, event: ev.ChannelStateChanged) -> list:
        leg, out = self._ensure_leg(event.channel, self._ts(event))
        if leg is None or leg.ended is not None:
            return out
        if event.channel.state == RINGING:
            out += self._agent_rings(leg, self._ts(event))
        elif event.channel.state == UP:
            out += self._leg_answered(leg, self._ts(event))
        return out

    def _agent_rings(self, leg: Leg, ts: float) -> list:
        call = self.calls.get(leg.call_id)
        if call is None or leg.kind != "agent" or leg.ringing or leg.answered is not None:
            return []
        leg.ringing = True
        if leg.extension and leg.extension not in call.agents_rang:
            call.agents_rang.append(leg.extension)
        direction, caller, caller_name, _ = self._parties(call)
        return [AgentRinging(self.pbx, call.call_id, ts, leg.extension or "", direction, caller, caller_name,
                             call.originated and leg.uniqueid == call.first_leg)]

    def _leg_answered(self, leg: Leg, ts: float) -> list:
        if leg.answered is not None:
            return []
        leg.answered = ts
        was_ringing, leg.ringing = leg.ringing, False
        call = self.calls.get(leg.call_id)
        if call is None or leg.uniqueid == call.first_leg:
            return []
        direction = self._direction(call)
        out: list = []
        if direction == "outbound":
            # The far end picked up; the call was placed (and so answered) by the agent.
            if leg.kind == "trunk" and call.answered_at is None:
                call.answered_at = ts
                call.answered_by = self.legs[call.first_leg].extension
                out.append(CallAnswered(self.pbx, call.call_id, ts, call.answered_by))
            return out
        if leg.kind != "agent":
            return out
        if call.answered_at is None:
            call.answered_at, call.answered_by = ts, leg.extension
            out.append(CallAnswered(self.pbx, call.call_id, ts, leg.extension))
            # Every other phone that was ringing for this call stops now.
            for other_id in call.legs:
                other = self.legs.get(other_id)
                if other is not None and other is not leg and other.ringing and other.ended is None:
                    other.ringing = False
                    out.append(AgentRingStopped(self.pbx, call.call_id, ts, other.extension or "", leg.extension))
        elif was_ringing or leg.extension not in (None, call.answered_by):
            out.append(CallAnswered(self.pbx, call.call_id, ts, leg.extension))
        return out

    def _on_dial_started(self, event: ev.DialStarted) -> list:
        ts = self._ts(event)
        out: list = []
        if event.caller is None:
            # An Originate: Asterisk dials the agent's phone first and sends only Dest* headers.
            leg, out = self._ensure_leg(event.dest, ts)
            if leg is not None:
                call = self.calls[leg.call_id]
                if call.first_leg == leg.uniqueid:
                    call.originated = True
                out += self._agent_rings(leg, ts)
            return out
        caller_leg, out = self._ensure_leg(event.caller, ts)
        dest_leg, more = self._ensure_leg(event.dest, ts, event.dial_string)
        out += more
        if caller_leg is None or dest_leg is None:
            return out
        call = self.calls.get(caller_leg.call_id)
        if call is None:
            return out
        if dest_leg.call_id != call.call_id:
            self._move_leg(dest_leg, call)
        if "@" in event.dial_string and dest_leg.kind != "trunk":
            dest_leg.kind, dest_leg.extension = "trunk", None
        if dest_leg.kind == "trunk" and call.dialled_number is None:
            number = event.caller.exten if event.caller.exten not in ("", "s") else event.dial_string.split("@")[0]
            call.dialled_number = number.rpartition("/")[2]
        elif dest_leg.kind == "agent" and call.dialled_number is None and caller_leg.uniqueid == call.first_leg:
            call.dialled_number = event.caller.exten if event.caller.exten not in ("", "s") else dest_leg.extension
        if dest_leg.kind == "agent":
            out += self._agent_rings(dest_leg, ts)
        return out

    def _move_leg(self, leg: Leg, call: Call) -> None:
        old = self.calls.get(leg.call_id)
        if old is not None and leg.uniqueid in old.legs:
            old.legs.remove(leg.uniqueid)
            if not old.legs:
                del self.calls[old.call_id]
        leg.call_id = call.call_id
        call.legs.append(leg.uniqueid)

    def _on_dial_ended(self, event: ev.DialEnded) -> list:
        leg = self.legs.get(event.dest.uniqueid)
        if leg is None:
            return []
        call = self.calls.get(leg.call_id)
        if call is None:
            return []
        if event.status == "ANSWER":
            return self._leg_answered(leg, self._ts(event))
        # Ringall queues report CANCEL twice for the same channel; the first result stays.
        call.dial_results.setdefault(leg.uniqueid, event.status)
        if leg.ringing:
            leg.ringing = False
            return [AgentRingStopped(self.pbx, call.call_id, self._ts(event), leg.extension or "", call.answered_by)]
        return []

    def _on_hangup_requested(self, event: ev.HangupRequested) -> list:
        leg = self.legs.get(event.channel.uniqueid)
        if leg is not None and leg.hangup_by is None:
            leg.hangup_by = "pbx" if event.soft else "far_end"
        return []

    def _on_hangup(self, event: ev.ChannelHungUp) -> list:
        leg = self.legs.get(event.channel.uniqueid)
        if leg is None or leg.ended is not None:
            return []
        ts = self._ts(event)
        leg.ended, leg.cause = ts, event.cause
        out: list = []
        call = self.calls.get(leg.call_id)
        if call is None:
            return out
        if leg.ringing:
            leg.ringing = False
            out.append(AgentRingStopped(self.pbx, call.call_id, ts, leg.extension or "", call.answered_by))
        if leg.kind == "agent" and leg.answered is None and event.cause == 17:
            call.dial_results.setdefault(leg.uniqueid, "BUSY")
        if all(self.legs[u].ended is not None for u in call.legs if u in self.legs):
            out.append(self._finish(call))
        return out

    def _on_bridge_entered(self, event: ev.BridgeEntered) -> list:
        leg, out = self._ensure_leg(event.channel, self._ts(event))
        if leg is not None and leg.kind == "agent" and leg.answered is None:
            out += self._leg_answered(leg, self._ts(event))
        return out

    def _on_queue_joined(self, event: ev.QueueJoined) -> list:
        leg, out = self._ensure_leg(event.channel, self._ts(event))
        if leg is not None:
            call = self.calls[leg.call_id]
            call.queue = call.queue or event.queue
        return out

    def _on_agent_event(self, event: ev.AgentEvent) -> list:
        call = self.calls.get(self._call_id_of(event.caller))
        if call is None:
            return []
        call.queue = call.queue or event.queue or None
        if event.kind == "called":
            # The member is offered the call even if its phone never gets to ring.
            extension = _extension_of_interface(event.interface)
            if extension and extension not in call.agents_rang:
                call.agents_rang.append(extension)
        elif event.kind == "complete" and event.talk_time is not None:
            call.queue_talk_time = event.talk_time
        elif event.kind == "connect" and event.dest is not None:
            leg = self.legs.get(event.dest.uniqueid)
            if leg is not None and leg.answered is None:
                return self._leg_answered(leg, self._ts(event))
        return []

    def _on_blind_transfer(self, event: ev.BlindTransferred) -> list:
        if not event.success or event.transferee is None:
            return []
        call = self.calls.get(self._call_id_of(event.transferee))
        if call is None:
            return []
        source = self.legs.get(event.transferer.uniqueid) if event.transferer else None
        transfer = Transfer(source.extension if source else None, event.extension or None, "blind")
        call.transfers.append(transfer)
        return [CallTransferred(self.pbx, call.call_id, self._ts(event), transfer)]

    def _on_attended_transfer(self, event: ev.AttendedTransferred) -> list:
        if not event.success or event.orig_transferer is None:
            return []
        call = self.calls.get(self._call_id_of(event.orig_transferer))
        if call is None:
            return []
        ts = self._ts(event)
        # The consultation (a phone's own second call, or the Local/… channels Asterisk dials for
        # Atxfer) may have a Linkedid of its own: every call the event names joins the customer's
        # call, which keeps its identity; the consultation is never logged as a call of its own.
        for channel in (event.second_transferer, event.target, event.transferee):
            if channel is not None:
                self._merge_into(call, self._call_id_of(channel))
        source = self.legs.get(event.orig_transferer.uniqueid)
        transfer = Transfer(source.extension if source else None, self._transfer_target(event), "attended")
        call.transfers.append(transfer)
        return [CallTransferred(self.pbx, call.call_id, ts, transfer)]

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

    def _transfer_target(self, event: ev.AttendedTransferred) -> str | None:
        source = self.legs.get(event.orig_transferer.uniqueid) if event.orig_transferer else None
        transferer = source.extension if source else None
        candidates = [c for c in (event.target, event.second_transferer) if c is not None]
        for channel in candidates:
            leg = self.legs.get(channel.uniqueid)
            if leg is not None and leg.kind == "agent" and leg.extension not in (None, transferer):
                return leg.extension
        for channel in candidates:
            # Local/102@from-internal-0000002a;1: the exten the transferer dialled.
            tech, endpoint = channel_endpoint(channel.name)
            if tech == "Local":
                return endpoint.split("@")[0]
        for channel in candidates:
            if _EXTENSION.fullmatch(channel.connected_num or "") and channel.connected_num != transferer:
                return channel.connected_num
        return None

    def _on_recording(self, event: ev.RecordingStarted) -> list:
        leg, out = self._ensure_leg(event.channel, self._ts(event))
        if leg is not None:
            call = self.calls[leg.call_id]
            if event.filename:
                call.recording = call.recording or event.filename
        return out

    def _on_originate_result(self, event: ev.OriginateResult) -> list:
        leg = self.legs.get(event.uniqueid or "")
        if leg is not None:
            call = self.calls.get(leg.call_id)
            if call is not None and call.first_leg == leg.uniqueid:
                call.originated = True
        return []

    # ------------------------------------------------------------ agent states

    def _set_agent_state(self, extension: str, state: str, ts: float) -> list:
        if self._agent_states.get(extension) == state:
            return []
        self._agent_states[extension] = state
        return [AgentStateChanged(self.pbx, extension, state, ts)]

    def _on_device_state(self, event: ev.DeviceStateChanged) -> list:
        tech, _, endpoint = event.device.partition("/")
        if tech in ("Queue", "Local", "") or endpoint in self.rules.trunk_endpoints:
            return []
        match = _EXTENSION_PREFIX.match(endpoint)
        if not match:
            return []
        return self._set_agent_state(match.group(1), _DEVICE_STATES.get(event.state, "unknown"), self._ts(event))

    def _on_extension_state(self, event: ev.ExtensionStateChanged) -> list:
        if not _EXTENSION.fullmatch(event.exten):
            return []
        return self._set_agent_state(event.exten, _EXTENSION_STATES.get(event.status, "unknown"), self._ts(event))

    def agent_states(self) -> dict[str, str]:
        return self._agent_states.copy()

    # ------------------------------------------------------------ reconnects

    def _on_booted(self, event: ev.Booted) -> list:
        """A new AMI session: what happened while we were away is unknown until the channel list arrives."""
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
                # Answered while we were away: the moment is unknown; the CDR may tell later.
                leg.answered = created
                out += self._leg_answered(leg, created)
                if call.answered_at == created:
                    call.answer_estimated = True
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
                    call.recovered = True
            if all(self.legs[u].ended is not None for u in call.legs if u in self.legs):
                out.append(self._finish(call))
        return out

    def _on_cdr(self, event: ev.CdrRecord) -> list:
        """cdr_manager fills what a reconnect lost: start, answer and agents tried."""
        leg = self.legs.get(event.uniqueid)
        call = self.calls.get(leg.call_id) if leg else None
        if call is None or not call.recovered:
            return []
        if event.start is not None:
            call.started = min(call.started, event.start)
        _, endpoint = channel_endpoint(event.dest_channel) if event.dest_channel else ("", "")
        match = _EXTENSION_PREFIX.match(endpoint)
        extension = match.group(1) if match else None
        if extension and extension not in call.cdr_agents:
            call.cdr_agents.append(extension)
        if event.disposition == "ANSWERED" and event.answer is not None and extension:
            if call.answered_at is None or call.answer_estimated:
                call.answered_at, call.answered_by, call.answer_estimated = event.answer, extension, False
        return []

    # ------------------------------------------------------------ the end of a call

    def _direction(self, call: Call) -> str:
        first = self.legs.get(call.first_leg)
        if first is None or first.kind == "trunk":
            return "inbound"
        if any(self.legs[u].kind == "trunk" for u in call.legs if u in self.legs and u != call.first_leg):
            return "outbound"
        # Number shapes when no trunk leg was seen (yet): an outside number dialled is outbound.
        dialled = call.dialled_number or ""
        if _OUTSIDE_NUMBER.fullmatch(dialled):
            return "outbound"
        return "internal"

    def _parties(self, call: Call) -> tuple[str, str, str, str]:
        first = self.legs[call.first_leg]
        direction = self._direction(call)
        if direction == "inbound":
            return direction, self._number(first.caller_num), first.caller_name, self._number(first.exten)
        caller = first.extension or first.caller_num
        callee = call.dialled_number or ""
        if not callee and direction == "internal":
            answered = [self.legs[u].extension for u in call.legs if u in self.legs and u != call.first_leg]
            callee = next((e for e in answered if e), "")
        return direction, caller, first.caller_name, self._number(callee)

    def _finish(self, call: Call) -> CallEnded:
        legs = [self.legs[u] for u in call.legs if u in self.legs]
        first = self.legs[call.first_leg]
        direction, caller, caller_name, callee = self._parties(call)
        customer_legs = [leg for leg in legs if leg.kind == "trunk"] or [first]
        if direction == "inbound":
            customer_end = first.ended or self.now
        else:
            customer_end = max((leg.ended or self.now) for leg in customer_legs)
        ended = customer_end
        outcome, reason = self._outcome(call, direction, first, legs)
        answered_at = call.answered_at if outcome == "answered" else None
        ring_end = answered_at if answered_at is not None else ended
        talk_by_agent: dict[str, float] = {}
        for leg in legs:
            if leg.kind == "agent" and leg.answered is not None and leg.extension and answered_at is not None:
                start = max(leg.answered, answered_at)
                talk_by_agent[leg.extension] = talk_by_agent.get(leg.extension, 0.0) + max(
                    0.0, (leg.ended or ended) - start)
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
            legs=tuple(LegRecord(leg.uniqueid, leg.name, leg.kind, leg.extension, leg.created, leg.answered,
                                 leg.ended, leg.cause) for leg in legs),
            recovered=call.recovered,
            originated=call.originated,
        )
        for uniqueid in call.legs:
            self.legs.pop(uniqueid, None)
            self._remember(self._finished_legs, uniqueid)
        self.calls.pop(call.call_id, None)
        self._remember(self._finished, call.call_id)
        return CallEnded(self.pbx, call.call_id, ended, record)

    def _outcome(self, call: Call, direction: str, first: Leg, legs: list[Leg]) -> tuple[str, str]:
        if call.answered_at is not None:
            return "answered", "answered"
        if call.originated and first.answered is None:
            return "failed", "agent_did_not_answer"
        if call.recovered and any(not leg.confirmed for leg in legs):
            return "unknown", "ended_while_disconnected"
        caller_cleared = first.hangup_by == "far_end" or (
            first.hangup_by is None and first.cause in CALLER_CLEARED_CAUSES)
        ringing_agents = any(leg.kind == "agent" and leg.uniqueid != call.first_leg for leg in legs)
        if caller_cleared:
            if ringing_agents:
                return "abandoned", "abandoned_while_ringing"
            return "abandoned", "abandoned_in_queue" if call.queue else "abandoned_before_routing"
        results = [status for uniqueid, status in call.dial_results.items() if uniqueid != call.first_leg]
        if results and all(status == "BUSY" for status in results):
            return "busy", "busy"
        if direction != "inbound" and results and all(s in ("CONGESTION", "CHANUNAVAIL") for s in results):
            return "failed", "congestion"
        if not results and not ringing_agents and first.cause in FAILURE_CAUSES:
            return "failed", "channel_error"
        if call.queue and not ringing_agents:
            return "missed", "no_agent_available"
        return "missed", "no_answer"

    @staticmethod
    def _remember(memory: OrderedDict[str, None], key: str) -> None:
        memory[key] = None
        if len(memory) > FINISHED_MEMORY:
            memory.popitem(last=False)

    def close_all(self) -> list[CallEnded]:
        """End of input (replay) or shutdown: close what is still live, as far as it is known."""
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


@lru_cache(maxsize=8192)
def _normalised(text: str, region: str) -> str:
    # phonenumbers is slow (~50 µs); the same few numbers recur on every event of a call.
    return normalise_caller(text, region) or text


def _seconds(value: float) -> int:
    return max(0, int(value + 0.5))


def _extension_of_interface(interface: str) -> str | None:
    """'PJSIP/101', 'SIP/101', 'Local/101@agents/n' → '101'."""
    match = re.match(r"[A-Za-z0-9]+/(\d{2,6})(?:\D|$)", interface or "")
    return match.group(1) if match else None


_DEVICE_STATES = {"NOT_INUSE": "idle", "INUSE": "in_call", "BUSY": "in_call", "RINGING": "ringing",
                  "RINGINUSE": "ringing", "ONHOLD": "in_call", "UNAVAILABLE": "offline", "INVALID": "offline",
                  "UNKNOWN": "unknown"}
# ExtensionStatus codes: -1 removed, 0 idle, 1 in use, 2 busy, 4 unavailable, 8 ringing, 16 on hold.
_EXTENSION_STATES = {0: "idle", 1: "in_call", 2: "in_call", 4: "offline", 8: "ringing", 9: "ringing",
                     16: "in_call", 17: "in_call", -1: "offline", -2: "offline"}
