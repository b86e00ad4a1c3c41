"""An in-memory routing index: caller number → contact, company, manager, without a database round
trip. Loaded at start-up, kept current by PostgreSQL LISTEN/NOTIFY (migration 0006), rebuilt
after a lost listener connection. Routing answers from it even while the database is slow.

Compact (issue 18: ≤ 100 MB and ≤ 2 s per 1,000,000 numbers): the phones are parallel arrays of
machine integers sorted by their last digits, searched by bisection, and the names are UTF-8 bytes
in one buffer; PostgreSQL sorts and packs them, so the load is one statement and a few memcpy's.
Changes go to a small overlay consulted first (the whole entry list of each changed key); a
compaction reloads the arrays in the background when the overlay grows or ages, and keeps what
changed after its snapshot."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from itertools import accumulate

import asyncpg

from crm.matching import CallerMatch
from crm.phones import normalise_caller

logger = logging.getLogger(__name__)

CHANNEL = "callboard_routing"
_ROWS = """
SELECT (length(right(substr(p.e164, 2), $1)) * (10::int8 ^ $1)::int8
        + right(substr(p.e164, 2), $1)::int8) AS key,
       substr(p.e164, 2)::int8 AS number, p.contact_id, coalesce(ct.company_id, p.company_id) AS company_id,
       coalesce(ct.manager_id, co.manager_id) AS manager_id, ct.name AS contact_name, co.name AS company_name,
       p.contact_id IS NULL AS no_contact, p.id
FROM phones p
LEFT JOIN contacts ct ON ct.id = p.contact_id
LEFT JOIN companies co ON co.id = coalesce(ct.company_id, p.company_id)
"""
# Every phone packed into big-endian byte strings, in one order (a person's own phone before a
# company's switchboard with the same number, then the older phone): PostgreSQL sorts once for all
# the aggregates with the same ORDER BY, and Python gets each column as one bytes object.
_ORDER = "ORDER BY key, no_contact, id"
# Every phone as records of big-endian integers in byte strings (the key and the number as int8; the
# contact and the phone's own company as int4, or int8 once ids outgrow int4), in one order (a person's
# own phone before a company's switchboard with the same number, then the older phone): PostgreSQL sorts
# once for both aggregates, and Python slices the columns out of two arrays. No join: the contact's
# company, manager and name come from the contacts' own arrays at lookup (a bisection by id), which took
# the load of 1,000,000 phones from 1.8 s to ~1.3 s of PostgreSQL (the hash join of a million contacts
# was most of it).
_PHONES = """
SELECT string_agg(int8send(key) || int8send(number), ''::bytea {order}) AS numbers,
       string_agg({send}(coalesce(contact_id, 0)::{cast}) || {send}(coalesce(company_id, 0)::{cast}),
                  ''::bytea {order})
           AS records
FROM (SELECT (length(right(substr(p.e164, 2), $1)) * (10::int8 ^ $1)::int8
              + right(substr(p.e164, 2), $1)::int8) AS key,
             substr(p.e164, 2)::int8 AS number, p.contact_id, p.company_id, p.contact_id IS NULL AS no_contact, p.id
      FROM phones p) rows
"""
# Every contact with a phone: its company, its own manager and its name, looked up by id (the primary
# key's order: no sort).
_CONTACTS = """
SELECT string_agg({send}(id::{cast}) || {send}(coalesce(company_id, 0)::{cast})
                  || {send}(coalesce(manager_id, 0)::{cast}) || {send}(length(name)::{cast}), ''::bytea ORDER BY id)
           AS records,
       string_agg(name, '' ORDER BY id) AS names
FROM contacts c WHERE EXISTS (SELECT 1 FROM phones p WHERE p.contact_id = c.id)
"""
# The companies apart (a tenth of the rows): their manager (for a contact without one and a company's
# own phone) and name, looked up by id.
_COMPANIES = """
SELECT string_agg({send}(id::{cast}) || {send}(coalesce(manager_id, 0)::{cast}) || {send}(length(name)::{cast}),
                  ''::bytea ORDER BY id)
           AS records,
       string_agg(name, '' ORDER BY id) AS names
FROM companies
"""
_TYPES = (("i", "int4send", "int4"), ("q", "int8send", "int8"))
ALL_PHONES = {typecode: _PHONES.format(order=_ORDER, send=send, cast=cast) for typecode, send, cast in _TYPES}
ALL_CONTACTS = {typecode: _CONTACTS.format(send=send, cast=cast) for typecode, send, cast in _TYPES}
ALL_COMPANIES = {typecode: _COMPANIES.format(send=send, cast=cast) for typecode, send, cast in _TYPES}
IDS_FIT_INT4 = """
SELECT coalesce(greatest((SELECT max(id) FROM contacts), (SELECT max(id) FROM companies),
                         (SELECT max(id) FROM users), (SELECT max(length(name)) FROM companies)), 0) < 2 ^ 31
"""
# The phones under some keys (the last digits, as reversed e164 prefixes the phones_suffix_idx serves);
# the caller keeps those whose key is exactly one asked for.
ROWS_OF_KEYS = f"""
SELECT r.* FROM unnest($2::text[]) AS k (reversed)
CROSS JOIN LATERAL ({_ROWS}
    WHERE reverse(p.e164) ~>=~ k.reversed AND reverse(p.e164) ~<~ (k.reversed || ':')) AS r
{_ORDER}
"""
PHONES_OF_CONTACT = "SELECT e164 FROM phones WHERE contact_id = $1"
PHONES_OF_COMPANY = """
SELECT e164 FROM phones WHERE company_id = $1
UNION SELECT p.e164 FROM phones p JOIN contacts c ON c.id = p.contact_id WHERE c.company_id = $1
"""
ALL_USERS = "SELECT id, extension, active, display_name FROM users"
ONE_USER = "SELECT id, extension, active, display_name FROM users WHERE id = $1"

Entry = tuple  # (e164, contact_id, company_id, manager_id, contact_name, company_name)
_LOST = "\x00lost"
_NON_DIGITS = re.compile(r"\D")
# A compaction (a fresh load in the background) when the overlay holds this many keys, or is older than this.
COMPACT_KEYS = 5_000
COMPACT_SECONDS = 600.0


def _columns(records: bytes | None, typecode: str, fields: int) -> list[array]:
    """The columns of big-endian records of `fields` integers."""
    values = array(typecode)
    if records:
        values.frombytes(records)
        if sys.byteorder == "little":
            values.byteswap()
    return [values[i::fields] for i in range(fields)]


def _offsets(lengths: array, total: int) -> array:
    return array("I" if total < 2 ** 32 else "Q", accumulate(lengths, initial=0))


def _position(ids: array, wanted: int) -> int | None:
    """Where an id sits in a sorted id column, or None."""
    at = bisect_left(ids, wanted)
    return at if at < len(ids) and ids[at] == wanted else None


def _slice(names: str, offsets: array, at: int) -> str:
    """The at-th of the names stored end to end."""
    return names[offsets[at]:offsets[at + 1]]


@dataclass(frozen=True, slots=True)
class _Table:
    """One loaded snapshot; never changed after it is built, so a lookup may read it while a new one loads.
    Zero stands for "none" in the id columns (ids start at 1)."""

    keys: array
    numbers: array
    contacts: array
    companies: array  # the phone's own company (a switchboard's)
    contact_ids: array
    contact_companies: array
    contact_managers: array
    contact_name_offsets: array
    contact_names: str
    company_ids: array
    company_managers: array
    company_name_offsets: array
    company_names: str

    @classmethod
    def build(cls, phones, contacts, companies, typecode: str) -> _Table:
        """From the packed rows (CPU work: run in a thread)."""
        keys, numbers = _columns(phones["numbers"], "q", 2)
        contact_of, company_of = _columns(phones["records"], typecode, 2)
        contact_ids, contact_companies, contact_managers, name_lengths = _columns(contacts["records"], typecode, 4)
        company_ids, company_managers, company_name_lengths = _columns(companies["records"], typecode, 3)
        names, company_names = contacts["names"] or "", companies["names"] or ""
        return cls(keys, numbers, contact_of, company_of, contact_ids, contact_companies, contact_managers,
                   _offsets(name_lengths, len(names)), names, company_ids, company_managers,
                   _offsets(company_name_lengths, len(company_names)), company_names)

    @classmethod
    def empty(cls) -> _Table:
        none = array("q")
        return cls(none, none, none, none, none, none, none, array("I", [0]), "", none, none, array("I", [0]), "")

    def __len__(self) -> int:
        return len(self.keys)

    def entries(self, key: int) -> list[Entry]:
        low = bisect_left(self.keys, key)
        if low == len(self.keys) or self.keys[low] != key:
            return []
        return [self._entry(i) for i in range(low, bisect_right(self.keys, key, low))]

    def _entry(self, i: int) -> Entry:
        contact_id, company_id = self.contacts[i], self.companies[i]
        manager_id, contact_name = 0, None
        if contact_id:
            at = _position(self.contact_ids, contact_id)
            contact_name = ""
            if at is not None:
                contact_name = _slice(self.contact_names, self.contact_name_offsets, at)
                manager_id = self.contact_managers[at]
                company_id = self.contact_companies[at] or company_id  # the contact's company first
        company_name = None
        if company_id:
            at = _position(self.company_ids, company_id)
            if at is not None:
                company_name = _slice(self.company_names, self.company_name_offsets, at)
                manager_id = manager_id or self.company_managers[at]
        return (f"+{self.numbers[i]}", contact_id or None, company_id or None, manager_id or None, contact_name,
                company_name)

    def nbytes(self) -> int:
        arrays = (self.keys, self.numbers, self.contacts, self.companies, self.contact_ids, self.contact_companies,
                  self.contact_managers, self.contact_name_offsets, self.company_ids, self.company_managers,
                  self.company_name_offsets)
        return sum(a.itemsize * len(a) for a in arrays) + sys.getsizeof(self.contact_names) + sys.getsizeof(
            self.company_names)


class RoutingIndex:
    """Keyed by the last `suffix_digits` digits, so one lookup serves exact and last-N-digit matches."""

    def __init__(self, suffix_digits: int = 10) -> None:
        self.suffix_digits = suffix_digits
        self._table = _Table.empty()
        # Changed keys → their whole entry list (empty: no phone has those digits any more) and the
        # number of the change that wrote it; consulted before the table.
        self._overlay: dict[int, tuple[tuple[Entry, ...], int]] = {}
        self._changes = 0
        self._users: dict[int, tuple[str | None, bool, str]] = {}
        self.ready = False
        self.loaded_at = 0.0

    def _key(self, digits: str) -> int:
        # The length is part of the key: "0012345678" and "12345678" are different last digits.
        tail = digits[-self.suffix_digits:]
        return len(tail) * 10 ** self.suffix_digits + int(tail)

    def _candidates(self, key: int) -> list[Entry] | tuple[Entry, ...]:
        changed = self._overlay.get(key)
        return changed[0] if changed is not None else self._table.entries(key)

    def __len__(self) -> int:
        return len(self._table)

    @property
    def overlay_size(self) -> int:
        return len(self._overlay)

    def nbytes(self) -> int:
        """The loaded arrays and names (the overlay and the users are small)."""
        return self._table.nbytes()

    async def load(self, conn: asyncpg.Connection) -> None:
        """A fresh snapshot of every phone. Changes applied while it loads stay in the overlay; those
        applied before are in the snapshot (the LISTEN started before the load, see IndexKeeper)."""
        started = time.perf_counter()
        changes_before = self._changes
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            # One sort for all the aggregates, in memory, in this process (a parallel plan would
            # aggregate partial groups out of order).
            await conn.execute("SET LOCAL work_mem = '512MB'; SET LOCAL max_parallel_workers_per_gather = 0")
            typecode = "i" if await conn.fetchval(IDS_FIT_INT4) else "q"
            phones = await conn.fetchrow(ALL_PHONES[typecode], self.suffix_digits)
            contacts = await conn.fetchrow(ALL_CONTACTS[typecode])
            companies = await conn.fetchrow(ALL_COMPANIES[typecode])
            users = {r["id"]: (r["extension"], r["active"], r["display_name"]) for r in await conn.fetch(ALL_USERS)}
        fetched = time.perf_counter()
        table = await asyncio.to_thread(_Table.build, phones, contacts, companies, typecode)
        del phones, contacts, companies
        # Installed in one step with the overlay pruned: a lookup sees the old state or the new, never a mix.
        self._table, self._users = table, users
        self._overlay = {key: value for key, value in self._overlay.items() if value[1] > changes_before}
        self.ready, self.loaded_at = True, time.monotonic()
        logger.info("routing index: %d numbers loaded in %.2f s (%.2f s in PostgreSQL), %.0f MB", len(table),
                    time.perf_counter() - started, fetched - started, table.nbytes() / 1e6)

    def find(self, number: str, region: str) -> CallerMatch | None:
        """The same answer as crm.matching.find_caller, from memory."""
        digits = _NON_DIGITS.sub("", number or "")
        candidates = self._candidates(self._key(digits)) if len(digits) >= 6 else None
        if not candidates:
            # Normalising never changes a number's last digits (it only strips or adds prefixes),
            # so nothing under these last digits means no exact and no suffix match either.
            return None
        if len(candidates) == 1 or not number.lstrip().startswith("+"):
            for entry in candidates:
                if entry[0][1:] == digits:
                    return self._match(entry)  # already E.164 digits: no phonenumbers parse (~70 µs)
            if len(candidates) == 1 and len(digits) >= self.suffix_digits and not number.lstrip().startswith("+"):
                return self._match(candidates[0])
        return self._find_exactly(number, region, digits)

    def _find_exactly(self, number: str, region: str, digits: str) -> CallerMatch | None:
        e164 = normalise_caller(number, region)
        if e164 is not None:
            for entry in self._candidates(self._key(e164[1:])):
                if entry[0] == e164:
                    return self._match(entry)
        if len(digits) >= self.suffix_digits and not (number or "").lstrip().startswith("+"):
            entries = self._candidates(self._key(digits))
            if entries:
                return self._match(entries[0])
        return None

    def _match(self, entry: Entry) -> CallerMatch:
        _, contact_id, company_id, manager_id, contact_name, company_name = entry
        extension, active, name = self._users.get(manager_id, (None, False, None)) if manager_id else (
            None, False, None)
        return CallerMatch(contact_id, company_id, manager_id, contact_name, company_name, extension, active, name)

    async def apply(self, conn: asyncpg.Connection, payload: str) -> None:
        """One change notice: reload the whole entry list of every key it touches into the overlay."""
        kind, _, key = payload.partition(":")
        if kind == "user":
            row = await conn.fetchrow(ONE_USER, int(key))
            if row is None:
                self._users.pop(int(key), None)
            else:
                self._users[row["id"]] = (row["extension"], row["active"], row["display_name"])
            return
        if kind == "phone":
            numbers = [key]
        elif kind == "contact":
            numbers = [r["e164"] for r in await conn.fetch(PHONES_OF_CONTACT, int(key))]
        elif kind == "company":
            numbers = [r["e164"] for r in await conn.fetch(PHONES_OF_COMPANY, int(key))]
        else:
            return
        if not numbers:
            return
        self._changes += 1
        change = self._changes  # counted before the read: a load that starts later keeps nothing older
        tails = {number[1:][-self.suffix_digits:] for number in numbers}
        rows = await conn.fetch(ROWS_OF_KEYS, self.suffix_digits, [tail[::-1] for tail in tails])
        entries: dict[int, list[Entry]] = {self._key(tail): [] for tail in tails}
        for row in rows:
            if row["key"] in entries:  # a longer number with the same ending is under another key
                entries[row["key"]].append((f"+{row['number']}", *tuple(row)[2:7]))
        for key_value, key_entries in entries.items():
            self._overlay[key_value] = (tuple(key_entries), change)

    def wants_compaction(self) -> bool:
        return len(self._overlay) >= COMPACT_KEYS or (
            bool(self._overlay) and time.monotonic() - self.loaded_at >= COMPACT_SECONDS)


class IndexKeeper:
    """Loads the index and keeps it current from a dedicated LISTEN connection, reconnecting; compacts
    the overlay by a fresh load in the background while changes keep being applied."""

    def __init__(self, index: RoutingIndex, dsn_pool: asyncpg.Pool) -> None:
        self.index = index
        self.pool = dsn_pool
        self._task: asyncio.Task | None = None
        self._compaction: asyncio.Task | None = None
        self._pending: asyncio.Queue[str] = asyncio.Queue()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="routing-index")

    async def stop(self) -> None:
        for task in (self._task, self._compaction):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _notified(self, connection, pid, channel, payload: str) -> None:
        self._pending.put_nowait(payload)

    def _lost(self, connection) -> None:
        self._pending.put_nowait(_LOST)

    async def compact(self) -> None:
        async with self.pool.acquire() as conn:
            await self.index.load(conn)

    def _compact_later(self) -> None:
        if self._compaction is None or self._compaction.done():
            self._compaction = asyncio.create_task(self.compact(), name="routing-index-compaction")
            self._compaction.add_done_callback(_log_failure)

    async def _run(self) -> None:
        while True:
            try:
                async with self.pool.acquire() as listener:
                    await listener.add_listener(CHANNEL, self._notified)
                    listener.add_termination_listener(self._lost)
                    try:
                        # Listen first, then load: a change between the two is applied after the load.
                        await self.compact()
                        while True:
                            try:
                                # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns a notice that
                                # arrived with a cancellation and drops the cancellation (the keeper then
                                # never stopped; python/cpython#86296, fixed in 3.12).
                                async with asyncio.timeout(COMPACT_SECONDS / 10):
                                    payload = await self._pending.get()
                            except TimeoutError:
                                payload = None
                            if payload == _LOST:
                                raise ConnectionError("the LISTEN connection was lost")
                            if payload is not None:
                                async with self.pool.acquire() as conn:
                                    await self.index.apply(conn, payload)
                            if self.index.wants_compaction():
                                self._compact_later()
                    finally:
                        listener.remove_termination_listener(self._lost)
                        if not listener.is_closed():
                            await listener.remove_listener(CHANNEL, self._notified)
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # Changes may have been missed: the index is rebuilt when the database is back.
                logger.warning("routing index: %s; reloading in 5 s (routing uses the database meanwhile)", exc)
                self.index.ready = False
                await asyncio.sleep(5)


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("routing index compaction failed (the overlay keeps serving): %s", task.exception())
