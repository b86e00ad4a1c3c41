"""Login checks: scrypt off the event loop, no timing oracle, a throttle that holds under concurrency and
that a stranger cannot turn into a lockout of the real user."""

import asyncio
import time
from datetime import UTC, datetime

import asyncpg
import pytest

from crm import users
from crm.errors import AuthenticationFailed, TooManyAttempts

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

pytestmark = pytest.mark.real_password_cost  # counts and times scrypt runs of the real work factor


async def attempt(conn, login: str, password: str, remote: str, now: datetime = NOW) -> str:
    """'ok', 'failed' or 'throttled'."""
    try:
        await users.authenticate(conn, login, password, remote, now)
    except AuthenticationFailed:
        return "failed"
    except TooManyAttempts:
        return "throttled"
    return "ok"


async def test_eleven_parallel_guesses_get_five_tries(database_dsn, factory):
    await factory.user("manager1")
    pool = await asyncpg.create_pool(database_dsn, min_size=11, max_size=11)
    try:
        async def guess(i: int) -> str:
            async with pool.acquire() as conn:
                return await attempt(conn, "manager1", f"guess{i}", "10.0.0.66")

        results = await asyncio.gather(*(guess(i) for i in range(11)))
    finally:
        await pool.close()
    assert sorted(results) == ["failed"] * users.THROTTLE_MAX_FAILURES + ["throttled"] * 6


async def test_a_stranger_cannot_lock_the_real_user_out(conn, factory):
    await factory.user("manager1")
    outcomes = [await attempt(conn, "manager1", "guess", "203.0.113.9") for _ in range(7)]
    assert outcomes == ["failed"] * 5 + ["throttled"] * 2
    # The real user, from their own address, still gets in with the right password.
    assert await attempt(conn, "manager1", "manager1", "10.0.0.7") == "ok"
    # The stranger is held; the real user at the same address is too (only the right password was tried).
    assert await attempt(conn, "manager1", "manager1", "203.0.113.9") == "throttled"


async def test_a_throttle_is_temporary(conn, factory):
    await factory.user("manager1")
    for _ in range(6):
        await attempt(conn, "manager1", "typo", "10.0.0.7")
    assert await attempt(conn, "manager1", "manager1", "10.0.0.7") == "throttled"
    later = NOW + users.THROTTLE_WINDOW
    assert await attempt(conn, "manager1", "manager1", "10.0.0.7", later) == "ok"
    # A success empties the bucket of this login at this address: five fresh tries again.
    outcomes = [await attempt(conn, "manager1", "typo", "10.0.0.7", later) for _ in range(6)]
    assert outcomes == ["failed"] * 5 + ["throttled"]


async def test_a_guessing_address_is_stopped_whatever_the_login(conn, factory):
    await factory.user("manager1")
    outcomes = [await attempt(conn, f"user{i}", "guess", "203.0.113.9") for i in range(users.THROTTLE_MAX_PER_ADDRESS)]
    assert outcomes == ["failed"] * users.THROTTLE_MAX_PER_ADDRESS
    assert await attempt(conn, "manager1", "manager1", "203.0.113.9") == "throttled"
    assert await attempt(conn, "manager1", "manager1", "10.0.0.7") == "ok"


async def test_a_distributed_guess_slows_strangers_but_not_a_known_address(conn, factory):
    await factory.user("manager1")
    assert await attempt(conn, "manager1", "manager1", "10.0.0.7") == "ok"  # the user's usual address
    outcomes = [await attempt(conn, "manager1", "guess", f"198.51.100.{i}")
                for i in range(users.THROTTLE_MAX_PER_LOGIN + 1)]
    assert outcomes == ["failed"] * users.THROTTLE_MAX_PER_LOGIN + ["throttled"]
    assert await attempt(conn, "manager1", "manager1", "198.51.100.250") == "throttled"
    assert await attempt(conn, "manager1", "manager1", "10.0.0.7") == "ok"


async def test_an_unknown_login_costs_as_much_as_a_known_one(conn, factory, monkeypatch):
    """No timing oracle: an unknown or inactive login runs the same one scrypt as a known one (counted,
    not timed: a timed assertion is noise on a shared machine)."""
    await factory.user("manager1")
    await factory.user("retired")
    await conn.execute("UPDATE users SET active = false WHERE login = 'retired'")
    real_scrypt = users.hashlib.scrypt
    runs: list[int] = []

    def counting_scrypt(*args, **kwargs):
        runs.append(kwargs.get("n", 0))
        return real_scrypt(*args, **kwargs)

    monkeypatch.setattr(users.hashlib, "scrypt", counting_scrypt)

    async def cost(login: str, remote: str) -> list[int]:
        runs.clear()
        assert await attempt(conn, login, "wrong", remote) == "failed"
        return list(runs)

    known = await cost("manager1", "10.1.0.1")
    assert len(known) == 1 and known[0] >= 2**14  # the real work factor
    assert await cost("nobody", "10.2.0.1") == known
    assert await cost("retired", "10.3.0.1") == known


async def test_password_hashing_does_not_stall_the_event_loop(conn, factory):
    await factory.user("manager1")
    started = time.perf_counter()
    users.hash_password("measure")
    one_hash = time.perf_counter() - started
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    for i in range(4):
        await attempt(conn, "manager1", "wrong", f"10.4.0.{i}")
        await users.set_password(conn, (await users.get_user_by_login(conn, "manager1")).id, f"new{i}")
    done.set()
    await tick
    # On the loop, each scrypt run would be one gap of a whole hash; in a thread the loop keeps ticking.
    assert max(gaps) < one_hash * 0.75, (max(gaps), one_hash)


@pytest.mark.parametrize("login", ["", "x" * 500, "manager1\x00", "../../etc/passwd"])
async def test_odd_logins_fail_cleanly(conn, factory, login):
    await factory.user("manager1")
    assert await attempt(conn, login, "manager1", "10.0.0.7") == "failed"
