"""Calls that began and ended while the AMI link was down, rebuilt from the PBX's own CDR (cdr_pgsql or Master.csv)."""

from __future__ import annotations

import asyncio
import csv
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from crm.cdr import CdrRow, list_cdr_rows
from crm.phones import normalise_caller
from crm.settings import Settings
from cti.calls import CallRecord, DirectionRules, LegRecord
from cti.events import channel_endpoint

logger = logging.getLogger(__name__)

# Master.csv columns, in cdr_csv's order; the optional ones follow cdr.conf [csv]: loguniqueid,
# loguserfield, newcdrcolumns (peeraccount, linkedid, sequence).
CSV_BASE = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
            "start", "answer", "end", "duration", "billsec", "disposition", "amaflags")
CSV_NEW = ("peeraccount", "linkedid", "sequence")
DISPOSITIONS = frozenset({"ANSWERED", "NO ANSWER", "BUSY", "FAILED", "CONGESTION"})
CSV_TAIL_START = 1 << 20  # read Master.csv from the end, doubling, until the window is covered
_UNIQUEID = re.compile(r"(?:[\w.-]+-)?\d{9,}\.\d+|c2c-[0-9a-f]+")
_EXTENSION_PREFIX = re.compile(r"(\d{2,6})(?:\D|$)")
_OUTSIDE_NUMBER = re.compile(r"\+?\d{7,}")
_CLID = re.compile(r'\s*"?(.*?)"?\s*<([^<>]*)>\s*$')


@dataclass(slots=True)
class BackfillResult:
    """What a backfill found: the rebuilt calls (each backfilled) and what it could not read."""

    calls: list[CallRecord] = field(default_factory=list)
    rows_read: int = 0
    malformed: int = 0
    source: str = ""
    error: str | None = None

    @property
    def backfilled(self) -> bool:
        return bool(self.calls)


# ---------------------------------------------------------------- Master.csv

def _text(raw: bytes) -> str:
    """Asterisk writes caller names as the phone sent them: UTF-8 mostly, cp1251 from some old phones."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1251", "replace")


def _csv_time(text: str, zone: ZoneInfo) -> float | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone).timestamp()


def parse_csv_line(raw: bytes, zone: ZoneInfo) -> CdrRow:
    """One Master.csv line → CdrRow; ValueError when it is not one."""
    fields = next(csv.reader([_text(raw).rstrip("\r\n")]), [])
    extra = fields[len(CSV_BASE):]
    if len(fields) < len(CSV_BASE) or len(extra) > 5:
        raise ValueError(f"{len(fields)} columns")
    values = dict(zip(CSV_BASE, fields, strict=False))
    if len(extra) >= 3 and extra[-1].isdigit():
        values.update(zip(CSV_NEW, extra[-3:], strict=True))
        extra = extra[:-3]
    if len(extra) == 2:
        values["uniqueid"], values["userfield"] = extra
    elif len(extra) == 1:  # loguniqueid or loguserfield alone: tell them apart by shape
        values["uniqueid" if _UNIQUEID.fullmatch(extra[0]) else "userfield"] = extra[0]
    elif extra:
        raise ValueError("unexpected trailing columns")
    disposition = values["disposition"].upper()
    if disposition not in DISPOSITIONS:
        raise ValueError(f"disposition {disposition!r}")
    start = _csv_time(values["start"], zone)
    if start is None:
        raise ValueError("no start time")
    duration = int(values["duration"])
    return CdrRow(start=start, answer=_csv_time(values["answer"], zone),
                  end=_csv_time(values["end"], zone) or start + duration, clid=values["clid"], src=values["src"],
                  dst=values["dst"], dcontext=values["dcontext"], channel=values["channel"],
                  dstchannel=values["dstchannel"], lastapp=values["lastapp"], lastdata=values["lastdata"],
                  duration=duration, billsec=int(values["billsec"]), disposition=disposition,
                  uniqueid=values.get("uniqueid", ""), linkedid=values.get("linkedid", ""),
                  sequence=int(values["sequence"]) if values.get("sequence") else None,
                  userfield=values.get("userfield", ""))


def read_csv_window(path: Path, since: float, until: float, zone: ZoneInfo) -> tuple[list[CdrRow], int]:
    """Rows of Master.csv that ended after `since` (minus a minute) and started before `until`, and the
    count of malformed lines skipped. Reads from the end: the file grows forever, lines are appended
    as calls end, so only the tail matters."""
    size = os.path.getsize(path)
    chunk = CSV_TAIL_START
    while True:
        offset = max(0, size - chunk)
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size - offset)
        lines = data.split(b"\n")
        if offset > 0:
            lines = lines[1:]  # the first one is cut
        rows, malformed = [], 0
        for line in lines:
            if not line.strip():
                continue
            try:
                rows.append(parse_csv_line(line, zone))
            except (ValueError, csv.Error):
                malformed += 1
        if offset == 0 or (rows and rows[0].end < since - 60):
            break
        chunk *= 2
    return [r for r in rows if r.end >= since - 1 and r.start <= until + 1], malformed


# ---------------------------------------------------------------- rows → calls

def _extension(channel: str) -> str | None:
    _, endpoint = channel_endpoint(channel)
    match = _EXTENSION_PREFIX.match(endpoint)
    return match.group(1) if match else None


def _is_trunk(channel: str, rules: DirectionRules) -> bool:
    tech, endpoint = channel_endpoint(channel)
    return tech != "Local" and endpoint in rules.trunk_endpoints


def _caller_name(clid: str) -> str:
    match = _CLID.match(clid or "")
    name = match.group(1) if match else ""
    return "" if name in ("<unknown>", "") else name


def _number(text: str, region: str) -> str:
    return normalise_caller(text, region) or text


def call_from_rows(pbx: str, key: str, rows: list[CdrRow], rules: DirectionRules) -> CallRecord:
    """One call's CDRs (Party A's Dial/Queue attempts, in order) → the call as the tracker would log it."""
    rows = sorted(rows, key=lambda r: (r.start, r.sequence or 0, r.end))
    first = rows[0]
    caller_is_trunk = _is_trunk(first.channel, rules) or (
        first.dcontext in rules.inbound_contexts and _extension(first.channel) is None)
    attempts = [r for r in rows if r.dstchannel]
    outside = any(_is_trunk(r.dstchannel, rules) for r in attempts) or bool(_OUTSIDE_NUMBER.fullmatch(first.dst))
    direction = "inbound" if caller_is_trunk else "outbound" if outside else "internal"
    party_a_ext = _extension(first.channel)
    caller_num = first.src or (_CLID.match(first.clid).group(2) if _CLID.match(first.clid) else "")
    if direction == "inbound":
        caller, callee = _number(caller_num, rules.region), _number(first.dst, rules.region)
    else:
        caller, callee = party_a_ext or caller_num, _number(first.dst, rules.region)
    agents = []
    for row in attempts:
        ext = None if _is_trunk(row.dstchannel, rules) else _extension(row.dstchannel)
        if ext and ext not in agents and direction != "outbound":
            agents.append(ext)

    def answered_by_person(row: CdrRow) -> bool:
        # ANSWERED with nobody on the B side is the PBX answering (IVR, queue music), not a person.
        if row.disposition != "ANSWERED" or not row.dstchannel or (row.billsec <= 0 and row.answer is None):
            return False
        return _is_trunk(row.dstchannel, rules) if direction == "outbound" else _extension(row.dstchannel) is not None

    def answer_time(row: CdrRow) -> float:
        return row.answer if row.answer is not None else row.end - row.billsec

    talks = [r for r in attempts if answered_by_person(r)]
    started, ended = first.start, max(r.end for r in rows)
    answered_at = min(answer_time(r) for r in talks) if talks else None
    talk_by_agent: dict[str, int] = {}
    for row in talks:
        ext = party_a_ext if direction == "outbound" else _extension(row.dstchannel)
        if ext:
            talk_by_agent[ext] = talk_by_agent.get(ext, 0) + row.billsec
    if talks:
        first_talk = min(talks, key=answer_time)
        answered_by = party_a_ext if direction == "outbound" else _extension(first_talk.dstchannel)
        outcome, reason = "answered", "answered"
    else:
        answered_by = None
        outcome, reason = _unanswered(attempts, rows)
    queue = next((r.lastdata.split(",")[0] for r in rows if r.lastapp == "Queue" and r.lastdata), None)
    legs = [LegRecord(first.uniqueid or f"cdr:{key}", first.channel,
                      "trunk" if caller_is_trunk else "agent" if party_a_ext else "other", party_a_ext,
                      started, answered_at if direction == "outbound" else None, ended, None)]
    for row in attempts:
        # CDRs name the B leg's channel but not its Uniqueid: a stable stand-in keeps legs unique.
        kind = "trunk" if _is_trunk(row.dstchannel, rules) else "agent" if _extension(row.dstchannel) else "other"
        legs.append(LegRecord(f"cdr:{key}:{row.dstchannel}", row.dstchannel, kind,
                              None if kind == "trunk" else _extension(row.dstchannel), row.start,
                              answer_time(row) if answered_by_person(row) else None, row.end, None))
    unique_legs = list({leg.uniqueid: leg for leg in legs}.values())
    return CallRecord(
        pbx=pbx, call_id=key, direction=direction, caller=caller, caller_name=_caller_name(first.clid),
        callee=callee, started_at=started, answered_at=answered_at, ended_at=ended, outcome=outcome,
        reason=reason, answered_by=answered_by, agents_rang=tuple(agents), queue=queue,
        ring_seconds=max(0, round((answered_at if answered_at is not None else ended) - started)),
        talk_seconds=max(0, round(ended - answered_at)) if answered_at is not None else 0,
        recording=None, transfers=(), talk_by_agent=tuple(talk_by_agent.items()), legs=tuple(unique_legs),
        recovered=True, originated=False, backfilled=True)


def _unanswered(attempts: list[CdrRow], rows: list[CdrRow]) -> tuple[str, str]:
    """Asterisk 12+ writes NO ANSWER both when the phones rang out and when the caller gave up while
    they rang, so a backfilled call is `missed`, never `abandoned`: the CDR cannot tell them apart."""
    dispositions = [r.disposition for r in attempts]
    if dispositions and all(d == "BUSY" for d in dispositions):
        return "busy", "busy"
    if dispositions and all(d in ("FAILED", "CONGESTION") for d in dispositions):
        return "failed", "congestion"
    if "NO ANSWER" in dispositions or "BUSY" in dispositions:
        return "missed", "no_answer"
    if any(r.disposition in ("FAILED", "CONGESTION") for r in rows):
        return "failed", "channel_error"
    # Nobody was dialled: the caller left during the greeting or queue, or the dialplan hung up.
    return "unknown", "no_dial_in_cdr"


def calls_from_cdr(pbx: str, rows: Iterable[CdrRow], rules: DirectionRules, since: float, until: float,
                   known_call_ids: set[str]) -> list[CallRecord]:
    """Group CDRs by Linkedid (Uniqueid, or Party A's channel, on older setups) and keep the calls that
    began and ended within [since, until] and that the tracker does not already know."""
    groups: dict[str, list[CdrRow]] = {}
    for row in rows:
        key = row.linkedid or row.uniqueid or f"{row.channel}@{int(row.start)}"
        groups.setdefault(key, []).append(row)
    calls = []
    for key, group in groups.items():
        if key in known_call_ids:
            continue
        # Times are whole seconds in the CDR: a second of slack either side.
        if min(r.start for r in group) < since - 1 or max(r.end for r in group) > until + 1:
            continue
        calls.append(call_from_rows(pbx, key, group, rules))
    return sorted(calls, key=lambda c: c.started_at)


# ---------------------------------------------------------------- the entry point

def cdr_zone(settings: Settings) -> ZoneInfo:
    return ZoneInfo(settings.cdr_timezone or settings.timezone)


async def read_backfill(settings: Settings, pbx: str, since: float, until: float,
                        known_call_ids: set[str]) -> BackfillResult:
    """Like `backfill`, with what was read and skipped (for logs and /readyz)."""
    from cti.service import rules_from  # cti.service imports the pipeline that calls us

    result = BackfillResult()
    zone = cdr_zone(settings)
    rows: list[CdrRow] = []
    try:
        if settings.cdr_url:
            result.source = f"table {settings.cdr_table}"
            conn = await asyncpg.connect(settings.cdr_url, timeout=5, server_settings={
                "default_transaction_read_only": "on", "application_name": "callboard-backfill"})
            try:
                rows = await list_cdr_rows(conn, settings.cdr_table, since, until, zone)
            finally:
                await conn.close()
        elif settings.cdr_csv:
            result.source = str(settings.cdr_csv)
            rows, result.malformed = await asyncio.to_thread(read_csv_window, settings.cdr_csv, since, until, zone)
        else:
            return result
    except (OSError, asyncpg.PostgresError, LookupError, ValueError) as exc:
        # The CDR is a bonus: without it the calls of the gap stay unknown, the service goes on.
        result.error = str(exc)
        logger.error("backfill of %s from %s failed: %s", pbx, result.source, exc)
        return result
    result.rows_read = len(rows)
    result.calls = calls_from_cdr(pbx, rows, rules_from(settings), since, until, known_call_ids)
    logger.info("backfill of %s from %s: %d call(s) from %d CDR row(s) between %s and %s; %d malformed skipped",
                pbx, result.source, len(result.calls), len(rows), datetime.fromtimestamp(since, zone),
                datetime.fromtimestamp(until, zone), result.malformed)
    return result


async def backfill(settings: Settings, pbx: str, since: float, until: float,
                   known_call_ids: set[str]) -> list[CallRecord]:
    """The calls that started and ended while the link was down ([since, until], epoch seconds), from
    the PBX's CDR when the admin configured access; [] otherwise. Never raises for a bad source."""
    return (await read_backfill(settings, pbx, since, until, known_call_ids)).calls
