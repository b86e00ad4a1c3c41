"""AMI frames → typed events. Asterisk's header spellings stop here; nothing else reads them.

The hot path: `FrameSplitter.feed` cuts the byte stream into messages, `parse_event` looks at the
`Event:` name first and drops what the call model never needs before building anything.
"""

from __future__ import annotations

import codecs
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache, partial
from operator import itemgetter
from typing import NamedTuple

logger = logging.getLogger(__name__)

EOM = "\r\n\r\n"
# Made by FrameSplitter when it reads a banner, so the call model knows a new AMI session began
# (a FullyBooted alone may also come from a module reload on a live session).
SESSION_EVENT = "CallboardSessionStarted"
BANNER_PREFIX = "Asterisk Call Manager/"
# A message larger than this is not AMI: drop the buffer rather than grow without bound.
MAX_MESSAGE_CHARS = 256 * 1024


class FrameSplitter:
    """Bytes as read from the socket → complete AMI messages (text, without the blank line).

    Decodes UTF-8 incrementally, so a character split across two reads survives (panoramisk 1.4
    decodes each chunk alone with errors='ignore' and loses it). Bad bytes become U+FFFD.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._buffer = ""
        self.banner: str | None = None
        self.dropped_oversize = 0

    def feed(self, data: bytes) -> list[str]:
        text = self._buffer + self._decoder.decode(data)
        if text.startswith(BANNER_PREFIX) and text.find("\r\n") == -1:
            self._buffer = text  # wait for the whole banner line
            return []
        messages = text.split(EOM)
        self._buffer = messages.pop()
        if self._buffer.startswith(BANNER_PREFIX) and "\r\n" in self._buffer:
            # The banner line ends with no blank line after it; what follows it is the next message.
            line_end = self._buffer.find("\r\n")
            messages.append(self._buffer[:line_end])
            self._buffer = self._buffer[line_end + 2:]
        if len(self._buffer) > MAX_MESSAGE_CHARS:
            logger.error("AMI message over %d characters without an end; dropped", MAX_MESSAGE_CHARS)
            self.dropped_oversize += 1
            self._buffer = ""
        out = []
        for message in messages:
            if message.startswith("\r\n"):
                message = message.lstrip("\r\n")  # stray blank lines between messages are not messages
            if message.startswith(BANNER_PREFIX):
                # The banner is one line with no blank line after it; a new banner means a new session.
                line_end = message.find("\r\n")
                self.banner = message if line_end == -1 else message[:line_end]
                out.append(f"Event: {SESSION_EVENT}\r\nBanner: {self.banner}")
                message = "" if line_end == -1 else message[line_end + 2:]
            if message.strip():
                out.append(message)
        return out

    def reset(self) -> None:
        self.__init__()


def parse_headers(raw: str) -> dict[str, str]:
    """'Key: value' lines → dict; the first value wins for repeated keys; junk lines are skipped.

    Well-formed messages (every line has ': ') take one C-level pass; anything else the careful loop.
    Both measured faster than a regex findall or a find() per header (bench/ami_ingest.py).
    """
    try:
        return dict(reversed([line.split(": ", 1) for line in raw.split("\r\n")]))
    except ValueError:  # a line without ': ' (junk, or 'Key:' with nothing after it)
        return _parse_headers_carefully(raw)


def _parse_headers_carefully(raw: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep and key not in headers:
            headers[key] = value
    return headers


# ---------------------------------------------------------------- typed events

class ChannelInfo(NamedTuple):
    """A channel as an event describes it (the header group without, or with a 'Dest' prefix).

    A NamedTuple rather than a frozen dataclass: as immutable, and built in one step (a frozen
    dataclass sets its nine fields one object.__setattr__ at a time, on every channel event)."""

    uniqueid: str
    linkedid: str
    name: str
    state: int
    caller_num: str
    caller_name: str
    connected_num: str
    context: str
    exten: str


@dataclass(frozen=True, slots=True)
class AmiEvent:
    ts: float | None


@dataclass(frozen=True, slots=True)
class SessionStarted(AmiEvent):
    """A new AMI connection began: its banner was read (synthetic: made by FrameSplitter)."""


@dataclass(frozen=True, slots=True)
class Booted(AmiEvent):
    """FullyBooted: sent after login, and again by a module reload on a live session."""

    uptime: int | None = None


@dataclass(frozen=True, slots=True)
class ClockTick(AmiEvent):
    """An event kept only for its timestamp (e.g. SuccessfulAuth at login)."""


@dataclass(frozen=True, slots=True)
class ChannelCreated(AmiEvent):
    channel: ChannelInfo


@dataclass(frozen=True, slots=True)
class ChannelStateChanged(AmiEvent):
    channel: ChannelInfo


@dataclass(frozen=True, slots=True)
class CallerIdChanged(AmiEvent):
    channel: ChannelInfo


@dataclass(frozen=True, slots=True)
class DialStarted(AmiEvent):
    caller: ChannelInfo | None  # None for an Originate: Asterisk sends only the Dest* headers
    dest: ChannelInfo
    dial_string: str


@dataclass(frozen=True, slots=True)
class DialEnded(AmiEvent):
    caller: ChannelInfo | None
    dest: ChannelInfo
    status: str


@dataclass(frozen=True, slots=True)
class HangupRequested(AmiEvent):
    channel: ChannelInfo
    soft: bool  # SoftHangupRequest: Asterisk itself (dialplan, AMI); HangupRequest: the far end
    cause: int


@dataclass(frozen=True, slots=True)
class ChannelHungUp(AmiEvent):
    channel: ChannelInfo
    cause: int


@dataclass(frozen=True, slots=True)
class BridgeEntered(AmiEvent):
    channel: ChannelInfo
    bridge_id: str


@dataclass(frozen=True, slots=True)
class BridgeLeft(AmiEvent):
    channel: ChannelInfo
    bridge_id: str


@dataclass(frozen=True, slots=True)
class QueueJoined(AmiEvent):
    channel: ChannelInfo
    queue: str


@dataclass(frozen=True, slots=True)
class QueueLeft(AmiEvent):
    channel: ChannelInfo
    queue: str


@dataclass(frozen=True, slots=True)
class QueueAbandoned(AmiEvent):
    channel: ChannelInfo
    queue: str


@dataclass(frozen=True, slots=True)
class AgentEvent(AmiEvent):
    caller: ChannelInfo
    dest: ChannelInfo | None
    queue: str
    interface: str
    kind: str  # called / connect / complete / ringnoanswer
    talk_time: int | None = None


@dataclass(frozen=True, slots=True)
class BlindTransferred(AmiEvent):
    transferer: ChannelInfo | None
    transferee: ChannelInfo | None
    extension: str
    success: bool


@dataclass(frozen=True, slots=True)
class AttendedTransferred(AmiEvent):
    orig_transferer: ChannelInfo | None
    second_transferer: ChannelInfo | None
    transferee: ChannelInfo | None
    target: ChannelInfo | None
    success: bool


@dataclass(frozen=True, slots=True)
class LocalOptimized(AmiEvent):
    """LocalOptimizationEnd: the ;1/;2 pair left; the real channels now talk directly."""

    local_one: ChannelInfo | None
    local_two: ChannelInfo | None


@dataclass(frozen=True, slots=True)
class LocalBridged(AmiEvent):
    """LocalBridge: the two halves of a Local channel pair were created and joined."""

    local_one: ChannelInfo | None
    local_two: ChannelInfo | None


@dataclass(frozen=True, slots=True)
class EndpointListed(AmiEvent):
    """EndpointList (PJSIPShowEndpoints) or PeerEntry (SIPpeers): whether an endpoint is a trunk.

    `trunk` is True for an endpoint that authenticates outwards (OutboundAuths) or a chan_sip peer with
    a fixed host, False for one that phones register to, None when the entry does not say.
    """

    tech: str
    name: str
    trunk: bool | None


@dataclass(frozen=True, slots=True)
class QueueMemberListed(AmiEvent):
    """QueueMember / QueueMemberAdded / QueueMemberStatus: a queue member is a person's device."""

    queue: str
    interface: str
    state_interface: str


@dataclass(frozen=True, slots=True)
class RecordingStarted(AmiEvent):
    channel: ChannelInfo
    filename: str | None


@dataclass(frozen=True, slots=True)
class OriginateResult(AmiEvent):
    action_id: str
    channel_name: str
    uniqueid: str | None
    success: bool
    reason: str
    exten: str = ""
    context: str = ""


@dataclass(frozen=True, slots=True)
class DeviceStateChanged(AmiEvent):
    device: str
    state: str


@dataclass(frozen=True, slots=True)
class ExtensionStateChanged(AmiEvent):
    exten: str
    context: str
    status: int
    status_text: str


@dataclass(frozen=True, slots=True)
class ChannelListed(AmiEvent):
    """CoreShowChannel (resync): a channel alive now, `seconds` old."""

    channel: ChannelInfo
    application: str
    application_data: str
    seconds: int | None
    bridge_id: str


@dataclass(frozen=True, slots=True)
class ChannelListComplete(AmiEvent):
    pass


@dataclass(frozen=True, slots=True)
class CdrRecord(AmiEvent):
    """cdr_manager's Cdr event; times converted to epoch using the event's own Timestamp."""

    uniqueid: str
    source: str
    destination: str
    channel: str
    dest_channel: str
    disposition: str
    start: float | None
    answer: float | None
    end: float | None
    duration: int
    billsec: int


# ---------------------------------------------------------------- header groups → ChannelInfo

def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


_CHANNEL_KEYS = {prefix: tuple(prefix + key for key in (
    "Uniqueid", "Channel", "Linkedid", "ChannelState", "CallerIDNum", "CallerIDName", "ConnectedLineNum",
    "Context", "Exten")) for prefix in ("", "Dest", "Transferer", "Transferee", "OrigTransferer",
                                       "SecondTransferer", "TransferTarget", "LocalOne", "LocalTwo")}


# One C call fetches a whole header group; a group with a header missing (rare) takes the careful path.
_CHANNEL_GETTERS = {prefix: itemgetter(*keys) for prefix, keys in _CHANNEL_KEYS.items()}
_new_channel_info = partial(tuple.__new__, ChannelInfo)  # ChannelInfo(...) without its Python-level __new__


def _channel(h: dict[str, str], prefix: str = "") -> ChannelInfo | None:
    try:
        uniqueid, name, linkedid, state, num, caller_name, connected, context, exten = _CHANNEL_GETTERS[prefix](h)
    except KeyError:
        return _channel_carefully(h, prefix)
    if not uniqueid or not name:
        return None
    return _new_channel_info((uniqueid, linkedid or uniqueid, name, int(state) if state.isdecimal() else 0, num,
                              caller_name, connected, context, exten))


def _channel_carefully(h: dict[str, str], prefix: str) -> ChannelInfo | None:
    k_uid, k_chan, k_linked, k_state, k_num, k_name, k_conn, k_ctx, k_exten = _CHANNEL_KEYS[prefix]
    uniqueid = h.get(k_uid)
    name = h.get(k_chan)
    if not uniqueid or not name:
        return None
    state = h.get(k_state, "0")
    return ChannelInfo(uniqueid, h.get(k_linked) or uniqueid, name, int(state) if state.isdecimal() else 0,
                       h.get(k_num, ""), h.get(k_name, ""), h.get(k_conn, ""), h.get(k_ctx, ""), h.get(k_exten, ""))


def _ts(h: dict[str, str], fallback: float | None) -> float | None:
    value = h.get("Timestamp")
    if value:
        try:
            return float(value)
        except ValueError:
            pass
    return fallback


def _cdr_times(h: dict[str, str], ts: float | None) -> tuple[float | None, float | None, float | None]:
    """CDR times are the PBX's local wall clock; anchor them on the event's epoch Timestamp."""

    def parse(value: str) -> float | None:
        try:
            return datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S").timestamp()
        except ValueError:
            return None

    start, answer, end = (parse(h.get(k, "")) for k in ("StartTime", "AnswerTime", "EndTime"))
    if ts is None or end is None:
        return None, None, None
    # The PBX's UTC offset, rounded to a quarter hour (the Cdr event follows EndTime by < 1 s).
    offset = round((ts - end) / 900) * 900
    return tuple(None if t is None else t + offset for t in (start, answer, end))  # type: ignore[return-value]


Converter = Callable[[dict[str, str], float | None], AmiEvent | None]


def _with_channel(cls) -> Converter:
    def convert(h: dict[str, str], ts: float | None) -> AmiEvent | None:
        channel = _channel(h)
        return cls(ts, channel) if channel else None
    return convert


def _dial_begin(h, ts):
    dest = _channel(h, "Dest")
    return DialStarted(ts, _channel(h), dest, h.get("DialString", "")) if dest else None


def _dial_end(h, ts):
    dest = _channel(h, "Dest")
    return DialEnded(ts, _channel(h), dest, h.get("DialStatus", "").upper()) if dest else None


def _hangup(h, ts):
    channel = _channel(h)
    return ChannelHungUp(ts, channel, _int(h.get("Cause"))) if channel else None


def _hangup_request(soft: bool) -> Converter:
    def convert(h, ts):
        channel = _channel(h)
        return HangupRequested(ts, channel, soft, _int(h.get("Cause"))) if channel else None
    return convert


def _bridge(cls) -> Converter:
    def convert(h, ts):
        channel = _channel(h)
        return cls(ts, channel, h.get("BridgeUniqueid", "")) if channel else None
    return convert


def _queue(cls) -> Converter:
    def convert(h, ts):
        channel = _channel(h)
        return cls(ts, channel, h.get("Queue", "")) if channel else None
    return convert


def _agent(kind: str) -> Converter:
    def convert(h, ts):
        caller = _channel(h)
        if caller is None:
            return None
        talk = _int(h.get("TalkTime"), -1)
        return AgentEvent(ts, caller, _channel(h, "Dest"), h.get("Queue", ""),
                          h.get("Interface") or h.get("MemberName", ""), kind, talk if talk >= 0 else None)
    return convert


def _blind_transfer(h, ts):
    return BlindTransferred(ts, _channel(h, "Transferer"), _channel(h, "Transferee"), h.get("Extension", ""),
                            h.get("Result", "").lower() == "success")


def _attended_transfer(h, ts):
    return AttendedTransferred(ts, _channel(h, "OrigTransferer"), _channel(h, "SecondTransferer"),
                               _channel(h, "Transferee"), _channel(h, "TransferTarget"),
                               h.get("Result", "").lower() == "success")


def _local_optimized(h, ts):
    return LocalOptimized(ts, _channel(h, "LocalOne"), _channel(h, "LocalTwo"))


def _local_bridge(h, ts):
    return LocalBridged(ts, _channel(h, "LocalOne"), _channel(h, "LocalTwo"))


def _endpoint_list(h, ts):
    name = h.get("ObjectName", "")
    if not name:
        return None
    # A PJSIP endpoint with OutboundAuths registers to (authenticates with) someone else: a trunk.
    outbound, inbound = h.get("OutboundAuths", "").strip(), h.get("Auths", "").strip()
    trunk = True if outbound else (False if inbound else None)
    return EndpointListed(ts, "PJSIP", name, trunk)


def _peer_entry(h, ts):
    name = h.get("ObjectName", "")
    if not name:
        return None
    # chan_sip: phones register (host=dynamic); a peer with a fixed host is a trunk or a gateway.
    dynamic = h.get("Dynamic", "").lower()
    trunk = False if dynamic == "yes" else (True if dynamic == "no" else None)
    return EndpointListed(ts, h.get("Channeltype", "SIP") or "SIP", name, trunk)


def _queue_member(h, ts):
    interface = h.get("Interface") or h.get("Location") or ""
    if not interface:
        return None
    return QueueMemberListed(ts, h.get("Queue", ""), interface, h.get("StateInterface", ""))


def _booted(h, ts):
    uptime = _int(h.get("Uptime"), -1)
    return Booted(ts, uptime if uptime >= 0 else None)


def _mixmonitor(h, ts):
    channel = _channel(h)
    return RecordingStarted(ts, channel, None) if channel else None


def _varset(h, ts):
    # Only MIXMONITOR_FILENAME survives the early filter; it names the recording file.
    channel = _channel(h)
    if channel is None or h.get("Variable") != "MIXMONITOR_FILENAME" or not h.get("Value"):
        return None
    return RecordingStarted(ts, channel, h["Value"])


def _originate(h, ts):
    uniqueid = h.get("Uniqueid")
    return OriginateResult(ts, h.get("ActionID", ""), h.get("Channel", ""),
                           uniqueid if uniqueid and uniqueid != "<null>" else None,
                           h.get("Response", "").lower() == "success", h.get("Reason", ""),
                           h.get("Exten", ""), h.get("Context", ""))


def _device_state(h, ts):
    return DeviceStateChanged(ts, h.get("Device", ""), h.get("State", "").upper()) if h.get("Device") else None


def _extension_status(h, ts):
    if not h.get("Exten"):
        return None
    return ExtensionStateChanged(ts, h["Exten"], h.get("Context", ""), _int(h.get("Status"), -1),
                                 h.get("StatusText", ""))


def _duration(value: str | None) -> int | None:
    if not value:
        return None
    match = re.fullmatch(r"(\d+):(\d{2}):(\d{2})", value.strip())
    if match:
        hours, minutes, seconds = (int(g) for g in match.groups())
        return hours * 3600 + minutes * 60 + seconds
    return _int(value, -1) if value.isdigit() else None


def _core_show_channel(h, ts):
    channel = _channel(h)
    if channel is None:
        return None
    return ChannelListed(ts, channel, h.get("Application", ""), h.get("ApplicationData", ""),
                         _duration(h.get("Duration")), h.get("BridgeId", ""))


def _cdr(h, ts):
    start, answer, end = _cdr_times(h, ts)
    return CdrRecord(ts, h.get("UniqueID", ""), h.get("Source", ""), h.get("Destination", ""),
                     h.get("Channel", ""), h.get("DestinationChannel", ""), h.get("Disposition", "").upper(),
                     start, answer, end, _int(h.get("Duration")), _int(h.get("BillableSeconds")))


# The dispatch table: the only events the call model and agent states need. Everything else
# (Newexten, RTCP*, most VarSet, NewConnectedLine, DialState, QueueMemberStatus, …) is dropped
# by name before a dict is built.
CONVERTERS: dict[str, Converter] = {
    "Newchannel": _with_channel(ChannelCreated),
    "Newstate": _with_channel(ChannelStateChanged),
    "NewCallerid": _with_channel(CallerIdChanged),
    "DialBegin": _dial_begin,
    "DialEnd": _dial_end,
    "HangupRequest": _hangup_request(soft=False),
    "SoftHangupRequest": _hangup_request(soft=True),
    "Hangup": _hangup,
    "BridgeEnter": _bridge(BridgeEntered),
    "BridgeLeave": _bridge(BridgeLeft),
    "QueueCallerJoin": _queue(QueueJoined),
    "QueueCallerLeave": _queue(QueueLeft),
    "QueueCallerAbandon": _queue(QueueAbandoned),
    "AgentCalled": _agent("called"),
    "AgentConnect": _agent("connect"),
    "AgentComplete": _agent("complete"),
    "AgentRingNoAnswer": _agent("ringnoanswer"),
    "BlindTransfer": _blind_transfer,
    "AttendedTransfer": _attended_transfer,
    "LocalOptimizationEnd": _local_optimized,
    "LocalBridge": _local_bridge,
    "EndpointList": _endpoint_list,
    "PeerEntry": _peer_entry,
    "QueueMember": _queue_member,
    "QueueMemberAdded": _queue_member,
    "MixMonitorStart": _mixmonitor,
    "VarSet": _varset,
    "OriginateResponse": _originate,
    "DeviceStateChange": _device_state,
    "ExtensionStatus": _extension_status,
    "FullyBooted": _booted,
    SESSION_EVENT: lambda h, ts: SessionStarted(ts),
    "SuccessfulAuth": lambda h, ts: ClockTick(ts),
    "CoreShowChannel": _core_show_channel,
    "CoreShowChannelsComplete": lambda h, ts: ChannelListComplete(ts),
    "Cdr": _cdr,
}
KEPT_EVENTS = frozenset(CONVERTERS)
_VARSET_KEPT = "Variable: MIXMONITOR_FILENAME\r\n"


def event_name(raw: str) -> str | None:
    """The Event: name of a message, read without parsing the rest (it is always the first line)."""
    if not raw.startswith("Event: "):
        return None
    end = raw.find("\r\n")
    return raw[7:end] if end != -1 else raw[7:]


def is_wanted(raw: str) -> bool:
    name = event_name(raw)
    if name not in CONVERTERS:
        return False
    return name != "VarSet" or _VARSET_KEPT in raw


def parse_event(raw: str, fallback_ts: float | None = None) -> AmiEvent | None:
    """A raw message → a typed event, or None for what the call model does not need or cannot use."""
    # The name is the first line; most messages (Newexten, VarSet, RTCP*) stop right here.
    if not raw.startswith("Event: "):
        return None
    end = raw.find("\r\n")
    converter = CONVERTERS.get(raw[7:end] if end != -1 else raw[7:])
    if converter is None or (converter is _varset and _VARSET_KEPT not in raw):
        return None
    headers = parse_headers(raw)
    return converter(headers, _ts(headers, fallback_ts))


@lru_cache(maxsize=16384)
def channel_endpoint(name: str) -> tuple[str, str]:
    """'PJSIP/101-0000000f' → ('PJSIP', '101'); 'Local/102@from-internal-0001;1' → ('Local', '102@from-internal').

    Cached: every event of a channel names it again, and the tracker asks for each leg several times."""
    tech, _, rest = name.partition("/")
    if tech == "Local":
        return tech, rest.rsplit("-", 1)[0] if ";" in rest else rest
    # A channel name ends in '-<hex sequence>'; endpoints may contain '-' themselves.
    endpoint = rest.rsplit("-", 1)[0] if "-" in rest else rest
    return tech, endpoint
