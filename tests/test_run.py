"""The command line as an operator uses it: bad settings, adding a user, the embedded database."""

import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from crm.db import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLBOARD_", "DATABASE_URL"))}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def test_help_everywhere():
    for args in ([], ["user", "add"], ["replay"], ["simulate"], ["migrate"]):
        result = run_cli(*args, "--help")
        assert result.returncode == 0, result.stderr
        assert "usage:" in result.stdout


def test_bad_setting_stops_start_up_and_names_it(tmp_path):
    result = run_cli("--data-dir", str(tmp_path), env={"CALLBOARD_PORT": "eighty"})
    assert result.returncode == 2
    assert "CALLBOARD_PORT" in result.stderr
    result = run_cli("--data-dir", str(tmp_path), env={"DATABASE_URL": "mysql://localhost/x"})
    assert result.returncode == 2 and "DATABASE_URL" in result.stderr


def test_user_add_takes_the_password_from_the_environment_never_an_argument(database_dsn):
    result = run_cli("user", "add", "--login", "petrov", "--role", "manager", "--extension", "105",
                     "--name", "Pyotr Petrov", env={"DATABASE_URL": database_dsn, "CALLBOARD_PASSWORD": "s3cret!"})
    assert result.returncode == 0, result.stderr
    assert "petrov" in result.stdout
    assert "s3cret" not in result.stdout + result.stderr
    again = run_cli("user", "add", "--login", "petrov", "--role", "manager", "--name", "Twin",
                    env={"DATABASE_URL": database_dsn, "CALLBOARD_PASSWORD": "x12345"})
    assert again.returncode == 1 and "already exists" in again.stderr
    no_password = run_cli("user", "add", "--login", "ivanov", "--role", "head", "--name", "I",
                          env={"DATABASE_URL": database_dsn})
    assert no_password.returncode == 2 and "CALLBOARD_PASSWORD" in no_password.stderr


async def test_embedded_postgres_keeps_data_across_a_restart(tmp_path):
    server = EmbeddedPostgres(tmp_path)
    dsn = await server.start()
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
    await conn.close()
    await server.stop()
    pid_file = tmp_path / "pgdata" / "postmaster.pid"
    assert not pid_file.exists(), "the server did not stop"
    server = EmbeddedPostgres(tmp_path)
    conn = await asyncpg.connect(await server.start())
    assert await conn.fetchval("SELECT v FROM kept") == "still here"
    await conn.close()
    await server.stop()


def test_rebuild_a_call_from_the_journal(database_dsn):
    import asyncio
    from datetime import UTC, datetime

    import asyncpg

    from cti import events as ev
    from tests.conftest import FIXTURES

    async def fill() -> None:
        conn = await asyncpg.connect(database_dsn)
        rows = [("lab", datetime.now(UTC), "1795448064.2", raw)
                for raw in ev.FrameSplitter().feed((FIXTURES / "ami" / "b_queue-answered-102.ami").read_bytes())
                if ev.parse_event(raw) is not None]
        await conn.executemany("INSERT INTO ami_journal (pbx, received_at, linkedid, raw) VALUES ($1, $2, $3, $4)",
                               rows)
        await conn.close()

    asyncio.run(fill())
    result = run_cli("rebuild", "--pbx", "lab", "--call", "1795448064.2", env={"DATABASE_URL": database_dsn})
    assert result.returncode == 0, result.stderr
    assert '"answered_by": "102"' in result.stdout and '"outcome": "answered"' in result.stdout
    missing = run_cli("rebuild", "--pbx", "lab", "--call", "0.0", env={"DATABASE_URL": database_dsn})
    assert missing.returncode == 1 and "No journal" in missing.stderr
