"""Backfill from Asterisk's CDR: Master.csv (cdr_csv) and a cdr_pgsql table, turned into calls like the tracker's."""

import logging
from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import asyncpg

from cti.backfill import backfill, read_backfill
from cti.calls import CallRecord, LegRecord
from tests.conftest import FIXTURES

SINCE, UNTIL = 1795448040.0, 1795448200.0  # the link was down from 15:34:00 to 15:36:40 UTC
# Real Asterisk 22 lines (cdr.conf [csv] loguniqueid + loguserfield: 18 columns), written in UTC.
REAL = b"".join((FIXTURES / "ami" / f"{name}.cdr.csv").read_bytes() for name in (
    "a_routed-answered", "b_queue-answered-102", "c_routed-noanswer", "d_routed-busy", "f_click-to-call",
    "g_blind-transfer-101-to-102"))
ODD = [
    # newcdrcolumns=yes too (21 columns); the name comes from an old phone in cp1251.
    '"","79161234500","74951234567","from-trunk","""Иван Петров"" <79161234500>","PJSIP/trunk-00000100",'
    '"PJSIP/101-00000101","Dial","PJSIP/101,15,t","2026-11-23 15:36:20","2026-11-23 15:36:23",'
    '"2026-11-23 15:36:38",18,15,"ANSWERED","DOCUMENTATION","1795448180.100","","","1795448180.100",3\n'
    .encode("cp1251"),
    # A caller ID that is markup, from a withheld number.
    b'"","anonymous","74951234567","from-trunk","""<script>"" <anonymous>","PJSIP/trunk-00000102",'
    b'"PJSIP/102-00000103","Dial","PJSIP/102,15,t","2026-11-23 15:36:10",,"2026-11-23 15:36:25",15,0,'
    b'"NO ANSWER","DOCUMENTATION","1795448170.102","did:74951234567"\n',
    # Began before the link was lost: the tracker has it; not a backfill.
    b'"","79160000999","74951234567","from-trunk","""X"" <79160000999>","PJSIP/trunk-00000090",'
    b'"PJSIP/101-00000091","Dial","PJSIP/101,15,t","2026-11-23 15:33:50","2026-11-23 15:33:52",'
    b'"2026-11-23 15:34:30",40,38,"ANSWERED","DOCUMENTATION","1795448030.90",""\n',
]
MALFORMED = [b"garbage without commas\n", b'"a","b","c"\n',
             b'"","1","2","ctx","clid","PJSIP/trunk-1","","Dial","","2026-11-23 15:35:00",,"2026-11-23 15:35:01",'
             b'1,0,"MAYBE","DOCUMENTATION","1.1",""\n',
             b'"","1","2","ctx","clid","PJSIP/trunk-1","","Dial","","yesterday",,"",1,0,"BUSY","DOCUMENTATION"\n',
             b'\xff\xfe\x00\x01,,,\n', b'"unterminated,"quote\n']

EXPECTED = [
    # call_id, direction, caller, caller_name, callee, outcome, reason, answered_by, agents_rang, queue,
    # ring_seconds, talk_seconds, talk_by_agent
    ("1795448049.0", "inbound", "+79160000101", "Ivan Petrov", "+74951234567", "answered", "answered", "101",
     ("101",), None, 2, 3, (("101", 3),)),
    ("1795448064.2", "inbound", "+79161112233", "Olga Smirnova", "+74951234567", "answered", "answered", "102",
     ("101", "102"), "sales", 3, 4, (("102", 4),)),
    ("1795448080.5", "inbound", "+79160000101", "Ivan Petrov", "+74951234567", "missed", "no_answer", None,
     ("101",), None, 15, 0, ()),
    ("1795448105.7", "inbound", "+79160000101", "Ivan Petrov", "+74951234567", "busy", "busy", None,
     ("101",), None, 0, 0, ()),
    # Click-to-call: billsec counts from the agent's answer (the CDR knows no other), so talk is 8 s.
    ("1795448133.12", "outbound", "103", "CTI 103", "+79161234567", "answered", "answered", "103",
     (), None, 2, 8, (("103", 8),)),
    # Blind transfer 101 → 102: both talked; the CDR's dst is the transfer target by then.
    ("1795448157.14", "inbound", "+79160000101", "Ivan Petrov", "102", "answered", "answered", "101",
     ("101", "102"), None, 2, 14, (("101", 3), ("102", 11))),
    ("1795448170.102", "inbound", "anonymous", "<script>", "+74951234567", "missed", "no_answer", None,
     ("102",), None, 15, 0, ()),
    ("1795448180.100", "inbound", "+79161234500", "Иван Петров", "+74951234567", "answered", "answered", "101",
     ("101",), None, 3, 15, (("101", 15),)),
]


def summary(calls: list[CallRecord]) -> list[tuple]:
    return [(c.call_id, c.direction, c.caller, c.caller_name, c.callee, c.outcome, c.reason, c.answered_by,
             c.agents_rang, c.queue, c.ring_seconds, c.talk_seconds, c.talk_by_agent) for c in calls]


def ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


FIRST = CallRecord(
    pbx="lab", call_id="1795448049.0", direction="inbound", caller="+79160000101", caller_name="Ivan Petrov",
    callee="+74951234567", started_at=ts("2026-11-23 15:34:09"), answered_at=ts("2026-11-23 15:34:11"),
    ended_at=ts("2026-11-23 15:34:14"), outcome="answered", reason="answered", answered_by="101",
    agents_rang=("101",), queue=None, ring_seconds=2, talk_seconds=3, recording=None, transfers=(),
    talk_by_agent=(("101", 3),),
    legs=(LegRecord("1795448049.0", "PJSIP/trunk-00000000", "trunk", None, ts("2026-11-23 15:34:09"), None,
                    ts("2026-11-23 15:34:14"), None),
          LegRecord("cdr:1795448049.0:PJSIP/101-00000001", "PJSIP/101-00000001", "agent", "101",
                    ts("2026-11-23 15:34:09"), ts("2026-11-23 15:34:11"), ts("2026-11-23 15:34:14"), None)),
    recovered=True, originated=False, backfilled=True)


async def test_master_csv_gives_the_calls_of_the_gap_and_skips_what_it_cannot_read(settings, tmp_path, caplog):
    path = tmp_path / "Master.csv"
    path.write_bytes(REAL + b"".join(ODD[:1] + MALFORMED[:3] + ODD[1:] + MALFORMED[3:]) + b"\n")
    settings = replace(settings, cdr_csv=path, cdr_timezone="UTC")
    with caplog.at_level(logging.INFO, logger="cti.backfill"):
        result = await read_backfill(settings, "lab", SINCE, UNTIL, known_call_ids={"1795448064.2"})
    assert (result.malformed, result.error, result.rows_read) == (len(MALFORMED), None, 13)
    assert summary(result.calls) == [e for e in EXPECTED if e[0] != "1795448064.2"]
    assert result.calls[0] == FIRST
    assert "6 malformed skipped" in caplog.text
    # The same file, nothing known: the queue call is back; the call begun before the gap never is.
    calls = await backfill(settings, "lab", SINCE, UNTIL, known_call_ids=set())
    assert summary(calls) == EXPECTED


CLASSIC = """CREATE TABLE {name} (
    calldate timestamptz NOT NULL DEFAULT now(), clid varchar(80) NOT NULL DEFAULT '',
    src varchar(80) NOT NULL DEFAULT '', dst varchar(80) NOT NULL DEFAULT '', dcontext varchar(80) NOT NULL DEFAULT '',
    channel varchar(80) NOT NULL DEFAULT '', dstchannel varchar(80) NOT NULL DEFAULT '',
    lastapp varchar(80) NOT NULL DEFAULT '', lastdata varchar(80) NOT NULL DEFAULT '',
    duration bigint NOT NULL DEFAULT 0, billsec bigint NOT NULL DEFAULT 0, disposition varchar(45) NOT NULL DEFAULT '',
    amaflags bigint NOT NULL DEFAULT 0, accountcode varchar(20) NOT NULL DEFAULT '',
    uniqueid varchar(150) NOT NULL DEFAULT '', userfield varchar(255) NOT NULL DEFAULT '',
    linkedid varchar(150), peeraccount varchar(80), sequence integer)"""
# Asterisk's contrib/realtime/postgresql/postgresql_cdr.sql: start/answer/end, local time without a zone.
ALEMBIC = """CREATE TABLE {name} (
    accountcode VARCHAR(80), src VARCHAR(80), dst VARCHAR(80), dcontext VARCHAR(80), clid VARCHAR(80),
    channel VARCHAR(80), dstchannel VARCHAR(80), lastapp VARCHAR(80), lastdata VARCHAR(80),
    start TIMESTAMP WITHOUT TIME ZONE, answer TIMESTAMP WITHOUT TIME ZONE, "end" TIMESTAMP WITHOUT TIME ZONE,
    duration INTEGER, billsec INTEGER, disposition VARCHAR(45), amaflags VARCHAR(45), userfield VARCHAR(256),
    uniqueid VARCHAR(150), linkedid VARCHAR(150), peeraccount VARCHAR(80), sequence INTEGER)"""


async def test_cdr_pgsql_tables_old_and_new_give_the_same_calls_as_master_csv(settings, tmp_path, database_dsn):
    path = tmp_path / "Master.csv"
    path.write_bytes(REAL + b"".join(ODD))
    from_csv = await backfill(replace(settings, cdr_csv=path, cdr_timezone="UTC"), "lab", SINCE, UNTIL, set())
    from cti.backfill import read_csv_window

    rows, _ = read_csv_window(path, 0, 2e9, ZoneInfo("UTC"))
    moscow = ZoneInfo("Europe/Moscow")

    def local(value):  # how cdr_pgsql fills a column without a zone: Asterisk's local time
        return None if value is None else datetime.fromtimestamp(value, moscow).replace(tzinfo=None)

    conn = await asyncpg.connect(database_dsn)
    try:
        await conn.execute("CREATE SCHEMA asterisk")
        await conn.execute(CLASSIC.format(name="cdr"))
        await conn.execute(ALEMBIC.format(name="asterisk.cdr"))
        for seq, r in enumerate(rows):
            common = (r.clid, r.src, r.dst, r.dcontext, r.channel, r.dstchannel, r.lastapp, r.lastdata, r.duration,
                      r.billsec, r.disposition, r.uniqueid, r.userfield, r.linkedid or r.uniqueid, seq)
            await conn.execute(
                "INSERT INTO cdr (calldate, clid, src, dst, dcontext, channel, dstchannel, lastapp, lastdata,"
                " duration, billsec, disposition, uniqueid, userfield, linkedid, sequence)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                datetime.fromtimestamp(r.start, UTC), *common)
            await conn.execute(
                'INSERT INTO asterisk.cdr (start, answer, "end", clid, src, dst, dcontext, channel, dstchannel,'
                " lastapp, lastdata, duration, billsec, disposition, uniqueid, userfield, linkedid, sequence)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
                local(r.start), local(r.answer), local(r.end), *common)
    finally:
        await conn.close()
    classic = await backfill(replace(settings, cdr_url=database_dsn), "lab", SINCE, UNTIL, set())
    alembic = await backfill(replace(settings, cdr_url=database_dsn, cdr_table="asterisk.cdr",
                                     cdr_timezone="Europe/Moscow"), "lab", SINCE, UNTIL, set())
    assert summary(from_csv) == EXPECTED
    assert classic == from_csv
    assert alembic == from_csv


async def test_an_unreadable_source_gives_no_calls_and_never_raises(settings, database_dsn, tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="cti.backfill"):
        missing_table = await read_backfill(replace(settings, cdr_url=database_dsn, cdr_table="nope"), "lab",
                                            SINCE, UNTIL, set())
        missing_file = await read_backfill(replace(settings, cdr_csv=tmp_path / "none.csv"), "lab", SINCE, UNTIL,
                                           set())
    assert (missing_table.calls, missing_file.calls) == ([], [])
    assert "table nope not found" in missing_table.error and "none.csv" in missing_file.error
    assert await backfill(settings, "lab", SINCE, UNTIL, set()) == []  # nothing configured
