"""The AMI link drops just before a call is answered and comes back: over real TCP with our simulator,
the call is logged answered with its talk time — not abandoned, not missed."""

import asyncio
import time

from crm.settings import PbxSettings
from cti.ami import AmiConnector
from cti.calls import CallEnded, CallTracker
from cti.simulator import AmiSimulator


class TrackerSink:
    """The connector's sink feeding a tracker directly, as the service's consumer does."""

    def __init__(self) -> None:
        self.tracker = CallTracker("lab")
        self.ended: list = []

    def __call__(self, pbx, event, raw) -> None:
        self.ended += [e.record for e in self.tracker.handle(event) if isinstance(e, CallEnded)]


async def wait_until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def replay_outage(seed: int, place, drop_after: float, outage: float) -> list:
    """One call placed by `place(simulator)`; the PBX's listener goes away `drop_after` s later for
    `outage` s; the calls the tracker finished once the link is back."""
    simulator = AmiSimulator("cti", "cti-secret", seed=seed)
    port = await simulator.start()
    sink = TrackerSink()
    connector = AmiConnector(PbxSettings("lab", "127.0.0.1", port, "cti", "cti-secret"), sink)
    await connector.start()
    try:
        await wait_until(lambda: connector.state.state == "connected", 5)
        place(simulator)
        await wait_until(lambda: sink.tracker.calls, 5)
        await asyncio.sleep(drop_after)
        await simulator.close_listener()
        await asyncio.sleep(outage)
        await simulator.start("127.0.0.1", port)
        await wait_until(lambda: simulator.logins == 2, 10)
        await wait_until(lambda: sink.ended, 15)
    finally:
        await connector.close()
        await simulator.stop()
    return sink.ended


async def test_link_dropped_half_a_second_before_the_answer():
    # Answered 2 s after it starts: the link drops at 1.5 s and is back at 2.5 s.
    (call,) = await replay_outage(11, lambda sim: sim.place_call("+79161112233", "101", answer_after=2.0,
                                                                 talk_seconds=4.0, caller_name="Olga"), 1.5, 1.0)
    assert (call.outcome, call.answered_by, call.caller, call.recovered) == ("answered", "101", "+79161112233", True)
    # The answer is dated by the resync (at most ~1 s after the real one): talk time is right to a second or so.
    assert 2 <= call.talk_seconds <= 4 and call.ring_seconds >= 2
    assert call.agents_rang == ("101",)


async def test_link_dropped_while_ringing_and_back_before_the_caller_gives_up_is_missed_not_unknown():
    (call,) = await replay_outage(12, lambda sim: sim.place_call("+79161112244", "102", answer_after=None,
                                                                 ring_timeout=4.0), 0.0, 0.5)
    # The call was still ringing after the resync; its end was seen live, so its outcome is known.
    assert (call.outcome, call.answered_by) == ("missed", None)


async def test_through_the_whole_service_no_missed_row_and_no_callback_task(settings, pool):
    """The same drop at the answer, with the real service and PostgreSQL: the log says answered with its
    talk time; the missed-call board and the tasks stay empty."""
    from cti.pipeline import QuietNotifier
    from cti.service import TelephonyService

    simulator = AmiSimulator("cti", "cti-secret", seed=13)
    port = await simulator.start()
    service = TelephonyService(settings, pool, QuietNotifier(),
                               pbxes=(PbxSettings("lab", "127.0.0.1", port, "cti", "cti-secret"),),
                               connector_factory=lambda pbx, sink: AmiConnector(pbx, sink, min_backoff=0.05))
    await service.start()
    try:
        await wait_until(lambda: service.connectors["lab"].state.state == "connected", 5)
        simulator.place_call("+79161112255", "101", answer_after=2.0, talk_seconds=4.0, caller_name="Olga")
        await wait_until(lambda: service.trackers["lab"].calls, 5)
        await asyncio.sleep(1.5)
        await simulator.close_listener()
        await asyncio.sleep(1.0)
        await simulator.start("127.0.0.1", port)
        await wait_until(lambda: service.trackers["lab"].calls == {} and service.saved_calls >= 1, 20)
        await service.drain()
    finally:
        await service.stop()
        await simulator.stop()
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT outcome, answered_by, talk_seconds FROM calls")
        missed = await conn.fetchval("SELECT count(*) FROM missed_callers")
        tasks = await conn.fetchval("SELECT count(*) FROM tasks")
    assert [(r["outcome"], r["answered_by"]) for r in rows] == [("answered", "101")]
    assert 2 <= rows[0]["talk_seconds"] <= 4
    assert (missed, tasks) == (0, 0)
