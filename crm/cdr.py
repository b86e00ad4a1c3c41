"""Reading Asterisk's own call detail records (cdr_pgsql's table) for a time window; read-only."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import asyncpg

# cdr_pgsql inserts every column of its table that is named after a CDR variable; older tables have
# `calldate` (the start), tables from Asterisk's alembic scripts have `start`, `answer` and `end`.
KNOWN_COLUMNS = ("calldate", "start", "answer", "end", "clid", "src", "dst", "dcontext", "channel", "dstchannel",
                 "lastapp", "lastdata", "duration", "billsec", "disposition", "uniqueid", "linkedid", "sequence",
                 "userfield")
TABLE_NAME = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*")

TABLE_COLUMNS = """
SELECT column_name, data_type FROM information_schema.columns
WHERE table_name = $1 AND table_schema = coalesce($2, current_schema())
"""
# Identifiers cannot be $n parameters: the table name is checked against TABLE_NAME and every
# column name comes from KNOWN_COLUMNS, each double-quoted. Values are parameters as always.
SELECT_WINDOW = 'SELECT {columns} FROM {table} WHERE "{time}" >= $1 AND "{time}" <= $2 ORDER BY "{time}" LIMIT $3'


@dataclass(frozen=True, slots=True)
class CdrRow:
    """One CDR as Asterisk wrote it; times as epoch seconds (to the second, as Asterisk keeps them)."""

    start: float
    answer: float | None
    end: float
    clid: str
    src: str
    dst: str
    dcontext: str
    channel: str
    dstchannel: str
    lastapp: str
    lastdata: str
    duration: int
    billsec: int
    disposition: str
    uniqueid: str
    linkedid: str
    sequence: int | None
    userfield: str


def quoted_table(name: str) -> str:
    if not TABLE_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a table name (letters, digits, _ and one optional schema.)")
    return ".".join(f'"{part}"' for part in name.split("."))


def _epoch(value: object, zone: ZoneInfo) -> float | None:
    """A time as cdr_pgsql stored it: a timestamp (naive = Asterisk's local zone), epoch seconds or text."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=zone)).timestamp()
    if isinstance(value, (int, float)):
        return float(value) or None
    text = str(value).strip()
    try:
        return float(text) or None
    except ValueError:
        return datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone).timestamp()


def _bound(value: float, data_type: str, zone: ZoneInfo) -> object:
    """A window bound in the type of the table's time column, so its index is used."""
    moment = datetime.fromtimestamp(value, UTC)
    if data_type == "timestamp with time zone":
        return moment
    if data_type == "timestamp without time zone":
        return moment.astimezone(zone).replace(tzinfo=None)
    if data_type in ("integer", "bigint", "numeric", "double precision", "real"):
        return int(value) if data_type in ("integer", "bigint") else value
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")  # text: the fixed format sorts as time


async def list_cdr_rows(conn: asyncpg.Connection, table: str, since: float, until: float, zone: ZoneInfo,
                        limit: int = 50_000) -> list[CdrRow]:
    """Every CDR whose call started within [since, until] (plus a second either side: Asterisk truncates)."""
    schema, _, name = table.rpartition(".")
    types = {r["column_name"]: r["data_type"] for r in await conn.fetch(TABLE_COLUMNS, name, schema or None)}
    if not types:
        raise LookupError(f"table {table} not found or not readable")
    time_column = "calldate" if "calldate" in types else "start" if "start" in types else None
    if time_column is None:
        raise LookupError(f"table {table} has neither calldate nor start")
    present = [c for c in KNOWN_COLUMNS if c in types]
    sql = SELECT_WINDOW.format(columns=", ".join(f'"{c}"' for c in present), table=quoted_table(table),
                               time=time_column)
    rows = await conn.fetch(sql, _bound(since - 1, types[time_column], zone),
                            _bound(until + 1, types[time_column], zone), limit)
    out = []
    for row in rows:
        values = dict(row)
        start = _epoch(values.get(time_column), zone)
        if start is None:
            continue
        duration = int(values.get("duration") or 0)
        end = _epoch(values.get("end"), zone) or start + duration
        out.append(CdrRow(
            start=start, answer=_epoch(values.get("answer"), zone), end=end,
            clid=values.get("clid") or "", src=values.get("src") or "", dst=values.get("dst") or "",
            dcontext=values.get("dcontext") or "", channel=values.get("channel") or "",
            dstchannel=values.get("dstchannel") or "", lastapp=values.get("lastapp") or "",
            lastdata=values.get("lastdata") or "", duration=duration, billsec=int(values.get("billsec") or 0),
            disposition=str(values.get("disposition") or "").upper(), uniqueid=values.get("uniqueid") or "",
            linkedid=values.get("linkedid") or "", sequence=values.get("sequence"),
            userfield=values.get("userfield") or ""))
    return out
