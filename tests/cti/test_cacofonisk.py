"""Another deployment (chan_sip phones named by account, Local channels everywhere): every call of every
shared trace comes out as its truth file says — with the deployment's trunk settings and with none."""

import json
import random
from pathlib import Path

import pytest

from cti.calls import CallRecord, CallTracker, DirectionRules
from cti.replay import replay_stream
from tests.conftest import FIXTURES

TRACES = FIXTURES / "ami-cacofonisk"
NAMES = sorted(p.stem for p in TRACES.glob("*.ami"))
CONFIGURED = DirectionRules(trunk_endpoints=frozenset({"voipgrid-siproute-docker"}),
                            inbound_contexts=frozenset({"voipgrid_in"}), region="NL")


def _messages(name: str) -> list[bytes]:
    data = (TRACES / f"{name}.ami").read_bytes()
    return [m + b"\r\n\r\n" for m in data.split(b"\r\n\r\n") if m.strip()]


def replay(chunks: list[bytes], rules: DirectionRules | None = CONFIGURED) -> list[CallRecord]:
    tracker = CallTracker("caco", rules)
    errors: list[str] = []
    records = replay_stream(chunks, tracker, errors)
    records += [ended.record for ended in tracker.finish_waiting()]
    assert errors == []
    records += tracker.in_progress()
    # Start order (these traces carry no Timestamp: the Uniqueid's sequence breaks ties).
    return sorted(records, key=lambda r: (r.started_at, int(r.call_id.rpartition(".")[2])))


def as_truth(record: CallRecord, truth: dict) -> dict:
    """What the truth file can say about a call, read from ours in the truth's own terms."""
    outcomes = truth["outcome"] if isinstance(truth["outcome"], list) else [truth["outcome"]]
    answerers = [truth["answered_by"], *truth.get("answered_by_aliases", [])] if truth["answered_by"] else [None]
    transfers = [t.to for t in record.transfers]
    allowed = [truth.get("transfers_to", [])]
    if truth.get("transfers_to_optional"):
        allowed.append([])
    if truth.get("transfers_attempted"):
        allowed += [truth["transfers_attempted"], []]
    return {
        "direction": record.direction,
        "caller": record.caller if record.caller in [truth["caller"], *truth.get("caller_aliases", [])] else
        f"{record.caller} (not {truth['caller']})",
        "outcome": record.outcome if record.outcome in outcomes else f"{record.outcome} (not {outcomes})",
        "answered_by": record.answered_by if record.answered_by in answerers else
        f"{record.answered_by} (not {answerers})",
        "transfers": transfers if transfers in allowed else f"{transfers} (not {allowed})",
    }


def expected(truth: dict, record: CallRecord) -> dict:
    return {"direction": truth["direction"], "caller": record.caller, "outcome": record.outcome,
            "answered_by": record.answered_by, "transfers": [t.to for t in record.transfers]}


def compare(name: str, records: list[CallRecord]) -> None:
    truths = json.loads((TRACES / f"{name}.json").read_text())
    if not records and all(t.get("may_be_absent") for t in truths):
        return
    assert len(records) == len(truths), [(r.caller, r.callee, r.outcome) for r in records]
    got = [as_truth(r, t) for r, t in zip(records, truths, strict=True)]
    want = [expected(t, r) for r, t in zip(records, truths, strict=True)]
    assert got == want


@pytest.mark.parametrize("name", NAMES)
def test_trace_with_the_deployments_trunk_settings(name):
    compare(name, replay(_messages(name)))


@pytest.mark.parametrize("name", NAMES)
def test_trace_with_no_settings_at_all(name):
    """Nobody told Callboard which endpoint is the trunk: the stream's own evidence must do."""
    compare(name, replay(_messages(name), rules=None))


@pytest.mark.parametrize("name", NAMES)
def test_every_event_delivered_twice_gives_the_same_calls(name):
    messages = _messages(name)
    twice = [m for m in messages for _ in range(2)]
    assert [r.to_json() for r in replay(twice)] == [r.to_json() for r in replay(messages)]


@pytest.mark.parametrize("name", NAMES)
def test_a_trace_cut_in_half_gives_calls_in_progress_and_no_crash(name):
    messages = _messages(name)
    records = replay(messages[: len(messages) // 2])
    assert records, "the first half of every trace starts a call"
    assert all(r.outcome in ("in_progress", "answered", "missed", "abandoned", "busy", "failed", "unknown")
               for r in records)
    assert any(r.outcome == "in_progress" and r.ended_at is None for r in records)


def test_all_traces_in_one_stream_in_random_chunks():
    """One long-lived tracker sees every deployment shape one after another, cut anywhere."""
    data = b"".join((TRACES / f"{name}.ami").read_bytes() for name in NAMES)
    rng = random.Random(7)
    chunks, position = [], 0
    while position < len(data):
        size = rng.randint(1, 3000)
        chunks.append(data[position:position + size])
        position += size
    records = replay(chunks)
    truths = [t for name in NAMES for t in json.loads((TRACES / f"{name}.json").read_text())]
    assert len(records) == len(truths)


def test_fixture_folder_is_complete():
    assert len(NAMES) == 26 and all((TRACES / f"{n}.json").exists() for n in NAMES)
    assert Path(TRACES / "README.md").exists()
