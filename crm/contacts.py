"""Companies and contacts with their phones and e-mails; who may see and change them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import asyncpg

from crm import paging
from crm.duplicates import check_duplicates
from crm.errors import Conflict, Forbidden, NotFound, ValidationError
from crm.phones import format_phone, parse_phone
from crm.users import User

Kind = Literal["contact", "company"]


@dataclass(frozen=True, slots=True)
class PhoneEntry:
    e164: str
    extension: str | None
    raw: str
    label: str

    @property
    def display(self) -> str:
        return format_phone(self.e164, self.extension)


@dataclass(frozen=True, slots=True)
class Party:
    """A contact or a company, as stored."""

    kind: Kind
    id: int
    name: str
    manager_id: int | None
    manager_name: str | None
    notes: str
    company_id: int | None = None
    company_name: str | None = None
    tax_id: str | None = None
    phones: tuple[PhoneEntry, ...] = ()
    emails: tuple[str, ...] = ()
    version: int = 1
    # Where a search placed it: 0 the name starts with the text, 1 any other match; None outside a search.
    search_group: int | None = None


@dataclass(slots=True)
class PartyInput:
    """What a person submits for a contact or a company; validated by `clean_input`."""

    name: str
    manager_id: int | None = None
    notes: str = ""
    company_id: int | None = None
    tax_id: str | None = None
    phones: list[tuple[str, str]] = field(default_factory=list)  # (raw text, label)
    emails: list[str] = field(default_factory=list)


_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

# Visibility: a manager sees what is theirs and what is unassigned; head and admin see all.
_VISIBLE = "($2::bigint IS NULL OR p.manager_id = $2 OR p.manager_id IS NULL)"

SELECT_CONTACT = f"""
SELECT p.id, p.name, p.manager_id, u.display_name AS manager_name, p.notes, p.company_id,
       c.name AS company_name, NULL::text AS tax_id, p.version
FROM contacts p LEFT JOIN users u ON u.id = p.manager_id LEFT JOIN companies c ON c.id = p.company_id
WHERE p.id = $1 AND {_VISIBLE}
"""
SELECT_COMPANY = f"""
SELECT p.id, p.name, p.manager_id, u.display_name AS manager_name, p.notes, NULL::bigint AS company_id,
       NULL::text AS company_name, p.tax_id, p.version
FROM companies p LEFT JOIN users u ON u.id = p.manager_id
WHERE p.id = $1 AND {_VISIBLE}
"""
SELECT_PHONES = {
    "contact": "SELECT e164, extension, raw, label FROM phones WHERE contact_id = $1 ORDER BY id",
    "company": "SELECT e164, extension, raw, label FROM phones WHERE company_id = $1 ORDER BY id",
}
SELECT_EMAILS = {
    "contact": "SELECT email FROM emails WHERE contact_id = $1 ORDER BY id",
    "company": "SELECT email FROM emails WHERE company_id = $1 ORDER BY id",
}
DELETE_PHONES = {
    "contact": "DELETE FROM phones WHERE contact_id = $1",
    "company": "DELETE FROM phones WHERE company_id = $1",
}
DELETE_EMAILS = {
    "contact": "DELETE FROM emails WHERE contact_id = $1",
    "company": "DELETE FROM emails WHERE company_id = $1",
}
INSERT_PHONE = {
    "contact": "INSERT INTO phones (contact_id, e164, extension, raw, label) VALUES ($1, $2, $3, $4, $5)",
    "company": "INSERT INTO phones (company_id, e164, extension, raw, label) VALUES ($1, $2, $3, $4, $5)",
}
INSERT_EMAIL = {
    "contact": "INSERT INTO emails (contact_id, email) VALUES ($1, $2)",
    "company": "INSERT INTO emails (company_id, email) VALUES ($1, $2)",
}
INSERT_CONTACT = "INSERT INTO contacts (name, company_id, manager_id, notes) VALUES ($1, $2, $3, $4) RETURNING id"
UPDATE_CONTACT = """
UPDATE contacts SET name = $2, company_id = $3, manager_id = $4, notes = $5, version = version + 1,
       updated_at = now()
WHERE id = $1
"""
INSERT_COMPANY = "INSERT INTO companies (name, tax_id, manager_id, notes) VALUES ($1, $2, $3, $4) RETURNING id"
UPDATE_COMPANY = """
UPDATE companies SET name = $2, tax_id = $3, manager_id = $4, notes = $5, version = version + 1,
       updated_at = now()
WHERE id = $1
"""
# An edit claims the row before it reads the current values and rewrites the phones and e-mails:
# two saves at once then run one after the other instead of colliding on the unique phone index.
LOCK_PARTY = {
    "contact": "SELECT version FROM contacts WHERE id = $1 FOR UPDATE",
    "company": "SELECT version FROM companies WHERE id = $1 FOR UPDATE",
}
LIST_PHONES_OF = {
    "contact": "SELECT contact_id AS owner_id, e164, extension, raw, label FROM phones "
               "WHERE contact_id = ANY($1::bigint[]) ORDER BY id",
    "company": "SELECT company_id AS owner_id, e164, extension, raw, label FROM phones "
               "WHERE company_id = ANY($1::bigint[]) ORDER BY id",
}
USER_EXISTS = "SELECT 1 FROM users WHERE id = $1"
CUSTOM_PLAN = "SET LOCAL plan_cache_mode = force_custom_plan"

# One search box: name, e-mail or phone in any format, best matches first: the names that start with the
# text (group 0), then every other match (group 1), each group in name order.
#
# Group 0 is a range of the name-order index (contacts_name_order_idx), walked from the text on, so a common
# surname's first page reads one page of rows however many names it starts. Under a linguistic collation the
# names starting with the text are not one range (in ru-RU "пётра" sorts between "петра" and "петрб"), and no
# upper bound is right for every collation; so group 0 is defined as "in the range [text, text + U+10FFFF)
# and starts with the text", which the index serves exactly, and group 1 as every other match: the two never
# overlap and together are every match whatever the collation. U+10FFFF sorts after every character in C and
# ICU; a collation where it did not would move some prefix matches to group 1, later but still found.
# The prefix test comes first: most of group 1's rows fail it at once and skip the collation comparisons.
_STARTS = ("(lower({a}.name) LIKE lower($1) || '%' AND lower({a}.name) >= lower($1)"
           " AND lower({a}.name) < lower($1) || chr(1114111))")
# $1 the text, $2 the viewer's scope, $3/$4 the key after which the page starts, $5 how many rows. The range
# starts at the later of the text and the cursor, as one row bound: given both as separate lower bounds the
# index scan may start from the first and filter its way to the second (it read every name before the text).
# The name check hides from the trigram index (`|| ''`): a generic plan would otherwise read every match.
_FIRST_LIST = """
SELECT {columns}
FROM {tables}
WHERE {visible}
  AND (lower(p.name), p.id) > (CASE WHEN $3::text < lower($1) THEN lower($1) ELSE $3::text END,
                               CASE WHEN $3::text < lower($1) THEN 0 ELSE $4::bigint END)
  AND lower(p.name) < lower($1) || chr(1114111) AND lower(p.name) || '' LIKE lower($1) || '%'
ORDER BY lower(p.name), p.id LIMIT $5
"""
# Group 1: $1 the text, $3 an E.164 guess (or NULL), $4 the reversed last digits typed (or NULL). Each branch
# is one index: trigram GIN for the name and e-mail fragments, phones_e164_idx and the reverse(e164) index
# for numbers; the union picks the page's rows. A fragment found in many names or e-mails (a domain) would
# make these branches every match: each keeps only the first page's worth in list order (a top-N sort, not
# a sort of every match), leaving out group 0 there so that what it keeps is all group 1.
# The name branch sorts on `lower(name) || ''` so that the planner never walks the name-order index
# instead, hoping for early matches: a fragment's matches may sort together, possibly late (that walk read
# half the table). The e-mail branch may walk it: a domain's matches are spread over the names.
_SEARCH = """
  AND NOT {starts_p}
  AND p.id IN ((SELECT n.id FROM {table} n
                WHERE lower(n.name) LIKE '%' || lower($1) || '%' AND NOT {starts_n} AND {visible_n}
                  AND (lower(n.name), n.id) > ($7::text, $8::bigint)
                ORDER BY lower(n.name) || '', n.id LIMIT $5::int + $6::int)
               UNION (SELECT n.id FROM {table} n
                      WHERE n.id IN (SELECT {owner} FROM emails WHERE email LIKE '%' || lower($1) || '%')
                        AND NOT {starts_n} AND {visible_n} AND (lower(n.name), n.id) > ($7::text, $8::bigint)
                      ORDER BY lower(n.name), n.id LIMIT $5::int + $6::int)
               UNION SELECT {owner} FROM phones WHERE {owner} IS NOT NULL
                                                  AND (e164 = $3 OR reverse(e164) LIKE $4 || '%'))
"""
_CONTACT_COLUMNS = """p.id, p.name, p.manager_id, u.display_name AS manager_name, p.notes, p.company_id,
       c.name AS company_name, NULL::text AS tax_id, p.version"""
_CONTACT_TABLES = ("contacts p LEFT JOIN users u ON u.id = p.manager_id"
                   " LEFT JOIN companies c ON c.id = p.company_id")
_COMPANY_COLUMNS = """p.id, p.name, p.manager_id, u.display_name AS manager_name, p.notes, NULL::bigint AS company_id,
       NULL::text AS company_name, p.tax_id, p.version"""
_COMPANY_TABLES = "companies p LEFT JOIN users u ON u.id = p.manager_id"
# Keyset: the page after (lower(name), id); the first page starts after ('', 0), names are never empty.
_LIST = """
SELECT {columns}
FROM {tables}
WHERE {visible} {search} AND (lower(p.name), p.id) > ($7::text, $8::bigint)
ORDER BY lower(p.name), p.id LIMIT $5 OFFSET $6
"""
# Without a search the text parameters are unused; they stay typed so both variants take the same arguments.
_UNUSED = "AND ($1::text, $3::text, $4::text) IS NOT DISTINCT FROM ($1, $3, $4)"
_VISIBLE_N = _VISIBLE.replace("p.", "n.")
LIST_CONTACTS = _LIST.format(columns=_CONTACT_COLUMNS, tables=_CONTACT_TABLES, visible=_VISIBLE, search=_UNUSED)
LIST_COMPANIES = _LIST.format(columns=_COMPANY_COLUMNS, tables=_COMPANY_TABLES, visible=_VISIBLE, search=_UNUSED)
SEARCH_CONTACTS_FIRST = _FIRST_LIST.format(columns=_CONTACT_COLUMNS, tables=_CONTACT_TABLES, visible=_VISIBLE)
SEARCH_COMPANIES_FIRST = _FIRST_LIST.format(columns=_COMPANY_COLUMNS, tables=_COMPANY_TABLES, visible=_VISIBLE)
SEARCH_CONTACTS = _LIST.format(columns=_CONTACT_COLUMNS, tables=_CONTACT_TABLES, visible=_VISIBLE,
                               search=_SEARCH.format(table="contacts", owner="contact_id", visible_n=_VISIBLE_N,
                                                     starts_p=_STARTS.format(a="p"), starts_n=_STARTS.format(a="n")))
SEARCH_COMPANIES = _LIST.format(columns=_COMPANY_COLUMNS, tables=_COMPANY_TABLES, visible=_VISIBLE,
                                search=_SEARCH.format(table="companies", owner="company_id", visible_n=_VISIBLE_N,
                                                      starts_p=_STARTS.format(a="p"), starts_n=_STARTS.format(a="n")))
LIST_COMPANY_CONTACTS = f"""
SELECT p.id, p.name, p.manager_id, u.display_name AS manager_name, p.notes, p.company_id,
       NULL::text AS company_name, NULL::text AS tax_id, p.version
FROM contacts p LEFT JOIN users u ON u.id = p.manager_id
WHERE p.company_id = $1 AND {_VISIBLE} ORDER BY lower(p.name)
"""
_SELECT = {"contact": SELECT_CONTACT, "company": SELECT_COMPANY}
_ALL = {"contact": LIST_CONTACTS, "company": LIST_COMPANIES}
_FIND_FIRST = {"contact": SEARCH_CONTACTS_FIRST, "company": SEARCH_COMPANIES_FIRST}
_FIND_REST = {"contact": SEARCH_CONTACTS, "company": SEARCH_COMPANIES}
_KEY = (str, int)
_SEARCH_KEY = (int, str, int)  # (group, lower(name), id)


def party_key(party: Party) -> tuple[str, int] | tuple[int, str, int]:
    """Where a party sits in a list: the `after` cursor of the page it ends."""
    if party.search_group is None:
        return party.name.lower(), party.id
    return party.search_group, party.name.lower(), party.id


def _scope(viewer: User) -> int | None:
    """The manager id a viewer is limited to, or None for head and admin."""
    return None if viewer.sees_everything else viewer.id


def _party(kind: Kind, row: asyncpg.Record, phones=(), emails=(), search_group: int | None = None) -> Party:
    return Party(
        kind=kind,
        id=row["id"],
        name=row["name"],
        manager_id=row["manager_id"],
        manager_name=row["manager_name"],
        notes=row["notes"],
        company_id=row["company_id"],
        company_name=row["company_name"],
        tax_id=row["tax_id"],
        phones=tuple(phones),
        emails=tuple(emails),
        version=row["version"],
        search_group=search_group,
    )


def clean_email(email: str | None) -> str:
    """Lower-cased and checked; empty stays empty."""
    email = (email or "").strip().lower()
    if email and (len(email) > 254 or not _EMAIL_RE.fullmatch(email)):
        raise ValidationError("email", f"{email!r} is not an e-mail address")
    return email


def clean_input(data: PartyInput, region: str) -> tuple[PartyInput, list[tuple[str, str | None, str, str]]]:
    """Validate; return the input with tidy text and the parsed phones (e164, ext, raw, label)."""
    name = (data.name or "").strip()
    if not name:
        raise ValidationError("name", "is empty")
    if len(name) > 200:
        raise ValidationError("name", "is longer than 200 characters")
    phones = []
    seen = set()
    for raw, label in data.phones:
        if not (raw or "").strip():
            continue
        phone = parse_phone(raw, region)
        if (phone.e164, phone.extension) in seen:
            continue
        seen.add((phone.e164, phone.extension))
        # The raw text is kept exactly as typed, beside the normalised number.
        phones.append((phone.e164, phone.extension, raw.strip(), (label or "").strip()[:40]))
    emails = []
    for email in data.emails:
        email = clean_email(email)
        if email and email not in emails:
            emails.append(email)
    tax_id = (data.tax_id or "").strip() or None
    if tax_id is not None and not re.fullmatch(r"[0-9A-Za-z-]{4,20}", tax_id):
        raise ValidationError("tax_id", "must be 4-20 letters or digits")
    cleaned = PartyInput(
        name=name,
        manager_id=data.manager_id,
        notes=(data.notes or "").strip()[:10000],
        company_id=data.company_id,
        tax_id=tax_id,
        emails=emails,
    )
    return cleaned, phones


async def _check_manager(conn: asyncpg.Connection, viewer: User, manager_id: int | None) -> None:
    if manager_id is not None and not await conn.fetchval(USER_EXISTS, manager_id):
        raise ValidationError("manager_id", "no such user")
    if not viewer.sees_everything and manager_id not in (None, viewer.id):
        raise Forbidden("a manager can assign only to themselves")


async def get_party(conn: asyncpg.Connection, viewer: User, kind: Kind, party_id: int) -> Party:
    """Raise NotFound also when the viewer may not see it, so existence does not leak."""
    row = await conn.fetchrow(_SELECT[kind], party_id, _scope(viewer))
    if row is None:
        raise NotFound(kind)
    phones = [PhoneEntry(r["e164"], r["extension"], r["raw"], r["label"]) for r in
              await conn.fetch(SELECT_PHONES[kind], party_id)]
    emails = [r["email"] for r in await conn.fetch(SELECT_EMAILS[kind], party_id)]
    return _party(kind, row, phones, emails)


async def list_parties(
    conn: asyncpg.Connection, viewer: User, kind: Kind, query: str | None, region: str,
    limit: int = 50, offset: int = 0, after: str | None = None,
) -> list[Party]:
    """A page in name order, or of a search in its order (best matches first); `after` is the cursor of the
    previous page's last row (crm.paging)."""
    query = (query or "").strip()[:100] or None
    if query is None:
        after_name, after_id = paging.decode(after, _KEY) or ("", 0)
        rows = await conn.fetch(_ALL[kind], query, _scope(viewer), None, None, limit, offset, after_name, after_id)
        found = [(row, None) for row in rows]
    else:
        found = await _search(conn, viewer, kind, query, region, limit, offset, after)
    phones: dict[int, list[PhoneEntry]] = {}
    for r in await conn.fetch(LIST_PHONES_OF[kind], [row["id"] for row, _ in found]):
        phones.setdefault(r["owner_id"], []).append(PhoneEntry(r["e164"], r["extension"], r["raw"], r["label"]))
    return [_party(kind, row, phones.get(row["id"], ()), search_group=group) for row, group in found]


async def _search(conn: asyncpg.Connection, viewer: User, kind: Kind, query: str, region: str, limit: int,
                  offset: int, after: str | None) -> list[tuple[asyncpg.Record, int]]:
    """The rows of a search page with their group: group 0 first, group 1 only when group 0 runs out on
    this page (its query reads every fragment match, which group 0's index range never does)."""
    group, after_name, after_id = paging.decode(after, _SEARCH_KEY) or (0, "", 0)
    if group not in (0, 1):
        raise ValidationError("after", "is not a cursor from this list's next link")
    wanted = limit + offset
    found: list[tuple[asyncpg.Record, int]] = []
    if group == 0:
        rows = await conn.fetch(_FIND_FIRST[kind], query, _scope(viewer), after_name, after_id, wanted)
        found = [(row, 0) for row in rows]
        after_name, after_id = "", 0
    if len(found) < wanted:
        digits = re.sub(r"\D", "", query)
        try:
            e164 = parse_phone(query, region).e164
        except ValidationError:
            e164 = None
        suffix = digits[::-1] if len(digits) >= 4 and re.fullmatch(r"[\d\s()+\-.]+", query) else None
        async with conn.transaction():
            # A plan for these very values: the generic plan a prepared statement may get after five runs
            # cannot tell a rare fragment from a common one, nor use a phone index for `LIKE $4 || '%'`, and
            # walked every name for the e-mail branch or read every phone (seconds at 1M contacts).
            await conn.execute(CUSTOM_PLAN)
            rows = await conn.fetch(_FIND_REST[kind], query, _scope(viewer), e164, suffix, wanted - len(found), 0,
                                    after_name, after_id)
        found += [(row, 1) for row in rows]
    return found[offset:]


async def list_company_contacts(conn: asyncpg.Connection, viewer: User, company_id: int) -> list[Party]:
    return [_party("contact", row) for row in await conn.fetch(LIST_COMPANY_CONTACTS, company_id, _scope(viewer))]


async def _save_children(conn: asyncpg.Connection, kind: Kind, party_id: int, phones, emails) -> None:
    await conn.execute(DELETE_PHONES[kind], party_id)
    await conn.execute(DELETE_EMAILS[kind], party_id)
    if phones:
        await conn.executemany(INSERT_PHONE[kind], [(party_id, *phone) for phone in phones])
    if emails:
        await conn.executemany(INSERT_EMAIL[kind], [(party_id, email) for email in emails])


async def _check_company(conn: asyncpg.Connection, viewer: User, company_id: int | None) -> None:
    if company_id is not None:
        try:
            await get_party(conn, viewer, "company", company_id)
        except NotFound as exc:
            raise ValidationError("company_id", "no such company") from exc


async def create_party(conn: asyncpg.Connection, viewer: User, kind: Kind, data: PartyInput, region: str,
                       refuse_duplicates: bool = False) -> Party:
    """With `refuse_duplicates`, a phone, e-mail or tax id another record of the kind has raises Duplicate."""
    cleaned, phones = clean_input(data, region)
    if cleaned.manager_id is None and not viewer.sees_everything:
        cleaned.manager_id = viewer.id
    await _check_manager(conn, viewer, cleaned.manager_id)
    async with conn.transaction():
        if refuse_duplicates:
            await check_duplicates(conn, kind, [(p[0], p[1]) for p in phones], cleaned.emails, cleaned.tax_id)
        if kind == "contact":
            await _check_company(conn, viewer, cleaned.company_id)
            party_id = await conn.fetchval(
                INSERT_CONTACT, cleaned.name, cleaned.company_id, cleaned.manager_id, cleaned.notes
            )
        else:
            party_id = await conn.fetchval(
                INSERT_COMPANY, cleaned.name, cleaned.tax_id, cleaned.manager_id, cleaned.notes
            )
        await _save_children(conn, kind, party_id, phones, cleaned.emails)
    return await get_party(conn, viewer, kind, party_id)


async def update_party(
    conn: asyncpg.Connection, viewer: User, kind: Kind, party_id: int, data: PartyInput, region: str,
    expected_version: int | None = None, refuse_duplicates: bool = False,
) -> Party:
    """Save an edit. With `expected_version` (the version the form was loaded at), a save over
    someone else's newer one raises Conflict rather than overwrite it."""
    cleaned, phones = clean_input(data, region)
    async with conn.transaction():
        await conn.execute(LOCK_PARTY[kind], party_id)
        current = await get_party(conn, viewer, kind, party_id)
        if expected_version is not None and expected_version != current.version:
            raise Conflict(f"this {kind} was changed by someone else meanwhile; reload it and edit again")
        if refuse_duplicates:
            # Only what this edit adds: a duplicate kept knowingly before does not block every later edit.
            had = {(p.e164, p.extension) for p in current.phones}
            await check_duplicates(conn, kind, [(p[0], p[1]) for p in phones if (p[0], p[1]) not in had],
                                   [e for e in cleaned.emails if e not in current.emails],
                                   cleaned.tax_id if cleaned.tax_id != current.tax_id else None, party_id)
        if cleaned.manager_id != current.manager_id:
            await _check_manager(conn, viewer, cleaned.manager_id)
        if kind == "contact":
            if cleaned.company_id != current.company_id:
                await _check_company(conn, viewer, cleaned.company_id)
            await conn.execute(
                UPDATE_CONTACT, party_id, cleaned.name, cleaned.company_id, cleaned.manager_id, cleaned.notes
            )
        else:
            await conn.execute(
                UPDATE_COMPANY, party_id, cleaned.name, cleaned.tax_id, cleaned.manager_id, cleaned.notes
            )
        await _save_children(conn, kind, party_id, phones, cleaned.emails)
    return await get_party(conn, viewer, kind, party_id)
