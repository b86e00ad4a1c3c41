"""API tokens: created for a person with a name and a scope, shown once, stored hashed, revoked."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from crm.errors import NotFound, ValidationError
from crm.users import USER_COLUMNS, User, _user, hash_token

# read: GET only; full: everything the person may do; routing: only the dialplan's routing door.
SCOPES = ("read", "full", "routing")
TOKEN_PREFIX = "cb_"
MAX_TOKENS_PER_USER = 50


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    user_id: int
    user_login: str
    name: str
    scope: str
    hint: str
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class TokenUse:
    """Who a presented token acts for, and what it may do."""

    user: User
    scope: str


_TOKEN_COLUMNS = "t.id, t.user_id, u.login AS user_login, t.name, t.scope, t.hint, t.created_at, t.last_used_at"
INSERT_TOKEN = f"""
WITH t AS (INSERT INTO api_tokens (user_id, token_hash, name, scope, hint) VALUES ($1, $2, $3, $4, $5) RETURNING *)
SELECT {_TOKEN_COLUMNS} FROM t JOIN users u ON u.id = t.user_id
"""
# The person's row is claimed first: two creations at once cannot both pass the count.
LOCK_OWNER = "SELECT id FROM users WHERE id = $1 AND active FOR UPDATE"
COUNT_TOKENS = "SELECT count(*) FROM api_tokens WHERE user_id = $1"
LIST_TOKENS = f"""
SELECT {_TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id
WHERE $1::bigint IS NULL OR t.user_id = $1 ORDER BY t.created_at DESC, t.id DESC
"""
# Only one's own token, unless an admin revokes it.
DELETE_TOKEN = "DELETE FROM api_tokens WHERE id = $1 AND ($2::bigint IS NULL OR user_id = $2) RETURNING id"
USE_TOKEN = f"""
UPDATE api_tokens t SET last_used_at = now() FROM users u
WHERE t.token_hash = $1 AND u.id = t.user_id AND u.active
RETURNING {USER_COLUMNS}, t.scope
"""


def _token(row: asyncpg.Record) -> ApiToken:
    return ApiToken(**dict(row))


def clean_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("name", "is required")
    if len(name.strip()) > 100 or "\x00" in name:
        raise ValidationError("name", "must be at most 100 characters")
    return name.strip()


def clean_scope(scope: object) -> str:
    if scope not in SCOPES:
        raise ValidationError("scope", f"must be one of {', '.join(SCOPES)}")
    return str(scope)


async def create_token(conn: asyncpg.Connection, user_id: int, name: object, scope: object = "full"
                       ) -> tuple[ApiToken, str]:
    """A new token for the person: (what is stored, the secret, to be shown once and never again)."""
    name, scope = clean_name(name), clean_scope(scope)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    async with conn.transaction():
        if await conn.fetchval(LOCK_OWNER, user_id) is None:
            raise NotFound("user")
        if await conn.fetchval(COUNT_TOKENS, user_id) >= MAX_TOKENS_PER_USER:
            raise ValidationError("name", f"at most {MAX_TOKENS_PER_USER} tokens a person; revoke unused ones")
        row = await conn.fetchrow(INSERT_TOKEN, user_id, hash_token(secret), name, scope, secret[-4:])
    return _token(row), secret


async def list_tokens(conn: asyncpg.Connection, user_id: int | None) -> list[ApiToken]:
    """One person's tokens, or everyone's (None)."""
    return [_token(row) for row in await conn.fetch(LIST_TOKENS, user_id)]


async def revoke_token(conn: asyncpg.Connection, viewer: User, token_id: int) -> None:
    """The owner revokes their token, an admin anyone's; revoking twice finds nothing the second time."""
    owner = None if viewer.role == "admin" else viewer.id
    if await conn.fetchval(DELETE_TOKEN, token_id, owner) is None:
        raise NotFound("token")


async def use_token(conn: asyncpg.Connection, secret: str) -> TokenUse | None:
    """The person and scope of a presented token (None: unknown, revoked, or its person deactivated)."""
    row = await conn.fetchrow(USE_TOKEN, hash_token(secret))
    return TokenUse(_user(row), row["scope"]) if row else None
