"""`run.py replay`: raw AMI captures through the same splitter, parser and tracker; nothing is stored."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from cti import events as ev
from cti.calls import CallEnded, CallRecord, CallTracker, DirectionRules


def replay_stream(chunks: Iterable[bytes], tracker: CallTracker, errors: list[str]) -> list[CallRecord]:
    """Feed byte chunks (as read from a socket) and return the calls that finished, in order."""
    splitter = ev.FrameSplitter()
    finished: list[CallRecord] = []
    for chunk in chunks:
        for raw in splitter.feed(chunk):
            if not raw.startswith(("Event:", "Response:")):
                errors.append(f"malformed message skipped: {raw[:60]!r}")
                continue
            if not ev.is_wanted(raw):
                continue
            event = ev.parse_event(raw)
            if event is None:
                errors.append(f"incomplete {ev.event_name(raw)} event skipped")
                continue
            for call_event in tracker.handle(event):
                if isinstance(call_event, CallEnded):
                    finished.append(call_event.record)
    return finished


def _read_chunks(path: Path, size: int = 65536) -> Iterable[bytes]:
    """The file's bytes with every line ending made CRLF (a saved log often has LF alone)."""
    with path.open("rb") as stream:
        carry = b""
        while chunk := stream.read(size):
            chunk = carry + chunk
            # A CR at the end may be the first half of a CRLF split across two reads.
            carry = b"\r" if chunk.endswith(b"\r") else b""
            if carry:
                chunk = chunk[:-1]
            yield crlf(chunk)
        if carry:
            yield b"\r\n"


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def replay_files(paths: list[Path], as_json: bool, pbx: str, out: TextIO, err: TextIO,
                 rules: DirectionRules | None = None) -> int:
    for path in paths:
        if not path.is_file():
            print(f"replay: cannot read {path}: no such file", file=err)
            return 2
    tracker = CallTracker(pbx, rules)
    errors: list[str] = []
    records: list[CallRecord] = []
    for path in paths:
        before = len(errors)
        counter = _Counter()
        try:
            records += replay_stream(counter.count(_read_chunks(path)), tracker, errors)
        except OSError as exc:
            print(f"replay: cannot read {path}: {exc.strerror}", file=err)
            return 2
        if not counter.messages:
            errors.insert(before, f"{path}: no AMI message found (is it an AMI capture?)")
    for message in errors:
        print(f"replay: {message}", file=err)
    in_progress = tracker.in_progress()
    for record in in_progress:
        print(f"replay: call {record.call_id} was still in progress at the end of the input", file=err)
    records += in_progress
    if not records and any("no AMI message" in message for message in errors):
        return 1
    if as_json:
        for record in records:
            body = record.to_json()
            del body["legs"]
            out.write(json.dumps(body, ensure_ascii=False) + "\n")
    else:
        out.write(format_table(records))
    return 0


class _Counter:
    """Counts the AMI messages (Event: / Response: lines) that go by, to tell a capture from another file."""

    def __init__(self) -> None:
        self.messages = 0

    def count(self, chunks: Iterable[bytes]) -> Iterable[bytes]:
        for chunk in chunks:
            self.messages += chunk.count(b"Event: ") + chunk.count(b"Response: ")
            yield chunk


def format_table(records: list[CallRecord]) -> str:
    header = ("call_id", "started (UTC)", "dir", "caller", "callee", "outcome", "by", "rang", "queue", "ring",
              "talk", "transfers")
    rows = [header]
    for r in records:
        rows.append((r.call_id, (r.to_json()["started_at"] or "")[:19].replace("T", " "), r.direction, r.caller,
                     r.callee, r.outcome, r.answered_by or "-", ",".join(r.agents_rang) or "-", r.queue or "-",
                     f"{r.ring_seconds}s", f"{r.talk_seconds}s",
                     ", ".join(f"{t.from_}->{t.to} ({t.kind})" for t in r.transfers) or "-"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = ["  ".join(str(value).ljust(widths[i]) for i, value in enumerate(row)).rstrip() for row in rows]
    lines.append(f"{len(records)} call(s)")
    return "\n".join(lines) + "\n"
