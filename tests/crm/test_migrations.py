"""Migrations: forward-only, recorded, idempotent, safe when two nodes start together."""

import asyncio

import asyncpg

from crm.db import apply_migrations, list_migrations, pending_migrations


async def _schema(conn):
    return await conn.fetch("""
        SELECT table_name, column_name, data_type FROM information_schema.columns
        WHERE table_schema = 'public' ORDER BY table_name, column_name""")


async def test_applying_twice_changes_nothing(conn):
    before = await _schema(conn)
    assert await apply_migrations(conn) == []
    assert await _schema(conn) == before
    recorded = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")]
    assert recorded == [m.version for m in list_migrations()]
    assert await pending_migrations(conn) == []


async def test_two_nodes_migrating_an_empty_database_at_once(pg_server):
    admin = await asyncpg.connect(pg_server.admin_dsn)
    await admin.execute("DROP DATABASE IF EXISTS race_test")
    await admin.execute("CREATE DATABASE race_test")
    try:
        first = await asyncpg.connect(pg_server.dsn("race_test"))
        second = await asyncpg.connect(pg_server.dsn("race_test"))
        done = await asyncio.gather(apply_migrations(first), apply_migrations(second))
        # Exactly one node applied each migration; the other found nothing to do.
        assert sorted(len(d) for d in done) == [0, len(list_migrations())]
        assert await pending_migrations(first) == []
        await first.close()
        await second.close()
    finally:
        await admin.execute("DROP DATABASE race_test WITH (FORCE)")
        await admin.close()
