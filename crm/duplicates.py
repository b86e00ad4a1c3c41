"""Duplicates of contacts and companies: a phone, e-mail or tax id (INN) another record of the kind already has."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from crm.errors import Duplicate

# $1 the values, $2 the record being edited (NULL on create): the first other record holding one of them.
FIND = {
    # A number with an extension (an office line) is a duplicate only with the same extension.
    ("contact", "phones"): """SELECT contact_id FROM phones WHERE e164 = ANY($1::text[]) AND contact_id IS NOT NULL
                              AND contact_id IS DISTINCT FROM $2
                              AND e164 || ';' || coalesce(extension, '') = ANY($3::text[])
                              ORDER BY contact_id LIMIT 1""",
    ("company", "phones"): """SELECT company_id FROM phones WHERE e164 = ANY($1::text[]) AND company_id IS NOT NULL
                              AND company_id IS DISTINCT FROM $2
                              AND e164 || ';' || coalesce(extension, '') = ANY($3::text[])
                              ORDER BY company_id LIMIT 1""",
    ("contact", "emails"): """SELECT contact_id FROM emails WHERE email = ANY($1::text[]) AND contact_id IS NOT NULL
                              AND contact_id IS DISTINCT FROM $2 ORDER BY contact_id LIMIT 1""",
    ("company", "emails"): """SELECT company_id FROM emails WHERE email = ANY($1::text[]) AND company_id IS NOT NULL
                              AND company_id IS DISTINCT FROM $2 ORDER BY company_id LIMIT 1""",
    ("company", "tax_id"): """SELECT id FROM companies WHERE upper(tax_id) = ANY($1::text[])
                              AND id IS DISTINCT FROM $2 ORDER BY id LIMIT 1""",
}
# Two saves of the same new number at once must not both pass the check: each takes a lock per value, held to
# the end of its transaction, in one order (sorted), so the second waits and then sees the first's row.
LOCK_VALUE = "SELECT pg_advisory_xact_lock(hashtextextended($1, 23))"
MESSAGES = {"phones": "a {kind} with this phone already exists", "emails": "a {kind} with this e-mail already exists",
            "tax_id": "a company with this tax id (INN) already exists"}


async def check_duplicates(conn: asyncpg.Connection, kind: str, phones: Sequence[tuple[str, str | None]],
                           emails: Sequence[str], tax_id: str | None, own_id: int | None = None) -> None:
    """Raise Duplicate for the first value another record of `kind` holds; `phones` are (e164, extension).
    Call inside the saving transaction."""
    keys = sorted({f"{e164};{extension or ''}" for e164, extension in phones})
    values = {"phones": keys, "emails": sorted(set(emails)),
              "tax_id": [tax_id.upper()] if tax_id and kind == "company" else []}
    for value in sorted(f"{kind}:{name}:{v}" for name, vs in values.items() for v in vs):
        await conn.execute(LOCK_VALUE, value)
    for name in ("tax_id", "phones", "emails"):
        if values[name]:
            if name == "phones":
                existing = await conn.fetchval(FIND[(kind, name)], sorted({e for e, _ in phones}), own_id, keys)
            else:
                existing = await conn.fetchval(FIND[(kind, name)], values[name], own_id)
            if existing is not None:
                raise Duplicate(name, existing, MESSAGES[name].format(kind=kind))
