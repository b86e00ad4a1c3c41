"""AMI ingest benchmark: panoramisk 1.4's own parsing vs our filter + parser + CallTracker, same run.

Both paths get the same bytes in the same 4 KiB chunks (as a socket delivers them), on two streams:

- realistic: a mix of calls from the simulator with VarSet/Newexten/RTCP noise at about 70% of all events;
- call events only: the real captures of tests/fixtures (our Asterisk 22 lab and cacofonisk's Asterisk 13
  platform) cut down to the events the call tracker consumes, copied with unique ids and times to volume,
  20 copies in flight at a time. Nothing here is dropped by name: every message is parsed and tracked.

    python bench/ami_ingest.py [--calls 3000] [--copies 600] [--repeat 5] [--stream both|realistic|calls]

Instruction counts (repeatable on a busy machine): run one path under callgrind with 1 and with 3 passes,
and divide the difference by 2 and by the number of events it prints:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python bench/ami_ingest.py --stream calls --copies 40 --only ours --passes 1   # then --passes 3
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from panoramisk.ami_protocol import AMIProtocol  # noqa: E402

from cti import events as ev  # noqa: E402
from cti.calls import CallEnded, CallTracker  # noqa: E402
from cti.replay import crlf  # noqa: E402
from cti.simulator import generate_stream  # noqa: E402

NOISE = {"VarSet", "Newexten", "RTCPSent", "RTCPReceived"}
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
# The events of a call that the tracker reads (VarSet only when it names the recording). Left out: the
# session and resync ones (banner, FullyBooted, CoreShowChannel…) and the listings sent once at login.
CALL_EVENTS = frozenset({
    "Newchannel", "Newstate", "NewCallerid", "DialBegin", "DialEnd", "HangupRequest", "SoftHangupRequest",
    "Hangup", "BridgeEnter", "BridgeLeave", "LocalBridge", "LocalOptimizationEnd", "QueueCallerJoin",
    "QueueCallerLeave", "QueueCallerAbandon", "AgentCalled", "AgentConnect", "AgentComplete", "AgentRingNoAnswer",
    "BlindTransfer", "AttendedTransfer", "MixMonitorStart", "VarSet", "OriginateResponse", "DeviceStateChange",
    "ExtensionStatus", "Cdr"})
IN_FLIGHT = 20
_ID_KEY = re.compile(r"(Uniqueid|UniqueID|Linkedid)$")
_CHANNEL_KEY = re.compile(r"Channel$")


def fixture_calls() -> list[list[list[tuple[str, str]]]]:
    """Each capture that holds whole calls, as its call events (each a list of header pairs)."""
    traces = []
    for path in sorted(FIXTURES.glob("ami*/*.ami")):
        if path.name.startswith("i_"):
            continue  # the reconnect captures: their calls are rebuilt from the resync, cut here
        messages = []
        for raw in crlf(path.read_bytes()).decode().split("\r\n\r\n"):
            lines = [line for line in raw.strip("\r\n").split("\r\n") if not line.startswith("Asterisk Call")]
            if not lines or not lines[0].startswith("Event: ") or lines[0][7:] not in CALL_EVENTS:
                continue
            if lines[0] == "Event: VarSet" and "Variable: MIXMONITOR_FILENAME" not in lines:
                continue
            messages.append([tuple(line.split(": ", 1)) if ": " in line else (line.rstrip(":"), "")
                             for line in lines])
        if any(m[0][1] == "Hangup" for m in messages):
            traces.append(messages)
    return traces


def _copy(message: list[tuple[str, str]], copy: int, shift: float) -> str:
    """One message of copy `copy`: its ids and channel names made unique, its time moved by `shift`."""
    lines = []
    for key, value in message:
        if value and value != "<null>" and _ID_KEY.search(key):
            value = f"{value}-c{copy}"
        elif value and _CHANNEL_KEY.search(key) and "/" in value and message[0][1] != "OriginateResponse":
            base, local, half = value.rpartition(";") if value[-2:] in (";1", ";2") else (value, "", "")
            value = f"{base}{'' if '-' in base.partition('/')[2] else '-'}{copy:x}{local}{half}"
        elif key == "Timestamp" and value:
            value = f"{float(value) + shift:.6f}"
        lines.append(f"{key}: {value}")
    return "\r\n".join(lines) + "\r\n\r\n"


def call_events_stream(copies: int) -> list[str]:
    """`copies` copies of the captures' calls, IN_FLIGHT at a time with their events interleaved."""
    traces = fixture_calls()
    starts = [next((float(v) for m in trace for k, v in m if k == "Timestamp"), 0.0) for trace in traces]
    frames: list[str] = []
    for wave_start in range(0, copies, IN_FLIGHT):
        wave = range(wave_start, min(copies, wave_start + IN_FLIGHT))
        # Each wave a minute after the last one; within it the copies start 50 ms apart.
        shifted = [(traces[c % len(traces)], 1_800_000_000.0 + wave_start * 3 + (c - wave_start) * 0.05
                    - starts[c % len(traces)]) for c in wave]
        for index in range(max(len(trace) for trace, _ in shifted)):
            for copy, (trace, shift) in zip(wave, shifted, strict=True):
                if index < len(trace):
                    frames.append(_copy(trace[index], copy, shift))
    return frames


def expected_calls(copies: int) -> int:
    """How many calls the copies hold: each capture's calls, counted by replaying it alone."""
    per_trace = []
    for trace in fixture_calls():
        data = "".join(_copy(message, 0, 0.0) for message in trace).encode()
        per_trace.append(callboard_ingest([data])[1])
    return sum(per_trace[c % len(per_trace)] for c in range(copies))


class _CountingFactory:
    """What panoramisk's protocol hands parsed events to; counts them and does nothing else."""

    def __init__(self) -> None:
        self.count = 0

    def dispatch(self, message) -> None:
        self.count += 1


class _NullTransport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def panoramisk_parse(chunks: list[bytes]) -> int:
    protocol = AMIProtocol()
    protocol.connection_made(_NullTransport())
    protocol.factory = _CountingFactory()
    protocol.encoding = "utf8"
    for chunk in chunks:
        protocol.data_received(chunk)
    return protocol.factory.count


def callboard_ingest(chunks: list[bytes]) -> tuple[int, int]:
    splitter = ev.FrameSplitter()
    tracker = CallTracker("bench")
    parse, handle = ev.parse_event, tracker.handle
    messages = calls = 0
    for chunk in chunks:
        for raw in splitter.feed(chunk):
            messages += 1
            event = parse(raw)  # decides by the Event: name first; noise costs one dict lookup
            if event is not None:
                for call_event in handle(event):
                    if type(call_event) is CallEnded:
                        calls += 1
    return messages, calls


def best_rates(chunks: list[bytes], events: int, repeat: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """(best, median) events per second of CPU time for panoramisk, then ours; the two alternate in each
    round, so a busy neighbour on this shared machine slows both alike."""
    base, ours = [], []
    for _ in range(repeat):
        for fn, rates in ((panoramisk_parse, base), (callboard_ingest, ours)):
            gc.collect()
            start = time.process_time()
            fn(chunks)
            rates.append(events / (time.process_time() - start))
    return (max(base), statistics.median(base)), (max(ours), statistics.median(ours))


def measure(title: str, frames: list[str], calls: int, repeat: int) -> None:
    noise = sum(1 for f in frames if f[7:f.index("\r\n")] in NOISE)
    data = "".join(frames).encode()
    chunks = [data[i:i + 4096] for i in range(0, len(data), 4096)]
    events = len(frames)

    assert panoramisk_parse(chunks) == events, "panoramisk lost events"
    messages, finished = callboard_ingest(chunks)
    assert (messages, finished) == (events, calls), (messages, finished, calls)

    (base_best, base_median), (ours_best, ours_median) = best_rates(chunks, events, repeat)
    print(f"{title}: {calls} calls, {events} events ({noise / events:.0%} noise), {len(data) / 1e6:.1f} MB")
    print(f"  panoramisk parse only        : {base_best:12,.0f} events/s (median {base_median:,.0f})")
    print(f"  callboard filter+parse+track : {ours_best:12,.0f} events/s (median {ours_median:,.0f})")
    print(f"  ratio callboard / panoramisk : {ours_best / base_best:.2f}x (median {ours_median / base_median:.2f}x)")


def run_only(args: argparse.Namespace) -> None:
    """One path, untimed, `passes` times over the stream: what callgrind counts beyond start-up."""
    if args.stream == "both":
        raise SystemExit("--only needs --stream realistic or --stream calls")
    frames = list(generate_stream(args.calls, "mix", seed=1, noise_ratio=0.65)) if args.stream == "realistic" \
        else call_events_stream(args.copies)
    data = "".join(frames).encode()
    chunks = [data[i:i + 4096] for i in range(0, len(data), 4096)]
    path = panoramisk_parse if args.only == "panoramisk" else callboard_ingest
    for _ in range(args.passes):
        path(chunks)
    print(f"{args.only}: {len(frames)} events, {args.passes} passes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="calls of the realistic stream")
    parser.add_argument("--copies", type=int, default=600, help="copies of the captures' calls")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--stream", choices=("both", "realistic", "calls"), default="both")
    parser.add_argument("--only", choices=("panoramisk", "ours"),
                        help="no timing: run this path --passes times over --stream (for callgrind)")
    parser.add_argument("--passes", type=int, default=1)
    args = parser.parse_args()

    asyncio.set_event_loop(asyncio.new_event_loop())  # panoramisk's protocol expects a loop to exist
    print(f"python {platform.python_version()} on {platform.machine()}")
    if args.only:
        run_only(args)
        return
    if args.stream in ("both", "realistic"):
        frames = list(generate_stream(args.calls, "mix", seed=1, noise_ratio=0.65))
        measure("realistic (simulator, with noise)", frames, args.calls, args.repeat)
    if args.stream in ("both", "calls"):
        measure("call events only (the captures' calls)", call_events_stream(args.copies),
                expected_calls(args.copies), args.repeat)


if __name__ == "__main__":
    main()
