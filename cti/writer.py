"""The durable writer: one task saves finished calls and AMI journal batches in order, with exponential
back-off; every entry is first appended to an fsynced spool in the data directory, which is replayed
at start, so neither a database outage nor a `kill -9` loses a call."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import logging
import os
import random
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import asyncpg

from crm import calls as calls_db
from crm.calls import SavedCall
from crm.settings import Settings
from cti.calls import CallRecord, LegRecord, Transfer

logger = logging.getLogger(__name__)

SPOOL_SLOTS = 16  # processes sharing one data directory (tests, several nodes on one host)
WRITE_TIMEOUT = 10.0  # a database that hangs (a cut link, no RST) counts as down after this
# A database that refuses the data itself will refuse it again: such an entry is set aside in a file
# beside the spool for an administrator, instead of blocking every call behind it forever.
REJECTED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)

JournalRow = tuple[str, datetime, str | None, str]


# ------------------------------------------------------------------ spool entries (JSON lines)

def record_to_json(record: CallRecord) -> dict[str, Any]:
    """Every field, times as epoch seconds: the exact record comes back from the spool."""
    return dataclasses.asdict(record)


def record_from_json(body: dict[str, Any]) -> CallRecord:
    names = {f.name for f in dataclasses.fields(CallRecord)}
    values = {key: value for key, value in body.items() if key in names}  # a field dropped since: ignored
    values["legs"] = tuple(LegRecord(**leg) for leg in values.get("legs", ()))
    values["transfers"] = tuple(Transfer(**t) for t in values.get("transfers", ()))
    values["agents_rang"] = tuple(values.get("agents_rang", ()))
    values["talk_by_agent"] = tuple(tuple(pair) for pair in values.get("talk_by_agent", ()))
    return CallRecord(**values)


def call_entry(record: CallRecord, generation: int) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "kind": "call", "generation": generation, "record": record_to_json(record)}


def journal_entry(rows: Sequence[JournalRow]) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "kind": "journal",
            "rows": [[pbx, at.isoformat(), linkedid, raw] for pbx, at, linkedid, raw in rows]}


class Spool:
    """An append-only JSON-lines file; `append` returns once the lines are on disk (fsync)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None
        self._file: IO[bytes] | None = None

    def open(self) -> list[dict[str, Any]]:
        """Take a free slot (flock) and return the entries left by earlier processes, oldest first."""
        self.directory.mkdir(parents=True, exist_ok=True)
        entries: list[dict[str, Any]] = []
        for slot in range(SPOOL_SLOTS):
            path = self.directory / f"writer-{slot}.jsonl"
            handle = open(path, "a+b")  # noqa: SIM115 (kept open while we own the slot)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()  # another live process writes this one
                continue
            found = self._read(handle)
            entries += found
            if self._file is None:
                self.path, self._file = path, handle
            else:
                # An orphan slot of a process that died: its entries move into ours, then it is emptied.
                if found:
                    self.append(found)
                handle.truncate(0)
                handle.close()
        if self._file is None:
            raise RuntimeError(f"all {SPOOL_SLOTS} spool slots in {self.directory} are in use")
        return entries

    @staticmethod
    def _read(handle: IO[bytes]) -> list[dict[str, Any]]:
        handle.seek(0)
        entries = []
        for line in handle.read().split(b"\n"):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except ValueError:
                # Only the last line can be torn (a crash in the middle of a write): it was never
                # acknowledged, and the entry is still in memory or in the database.
                logger.warning("spool: a torn line of %d bytes skipped", len(line))
        return entries

    def append(self, entries: Sequence[dict[str, Any]]) -> None:
        assert self._file is not None
        self._file.write(b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in entries))
        self._file.flush()
        os.fsync(self._file.fileno())

    def clear(self) -> None:
        """Everything in the spool is in the database."""
        assert self._file is not None
        self._file.truncate(0)
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the flock
            self._file = None

    def set_aside(self, entry: dict[str, Any], reason: str) -> None:
        with open(self.directory / "rejected.jsonl", "ab") as out:
            out.write(json.dumps({**entry, "rejected": reason}, ensure_ascii=False).encode() + b"\n")
            out.flush()
            os.fsync(out.fileno())


# ------------------------------------------------------------------ the writer task

class CallWriter:
    """`submit_*` never block; one task writes, in order. `on_saved(record, saved)` hears of each call
    written (for live pushes), and is called from the writer task, so it must not block either."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool,
                 on_saved: Callable[[CallRecord, SavedCall], None] = lambda record, saved: None,
                 min_backoff: float = 0.5, max_backoff: float = 30.0, write_timeout: float = WRITE_TIMEOUT) -> None:
        self.settings = settings
        self.pool = pool
        self.on_saved = on_saved
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self.write_timeout = write_timeout
        self.spool = Spool(settings.data_dir / "spool")
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._spooling = 0
        self._backlog: deque[dict[str, Any]] = deque()  # in the spool, not yet in the database
        self._task: asyncio.Task | None = None
        self._appending: asyncio.Future | None = None
        self.failures = 0  # consecutive failed attempts; 0 while the database takes our writes
        self.saved_calls = 0
        self.replayed = 0
        self.last_error = ""

    @property
    def waiting(self) -> int:
        # Entries between the queue and the backlog (being fsynced to the spool) still wait too: a drain
        # that missed them returned before they were written.
        return self._queue.qsize() + self._spooling + len(self._backlog)

    async def start(self) -> None:
        left = await asyncio.to_thread(self.spool.open)
        if left:
            logger.warning("writer: %d entries left in the spool by an earlier run; writing them first", len(left))
        self.replayed = len(left)
        self._backlog.extend(left)
        self._task = asyncio.create_task(self._run(), name="call-writer")

    def submit_call(self, record: CallRecord, generation: int = 0) -> None:
        self._queue.put_nowait(call_entry(record, generation))

    def submit_journal(self, rows: Sequence[JournalRow]) -> None:
        if rows:
            self._queue.put_nowait(journal_entry(rows))

    async def drain(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted is in the database; False if it was not in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.waiting and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return not self.waiting

    async def stop(self, timeout: float = 3.0) -> None:
        """Write what can be written in time; the rest stays in the spool for the next start."""
        if self._task is None:
            return
        if not await self.drain(timeout):
            logger.warning("writer: database unavailable at shutdown; %d entries wait in %s",
                           self.waiting, self.spool.path)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        if self._appending is not None:
            await asyncio.gather(self._appending, return_exceptions=True)  # the thread finishes its fsync
        unspooled = self._take_queued()
        if unspooled:
            await asyncio.to_thread(self.spool.append, unspooled)
        self.spool.close()

    def _take_queued(self) -> list[dict[str, Any]]:
        taken = []
        while not self._queue.empty():
            taken.append(self._queue.get_nowait())
        return taken

    async def _spool_new(self, first: dict[str, Any] | None = None) -> None:
        entries = ([first] if first is not None else []) + self._take_queued()
        if entries:
            self._spooling += len(entries)
            try:
                # Shielded: a shutdown during the fsync lets it finish (stop() waits for it).
                self._appending = asyncio.ensure_future(asyncio.to_thread(self.spool.append, entries))
                await asyncio.shield(self._appending)
                self._backlog.extend(entries)
            finally:
                self._spooling -= len(entries)

    def _backoff(self) -> float:
        delay = min(self.max_backoff, self.min_backoff * 2 ** min(self.failures - 1, 16))
        return delay * random.uniform(0.8, 1.2)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._backlog:
                await self._spool_new(await self._queue.get())
            await self._spool_new()
            try:
                while self._backlog:
                    await self._write(self._backlog[0])
                    self._backlog.popleft()
                await asyncio.to_thread(self.spool.clear)
                if self.failures:
                    logger.info("writer: database back; the spool is written")
                self.failures = 0
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:200]
                delay = self._backoff()
                logger.error("writer: database unavailable (%s); %d entries safe in the spool, next try in %.1f s",
                             self.last_error, self.waiting, delay)
                # Sleep, but keep putting what arrives meanwhile on disk.
                deadline = loop.time() + delay
                while (remaining := deadline - loop.time()) > 0:
                    try:
                        async with asyncio.timeout(remaining):  # not wait_for: see crm/routing_index.py
                            first = await self._queue.get()
                    except TimeoutError:
                        break
                    await self._spool_new(first)

    async def _write(self, entry: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(self.write_timeout):
                async with self.pool.acquire() as conn:
                    if entry["kind"] == "journal":
                        rows = [(pbx, datetime.fromisoformat(at), linkedid, raw)
                                for pbx, at, linkedid, raw in entry["rows"]]
                        await calls_db.append_journal(conn, rows, entry["id"])
                        return
                    record = record_from_json(entry["record"])
                    saved = await calls_db.save_call(
                        conn, record, self.settings.phone_region, self.settings.suffix_match_digits,
                        self.settings.hours, timedelta(minutes=self.settings.callback_minutes),
                        entry.get("generation", 0))
        except REJECTED as exc:
            logger.error("writer: the database refused entry %s (%s); set aside in rejected.jsonl", entry["id"], exc)
            await asyncio.to_thread(self.spool.set_aside, entry, str(exc))
            return
        except (TypeError, KeyError, ValueError) as exc:
            logger.exception("writer: entry %s cannot be read; set aside in rejected.jsonl", entry["id"])
            await asyncio.to_thread(self.spool.set_aside, entry, repr(exc))
            return
        self.saved_calls += 1
        if not saved.written:
            logger.info("call %s/%s: the stored row is newer or observed; kept", record.pbx, record.call_id)
        try:
            self.on_saved(record, saved)
        except Exception:
            logger.exception("writer: on_saved failed for call %s", record.call_id)
