"""Users and roles, password hashing (scrypt), sessions, API tokens and login throttling."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import asyncpg

from crm import devices as devices_db
from crm.errors import AuthenticationFailed, Conflict, NotFound, TooManyAttempts, ValidationError
from crm.settings import LANGUAGES

ROLES = ("manager", "head", "admin", "accountant", "warehouse")
SESSION_LIFETIME = timedelta(days=7)
THROTTLE_WINDOW = timedelta(minutes=15)
# Leaky buckets over THROTTLE_WINDOW (a sliding window without storing every attempt): each bucket holds
# `capacity` attempts and drains at capacity / window. A refused attempt adds nothing past capacity + 1, so
# a bucket is open again at most two drain steps after the guessing stops: nothing locks a user out for good.
THROTTLE_MAX_FAILURES = 5  # one login from one address: the real user typing a wrong password
THROTTLE_MAX_PER_ADDRESS = 20  # one address whatever the logins: stops a guesser's address
THROTTLE_MAX_PER_LOGIN = 30  # one login from addresses it never logged in from: slows a distributed guess
KNOWN_ADDRESS_DAYS = 30  # an address the login succeeded from lately is not held by THROTTLE_MAX_PER_LOGIN
# scrypt parameters: n=2**14, r=8, p=1 costs ~16 MiB and a few tens of ms per login.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
# An unknown or inactive login is checked against this hash (of a password nobody has), so it costs the
# same scrypt run as a known one: the answer's timing does not tell which logins exist.
DUMMY_HASH = ("scrypt$16384$8$1$a849cf7e0aae8564193357eaca7fa924$"
              "ddd0f42b55692a90c79ab05a25fa626c6da42e30548c826f868abad576a250ac")


@dataclass(frozen=True, slots=True)
class User:
    id: int
    login: str
    role: str
    extension: str | None
    display_name: str
    active: bool
    version: int = 1  # bumped by every change; an edit based on an older version is refused
    devices: tuple[str, ...] = ()  # normalised device names (crm.devices), sorted
    language: str | None = None  # None: the browser's Accept-Language, else the company setting

    @property
    def sees_everything(self) -> bool:
        # The accountant chases every client's money; the warehouse ships every client's deals.
        return self.role in ("head", "admin", "accountant", "warehouse")


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    csrf_token: str


USER_COLUMNS = """u.id, u.login, u.role, u.extension, u.display_name, u.active, u.version, u.language,
ARRAY(SELECT d.device FROM user_devices d WHERE d.user_id = u.id ORDER BY d.device) AS devices"""
SELECT_USER = f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1"
SELECT_USER_BY_LOGIN = f"SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.login = $1"
CLAIM_PASSWORD = "SELECT password_hash FROM users WHERE id = $1 AND active FOR UPDATE"
SELECT_USER_BY_EXTENSION = f"SELECT {USER_COLUMNS} FROM users u WHERE u.extension = $1"
LIST_USERS = f"SELECT {USER_COLUMNS} FROM users u ORDER BY u.display_name, u.id"
LIST_ASSIGNEES = f"""SELECT {USER_COLUMNS} FROM users u WHERE u.active AND u.role IN ('manager', 'head')
ORDER BY u.display_name, u.id"""
COUNT_USERS = "SELECT count(*) FROM users"
INSERT_USER = f"""
INSERT INTO users AS u (login, password_hash, role, extension, display_name)
VALUES ($1, $2, $3, $4, $5) RETURNING {USER_COLUMNS}
"""
LOCK_USER = "SELECT login, version FROM users WHERE id = $1 FOR UPDATE"
UPDATE_USER = f"""
UPDATE users AS u SET role = $2, extension = $3, display_name = $4, active = $5, version = u.version + 1
WHERE u.id = $1 RETURNING {USER_COLUMNS}
"""
UPDATE_PASSWORD = "UPDATE users SET password_hash = $2 WHERE id = $1"
UPDATE_LANGUAGE = "UPDATE users SET language = $2 WHERE id = $1"
INSERT_SESSION = "INSERT INTO sessions (token_hash, user_id, csrf_token, expires_at) VALUES ($1, $2, $3, $4)"
SELECT_SESSION = f"""
SELECT {USER_COLUMNS}, s.csrf_token FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = $1 AND s.expires_at > now() AND u.active
"""
DELETE_SESSION = "DELETE FROM sessions WHERE token_hash = $1"
DELETE_USER_SESSIONS = "DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2"
DELETE_EXPIRED_SESSIONS = "DELETE FROM sessions WHERE expires_at <= now()"
INSERT_TOKEN = "INSERT INTO api_tokens (user_id, token_hash, name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
SELECT_TOKEN_USER = f"""
UPDATE api_tokens t SET last_used_at = now() FROM users u
WHERE t.token_hash = $1 AND u.id = t.user_id AND u.active
RETURNING {USER_COLUMNS}
"""
INSERT_ATTEMPT = "INSERT INTO login_attempts (login, remote, success) VALUES ($1, $2, $3)"
# One statement claims a slot in every bucket at once (keys sorted, so two claims never deadlock); the
# attempt goes ahead only if every bucket had room. Rows are locked by the upsert, so parallel guesses
# are counted one after another: 11 at once get 5 slots, not 11.
CLAIM_THROTTLE = """
INSERT INTO login_throttle AS t (key, capacity, level, updated_at)
SELECT key, capacity, 1, $3 FROM unnest($1::text[], $2::int[]) AS c(key, capacity)
ON CONFLICT (key) DO UPDATE SET
    capacity = EXCLUDED.capacity,
    level = least(greatest(t.level - greatest(extract(epoch FROM EXCLUDED.updated_at - t.updated_at), 0)
                           * EXCLUDED.capacity / $4, 0) + 1, EXCLUDED.capacity + 1),
    updated_at = greatest(t.updated_at, EXCLUDED.updated_at)
RETURNING key, level <= capacity AS granted
"""
# A right password gives its slots back (an office behind one address is not throttled by its own logins)
# and empties the bucket of this login at this address: the person is who they said.
REFUND_THROTTLE = """
UPDATE login_throttle SET level = CASE WHEN key LIKE 'pair:%' THEN 0 ELSE greatest(level - 1, 0) END
WHERE key = ANY($1::text[])
"""
KNOWN_ADDRESS = """
SELECT EXISTS (SELECT 1 FROM login_attempts WHERE login = $1 AND remote = $2 AND success AND at > $3)
"""
DELETE_OLD_THROTTLE = "DELETE FROM login_throttle WHERE updated_at < $1"


def _user(row: asyncpg.Record) -> User:
    return User(row["id"], row["login"], row["role"], row["extension"], row["display_name"], row["active"],
                row["version"], tuple(row["devices"]), row["language"])


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        candidate = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(digest) // 2
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(candidate.hex(), digest)


def hash_token(token: str, pepper: str = "") -> str:
    """Tokens are stored hashed: a database dump gives no working session or API token."""
    return hmac.new(pepper.encode(), token.encode(), hashlib.sha256).hexdigest()


def _validate(login: str, role: str, extension: str | None, display_name: str) -> None:
    if role not in ROLES:
        raise ValidationError("role", f"must be one of {', '.join(ROLES)}")
    if not login or len(login) > 64 or not all(c.isalnum() or c in "_.-" for c in login) or login != login.lower():
        raise ValidationError("login", "use 2-64 lower-case letters, digits, '.', '_' or '-'")
    if extension is not None and not (extension.isdigit() and 2 <= len(extension) <= 6):
        raise ValidationError("extension", "must be 2 to 6 digits")
    if not display_name.strip():
        raise ValidationError("display_name", "is empty")


async def create_user(
    conn: asyncpg.Connection,
    login: str,
    password: str,
    role: str,
    extension: str | None,
    display_name: str,
    devices: str | Iterable[str] = (),
) -> User:
    _validate(login, role, extension, display_name)
    wanted = devices_db.parse_devices(devices)
    if len(password) < 4:
        raise ValidationError("password", "must be at least 4 characters")
    hashed = await hash_password_off_loop(password)
    async with conn.transaction():
        try:
            row = await conn.fetchrow(INSERT_USER, login, hashed, role, extension, display_name)
        except asyncpg.UniqueViolationError as exc:
            what = "extension" if "extension" in (exc.constraint_name or "") else "login"
            raise Conflict(f"a user with this {what} already exists") from exc
        user = _user(row)
        if wanted:
            user = replace(user, devices=await devices_db.set_devices(conn, user.id, wanted))
    return user


async def update_user(
    conn: asyncpg.Connection, user_id: int, role: str, extension: str | None, display_name: str, active: bool,
    *, version: int | None = None, devices: str | Iterable[str] | None = None,
) -> User:
    """Change a user; with `version`, only if nobody changed them since (Conflict otherwise); with `devices`,
    they become the user's devices. Two identical updates at once: one applies, the other is stale."""
    wanted = None if devices is None else devices_db.parse_devices(devices)
    async with conn.transaction():
        # Claim the row first: a concurrent update waits here, then sees the version this one leaves.
        current = await conn.fetchrow(LOCK_USER, user_id)
        if current is None:
            raise NotFound("user")
        if version is not None and version != current["version"]:
            raise Conflict(f"someone changed this user meanwhile (now version {current['version']}, the edit was "
                           f"based on {version}); reload and make the change again")
        _validate(current["login"], role, extension, display_name)
        try:
            row = await conn.fetchrow(UPDATE_USER, user_id, role, extension, display_name, active)
        except asyncpg.UniqueViolationError as exc:
            raise Conflict("another user has this extension") from exc
        user = _user(row)
        if wanted is not None:
            user = replace(user, devices=await devices_db.set_devices(conn, user_id, wanted))
    return user


async def set_password(conn: asyncpg.Connection, user_id: int, password: str) -> None:
    await conn.execute(UPDATE_PASSWORD, user_id, await hash_password_off_loop(password))


async def set_language(conn: asyncpg.Connection, user_id: int, language: str | None) -> None:
    """None returns the person to the browser's language."""
    if language is not None and language not in LANGUAGES:
        raise ValidationError("language", f"one of {', '.join(LANGUAGES)}")
    await conn.execute(UPDATE_LANGUAGE, user_id, language)


async def get_user(conn: asyncpg.Connection, user_id: int) -> User | None:
    row = await conn.fetchrow(SELECT_USER, user_id)
    return _user(row) if row else None


async def get_user_by_login(conn: asyncpg.Connection, login: str) -> User | None:
    row = await conn.fetchrow(SELECT_USER_BY_LOGIN, login)
    return _user(row) if row else None


async def get_user_by_extension(conn: asyncpg.Connection, extension: str) -> User | None:
    row = await conn.fetchrow(SELECT_USER_BY_EXTENSION, extension)
    return _user(row) if row else None


async def list_users(conn: asyncpg.Connection) -> list[User]:
    return [_user(row) for row in await conn.fetch(LIST_USERS)]


async def list_assignees(conn: asyncpg.Connection) -> list[User]:
    """Who a client, lead, deal or missed caller can be given to: active managers and heads, by name."""
    return [_user(row) for row in await conn.fetch(LIST_ASSIGNEES)]


async def count_users(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(COUNT_USERS)


async def change_own_password(conn: asyncpg.Connection, user: User, current: str, new: str,
                              keep_token_hash: str) -> bool:
    """A person changes their own password: False when `current` is wrong. Their other sessions end;
    the one making the change stays. scrypt runs in a thread."""
    async with conn.transaction():
        stored = await conn.fetchval(CLAIM_PASSWORD, user.id)
        if stored is None or not await asyncio.to_thread(verify_password, current, stored):
            return False
        await set_password(conn, user.id, new)
        await delete_user_sessions(conn, user.id, keep_token_hash)
    return True


async def hash_password_off_loop(password: str) -> str:
    """scrypt takes tens of milliseconds of CPU: in a thread, so AMI events and popups do not wait."""
    return await asyncio.to_thread(hash_password, password)


def _throttle_keys(login: str, remote: str, known_address: bool) -> dict[str, int]:
    keys = {f"addr:{remote}": THROTTLE_MAX_PER_ADDRESS, f"pair:{remote}|{login}": THROTTLE_MAX_FAILURES}
    if not known_address:
        keys[f"login:{login}"] = THROTTLE_MAX_PER_LOGIN
    return keys


async def claim_login_attempt(conn: asyncpg.Connection, login: str, remote: str, now: datetime) -> list[str]:
    """Take a slot in each bucket of this attempt; return the claimed keys, or raise TooManyAttempts."""
    known = await conn.fetchval(KNOWN_ADDRESS, login, remote, now - timedelta(days=KNOWN_ADDRESS_DAYS))
    buckets = sorted(_throttle_keys(login, remote, known).items())
    rows = await conn.fetch(CLAIM_THROTTLE, [k for k, _ in buckets], [c for _, c in buckets], now,
                            THROTTLE_WINDOW.total_seconds())
    if not all(row["granted"] for row in rows):
        raise TooManyAttempts(login)
    return [k for k, _ in buckets]


async def authenticate(conn: asyncpg.Connection, login: str, password: str, remote: str, now: datetime) -> User:
    """Check a login, throttled per address, per login at an address, and per login (see THROTTLE_*)."""
    # PostgreSQL text cannot hold NUL; such a login cannot exist, but it still costs a check and a slot.
    login = (login or "").replace("\x00", "\ufffd").strip().lower()[:64]
    remote = remote.replace("\x00", "\ufffd")[:64]
    claimed = await claim_login_attempt(conn, login, remote, now)
    row = await conn.fetchrow(SELECT_USER_BY_LOGIN, login)
    known = row is not None and row["active"]
    matches = await asyncio.to_thread(verify_password, password or "", row["password_hash"] if known else DUMMY_HASH)
    ok = known and matches
    await conn.execute(INSERT_ATTEMPT, login, remote, ok)
    if not ok:
        raise AuthenticationFailed(login)
    await conn.execute(REFUND_THROTTLE, claimed)
    await conn.execute(DELETE_OLD_THROTTLE, now - THROTTLE_WINDOW)  # drained buckets; the table stays small
    return _user(row)


async def create_session(conn: asyncpg.Connection, user: User, pepper: str, now: datetime) -> tuple[str, str]:
    """Return (cookie token, csrf token)."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    await conn.execute(INSERT_SESSION, hash_token(token, pepper), user.id, csrf, now + SESSION_LIFETIME)
    return token, csrf


async def get_session(conn: asyncpg.Connection, token: str, pepper: str) -> Session | None:
    row = await conn.fetchrow(SELECT_SESSION, hash_token(token, pepper))
    return Session(_user(row), row["csrf_token"]) if row else None


async def delete_session(conn: asyncpg.Connection, token: str, pepper: str) -> None:
    await conn.execute(DELETE_SESSION, hash_token(token, pepper))


async def delete_user_sessions(conn: asyncpg.Connection, user_id: int, keep_token_hash: str = "") -> None:
    """End every session of a user (deactivated, password reset), except the one that made the change."""
    await conn.execute(DELETE_USER_SESSIONS, user_id, keep_token_hash)


async def delete_expired_sessions(conn: asyncpg.Connection) -> None:
    await conn.execute(DELETE_EXPIRED_SESSIONS)


async def add_api_token(conn: asyncpg.Connection, user_id: int, token: str, name: str, pepper: str = "") -> None:
    await conn.execute(INSERT_TOKEN, user_id, hash_token(token, pepper), name)


async def get_token_user(conn: asyncpg.Connection, token: str, pepper: str = "") -> User | None:
    row = await conn.fetchrow(SELECT_TOKEN_USER, hash_token(token, pepper))
    return _user(row) if row else None
