"""Test fixtures: a real PostgreSQL (embedded by default), one fresh database per test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from crm import contacts, users
from crm.contacts import PartyInput
from crm.db import EmbeddedPostgres, apply_migrations
from crm.settings import Settings
from web.app import create_app
from web.auth import CSRF_HEADER

FIXTURES = Path(__file__).parent / "fixtures"
TEMPLATE_DB = "callboard_test_template"
# A test database's server holds nothing worth an fsync: without it a database copied per test costs
# ~80 ms instead of ~350 (measured on this machine), and every commit is cheaper. Only ever set on
# the embedded server the tests start themselves, never on CALLBOARD_TEST_DATABASE_URL.
THROWAWAY_SERVER_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
POOL_CLOSE_SECONDS = 15
# Production hashes passwords with scrypt N=2**14 (~60 ms of CPU); hundreds of test users and logins
# would spend minutes on it. Tests marked real_password_cost (the timing-oracle and event-loop checks)
# keep the real work factor.
TEST_SCRYPT_N = 2**10


@dataclass(frozen=True)
class PgServer:
    """Where tests create their databases: `admin_dsn` may create and drop databases."""

    admin_dsn: str

    def dsn(self, database: str) -> str:
        base, _, query = self.admin_dsn.partition("?")
        base = base.rsplit("/", 1)[0]
        return f"{base}/{database}" + (f"?{query}" if query else "")


async def _prepare_template(server: PgServer, throwaway: bool) -> None:
    admin = await asyncpg.connect(server.admin_dsn)
    try:
        if throwaway:
            for name, value in THROWAWAY_SERVER_SETTINGS.items():
                await admin.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            await admin.execute("SELECT pg_reload_conf()")
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
        await admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(server.dsn(TEMPLATE_DB))
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """CALLBOARD_TEST_DATABASE_URL (a server where we may create databases) or an embedded one."""
    external = os.environ.get("CALLBOARD_TEST_DATABASE_URL")
    embedded = None
    if external:
        server = PgServer(external)
    else:
        embedded = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
        dsn = asyncio.run(embedded.start())
        server = PgServer(dsn.replace("/callboard?", "/postgres?"))
    asyncio.run(_prepare_template(server, throwaway=embedded is not None))
    yield server
    if embedded is not None:
        asyncio.run(embedded.stop())


@pytest.fixture(autouse=True)
def cheap_password_hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("real_password_cost") is None:
        monkeypatch.setattr(users, "_SCRYPT_N", TEST_SCRYPT_N)


@pytest.fixture
async def database_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    """A database of its own for each test, copied from the migrated template."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server.admin_dsn)
    try:
        # FILE_COPY: a small template is copied as files, not written block by block into the WAL.
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}" STRATEGY FILE_COPY')
        yield pg_server.dsn(name)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_dsn, min_size=1, max_size=5)
    yield pool
    try:
        # close() waits for every connection to come back: one never released would hang the whole run.
        await asyncio.wait_for(pool.close(), POOL_CLOSE_SECONDS)
    except TimeoutError:
        pool.terminate()
        pytest.fail(f"a pooled connection was not released within {POOL_CLOSE_SECONDS} s of the test's end")


@pytest.fixture
async def conn(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as connection:
        yield connection


@pytest.fixture
def settings(database_dsn: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_dsn, data_dir=tmp_path, session_secret="test-secret",
                    phone_region="RU", routing_token="route-token", recordings_dir=tmp_path / "recordings",
                    agi_port=0, smtp_port=0, working_hours="00:00-23:59", working_days="1-7",  # tests run at any hour
                    language="en",  # the suite reads English words; tests/web/test_i18n.py checks Russian
                    freeze_gc=False)  # a full collection per app start; tests/web/test_live_updates.py checks it


class Factory:
    """Inserts rows the way the application does, through crm functions."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def user(self, login: str, role: str = "manager", extension: str | None = None,
                   password: str | None = None) -> users.User:
        return await users.create_user(self.conn, login, password or login, role, extension, login.title())

    async def contact(self, name: str, manager: users.User | None = None, phones: list[str] | None = None,
                      emails: list[str] | None = None, company_id: int | None = None) -> contacts.Party:
        admin = users.User(0, "system", "admin", None, "system", True)
        return await contacts.create_party(self.conn, admin, "contact", PartyInput(
            name=name, manager_id=manager.id if manager else None, phones=[(p, "") for p in phones or []],
            emails=emails or [], company_id=company_id), "RU")

    async def company(self, name: str, manager: users.User | None = None,
                      phones: list[str] | None = None) -> contacts.Party:
        admin = users.User(0, "system", "admin", None, "system", True)
        return await contacts.create_party(self.conn, admin, "company", PartyInput(
            name=name, manager_id=manager.id if manager else None, phones=[(p, "") for p in phones or []]), "RU")


@pytest.fixture
def factory(conn: asyncpg.Connection) -> Factory:
    return Factory(conn)


@pytest.fixture
async def client(settings: Settings, pool: asyncpg.Pool, aiohttp_client):
    # aiohttp_client is requested last so the app (and its telephony) stops before the pool closes.
    return await aiohttp_client(create_app(settings, pool))


async def login_form_token(http, base_url: str = "") -> str:
    """GET the login form as a browser would: its hidden CSRF token (the cookie goes to the session's jar)."""
    page = await (await http.get(f"{base_url}/login")).text()
    marker = '<input type="hidden" name="csrf_token" value="'
    start = page.index(marker, page.index('action="/login"')) + len(marker)  # not the logout form's
    return page[start:page.index('"', start)]


async def post_login(http, login: str, password: str, base_url: str = "", **extra: str):
    """POST the login form with its CSRF token, the way the browser does."""
    data = {"login": login, "password": password, "csrf_token": await login_form_token(http, base_url), **extra}
    return await http.post(f"{base_url}/login", data=data, allow_redirects=False)


async def login(client, login: str, password: str | None = None) -> str:
    """Log in through the real form; return the session's CSRF token (from the page's meta tag)."""
    resp = await post_login(client, login, password or login, next="/contacts")
    assert resp.status == 302, await resp.text()
    page = await (await client.get("/contacts")).text()
    marker = '<meta name="csrf-token" content="'
    start = page.index(marker) + len(marker)
    return page[start:page.index('"', start)]


def csrf_headers(token: str) -> dict[str, str]:
    return {CSRF_HEADER: token}
