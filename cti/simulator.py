"""Our PBX simulator: speaks AMI over TCP and emits event sequences shaped like the real captures.

Used by the demo (in-process, on a free loopback port), by tests (real TCP) and by benchmarks
(`generate_stream`, no sockets). Each scenario's event order follows a real Asterisk 22 capture in
tests/fixtures/ami/ (a, b, c, d, f, g) or Asterisk's documented behaviour (abandon: CANCEL).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

BANNER = "Asterisk Call Manager/11.0.0\r\n"
SCENARIOS = ("answered", "missed", "busy", "abandoned", "queue", "originate", "transfer")
DID = "74952000000"  # the company line the simulator's callers dial
TRUNK = "trunk"

Headers = list[tuple[str, str]]


@dataclass
class SimChannel:
    name: str
    uniqueid: str
    linkedid: str
    caller_num: str
    caller_name: str
    context: str
    exten: str
    state: int = 0
    connected_num: str = "<unknown>"
    connected_name: str = "<unknown>"

    _STATE_DESC = {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up"}

    def headers(self, prefix: str = "") -> Headers:
        return [
            (f"{prefix}Channel", self.name), (f"{prefix}ChannelState", str(self.state)),
            (f"{prefix}ChannelStateDesc", self._STATE_DESC.get(self.state, "Unknown")),
            (f"{prefix}CallerIDNum", self.caller_num), (f"{prefix}CallerIDName", self.caller_name),
            (f"{prefix}ConnectedLineNum", self.connected_num), (f"{prefix}ConnectedLineName", self.connected_name),
            (f"{prefix}Language", "en"), (f"{prefix}AccountCode", ""), (f"{prefix}Context", self.context),
            (f"{prefix}Exten", self.exten), (f"{prefix}Priority", "1"), (f"{prefix}Uniqueid", self.uniqueid),
            (f"{prefix}Linkedid", self.linkedid),
        ]


@dataclass
class Step:
    """Events emitted together after `delay` seconds."""

    delay: float
    events: list[tuple[str, Headers]] = field(default_factory=list)


def format_event(name: str, headers: Headers, ts: float | None) -> str:
    lines = [f"Event: {name}", "Privilege: call,all"]
    if ts is not None:
        lines.append(f"Timestamp: {ts:.6f}")
    lines += [f"{k}: {v}" for k, v in headers]
    return "\r\n".join(lines) + "\r\n\r\n"


class ScriptWriter:
    """Builds one call's steps; owns the PBX-wide counters for channel names and unique ids."""

    def __init__(self, rng: random.Random, clock_start: float = 1_795_448_000.0, noise: bool = True) -> None:
        self.rng = rng
        self.noise = noise
        self._seq = itertools.count(1)
        self._uid = itertools.count(1)
        self.clock_start = clock_start

    def channel(self, endpoint: str, linkedid: str | None, caller_num: str, caller_name: str, context: str,
                exten: str, state: int = 0, uniqueid: str = "") -> SimChannel:
        uniqueid = uniqueid or f"{int(self.clock_start)}.{next(self._uid)}"
        chan = SimChannel(f"PJSIP/{endpoint}-{next(self._seq):08x}", uniqueid, linkedid or uniqueid, caller_num,
                          caller_name, context, exten, state)
        return chan

    # --------------------------------------------------------------- event helpers

    def _noise(self, chan: SimChannel, count: int) -> list[tuple[str, Headers]]:
        """Newexten and VarSet, about 70% of what a real PBX sends during a call."""
        if not self.noise:
            return []
        out = []
        for i in range(count):
            if i % 3 == 0:
                out.append(("Newexten", chan.headers() + [("Extension", chan.exten), ("Application", "NoOp"),
                                                          ("AppData", "step")]))
            else:
                out.append(("VarSet", chan.headers() + [("Variable", f"__VAR{i}"), ("Value", "x")]))
        return out

    def _rtcp(self, chan: SimChannel) -> list[tuple[str, Headers]]:
        if not self.noise:
            return []
        return [("RTCPSent", chan.headers() + [("To", "127.0.0.1:10001"), ("SSRC", "0x1"), ("PT", "200(SR)")]),
                ("RTCPReceived", chan.headers() + [("From", "127.0.0.1:10001"), ("PT", "201(RR)")])]

    @staticmethod
    def _pair(name: str, chan: SimChannel, dest: SimChannel, extra: Headers = ()) -> tuple[str, Headers]:
        return name, chan.headers() + dest.headers("Dest") + list(extra)

    @staticmethod
    def _device(device: str, state: str) -> tuple[str, Headers]:
        return "DeviceStateChange", [("Device", device), ("State", state)]

    def _hangup(self, chan: SimChannel, cause: int, text: str) -> list[tuple[str, Headers]]:
        endpoint = chan.name.split("/")[1].rsplit("-", 1)[0]
        return [("Hangup", chan.headers() + [("Cause", str(cause)), ("Cause-txt", text)]),
                self._device(f"PJSIP/{endpoint}", "NOT_INUSE")]

    @staticmethod
    def _new(chan: SimChannel) -> tuple[str, Headers]:
        return "Newchannel", chan.headers()

    # --------------------------------------------------------------- inbound building blocks

    def _inbound_start(self, caller: str, caller_name: str) -> tuple[SimChannel, Step]:
        trunk = self.channel(TRUNK, None, caller, caller_name, "from-trunk", DID, state=4)
        filename = f"/var/spool/asterisk/monitor/sim-{caller}-{trunk.uniqueid}.wav"
        step = Step(0.0, [self._new(trunk), *self._noise(trunk, 6),
                          ("VarSet", trunk.headers() + [("Variable", "MIXMONITOR_FILENAME"), ("Value", filename)]),
                          ("MixMonitorStart", trunk.headers()), *self._noise(trunk, 4)])
        return trunk, step

    def _ring_agent(self, trunk: SimChannel, extension: str) -> tuple[SimChannel, list[tuple[str, Headers]]]:
        agent = self.channel(extension, trunk.linkedid, extension, f"Agent {extension}", "from-internal", "s")
        events = [self._new(agent), self._pair("DialBegin", trunk, agent, [("DialString", f"PJSIP/{extension}")])]
        agent.state, agent.exten = 5, trunk.exten
        agent.connected_num, agent.connected_name = trunk.caller_num, trunk.caller_name
        events += [("Newstate", agent.headers()),
                   self._pair("DialState", trunk, agent, [("DialStatus", "RINGING")]),
                   self._device(f"PJSIP/{extension}", "RINGING")]
        return agent, events

    def _answer_and_bridge(self, trunk: SimChannel, agent: SimChannel) -> list[tuple[str, Headers]]:
        agent.state = 6
        events = [("Newstate", agent.headers()),
                  self._pair("DialEnd", trunk, agent, [("DialStatus", "ANSWER")])]
        trunk.state, trunk.connected_num, trunk.connected_name = 6, agent.caller_num, agent.caller_name
        bridge = f"{self.rng.getrandbits(64):016x}-sim"
        endpoint = agent.name.split("/")[1].rsplit("-", 1)[0]
        events += [("Newstate", trunk.headers()),
                   ("BridgeCreate", [("BridgeUniqueid", bridge), ("BridgeType", "basic")]),
                   ("BridgeEnter", [("BridgeUniqueid", bridge)] + agent.headers()),
                   ("BridgeEnter", [("BridgeUniqueid", bridge)] + trunk.headers()),
                   self._device(f"PJSIP/{endpoint}", "INUSE")]
        return events

    def _caller_hangs_up(self, trunk: SimChannel, agent: SimChannel) -> list[tuple[str, Headers]]:
        return [("HangupRequest", trunk.headers() + [("Cause", "16")]),
                ("BridgeLeave", trunk.headers()), ("BridgeLeave", agent.headers()),
                ("SoftHangupRequest", agent.headers() + [("Cause", "16")]),
                *self._hangup(agent, 16, "Normal Clearing"), *self._hangup(trunk, 16, "Normal Clearing")]

    # --------------------------------------------------------------- scenarios

    def answered(self, caller: str, name: str, extension: str, ring: float, talk: float) -> list[Step]:
        trunk, start = self._inbound_start(caller, name)
        agent, ringing = self._ring_agent(trunk, extension)
        talk_steps = [Step(talk / 2, self._rtcp(trunk)), Step(talk / 2, self._caller_hangs_up(trunk, agent))]
        return [start, Step(0.003, ringing), Step(ring, self._answer_and_bridge(trunk, agent)), *talk_steps]

    def missed(self, caller: str, name: str, extension: str, ring: float) -> list[Step]:
        # Dial(PJSIP/101,15) times out; the dialplan runs Hangup(19) (capture c).
        trunk, start = self._inbound_start(caller, name)
        agent, ringing = self._ring_agent(trunk, extension)
        end = [self._pair("DialEnd", trunk, agent, [("DialStatus", "NOANSWER")]),
               ("SoftHangupRequest", trunk.headers() + [("Cause", "16")]),
               *self._hangup(agent, 0, "Unknown"), *self._hangup(trunk, 19, "User alerting, no answer")]
        return [start, Step(0.003, ringing), Step(ring, end)]

    def busy(self, caller: str, name: str, extension: str) -> list[Step]:
        # The phone answers 486 at once; Dial reports BUSY; Hangup(17) (capture d).
        trunk, start = self._inbound_start(caller, name)
        agent = self.channel(extension, trunk.linkedid, extension, f"Agent {extension}", "from-internal", "s")
        events = [self._new(agent), self._pair("DialBegin", trunk, agent, [("DialString", f"PJSIP/{extension}")]),
                  ("HangupRequest", agent.headers() + [("Cause", "17")]),
                  self._pair("DialEnd", trunk, agent, [("DialStatus", "BUSY")]),
                  *self._hangup(agent, 17, "User busy"),
                  ("SoftHangupRequest", trunk.headers() + [("Cause", "16")]),
                  *self._hangup(trunk, 17, "User busy")]
        return [start, Step(0.003, events)]

    def abandoned(self, caller: str, name: str, extension: str, ring: float) -> list[Step]:
        # The caller sends CANCEL: chan_pjsip reports cause 127 on the trunk channel.
        trunk, start = self._inbound_start(caller, name)
        agent, ringing = self._ring_agent(trunk, extension)
        end = [("HangupRequest", trunk.headers() + [("Cause", "127")]),
               self._pair("DialEnd", trunk, agent, [("DialStatus", "CANCEL")]),
               *self._hangup(agent, 0, "Unknown"), *self._hangup(trunk, 127, "Interworking, unspecified")]
        return [start, Step(0.003, ringing), Step(ring, end)]

    def queue(self, caller: str, name: str, members: tuple[str, str], ring: float, talk: float) -> list[Step]:
        # Ringall queue: both ring, the second answers, the first is cancelled (capture b).
        trunk, start = self._inbound_start(caller, name)
        join = [("QueueCallerJoin", trunk.headers() + [("Queue", "sales"), ("Position", "1"), ("Count", "1")])]
        agents = []
        for extension in members:
            agent = self.channel(extension, trunk.linkedid, extension, f"Agent {extension}", "from-internal", "s")
            agents.append(agent)
            join += [self._new(agent),
                     self._pair("AgentCalled", trunk, agent, [("Queue", "sales"), ("Interface", f"PJSIP/{extension}"),
                                                              ("MemberName", f"Agent {extension}")]),
                     self._pair("DialBegin", trunk, agent, [("DialString", f"PJSIP/{extension}")])]
            agent.state = 5
            join += [("Newstate", agent.headers()), self._device(f"PJSIP/{extension}", "RINGING")]
        first, second = agents
        answer = self._answer_and_bridge(trunk, second)
        cancel = [self._pair("DialEnd", trunk, first, [("DialStatus", "CANCEL")]),
                  self._pair("DialEnd", trunk, first, [("DialStatus", "CANCEL")]),
                  *self._hangup(first, 26, "Answered elsewhere"),
                  ("QueueCallerLeave", trunk.headers() + [("Queue", "sales"), ("Position", "1"), ("Count", "0")]),
                  self._pair("AgentConnect", trunk, second, [("Queue", "sales"), ("Interface", second.name[:9]),
                                                             ("HoldTime", str(int(ring))),
                                                             ("RingTime", str(int(ring)))])]
        end = [("HangupRequest", trunk.headers() + [("Cause", "16")]),
               self._pair("AgentComplete", trunk, second, [("Queue", "sales"), ("TalkTime", str(int(talk))),
                                                           ("Reason", "caller")]),
               ("BridgeLeave", trunk.headers()), ("BridgeLeave", second.headers()),
               *self._hangup(second, 16, "Normal Clearing"), *self._hangup(trunk, 16, "Normal Clearing")]
        return [start, Step(0.004, join), Step(ring, answer[:2] + cancel + answer[2:]), Step(talk, end)]

    def originate(self, extension: str, number: str, agent_ring: float, ring: float, talk: float,
                  action_id: str = "", channel_id: str = "", agent_fails: str = "") -> list[Step]:
        # Click-to-call: the agent's phone first, then the number through the trunk (capture f).
        # Originate's ChannelId becomes the agent channel's Uniqueid, and so the call's Linkedid.
        agent = self.channel(extension, None, extension, f"CTI {extension}", "from-internal", "s",
                             uniqueid=channel_id)
        ringing = [self._new(agent), ("DialBegin", agent.headers("Dest") + [("DialString", f"PJSIP/{extension}")])]
        agent.state = 5
        ringing += [("Newstate", agent.headers()), ("DialState", agent.headers("Dest") + [("DialStatus", "RINGING")])]
        if agent_fails:
            return [Step(0.0, ringing), Step(agent_ring, self._originate_failed(agent, number, action_id, agent_fails))]
        agent.state, agent.exten = 6, number
        answered = [("Newstate", agent.headers()), ("DialEnd", agent.headers("Dest") + [("DialStatus", "ANSWER")]),
                    ("OriginateResponse", [("ActionID", action_id), ("Response", "Success"),
                                           ("Channel", agent.name), ("Context", "from-internal"),
                                           ("Exten", number), ("Reason", "4"), ("Uniqueid", agent.uniqueid),
                                           ("CallerIDNum", extension), ("CallerIDName", f"CTI {extension}")])]
        # Quirk reproduced: the outgoing trunk leg's Newchannel shows the inbound context.
        trunk = self.channel(TRUNK, agent.linkedid, "<unknown>", "<unknown>", "from-trunk", "s")
        answered += [self._new(trunk)]
        trunk.caller_num, trunk.exten = number, number
        answered += [("NewCallerid", trunk.headers()),
                     self._pair("DialBegin", agent, trunk, [("DialString", f"{number}@trunk")])]
        trunk.state = 5
        answered += [("Newstate", trunk.headers())]
        connected = self._answer_and_bridge(agent, trunk)
        end = [("HangupRequest", trunk.headers() + [("Cause", "16")]),
               ("BridgeLeave", trunk.headers()), ("BridgeLeave", agent.headers()),
               *self._hangup(trunk, 16, "Normal Clearing"), *self._hangup(agent, 16, "Normal Clearing")]
        return [Step(0.0, ringing), Step(agent_ring, answered), Step(ring, connected), Step(talk, end)]

    # OriginateResponse's Reason is the last control frame the channel got: 3 rang out, 5 busy.
    _ORIGINATE_FAILURES = {"noanswer": ("NOANSWER", 19, "User alerting, no answer", "3"),
                           "busy": ("BUSY", 17, "User busy", "5")}

    def _originate_failed(self, agent: SimChannel, number: str, action_id: str,
                          how: str) -> list[tuple[str, Headers]]:
        """The agent's phone never answers (or is busy): the number is never dialled."""
        status, cause, text, reason = self._ORIGINATE_FAILURES[how]
        extension = agent.caller_num
        return [("DialEnd", agent.headers("Dest") + [("DialStatus", status)]), *self._hangup(agent, cause, text),
                ("OriginateResponse", [("ActionID", action_id), ("Response", "Failure"),
                                       ("Channel", f"PJSIP/{extension}"), ("Context", "from-internal"),
                                       ("Exten", number), ("Reason", reason), ("Uniqueid", "<null>"),
                                       ("CallerIDNum", extension), ("CallerIDName", f"CTI {extension}")])]

    def transfer(self, caller: str, name: str, first: str, second: str, ring: float, talk: float) -> list[Step]:
        # Blind transfer by SIP REFER: the caller's channel dials the second agent (capture g).
        trunk, start = self._inbound_start(caller, name)
        agent, ringing = self._ring_agent(trunk, first)
        blind = [("BlindTransfer", [("Result", "Success")] + agent.headers("Transferer")
                  + trunk.headers("Transferee") + [("IsExternal", "Yes"), ("Context", "from-internal"),
                                                   ("Extension", second)]),
                 ("BridgeLeave", trunk.headers()), ("BridgeLeave", agent.headers()),
                 *self._hangup(agent, 16, "Normal Clearing")]
        trunk.context, trunk.exten = "from-internal", second
        target, ring2 = self._ring_agent(trunk, second)
        end = self._caller_hangs_up(trunk, target)
        return [start, Step(0.003, ringing), Step(ring, self._answer_and_bridge(trunk, agent)),
                Step(talk, blind + ring2), Step(ring, self._answer_and_bridge(trunk, target)), Step(talk, end)]

    def random_call(self, scenario: str, caller: str, name: str = "") -> list[Step]:
        rng = self.rng
        if scenario == "mix":
            scenario = rng.choice(SCENARIOS)
        extension = rng.choice(("101", "102"))
        ring, talk = round(rng.uniform(1, 6), 1), round(rng.uniform(3, 30), 1)
        if scenario == "answered":
            return self.answered(caller, name, extension, ring, talk)
        if scenario == "missed":
            return self.missed(caller, name, extension, 15.0)
        if scenario == "busy":
            return self.busy(caller, name, extension)
        if scenario == "abandoned":
            return self.abandoned(caller, name, extension, ring)
        if scenario == "queue":
            return self.queue(caller, name, ("101", "102"), ring, talk)
        if scenario == "originate":
            return self.originate(extension, caller, ring, ring, talk)
        if scenario == "transfer":
            return self.transfer(caller, name, "101", "102", ring, talk)
        raise ValueError(f"unknown scenario {scenario!r}; use one of {', '.join(SCENARIOS)} or mix")


def random_caller(rng: random.Random) -> tuple[str, str]:
    names = ("Ivan Petrov", "Olga Smirnova", "Anna Kuznetsova", "Sergey Volkov", "")
    return f"7916{rng.randrange(10**7):07d}", rng.choice(names)


_NOISE = (("VarSet", [("Variable", "BRIDGEPEER"), ("Value", "PJSIP/101-00000001")]),
          ("VarSet", [("Variable", "DIALSTATUS"), ("Value", "")]),
          ("Newexten", [("Extension", "74952000000"), ("Application", "Set"), ("AppData", "X=1")]),
          ("VarSet", [("Variable", "RTPAUDIOQOS"), ("Value", "ssrc=1;themssrc=2;lp=0;rxjitter=0.000")]),
          ("RTCPSent", [("To", "127.0.0.1:10001"), ("SSRC", "0x1"), ("PT", "200(SR)"), ("ReportCount", "1")]),
          ("RTCPReceived", [("From", "127.0.0.1:10001"), ("PT", "201(RR)"), ("ReceptionReports", "1")]))


def generate_stream(calls: int, scenario: str = "mix", seed: int = 1, noise: bool = True,
                    overlap: int = 20, noise_ratio: float | None = None) -> Iterator[str]:
    """Frames for `calls` calls with virtual timestamps, `overlap` calls interleaved at a time.

    With `noise_ratio` (e.g. 0.7) extra VarSet/Newexten/RTCP frames are mixed in until about that
    share of all frames is noise, as on a real PBX (the shared captures: VarSet alone is ~46%).
    """
    rng = random.Random(seed)
    writer = ScriptWriter(rng, noise=noise)
    now = writer.clock_start
    pending: list[tuple[float, int, list[Step], int]] = []
    counter = itertools.count()
    started = 0
    per_event = 0.0 if not noise_ratio else noise_ratio / (1 - noise_ratio)
    owed = 0.0
    while started < calls or pending:
        while started < calls and len(pending) < overlap:
            caller, name = random_caller(rng)
            steps = writer.random_call(scenario, caller, name)
            pending.append((now + steps[0].delay, next(counter), steps, 0))
            started += 1
        pending.sort()
        at, order, steps, index = pending.pop(0)
        now = max(now, at)
        for name, headers in steps[index].events:
            yield format_event(name, headers, now)
            if per_event and name not in ("VarSet", "Newexten", "RTCPSent", "RTCPReceived"):
                channel = [h for h in headers if not h[0].startswith("Dest")][:14]
                owed += per_event
                while owed >= 1:
                    owed -= 1
                    noise_name, extra = rng.choice(_NOISE)
                    yield format_event(noise_name, channel + extra, now)
        if index + 1 < len(steps):
            pending.append((now + steps[index + 1].delay, order, steps, index + 1))


# ------------------------------------------------------------------- the TCP server

class AmiSimulator:
    """An AMI server: banner, Login (secret checked), Events, Ping, Originate, CoreShowChannels, Logoff."""

    def __init__(self, username: str = "callboard", secret: str = "callboard", seed: int = 1,
                 speed: float = 1.0) -> None:
        self.username, self.secret = username, secret
        self.rng = random.Random(seed)
        self.writer = ScriptWriter(self.rng)
        self.speed = speed  # 2.0 plays scripts twice as fast
        self.server: asyncio.base_events.Server | None = None
        self.clients: set[asyncio.StreamWriter] = set()
        self.answer_pings = True
        # Seconds for a click-to-call: the agent picks up, the far end rings, they talk.
        self.originate_timing = (2.0, 3.0, 20.0)
        # Extensions whose phone fails a click-to-call: 'noanswer' (rings out) or 'busy'.
        self.originate_failures: dict[str, str] = {}
        self._tasks: set[asyncio.Task] = set()
        self.port = 0
        self.logins = 0
        self.login_times: list[float] = []  # monotonic clock, for measuring reconnects
        # Channels alive now, as the events played so far say: (headers, created at).
        self.live: dict[str, tuple[dict[str, str], float]] = {}
        self.bridged: dict[str, str] = {}  # Uniqueid → the bridge it is in now

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self.server = await asyncio.start_server(self._session, host, port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.drop_clients()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def close_listener(self) -> None:
        """The PBX goes away (restart, network cut): connections drop and new ones are refused, while
        the calls already playing go on. `start(host, port)` on the same port brings it back."""
        self.drop_clients()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    def drop_clients(self) -> None:
        """Close every AMI connection abruptly, as a PBX restart or a network cut would."""
        for writer in list(self.clients):
            writer.transport.abort()
        self.clients.clear()

    def spawn(self, coro) -> asyncio.Task:
        """Run a coroutine that stops with the simulator."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(BANNER.encode())
        logged_in = False
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                action = {}
                for line in raw.decode("utf-8", "replace").split("\r\n"):
                    key, sep, value = line.partition(": ")
                    if sep:
                        action[key.lower()] = value
                name = action.get("action", "").lower()
                action_id = action.get("actionid", "")
                if name == "login":
                    if action.get("username") == self.username and action.get("secret") == self.secret:
                        logged_in = True
                        self.logins += 1
                        self.login_times.append(time.monotonic())
                        self._send(writer, f"Response: Success\r\n{_action_id(action_id)}"
                                           "Message: Authentication accepted\r\n\r\n")
                        self._send(writer, "Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 10\r\n"
                                           "LastReload: 10\r\nStatus: Fully Booted\r\n\r\n")
                        self.clients.add(writer)
                    else:
                        self._send(writer, f"Response: Error\r\n{_action_id(action_id)}"
                                           "Message: Authentication failed\r\n\r\n")
                        await asyncio.sleep(0.05)
                        break
                elif not logged_in:
                    self._send(writer, f"Response: Error\r\n{_action_id(action_id)}"
                                       "Message: Permission denied\r\n\r\n")
                elif name == "ping":
                    if self.answer_pings:
                        self._send(writer, f"Response: Success\r\nActionID: {action_id}\r\nPing: Pong\r\n"
                                           f"Timestamp: {time.time():.6f}\r\n\r\n")
                elif name == "originate":
                    self._send(writer, f"Response: Success\r\n{_action_id(action_id)}"
                                       "Message: Originate successfully queued\r\n\r\n")
                    extension = action.get("channel", "PJSIP/101").split("/")[-1]
                    number = action.get("exten", "")
                    self.play(self.writer.originate(extension, number, *self.originate_timing, action_id,
                                                    action.get("channelid", ""),
                                                    self.originate_failures.get(extension, "")))
                elif name == "coreshowchannels":
                    self._core_show_channels(writer, action_id)
                elif name == "logoff":
                    self._send(writer, f"Response: Goodbye\r\n{_action_id(action_id)}"
                                       "Message: Thanks for all the fish.\r\n\r\n")
                    break
                else:
                    self._send(writer, f"Response: Success\r\nActionID: {action_id}\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            return  # server shutting down; the session simply ends
        finally:
            self.clients.discard(writer)
            writer.close()

    def _core_show_channels(self, writer: asyncio.StreamWriter, action_id: str) -> None:
        self._send(writer, f"Response: Success\r\nActionID: {action_id}\r\nEventList: start\r\n"
                           "Message: Channels will follow\r\n\r\n")
        now = time.time()
        for uniqueid, (headers, created) in self.live.items():
            seconds = int(now - created)
            listed = [("ActionID", action_id), *headers.items(), ("Application", "Dial"), ("ApplicationData", ""),
                      ("Duration", f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"),
                      ("BridgeId", self.bridged.get(uniqueid, ""))]
            self._send(writer, "Event: CoreShowChannel\r\n" + "".join(f"{k}: {v}\r\n" for k, v in listed) + "\r\n")
        self._send(writer, f"Event: CoreShowChannelsComplete\r\nActionID: {action_id}\r\nEventList: Complete\r\n"
                           f"ListItems: {len(self.live)}\r\n\r\n")

    @staticmethod
    def _send(writer: asyncio.StreamWriter, text: str) -> None:
        if not writer.is_closing():
            writer.write(text.encode("utf-8"))

    def broadcast(self, text: str) -> None:
        for writer in list(self.clients):
            self._send(writer, text)

    def play(self, steps: list[Step]) -> asyncio.Task:
        return self.spawn(self._play(steps))

    async def _play(self, steps: list[Step]) -> None:
        for step in steps:
            if step.delay:
                await asyncio.sleep(step.delay / self.speed)
            now = time.time()
            for name, headers in step.events:
                self._track_live(name, headers, now)
                self.broadcast(format_event(name, headers, now))

    def _track_live(self, name: str, headers: Headers, now: float) -> None:
        """What the PBX would list in CoreShowChannels: live channels, their state and their bridge."""
        if name not in ("Newchannel", "Newstate", "Hangup", "BridgeEnter", "BridgeLeave"):
            return
        fields = dict(headers)
        uniqueid = fields.get("Uniqueid", "")
        if name == "BridgeEnter":
            self.bridged[uniqueid] = fields.get("BridgeUniqueid", "")
        elif name == "BridgeLeave":
            self.bridged.pop(uniqueid, None)
        elif name == "Hangup":
            self.live.pop(uniqueid, None)
            self.bridged.pop(uniqueid, None)
        elif name == "Newchannel":
            self.live[uniqueid] = (fields, now)
        elif uniqueid in self.live:
            self.live[uniqueid] = (fields, self.live[uniqueid][1])

    def place_call(self, caller: str, extension: str, answer_after: float | None, talk_seconds: float = 20.0,
                   caller_name: str = "", ring_timeout: float = 15.0) -> asyncio.Task:
        """An inbound call from `caller` to `extension`: answered after N s, or never (missed after
        `ring_timeout`, as Dial(PJSIP/101,15) gives up)."""
        if answer_after is None:
            steps = self.writer.missed(caller, caller_name, extension, ring_timeout)
        else:
            steps = self.writer.answered(caller, caller_name, extension, answer_after, talk_seconds)
        return self.play(steps)

    async def run_load(self, scenario: str, cps: float, callers: list[str] | None = None) -> None:
        """Place calls forever at `cps` calls per second."""
        while True:
            await asyncio.sleep(1.0 / cps)
            if callers and self.rng.random() < 0.6:
                caller, name = self.rng.choice(callers), ""
            else:
                caller, name = random_caller(self.rng)
            self.play(self.writer.random_call(scenario, caller, name))


def _action_id(action_id: str) -> str:
    """Asterisk echoes ActionID only when the action had one."""
    return f"ActionID: {action_id}\r\n" if action_id else ""


async def run_simulator(host: str, port: int, scenario: str, cps: float, seed: int, username: str,
                        secret: str) -> None:
    simulator = AmiSimulator(username, secret, seed)
    await simulator.start(host, port)
    print(f"AMI simulator on {host}:{simulator.port} (user {username}); scenario {scenario}, {cps} call(s)/s",
          flush=True)
    try:
        await simulator.run_load(scenario, cps)
    finally:
        await simulator.stop()
