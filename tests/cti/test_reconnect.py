"""Reconnects: a PBX that comes back is read again within seconds, whatever the length of the outage."""

import asyncio
import logging
import time

from crm.settings import PbxSettings
from cti.ami import MAX_BACKOFF, AmiConnector
from cti.simulator import AmiSimulator

logger = logging.getLogger(__name__)

OUTAGE_SECONDS = 8.0
# The longest wait after the PBX is back: one capped, jittered back-off step, plus the login itself.
BLIND_LIMIT = MAX_BACKOFF * 1.2 + 1.0


class Nothing:
    def __call__(self, pbx, event, raw) -> None:
        return None


async def wait_until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_pbx_back_after_an_outage_is_read_again_within_one_short_back_off(caplog):
    simulator = AmiSimulator("cti", "cti-secret", seed=5)
    port = await simulator.start()
    # The connector as the service builds it: default back-off.
    connector = AmiConnector(PbxSettings("lab", "127.0.0.1", port, "cti", "cti-secret"), Nothing())
    outages = []
    connector.on_outage = lambda name, lost, back: outages.append((name, lost, back))
    await connector.start()
    try:
        await wait_until(lambda: connector.state.state == "connected", 5)
        closed_at = time.time()
        await simulator.close_listener()
        await wait_until(lambda: connector.state.state != "connected", 5)
        await asyncio.sleep(OUTAGE_SECONDS)
        attempts_during_outage = connector.attempt
        await simulator.start("127.0.0.1", port)
        back, back_wall = time.monotonic(), time.time()
        await wait_until(lambda: simulator.logins == 2, OUTAGE_SECONDS + 35)
        blind = simulator.login_times[-1] - back
        logger.warning("PBX back after %.0f s: logged in again %.2f s later (%d attempts while it was away)",
                       OUTAGE_SECONDS, blind, attempts_during_outage)
        # Without a short cap the back-off had grown to 4-8 s steps by now (0.5 s doubling to 30 s).
        assert blind < BLIND_LIMIT, f"{blind:.2f} s of blindness after the PBX was back"
        assert connector.state.state == "connected"
        # The window a CDR backfill must cover, handed to the service once.
        assert len(outages) == 1 and outages[0][0] == "lab" and connector.last_outage == outages[0][1:]
        lost, again = connector.last_outage
        assert closed_at <= lost < closed_at + 1 and back_wall <= again < back_wall + BLIND_LIMIT
        # It kept trying all along, but not in a tight loop either.
        assert OUTAGE_SECONDS / (MAX_BACKOFF * 1.2) <= attempts_during_outage <= OUTAGE_SECONDS / 0.2
    finally:
        await connector.close()
        await simulator.stop()


def test_back_off_is_short_jittered_and_longer_for_a_refused_login():
    connector = AmiConnector(PbxSettings("lab", "127.0.0.1", 1, "u", "p"), Nothing())
    delays = [connector.next_delay() for _ in range(12)]
    assert 0.15 <= delays[0] <= 0.25
    assert max(delays) <= MAX_BACKOFF * 1.2
    assert len({round(d, 6) for d in delays[-5:]}) == 5  # capped steps still differ: jitter
    connector.attempt = 0
    refused = [connector.next_delay(auth_failed=True) for _ in range(12)]
    assert refused[0] > delays[0] and max(refused) > MAX_BACKOFF * 1.2 and max(refused) <= 36
