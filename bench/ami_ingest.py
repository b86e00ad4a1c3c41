"""AMI ingest benchmark: panoramisk 1.4's own parsing vs our filter + parser + CallTracker, same run.

Both paths get the same bytes in the same 4 KiB chunks (as a socket delivers them): a realistic
mix of calls from the simulator with VarSet/Newexten/RTCP noise at about 70% of all events.

    python bench/ami_ingest.py [--calls 3000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from panoramisk.ami_protocol import AMIProtocol  # noqa: E402

from cti import events as ev  # noqa: E402
from cti.calls import CallEnded, CallTracker  # noqa: E402
from cti.simulator import generate_stream  # noqa: E402

NOISE = {"VarSet", "Newexten", "RTCPSent", "RTCPReceived"}


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


def best_rate(fn, chunks: list[bytes], events: int, repeat: int) -> tuple[float, float]:
    rates = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn(chunks)
        rates.append(events / (time.perf_counter() - start))
    return max(rates), statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    asyncio.set_event_loop(asyncio.new_event_loop())  # panoramisk's protocol expects a loop to exist
    frames = list(generate_stream(args.calls, "mix", seed=1, noise_ratio=0.65))
    noise = sum(1 for f in frames if f[7:f.index("\r\n")] in NOISE)
    data = "".join(frames).encode()
    chunks = [data[i:i + 4096] for i in range(0, len(data), 4096)]
    events = len(frames)

    assert panoramisk_parse(chunks) == events, "panoramisk lost events"
    messages, calls = callboard_ingest(chunks)
    assert (messages, calls) == (events, args.calls), (messages, calls)

    base_best, base_median = best_rate(panoramisk_parse, chunks, events, args.repeat)
    ours_best, ours_median = best_rate(callboard_ingest, chunks, events, args.repeat)
    print(f"python {platform.python_version()} on {platform.machine()}, {args.calls} calls, {events} events "
          f"({noise / events:.0%} noise), {len(data) / 1e6:.1f} MB")
    print(f"panoramisk parse only        : {base_best:12,.0f} events/s (median {base_median:,.0f})")
    print(f"callboard filter+parse+track : {ours_best:12,.0f} events/s (median {ours_median:,.0f})")
    print(f"ratio callboard / panoramisk : {ours_best / base_best:.2f}x (median {ours_median / base_median:.2f}x)")


if __name__ == "__main__":
    main()
