"""The durable writer over a real PostgreSQL behind a proxy we cut: outages, crashes, replays, refusals."""

import json
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
import pytest

from crm import calls as calls_db
from cti.calls import CallRecord, LegRecord, Transfer
from cti.writer import CallWriter, record_from_json, record_to_json
from tests.cti.faults import DbProxy, until

T0 = 1_795_448_000.0


def record(call_id: str, caller: str = "+79160000001", outcome: str = "answered", **changes) -> CallRecord:
    answered = outcome == "answered"
    base = CallRecord(
        pbx="lab", call_id=call_id, direction="inbound", caller=caller, caller_name="Olga", callee="74951234567",
        started_at=T0, answered_at=T0 + 3 if answered else None, ended_at=T0 + 20, outcome=outcome,
        reason="" if answered else "no_answer", answered_by="101" if answered else None, agents_rang=("101",),
        queue=None, ring_seconds=3 if answered else 20, talk_seconds=17 if answered else 0, recording=None,
        transfers=(), talk_by_agent=(("101", 17),) if answered else (),
        legs=(LegRecord(uniqueid=call_id, channel="PJSIP/trunk-1", kind="trunk", extension=None, created_at=T0,
                        answered_at=T0 + 3 if answered else None, ended_at=T0 + 20, hangup_cause=16),),
        recovered=False, originated=False)
    return replace(base, **changes)


@pytest.fixture
async def proxy(database_dsn):
    proxy = DbProxy(database_dsn)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def proxied_pool(proxy):
    pool = await asyncpg.create_pool(proxy.dsn, min_size=0, max_size=3)
    yield pool
    pool.terminate()


def crash(writer: CallWriter) -> None:
    """What kill -9 leaves: the task gone mid-flight, no final write, the spool file closed by the kernel."""
    writer._task.cancel()
    writer.spool.close()


async def counts(conn) -> tuple:
    return tuple(await conn.fetchrow(
        "SELECT (SELECT count(*) FROM calls), (SELECT count(*) FROM call_legs), "
        "(SELECT coalesce(sum(tries), 0) FROM missed_callers), (SELECT count(*) FROM missed_callers), "
        "(SELECT count(*) FROM tasks), (SELECT count(*) FROM ami_journal), (SELECT count(*) FROM leads)"))


def test_a_record_comes_back_from_the_spool_unchanged():
    original = record("1.1", transfers=(Transfer(from_="101", to="102", kind="blind"),), recording="/r/1.wav",
                      agents_rang=("101", "102"), talk_by_agent=(("101", 5), ("102", 12)))
    assert record_from_json(json.loads(json.dumps(record_to_json(original)))) == original


async def test_database_down_while_calls_end_then_a_crash_loses_nothing_and_counts_nothing_twice(
        settings, proxy, proxied_pool, conn):
    saved = []
    writer = CallWriter(settings, proxied_pool, on_saved=lambda r, s: saved.append(r.call_id),
                        min_backoff=0.05, max_backoff=0.2)
    await writer.start()
    writer.submit_call(record("1.1"))
    await until(lambda: saved == ["1.1"], what="the first call saved")

    proxy.cut()
    attempts_before = proxy.attempts
    # Twenty calls end while PostgreSQL is away: three missed from one number, the rest answered.
    ended = [record(f"2.{i}", caller="+79165550000", outcome="missed") for i in range(3)]
    ended += [record(f"3.{i}", caller=f"+7916{i:07d}") for i in range(17)]
    for call in ended:
        writer.submit_call(call)
    when = datetime.fromtimestamp(T0, UTC)
    writer.submit_journal([("lab", when, "2.0", "Event: Hangup\r\n"), ("lab", when, "2.0", "Event: Newstate\r\n")])
    await until(lambda: writer.failures >= 3, what="three failed attempts")
    spooled = [json.loads(line) for line in writer.spool.path.read_text().splitlines()]
    assert [e["record"]["call_id"] for e in spooled if e["kind"] == "call"] == [c.call_id for c in ended]
    # One writer with back-off, not a retry loop per call: attempts grow with time, not with calls.
    assert proxy.attempts - attempts_before <= writer.failures + 1 < 10
    crash(writer)

    proxy.restore()
    survivor = CallWriter(settings, proxied_pool, min_backoff=0.05)
    await survivor.start()
    assert survivor.replayed == 21
    assert await survivor.drain(30)
    assert await counts(conn) == (21, 21, 3, 1, 1, 2, 18)
    assert writer.spool.path.read_text() == ""  # all written: the spool is empty again
    # A crash after the database took the writes but before the spool was emptied replays them all:
    # still one row per call, one board row with three tries, one callback task, the journal once.
    writer.spool.path.write_text("".join(json.dumps(e) + "\n" for e in spooled))
    await survivor.stop()
    again = CallWriter(settings, proxied_pool)
    await again.start()
    assert await again.drain(30)
    await again.stop()
    assert await counts(conn) == (21, 21, 3, 1, 1, 2, 18)


async def test_an_entry_the_database_refuses_is_set_aside_and_the_next_is_written(settings, pool, conn):
    writer = CallWriter(settings, pool, min_backoff=0.05)
    await writer.start()
    writer.submit_call(record("9.1", direction="sideways"))  # the CHECK constraint refuses it, every time
    writer.submit_call(record("9.2"))
    assert await writer.drain(30)
    await writer.stop()
    assert [r["linkedid"] for r in await conn.fetch("SELECT linkedid FROM calls")] == ["9.2"]
    rejected = [json.loads(line) for line in (settings.data_dir / "spool" / "rejected.jsonl").read_text().splitlines()]
    assert [(e["record"]["call_id"], "direction" in e["rejected"]) for e in rejected] == [("9.1", True)]


async def test_two_writers_on_one_data_directory_keep_separate_spools(settings, pool):
    first, second = CallWriter(settings, pool), CallWriter(settings, pool)
    await first.start()
    await second.start()
    try:
        assert first.spool.path != second.spool.path
    finally:
        await first.stop()
        await second.stop()


async def test_rows_stored_by_a_newer_generation_or_observed_are_kept(conn):
    await calls_db.save_call(conn, record("5.1"), generation=2)
    stale_recovered = record("5.1", outcome="unknown", recovered=True, answered_by=None, talk_seconds=0)
    assert (await calls_db.save_call(conn, stale_recovered, generation=3)).written is False
    older = record("5.1", answered_by="102")
    assert (await calls_db.save_call(conn, older, generation=1)).written is False
    row = await conn.fetchrow("SELECT outcome, answered_by, lease_generation, observed FROM calls")
    assert tuple(row) == ("answered", "101", 2, True)
    # The same generation replaying its own record, or a newer observed one, still writes.
    newer = record("5.1", answered_by="103")
    assert (await calls_db.save_call(conn, newer, generation=4)).written is True
    row = await conn.fetchrow("SELECT outcome, answered_by, lease_generation, observed FROM calls")
    assert tuple(row) == ("answered", "103", 4, True)
    # A recovered row is replaced by an observed one of any generation not older.
    await calls_db.save_call(conn, record("5.2", recovered=True, outcome="unknown", answered_by=None), generation=4)
    assert (await calls_db.save_call(conn, record("5.2"), generation=4)).written is True
