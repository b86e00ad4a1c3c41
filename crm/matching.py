"""Who is calling: a caller's number → contact / company and their manager, by index only."""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from crm.phones import normalise_caller


@dataclass(frozen=True, slots=True)
class CallerMatch:
    contact_id: int | None
    company_id: int | None
    manager_id: int | None
    contact_name: str | None
    company_name: str | None
    # The manager's user, read in the same query: routing needs no second round trip.
    manager_extension: str | None = None
    manager_active: bool = False
    manager_name: str | None = None


_MATCH_SELECT = """
SELECT p.contact_id, coalesce(ct.company_id, p.company_id) AS company_id,
       coalesce(ct.manager_id, co.manager_id) AS manager_id, ct.name AS contact_name, co.name AS company_name,
       u.extension AS manager_extension, coalesce(u.active, false) AS manager_active,
       u.display_name AS manager_name
FROM phones p
LEFT JOIN contacts ct ON ct.id = p.contact_id
LEFT JOIN companies co ON co.id = coalesce(ct.company_id, p.company_id)
LEFT JOIN users u ON u.id = coalesce(ct.manager_id, co.manager_id)
"""
# A person's own phone wins over a company switchboard number.
MATCH_EXACT = _MATCH_SELECT + "WHERE p.e164 = $1 ORDER BY p.contact_id IS NULL, p.id LIMIT 1"
# Last-N-digits: a range on reverse(e164) that the text_pattern_ops index serves even in a generic
# plan (LIKE $1 || '%' would not be indexable once the statement is prepared). ':' sorts right after '9'.
MATCH_SUFFIX = _MATCH_SELECT + """
WHERE reverse(p.e164) ~>=~ $1 AND reverse(p.e164) ~<~ ($1 || ':')
ORDER BY p.contact_id IS NULL, p.id LIMIT 1
"""


def _match(row: asyncpg.Record | None) -> CallerMatch | None:
    if row is None:
        return None
    return CallerMatch(*row)


async def find_caller(conn: asyncpg.Connection, number: str, region: str,
                      suffix_digits: int = 10) -> CallerMatch | None:
    """Exact E.164 first; then, for numbers that came without a country code, their last N digits."""
    e164 = normalise_caller(number, region)
    if e164 is not None:
        match = _match(await conn.fetchrow(MATCH_EXACT, e164))
        if match is not None:
            return match
    digits = re.sub(r"\D", "", number or "")
    if len(digits) >= suffix_digits and not (number or "").lstrip().startswith("+"):
        return _match(await conn.fetchrow(MATCH_SUFFIX, digits[-suffix_digits:][::-1]))
    return None
