"""An in-memory routing index: caller number → contact, company, manager, without a database round
trip. Loaded at start-up, kept current by PostgreSQL LISTEN/NOTIFY (migration 0006), rebuilt
after a lost listener connection. Routing answers from it even while the database is slow."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import asyncpg

from crm.matching import CallerMatch
from crm.phones import normalise_caller

logger = logging.getLogger(__name__)

CHANNEL = "callboard_routing"
# (e164, contact_id, company_id, manager_id, contact_name, company_name) for every phone.
ALL_PHONES = """
SELECT p.e164, p.contact_id, coalesce(ct.company_id, p.company_id) AS company_id,
       coalesce(ct.manager_id, co.manager_id) AS manager_id, ct.name AS contact_name, co.name AS company_name
FROM phones p
LEFT JOIN contacts ct ON ct.id = p.contact_id
LEFT JOIN companies co ON co.id = coalesce(ct.company_id, p.company_id)
ORDER BY p.contact_id IS NULL, p.id
"""
PHONE_ROWS = ALL_PHONES.replace("ORDER BY", "WHERE p.e164 = ANY($1::text[]) ORDER BY")
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


class RoutingIndex:
    """Keyed by the last `suffix_digits` digits, so one dict serves exact and last-N-digit lookups."""

    def __init__(self, suffix_digits: int = 10) -> None:
        self.suffix_digits = suffix_digits
        self._by_suffix: dict[str, list[Entry]] = {}
        self._users: dict[int, tuple[str | None, bool, str]] = {}
        self.ready = False
        self.loaded_at = 0.0

    def _key(self, digits: str) -> str:
        return digits[-self.suffix_digits:]

    def _add(self, entry: Entry) -> None:
        self._by_suffix.setdefault(self._key(entry[0][1:]), []).append(entry)

    def _remove(self, e164: str) -> None:
        key = self._key(e164[1:])
        entries = [e for e in self._by_suffix.get(key, ()) if e[0] != e164]
        if entries:
            self._by_suffix[key] = entries
        else:
            self._by_suffix.pop(key, None)

    async def load(self, conn: asyncpg.Connection) -> None:
        started = time.perf_counter()
        by_suffix: dict[str, list[Entry]] = {}
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            async for row in conn.cursor(ALL_PHONES, prefetch=10_000):
                entry = tuple(row)
                by_suffix.setdefault(self._key(entry[0][1:]), []).append(entry)
            users = {r["id"]: (r["extension"], r["active"], r["display_name"]) for r in await conn.fetch(ALL_USERS)}
        self._by_suffix, self._users = by_suffix, users
        self.ready, self.loaded_at = True, time.time()
        logger.info("routing index: %d numbers loaded in %.1f s", sum(map(len, by_suffix.values())),
                    time.perf_counter() - started)

    def find(self, number: str, region: str) -> CallerMatch | None:
        """The same answer as crm.matching.find_caller, from memory."""
        digits = _NON_DIGITS.sub("", number or "")
        candidates = self._by_suffix.get(self._key(digits)) if len(digits) >= 6 else None
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
            for entry in self._by_suffix.get(self._key(e164[1:]), ()):
                if entry[0] == e164:
                    return self._match(entry)
        if len(digits) >= self.suffix_digits and not (number or "").lstrip().startswith("+"):
            entries = self._by_suffix.get(self._key(digits))
            if entries:
                return self._match(entries[0])
        return None

    def _match(self, entry: Entry) -> CallerMatch:
        _, contact_id, company_id, manager_id, contact_name, company_name = entry
        extension, active, name = self._users.get(manager_id, (None, False, None)) if manager_id else (
            None, False, None)
        return CallerMatch(contact_id, company_id, manager_id, contact_name, company_name, extension, active, name)

    async def apply(self, conn: asyncpg.Connection, payload: str) -> None:
        """One change notice: reload what it names."""
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
        rows = await conn.fetch(PHONE_ROWS, numbers)
        for number in numbers:
            self._remove(number)
        for row in rows:
            self._add(tuple(row))


class IndexKeeper:
    """Loads the index and keeps it current from a dedicated LISTEN connection, reconnecting."""

    def __init__(self, index: RoutingIndex, dsn_pool: asyncpg.Pool) -> None:
        self.index = index
        self.pool = dsn_pool
        self._task: asyncio.Task | None = None
        self._pending: asyncio.Queue[str] = asyncio.Queue()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="routing-index")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _notified(self, connection, pid, channel, payload: str) -> None:
        self._pending.put_nowait(payload)

    def _lost(self, connection) -> None:
        self._pending.put_nowait(_LOST)

    async def _run(self) -> None:
        while True:
            try:
                async with self.pool.acquire() as listener:
                    await listener.add_listener(CHANNEL, self._notified)
                    listener.add_termination_listener(self._lost)
                    try:
                        # Listen first, then load: a change between the two is applied after the load.
                        async with self.pool.acquire() as conn:
                            await self.index.load(conn)
                        while True:
                            payload = await self._pending.get()
                            if payload == _LOST:
                                raise ConnectionError("the LISTEN connection was lost")
                            async with self.pool.acquire() as conn:
                                await self.index.apply(conn, payload)
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
