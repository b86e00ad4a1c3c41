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
    for args in ([], ["user", "add"], ["user", "device", "add"], ["user", "device", "list"], ["replay"],
                 ["simulate"], ["migrate"]):
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


def test_user_devices_from_the_command_line(database_dsn):
    env = {"DATABASE_URL": database_dsn, "CALLBOARD_PASSWORD": "s3cret!"}
    added = run_cli("user", "add", "--login", "petrov", "--role", "manager", "--extension", "105", "--name", "P",
                    "--device", "sip/150010001", "--device", "PJSIP/acc7001-0000003c", env=env)
    assert added.returncode == 0, added.stderr
    assert "devices PJSIP/acc7001, SIP/150010001" in added.stdout
    taken = run_cli("user", "add", "--login", "ivanov", "--role", "manager", "--name", "I",
                    "--device", "SIP/150010001", env=env)
    assert taken.returncode == 1 and "SIP/150010001 is already the device of P (petrov)" in taken.stderr
    junk = run_cli("user", "add", "--login", "ivanov", "--role", "manager", "--name", "I", "--device", "150010001",
                   env=env)
    assert junk.returncode == 1 and "TECH/endpoint" in junk.stderr
    assert run_cli("user", "add", "--login", "ivanov", "--role", "manager", "--extension", "106", "--name", "I",
                   env=env).returncode == 0

    # Both devices or neither: the second is petrov's.
    refused = run_cli("user", "device", "add", "--login", "ivanov", "SIP/150010002", "SIP/150010001", env=env)
    assert refused.returncode == 1 and "petrov" in refused.stderr
    moved = run_cli("user", "device", "remove", "--login", "petrov", "SIP/150010001", env=env)
    assert moved.returncode == 0 and moved.stdout == "PJSIP/acc7001\tpetrov\t105\n"
    given = run_cli("user", "device", "add", "--login", "ivanov", "SIP/150010002", "sip/150010001", env=env)
    assert given.returncode == 0, given.stderr
    listed = run_cli("user", "device", "list", env=env)
    assert sorted(listed.stdout.splitlines()) == [
        "PJSIP/acc7001\tpetrov\t105", "SIP/150010001\tivanov\t106", "SIP/150010002\tivanov\t106"]
    nobody = run_cli("user", "device", "list", "--login", "sidorov", env=env)
    assert nobody.returncode == 1 and "sidorov" in nobody.stderr


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


def test_token_add_prints_the_secret_once_and_stores_it_with_its_scope(database_dsn):
    import asyncio

    import asyncpg

    env = {"DATABASE_URL": database_dsn, "CALLBOARD_PASSWORD": "s3cret!!"}
    assert run_cli("user", "add", "--login", "erp", "--role", "head", "--name", "ERP", env=env).returncode == 0
    made = run_cli("token", "add", "--login", "erp", "--name", "1C exchange", "--scope", "read", env=env)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().rsplit(" ", 1)[-1]
    assert secret.startswith("cb_") and "1C exchange" in made.stdout

    async def stored() -> list[tuple]:
        conn = await asyncpg.connect(database_dsn)
        try:
            return [tuple(r) for r in await conn.fetch("SELECT name, scope FROM api_tokens")]
        finally:
            await conn.close()

    assert asyncio.run(stored()) == [("1C exchange", "read")]
    nobody = run_cli("token", "add", "--login", "ghost", "--name", "x", env=env)
    assert nobody.returncode == 1 and "ghost" in nobody.stderr
