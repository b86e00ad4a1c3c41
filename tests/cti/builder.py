"""Hand-written AMI sequences for behaviour the shared captures do not show, in Asterisk's own shape."""

from __future__ import annotations

from cti import events as ev
from cti.calls import CallEnded, CallRecord, CallTracker
from cti.simulator import SimChannel, format_event


class Pbx:
    def __init__(self) -> None:
        self.now = 1_795_500_000.0
        self._seq = 0
        self._uid = 0
        self.frames: list[str] = []

    def tick(self, seconds: float) -> Pbx:
        self.now += seconds
        return self

    def chan(self, endpoint: str, linkedid: str | None = None, num: str = "", name: str = "",
             context: str = "from-internal", exten: str = "s", state: int = 0, tech: str = "PJSIP") -> SimChannel:
        self._seq += 1
        self._uid += 1
        uniqueid = f"{int(self.now)}.{self._uid}"
        suffix = f"{self._seq:08x}"
        return SimChannel(f"{tech}/{endpoint}-{suffix}", uniqueid, linkedid or uniqueid, num or endpoint, name,
                          context, exten, state)

    def local_pair(self, target: str, linkedid: str) -> tuple[SimChannel, SimChannel]:
        self._seq += 1
        base = f"Local/{target}@from-internal-{self._seq:08x}"
        self._uid += 1
        one = SimChannel(f"{base};1", f"{int(self.now)}.{self._uid}", linkedid, "", "", "from-internal", target)
        self._uid += 1
        two = SimChannel(f"{base};2", f"{int(self.now)}.{self._uid}", linkedid, "", "", "from-internal", target)
        return one, two

    def emit(self, name: str, chan: SimChannel | None = None, dest: SimChannel | None = None,
             prefixes: dict[str, SimChannel] | None = None, timestamp: bool = True, **extra: str) -> Pbx:
        headers = chan.headers() if chan else []
        if dest is not None:
            headers += dest.headers("Dest")
        for prefix, other in (prefixes or {}).items():
            headers += other.headers(prefix)
        headers += [(k.replace("_", "-") if k == "Cause_txt" else k, v) for k, v in extra.items()]
        self.frames.append(format_event(name, headers, self.now if timestamp else None))
        return self

    def state(self, chan: SimChannel, state: int) -> Pbx:
        chan.state = state
        return self.emit("Newstate", chan)

    def hangup(self, chan: SimChannel, cause: int, far_end: bool | None = None) -> Pbx:
        if far_end is not None:
            self.emit("HangupRequest" if far_end else "SoftHangupRequest", chan, Cause=str(cause))
        return self.emit("Hangup", chan, Cause=str(cause))

    def run(self, tracker: CallTracker | None = None) -> tuple[list[CallRecord], list]:
        tracker = tracker or CallTracker("t")
        emitted = []
        for frame in self.frames:
            event = ev.parse_event(frame[:-4])
            if event is not None:
                emitted += tracker.handle(event)
        self.frames = []
        return [e.record for e in emitted if isinstance(e, CallEnded)], emitted
