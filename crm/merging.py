"""Merging two contacts or two companies: everything of the other record moves to the kept one, then the other
is deleted, with an audit entry saying who merged what and when."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from crm.contacts import Kind
from crm.errors import Conflict, Forbidden, NotFound, ValidationError
from crm.users import User

TABLES = {"contact": "contacts", "company": "companies"}
# Both rows claimed first, in id order: two merges of the same pair (either way round) run one after the other
# instead of deadlocking, and the second finds its record gone.
LOCK_PAIR = {
    "contact": "SELECT id, name, manager_id, company_id, notes FROM contacts WHERE id = ANY($1::bigint[]) "
               "ORDER BY id FOR UPDATE",
    "company": "SELECT id, name, manager_id, NULL::bigint AS company_id, notes, tax_id FROM companies "
               "WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
}
ALREADY_MERGED = "SELECT kept_id FROM party_merges WHERE kind = $1 AND merged_id = $2"
# Every single-column foreign key to the table, read from the catalog: calls, mail, deals, tasks, notes, leads,
# phones, e-mails, invoices… and whatever a later migration adds, so a merge can never leave rows to be
# cascaded away or nulled when the other record is deleted. Names come quoted from PostgreSQL itself.
REFERENCES = """
SELECT c.conrelid::regclass::text AS table_name, quote_ident(a.attname) AS column_name
FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
WHERE c.contype = 'f' AND c.confrelid = $1::regclass AND cardinality(c.conkey) = 1
ORDER BY 1, 2
"""
# The same number or address on both would break the per-record unique indexes: the kept record's copy stays.
DROP_SHARED_PHONES = {
    "contact": """DELETE FROM phones o USING phones k WHERE o.contact_id = $2 AND k.contact_id = $1
                  AND k.e164 = o.e164 AND coalesce(k.extension, '') = coalesce(o.extension, '')""",
    "company": """DELETE FROM phones o USING phones k WHERE o.company_id = $2 AND k.company_id = $1
                  AND k.e164 = o.e164 AND coalesce(k.extension, '') = coalesce(o.extension, '')""",
}
DROP_SHARED_EMAILS = {
    "contact": """DELETE FROM emails o USING emails k WHERE o.contact_id = $2 AND k.contact_id = $1
                  AND k.email = o.email""",
    "company": """DELETE FROM emails o USING emails k WHERE o.company_id = $2 AND k.company_id = $1
                  AND k.email = o.email""",
}
SNAPSHOT = {
    "contact": """SELECT json_build_object('phones', (SELECT coalesce(json_agg(e164 ORDER BY id), '[]') FROM phones
                                                       WHERE contact_id = $1),
                                           'emails', (SELECT coalesce(json_agg(email ORDER BY id), '[]') FROM emails
                                                       WHERE contact_id = $1))""",
    "company": """SELECT json_build_object('phones', (SELECT coalesce(json_agg(e164 ORDER BY id), '[]') FROM phones
                                                       WHERE company_id = $1),
                                           'emails', (SELECT coalesce(json_agg(email ORDER BY id), '[]') FROM emails
                                                       WHERE company_id = $1))""",
}
# The kept record takes what it lacks from the other: a manager, a company, a tax id; notes are joined.
UPDATE_KEPT = {
    "contact": """UPDATE contacts SET manager_id = coalesce(manager_id, $2), company_id = coalesce(company_id, $3),
                  notes = $4, version = version + 1, updated_at = now() WHERE id = $1""",
    "company": """UPDATE companies SET manager_id = coalesce(manager_id, $2), tax_id = coalesce(tax_id, $3),
                  notes = $4, version = version + 1, updated_at = now() WHERE id = $1""",
}
DELETE = {"contact": "DELETE FROM contacts WHERE id = $1", "company": "DELETE FROM companies WHERE id = $1"}
INSERT_AUDIT = """
INSERT INTO party_merges (kind, kept_id, merged_id, merged_name, merged_data, moved, user_id)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, created_at
"""
LIST_AUDIT = """
SELECT m.id, m.kind, m.kept_id, m.merged_id, m.merged_name, m.moved, m.user_id, u.display_name AS user_name,
       m.created_at
FROM party_merges m LEFT JOIN users u ON u.id = m.user_id
WHERE m.kind = $1 AND m.kept_id = $2 ORDER BY m.created_at DESC, m.id DESC
"""


@dataclass(frozen=True, slots=True)
class Merge:
    """The audit entry of one merge; `moved` counts the rows moved per table and column."""

    id: int
    kind: str
    kept_id: int
    merged_id: int
    merged_name: str
    moved: dict[str, int]
    user_id: int | None
    created_at: datetime
    user_name: str | None = None


def _may_merge(viewer: User, rows: list[asyncpg.Record]) -> bool:
    """The head and admin merge any two; a manager only two records of their own."""
    if viewer.role in ("head", "admin"):
        return True
    return viewer.role == "manager" and all(r["manager_id"] == viewer.id for r in rows)


async def merge_parties(conn: asyncpg.Connection, viewer: User, kind: Kind, kept_id: int, other_id: int) -> Merge:
    """Move everything of `other_id` to `kept_id` and delete the other, in one transaction."""
    if kept_id == other_id:
        raise ValidationError("other_id", "a record cannot be merged with itself")
    try:
        async with conn.transaction():
            rows = await conn.fetch(LOCK_PAIR[kind], [kept_id, other_id])
            if len(rows) < 2:
                gone = other_id if all(r["id"] != other_id for r in rows) else kept_id
                if await conn.fetchval(ALREADY_MERGED, kind, gone) is not None:
                    raise Conflict(f"{kind} {gone} has already been merged")
                raise NotFound(kind)
            if not _may_merge(viewer, rows):
                if viewer.sees_everything or any(r["manager_id"] in (None, viewer.id) for r in rows):
                    raise Forbidden("a manager merges only two records of their own; ask the head")
                raise NotFound(kind)
            kept, other = (rows[0], rows[1]) if rows[0]["id"] == kept_id else (rows[1], rows[0])
            snapshot = json.loads(await conn.fetchval(SNAPSHOT[kind], other_id))
            await conn.execute(DROP_SHARED_PHONES[kind], kept_id, other_id)
            await conn.execute(DROP_SHARED_EMAILS[kind], kept_id, other_id)
            moved: dict[str, int] = {}
            for ref in await conn.fetch(REFERENCES, TABLES[kind]):
                table, column = ref["table_name"], ref["column_name"]
                # Identifiers from the catalog, quoted by PostgreSQL; the values stay parameters.
                status = await conn.execute(f"UPDATE {table} SET {column} = $1 WHERE {column} = $2",  # noqa: S608
                                            kept_id, other_id)
                count = int(status.split()[-1])
                if count:
                    moved[f"{table}.{column}".replace('"', "")] = count
            notes = "\n\n".join(n for n in (kept["notes"], other["notes"]) if n)[:10000]
            third = other["tax_id"] if kind == "company" else other["company_id"]
            if kind == "contact" and third == kept_id:
                third = None
            await conn.execute(UPDATE_KEPT[kind], kept_id, other["manager_id"], third, notes)
            await conn.execute(DELETE[kind], other_id)
            data = {**snapshot, "manager_id": other["manager_id"], "notes": other["notes"]}
            row = await conn.fetchrow(INSERT_AUDIT, kind, kept_id, other_id, other["name"], json.dumps(data),
                                      json.dumps(moved), viewer.id or None)
    except asyncpg.UniqueViolationError as exc:
        # e.g. both companies have a contract with the same number: nothing moved, the person decides.
        raise Conflict(f"the two records cannot be merged as they are: {exc.detail or exc}") from exc
    return Merge(row["id"], kind, kept_id, other_id, other["name"], moved, viewer.id or None, row["created_at"],
                 viewer.display_name)


async def list_merges(conn: asyncpg.Connection, kind: Kind, kept_id: int) -> list[Merge]:
    return [Merge(**{**dict(r), "moved": json.loads(r["moved"]) if isinstance(r["moved"], str) else r["moved"]})
            for r in await conn.fetch(LIST_AUDIT, kind, kept_id)]
