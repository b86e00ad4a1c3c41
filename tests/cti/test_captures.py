"""Every real Asterisk capture replays to the call its .md describes, compared whole."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cti import events as ev
from cti.calls import (
    AgentRinging,
    AgentRingStopped,
    AgentStateChanged,
    CallAnswered,
    CallEnded,
    CallStarted,
    CallTracker,
)
from cti.replay import replay_stream
from tests.conftest import FIXTURES

AMI = FIXTURES / "ami"
REC = "/var/spool/asterisk/monitor/"
ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "a_routed-answered": [{
        "call_id": "1795448049.0", "direction": "inbound", "caller": "+79160000101", "caller_name": "Ivan Petrov",
        "callee": "+74951234567", "started_at": "2026-11-23T15:34:09.883+00:00",
        "answered_at": "2026-11-23T15:34:11.912+00:00", "ended_at": "2026-11-23T15:34:14.915+00:00",
        "outcome": "answered", "reason": "answered", "answered_by": "101", "agents_rang": ["101"], "queue": None,
        "ring_seconds": 2, "talk_seconds": 3, "recording": REC + "20261123-153409-79160000101-1795448049.0.wav",
        "transfers": [], "talk_by_agent": {"101": 3}, "recovered": False, "originated": False}],
    "b_queue-answered-102": [{
        "call_id": "1795448064.2", "direction": "inbound", "caller": "+79161112233", "caller_name": "Olga Smirnova",
        "callee": "+74951234567", "started_at": "2026-11-23T15:34:24.387+00:00",
        "answered_at": "2026-11-23T15:34:27.404+00:00", "ended_at": "2026-11-23T15:34:31.412+00:00",
        "outcome": "answered", "reason": "answered", "answered_by": "102", "agents_rang": ["101", "102"],
        "queue": "sales", "ring_seconds": 3, "talk_seconds": 4,
        "recording": REC + "20261123-153424-79161112233-1795448064.2.wav", "transfers": [],
        "talk_by_agent": {"102": 4}, "recovered": False, "originated": False}],
    "c_routed-noanswer": [{
        "call_id": "1795448080.5", "direction": "inbound", "caller": "+79160000101", "caller_name": "Ivan Petrov",
        "callee": "+74951234567", "started_at": "2026-11-23T15:34:40.854+00:00", "answered_at": None,
        "ended_at": "2026-11-23T15:34:55.876+00:00", "outcome": "missed", "reason": "no_answer",
        "answered_by": None, "agents_rang": ["101"], "queue": None, "ring_seconds": 15, "talk_seconds": 0,
        "recording": REC + "20261123-153440-79160000101-1795448080.5.wav", "transfers": [], "talk_by_agent": {},
        "recovered": False, "originated": False}],
    "d_routed-busy": [{
        "call_id": "1795448105.7", "direction": "inbound", "caller": "+79160000101", "caller_name": "Ivan Petrov",
        "callee": "+74951234567", "started_at": "2026-11-23T15:35:05.375+00:00", "answered_at": None,
        "ended_at": "2026-11-23T15:35:05.382+00:00", "outcome": "busy", "reason": "busy", "answered_by": None,
        "agents_rang": ["101"], "queue": None, "ring_seconds": 0, "talk_seconds": 0,
        "recording": REC + "20261123-153505-79160000101-1795448105.7.wav", "transfers": [], "talk_by_agent": {},
        "recovered": False, "originated": False}],
    "f_click-to-call": [{
        "call_id": "1795448133.12", "direction": "outbound", "caller": "103", "caller_name": "CTI 103",
        "callee": "+79161234567", "started_at": "2026-11-23T15:35:33.148+00:00",
        "answered_at": "2026-11-23T15:35:38.164+00:00", "ended_at": "2026-11-23T15:35:43.168+00:00",
        "outcome": "answered", "reason": "answered", "answered_by": "103", "agents_rang": ["103"], "queue": None,
        "ring_seconds": 5, "talk_seconds": 5, "recording": None, "transfers": [], "talk_by_agent": {"103": 5},
        "recovered": False, "originated": True}],
    "g_blind-transfer-101-to-102": [{
        "call_id": "1795448157.14", "direction": "inbound", "caller": "+79160000101", "caller_name": "Ivan Petrov",
        "callee": "+74951234567", "started_at": "2026-11-23T15:35:57.483+00:00",
        "answered_at": "2026-11-23T15:35:59.503+00:00", "ended_at": "2026-11-23T15:36:13.513+00:00",
        "outcome": "answered", "reason": "answered", "answered_by": "101", "agents_rang": ["101", "102"],
        "queue": None, "ring_seconds": 2, "talk_seconds": 14,
        "recording": REC + "20261123-153557-79160000101-1795448157.14.wav",
        "transfers": [{"from": "101", "to": "102", "kind": "blind"}], "talk_by_agent": {"101": 3, "102": 9},
        "recovered": False, "originated": False}],
    # Only the reconnect stream: the call is rebuilt from CoreShowChannels, the CDR and AgentComplete.
    "i_ami-drop-reconnect": [{
        "call_id": "1795448257.53", "direction": "inbound", "caller": "+79161112233", "caller_name": "Olga Smirnova",
        "callee": "+74951234567", "started_at": "2026-11-23T15:37:37.000+00:00",
        "answered_at": "2026-11-23T15:37:39.000+00:00", "ended_at": "2026-11-23T15:37:59.804+00:00",
        "outcome": "answered", "reason": "answered", "answered_by": "102", "agents_rang": ["101", "102"],
        "queue": "sales", "ring_seconds": 2, "talk_seconds": 20, "recording": None, "transfers": [],
        "talk_by_agent": {"102": 21}, "recovered": True, "originated": False}],
    "0_agent-registration": [],
    "j_idle-state-queries": [],
}


def replay(*names: str, chunk_size: int = 4096) -> tuple[list[dict], list[str]]:
    tracker = CallTracker("lab")
    errors: list[str] = []
    records = []
    for name in names:
        data = (AMI / f"{name}.ami").read_bytes()
        chunks = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)]
        records += replay_stream(chunks, tracker, errors)
    bodies = []
    for record in records:
        body = record.to_json()
        del body["legs"], body["pbx"]
        assert body.pop("backfilled") is False  # every call here was seen live
        bodies.append(body)
    return bodies, errors


def test_every_shared_capture_has_an_expectation():
    names = {p.stem for p in AMI.glob("*.ami")} - {"i_ami-drop-reconnect.pre-drop"}
    assert names == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_replays_to_its_stated_outcome(name):
    records, errors = replay(name)
    assert errors == []
    assert records == EXPECTED[name]


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_chunk_boundaries_inside_messages_change_nothing(chunk_size):
    assert replay("b_queue-answered-102", chunk_size=chunk_size)[0] == EXPECTED["b_queue-answered-102"]


def test_drop_and_reconnect_make_one_call_with_its_whole_history():
    records, _ = replay("i_ami-drop-reconnect.pre-drop", "i_ami-drop-reconnect")
    assert len(records) == 1
    call = records[0]
    # Seen live from the start: exact times, the recording, and not "recovered" (nothing was lost).
    assert (call["outcome"], call["answered_by"], call["agents_rang"], call["queue"]) == (
        "answered", "102", ["101", "102"], "sales")
    assert (call["started_at"], call["answered_at"]) == ("2026-11-23T15:37:37.778+00:00",
                                                         "2026-11-23T15:37:39.793+00:00")
    assert (call["ring_seconds"], call["talk_seconds"]) == (2, 20)
    assert call["recording"].endswith("-1795448257.53.wav")


def test_the_same_stream_twice_gives_the_same_calls_once():
    records, _ = replay("a_routed-answered", "a_routed-answered", "b_queue-answered-102", "b_queue-answered-102")
    assert records == EXPECTED["a_routed-answered"] + EXPECTED["b_queue-answered-102"]


def test_all_captures_in_one_run():
    names = ["0_agent-registration", "a_routed-answered", "b_queue-answered-102", "c_routed-noanswer",
             "d_routed-busy", "f_click-to-call", "g_blind-transfer-101-to-102", "j_idle-state-queries"]
    records, _ = replay(*names)
    assert [r["outcome"] for r in records] == ["answered", "answered", "missed", "busy", "answered", "answered"]


def test_queue_call_emits_the_whole_event_list():
    tracker = CallTracker("lab")
    splitter = ev.FrameSplitter()
    emitted = []
    for raw in splitter.feed((AMI / "b_queue-answered-102.ami").read_bytes()):
        event = ev.parse_event(raw)
        if event is not None:
            emitted += [e for e in tracker.handle(event) if not isinstance(e, AgentStateChanged)]
    simple = [(type(e).__name__, getattr(e, "extension", None)) for e in emitted]
    assert simple == [
        ("CallStarted", None),
        ("AgentRinging", "101"),
        ("AgentRinging", "102"),
        ("AgentRingStopped", "101"),  # DialEnd CANCEL comes before the bridge that makes the answer
        ("CallAnswered", "102"),
        ("CallEnded", None),
    ]
    started, ringing = emitted[0], emitted[1]
    assert isinstance(started, CallStarted) and started.caller == "+79161112233"
    assert isinstance(ringing, AgentRinging) and ringing.caller_name == "Olga Smirnova"
    assert isinstance(emitted[4], CallAnswered)
    stopped = emitted[3]
    assert isinstance(stopped, AgentRingStopped) and stopped.answered_by == "102"
    assert isinstance(emitted[-1], CallEnded)


def test_agent_states_follow_device_state():
    tracker = CallTracker("lab")
    states = []
    for raw in ev.FrameSplitter().feed((AMI / "b_queue-answered-102.ami").read_bytes()):
        event = ev.parse_event(raw)
        if event is not None:
            states += [(e.extension, e.state) for e in tracker.handle(event) if isinstance(e, AgentStateChanged)]
    assert states[:2] == [("101", "in_call"), ("102", "in_call")]
    assert tracker.agent_states() == {"101": "idle", "102": "idle"}


def test_replay_command_prints_json_lines():
    result = subprocess.run([sys.executable, "run.py", "replay", "--json", str(AMI / "c_routed-noanswer.ami"),
                             str(AMI / "d_routed-busy.ami")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(c["call_id"], c["outcome"]) for c in lines] == [("1795448080.5", "missed"), ("1795448105.7", "busy")]


def test_replay_command_table_and_unreadable_file(tmp_path):
    result = subprocess.run([sys.executable, "run.py", "replay", str(AMI / "a_routed-answered.ami")], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert "1795448049.0" in result.stdout and "answered" in result.stdout
    missing = subprocess.run([sys.executable, "run.py", "replay", str(tmp_path / "nope.ami")], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "nope.ami" in missing.stderr


def test_malformed_messages_are_reported_and_the_rest_still_counts(tmp_path):
    data = (AMI / "a_routed-answered.ami").read_bytes()
    cut = data.index(b"Event: Newstate")
    junk = b"garbage line without colon\r\n\xff\xfe\r\n\r\nEvent: Hangup\r\nCause: 16\r\n\r\n"
    broken = data[:cut] + junk + data[cut:]
    path = tmp_path / "broken.ami"
    path.write_bytes(broken)
    result = subprocess.run([sys.executable, "run.py", "replay", "--json", str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "malformed" in result.stderr and "incomplete Hangup" in result.stderr
    call = json.loads(result.stdout)
    del call["pbx"], call["backfilled"]
    assert call == EXPECTED["a_routed-answered"][0]


def test_replay_reads_a_capture_saved_with_lf_line_endings(tmp_path):
    path = tmp_path / "lf.ami"
    path.write_bytes((AMI / "a_routed-answered.ami").read_bytes().replace(b"\r\n", b"\n"))
    result = subprocess.run([sys.executable, "run.py", "replay", "--json", str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    call = json.loads(result.stdout)
    del call["pbx"], call["backfilled"]
    assert call == EXPECTED["a_routed-answered"][0]


def test_replay_says_clearly_when_a_file_holds_no_ami_message(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is a shopping list\nmilk\n")
    result = subprocess.run([sys.executable, "run.py", "replay", "--json", str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "no AMI message found" in result.stderr and "notes.txt" in result.stderr


def test_replay_prints_calls_still_open_as_in_progress(tmp_path):
    data = (AMI / "b_queue-answered-102.ami").read_bytes()
    path = tmp_path / "half.ami"
    path.write_bytes(data[: data.index(b"Event: BridgeEnter")])
    result = subprocess.run([sys.executable, "run.py", "replay", "--json", str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (call,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert (call["call_id"], call["outcome"], call["ended_at"], call["agents_rang"]) == (
        "1795448064.2", "in_progress", None, ["101", "102"])
    assert "still in progress" in result.stderr


def test_replay_applies_the_servers_toml(tmp_path):
    config = tmp_path / "callboard.toml"
    config.write_text('trunk_endpoints = ["voipgrid-siproute-docker"]\ninbound_contexts = ["voipgrid_in"]\n'
                      'phone_region = "NL"\n[devices]\n"SIP/150010002" = "202"\n')
    trace = ROOT / "tests" / "fixtures" / "ami-cacofonisk" / "simple__ab_success_a_hangup.ami"
    result = subprocess.run([sys.executable, "run.py", "replay", "--config", str(config), "--json", str(trace)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (call,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert (call["direction"], call["caller"], call["answered_by"]) == ("internal", "201", "202")
    bad = tmp_path / "bad.toml"
    bad.write_text('devices = "SIP150010002"\n')
    result = subprocess.run([sys.executable, "run.py", "replay", "--config", str(bad), str(trace)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "devices" in result.stderr


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if EXPECTED[n]))
def test_every_event_of_a_real_capture_delivered_twice_changes_nothing(name):
    data = (AMI / f"{name}.ami").read_bytes()
    messages = [m + b"\r\n\r\n" for m in data.split(b"\r\n\r\n") if m.strip()]
    tracker = CallTracker("lab")
    records = replay_stream([m for m in messages for _ in range(2)], tracker, [])
    bodies = []
    for record in records:
        body = record.to_json()
        del body["legs"], body["pbx"], body["backfilled"]
        bodies.append(body)
    assert bodies == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if EXPECTED[n]))
def test_a_real_capture_cut_in_half_leaves_a_call_in_progress(name):
    data = (AMI / f"{name}.ami").read_bytes()
    messages = [m + b"\r\n\r\n" for m in data.split(b"\r\n\r\n") if m.strip()]
    tracker = CallTracker("lab")
    assert replay_stream(messages[: len(messages) // 2], tracker, []) == []
    (live,) = tracker.in_progress()
    assert (live.call_id, live.outcome, live.ended_at) == (EXPECTED[name][0]["call_id"], "in_progress", None)
