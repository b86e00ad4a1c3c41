"""Figures for /metrics that live in the database: today's calls by outcome, recent login failures, and the
outboxes of webhooks and outgoing mail."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

CALLS_SINCE = "SELECT outcome, count(*) AS n FROM calls WHERE started_at >= $1 GROUP BY outcome"
LOGIN_FAILURES_SINCE = "SELECT count(*) FROM login_attempts WHERE NOT success AND at >= $1"
WEBHOOK_DELIVERIES = "SELECT state, count(*) AS n FROM webhook_deliveries GROUP BY state"
OUTGOING_MAIL = "SELECT state, count(*) AS n FROM outgoing_mail GROUP BY state"


async def database_figures(conn: asyncpg.Connection, now: datetime, day_start: datetime) -> dict[str, dict[str, int]]:
    """{figure: {label: value}}; the tables of later migrations count as empty until they exist."""
    figures = {
        "calls_today": {r["outcome"]: r["n"] for r in await conn.fetch(CALLS_SINCE, day_start)},
        "login_failures_last_hour": {"": await conn.fetchval(LOGIN_FAILURES_SINCE, now - timedelta(hours=1))},
    }
    for name, sql, table in (("webhook_deliveries", WEBHOOK_DELIVERIES, "webhook_deliveries"),
                             ("outgoing_mail", OUTGOING_MAIL, "outgoing_mail")):
        exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
        figures[name] = {r["state"]: r["n"] for r in await conn.fetch(sql)} if exists else {}
    return figures
