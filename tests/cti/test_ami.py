"""AMI connections over real TCP: panoramisk 1.4's defects mended, reconnects, resync, idempotent storage."""

import asyncio
import logging
import time

import pytest

from crm import calls as calls_db
from crm.settings import PbxSettings
from cti import events as ev
from cti.ami import AmiConnector
from cti.service import QuietNotifier, TelephonyService
from cti.simulator import AmiSimulator
from tests.conftest import FIXTURES


async def wait_for(predicate, timeout: float = 5.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


@pytest.fixture
async def simulator():
    sim = AmiSimulator("cti", "cti-secret", seed=3, speed=20.0)
    await sim.start()
    yield sim
    await sim.stop()


def pbx_for(sim: AmiSimulator, secret: str = "cti-secret") -> PbxSettings:
    return PbxSettings("lab", "127.0.0.1", sim.port, "cti", secret)


class Recorder:
    """A sink that keeps what it got; optionally fails on the first event, like a buggy consumer."""

    def __init__(self, fail_first: bool = False) -> None:
        self.events: list[ev.AmiEvent] = []
        self.fail_first = fail_first

    def __call__(self, pbx: str, event: ev.AmiEvent, raw: str) -> None:
        if self.fail_first:
            self.fail_first = False
            raise RuntimeError("consumer bug")
        self.events.append(event)


async def test_connects_logs_in_and_receives_call_events(simulator):
    sink = Recorder()
    connector = AmiConnector(pbx_for(simulator), sink)
    await connector.start()
    await wait_for(lambda: connector.state.state == "connected")
    await simulator.place_call("79160000101", "101", 1.0, 1.0)
    await wait_for(lambda: any(isinstance(e, ev.ChannelHungUp) for e in sink.events))
    await connector.close()
    names = {type(e).__name__ for e in sink.events}
    assert {"Booted", "ChannelCreated", "DialStarted", "ChannelHungUp"} <= names
    # Noise never reaches the sink.
    assert "Newexten" not in names


async def test_utf8_split_between_two_tcp_reads_keeps_the_name():
    async def session(reader, writer):
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"Response: Success\r\nActionID: x\r\nMessage: Authentication accepted\r\n\r\n")
        await writer.drain()
        frame = ("Event: Newchannel\r\nTimestamp: 1795448000.1\r\nChannel: PJSIP/trunk-00000001\r\n"
                 "CallerIDNum: 79160000101\r\nCallerIDName: Иван\r\nUniqueid: 1.1\r\nLinkedid: 1.1\r\n\r\n").encode()
        cut = frame.index("И".encode()) + 1
        await asyncio.sleep(0.2)  # after our Login action was answered, so the login response is separate
        writer.write(frame[:cut])
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(frame[cut:])
        await writer.drain()
        await asyncio.sleep(1)

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = Recorder()
    connector = AmiConnector(PbxSettings("x", "127.0.0.1", port, "u", "p"), sink)
    await connector.start()
    await wait_for(lambda: [e for e in sink.events if hasattr(e, "channel")])
    await connector.close()
    server.close()
    assert [e for e in sink.events if hasattr(e, "channel")][0].channel.caller_name == "Иван"


async def test_a_failing_callback_costs_neither_the_connection_nor_later_events(simulator):
    sink = Recorder(fail_first=True)
    connector = AmiConnector(pbx_for(simulator), sink)
    await connector.start()
    await wait_for(lambda: connector.state.state == "connected")
    await simulator.place_call("79160000101", "101", 1.0, 1.0)
    await wait_for(lambda: any(isinstance(e, ev.ChannelHungUp) for e in sink.events))
    assert connector.state.state == "connected"
    assert simulator.logins == 1
    await connector.close()


async def test_unanswered_pings_make_it_reconnect(simulator, caplog):
    connector = AmiConnector(pbx_for(simulator), Recorder(), ping_interval=0.2, ping_timeout=0.3, min_backoff=0.05)
    await connector.start()
    await wait_for(lambda: simulator.logins == 1)
    simulator.answer_pings = False  # a hung PBX or a half-open TCP connection
    with caplog.at_level(logging.ERROR):
        await wait_for(lambda: simulator.logins >= 2, timeout=5)
    assert "no reply to Ping" in caplog.text
    simulator.answer_pings = True
    await wait_for(lambda: connector.state.state == "connected")
    await connector.close()


async def test_close_cancels_a_pending_reconnect():
    connector = AmiConnector(PbxSettings("gone", "127.0.0.1", 1, "u", "p"), Recorder(), min_backoff=0.05)
    await connector.start()
    await wait_for(lambda: connector.attempt >= 2)
    await connector.close()
    attempts = connector.attempt
    await asyncio.sleep(0.5)
    assert connector.attempt == attempts
    assert connector.state.state == "closed"


async def test_wrong_password_is_surfaced_and_retried_with_growing_back_off(simulator, caplog):
    connector = AmiConnector(pbx_for(simulator, secret="wrong"), Recorder(), min_backoff=0.01)
    with caplog.at_level(logging.ERROR):
        await connector.start()
        await wait_for(lambda: connector.state.state == "auth_failed")
    assert "refused" in caplog.text and "wrong" not in caplog.text  # the secret is never logged
    assert connector.state.detail == "Authentication failed"
    first = connector.next_delay(True)
    assert connector.next_delay(True) > first
    await connector.close()


async def test_a_pbx_that_never_answers_the_login_is_left_and_retried(caplog):
    connections = []

    async def silent(reader, writer):
        connections.append(writer)
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        await reader.read(1000)  # the Login arrives and is never answered

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    connector = AmiConnector(PbxSettings("mute", "127.0.0.1", server.sockets[0].getsockname()[1], "u", "p"),
                             Recorder(), ping_timeout=0.2, min_backoff=0.05)
    with caplog.at_level(logging.ERROR):
        await connector.start()
    try:
        await wait_for(lambda: len(connections) >= 2, timeout=5)
        assert "no answer to Login" in caplog.text
        assert connector.state.state != "connected"
    finally:
        await connector.close()
        server.close()


def test_intervals_are_not_truncated_to_whole_seconds():
    connector = AmiConnector(PbxSettings("x", "127.0.0.1", 1, "u", "p"), Recorder(), ping_interval=0.25,
                             min_backoff=0.5)
    assert (connector._manager.ping_interval, connector._manager.reconnect_timeout) == (0.25, 0.5)


# ---------------------------------------------------------------- the whole path into PostgreSQL

@pytest.fixture
async def service_for(settings, pool):
    services = []

    async def make(sim: AmiSimulator, **options) -> TelephonyService:
        def factory(pbx, sink):
            return AmiConnector(pbx, sink, min_backoff=0.05, **options)
        service = TelephonyService(settings, pool, QuietNotifier(), pbxes=(pbx_for(sim),),
                                   connector_factory=factory)
        await service.start()
        services.append(service)
        await wait_for(lambda: service.connectors["lab"].state.state == "connected")
        return service

    yield make
    for service in services:
        await service.stop()


async def test_simulated_calls_land_in_the_call_log(simulator, service_for, conn, factory):
    await factory.user("manager1", extension="101")
    service = await service_for(simulator)
    await simulator.place_call("79160000101", "101", 1.0, 2.0)
    await simulator.place_call("79160000102", "102", None)
    await wait_for(lambda: service.saved_calls == 2, timeout=10)
    rows = await conn.fetch("SELECT caller, outcome, answered_by, user_id IS NOT NULL AS has_user FROM calls "
                            "ORDER BY caller")
    assert [tuple(r) for r in rows] == [("+79160000101", "answered", "101", True),
                                       ("+79160000102", "missed", None, False)]


async def test_disconnect_mid_call_then_reconnect_gives_one_complete_call(settings, pool, conn):
    sim = AmiSimulator("cti", "cti-secret", seed=5, speed=1.0)
    await sim.start()
    service = TelephonyService(settings, pool, QuietNotifier(), pbxes=(pbx_for(sim),),
                               connector_factory=lambda pbx, sink: AmiConnector(pbx, sink, min_backoff=0.05))
    await service.start()
    try:
        await wait_for(lambda: service.connectors["lab"].state.state == "connected")
        sim.place_call("79161112233", "102", 0.3, 2.2)
        await asyncio.sleep(0.8)  # answered and talking
        sim.drop_clients()
        await wait_for(lambda: sim.logins >= 2)
        await wait_for(lambda: service.saved_calls == 1, timeout=10)
    finally:
        await service.stop()
        await sim.stop()
    rows = await conn.fetch("SELECT outcome, answered_by, talk_seconds FROM calls")
    assert [tuple(r) for r in rows] == [("answered", "102", 2)]


async def test_the_same_events_delivered_twice_leave_the_same_rows(settings, pool, conn):
    service = TelephonyService(settings, pool, QuietNotifier(), pbxes=(PbxSettings("lab", "h", 1, "u", "p"),))
    data = (FIXTURES / "ami" / "b_queue-answered-102.ami").read_bytes()
    await service.start()
    for tracker in service.trackers.values():
        tracker._finished.clear()
    for _round in range(2):
        for raw in ev.FrameSplitter().feed(data):
            event = ev.parse_event(raw)
            if event is not None:
                service.sink("lab", event, raw)
        await service.drain()
        # A fresh tracker (a restart) must not duplicate either.
        service.trackers["lab"] = type(service.trackers["lab"])("lab", service.rules)
    await service.stop()
    assert await conn.fetchval("SELECT count(*) FROM calls") == 1
    assert await conn.fetchval("SELECT count(*) FROM call_legs") == 3
    call = await conn.fetchrow("SELECT outcome, answered_by, agents_rang FROM calls")
    assert tuple(call) == ("answered", "102", ["101", "102"])
    raws = await calls_db.read_journal(conn, "lab", "1795448064.2")
    assert any("AgentConnect" in raw for raw in raws)
