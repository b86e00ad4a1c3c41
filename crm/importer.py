"""Spreadsheet import of contacts, companies, products and stock: CSV (any delimiter, UTF-8/cp1251) or XLSX,
column mapping, duplicates found by phone / e-mail / INN / SKU (updated or skipped), dry run, per-row errors."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import re
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from crm import stock
from crm.contacts import clean_email
from crm.errors import ValidationError
from crm.phones import parse_phone
from crm.users import User

logger = logging.getLogger(__name__)

KINDS = ("contacts", "companies", "products", "stock")
# Fields a column can be mapped to; "phone" and "email" may take several columns, the others one.
FIELDS: dict[str, tuple[str, ...]] = {
    "contacts": ("name", "phone", "email", "company", "inn", "manager", "notes"),
    "companies": ("name", "inn", "phone", "email", "manager", "notes"),
    "products": ("sku", "name", "unit", "price", "barcode"),
    "stock": ("sku", "quantity"),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "contacts": ("name",), "companies": ("name",), "products": ("sku", "name"), "stock": ("sku", "quantity"),
}
MULTI = frozenset({"phone", "email"})
ON_DUPLICATE = ("update", "skip")
# Header words (lower case, no punctuation) that suggest a field; Russian as 1C and Excel users write them.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "name": ("name", "full name", "fio", "фио", "имя", "контакт", "контактное лицо", "наименование", "название",
             "product", "товар", "номенклатура", "company name", "клиент"),
    "phone": ("phone", "telephone", "tel", "mobile", "телефон", "тел", "мобильный", "моб", "сотовый",
              "рабочий телефон", "телефоны"),
    "email": ("email", "e mail", "mail", "почта", "электронная почта", "эл почта", "емейл"),
    "company": ("company", "organization", "organisation", "компания", "организация", "контрагент"),
    "inn": ("inn", "tax id", "tax_id", "инн", "инн организации"),
    "manager": ("manager", "owner", "responsible", "менеджер", "ответственный"),
    "notes": ("notes", "note", "comment", "comments", "примечание", "комментарий", "заметки", "описание"),
    "sku": ("sku", "article", "code", "артикул", "код", "код товара"),
    "unit": ("unit", "units", "ед", "ед изм", "единица", "единица измерения"),
    "price": ("price", "цена", "стоимость", "цена руб"),
    "barcode": ("barcode", "ean", "штрихкод", "штрих код"),
    "quantity": ("quantity", "qty", "count", "stock", "on hand", "количество", "кол во", "остаток", "остатки"),
}
CHUNK = 2000  # rows per transaction: a failure loses one chunk, not the file, and locks are short
MAX_ERRORS_SHOWN = 1000
MAX_CELL = 2000
DELIMITERS = (";", ",", "\t", "|")
# Several phones or e-mails in one cell.
_SPLIT_RE = re.compile(r"[;,\n]+")


@dataclass(slots=True)
class Table:
    """A spreadsheet as text: the header row and data rows, with how it was read."""

    headers: list[str]
    rows: list[list[str]]
    format: str  # csv or xlsx
    encoding: str | None = None
    delimiter: str | None = None


@dataclass(frozen=True, slots=True)
class RowError:
    row: int  # as the spreadsheet numbers it: the header is row 1
    field: str | None
    message: str


@dataclass(slots=True)
class ImportResult:
    kind: str
    dry_run: bool
    rows: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    errors: list[RowError] = field(default_factory=list)
    companies_created: int = 0

    def as_json(self) -> dict[str, Any]:
        errors = sorted(self.errors, key=lambda e: e.row)
        return {"kind": self.kind, "dry_run": self.dry_run, "rows": self.rows, "created": self.created,
                "updated": self.updated, "skipped": self.skipped, "companies_created": self.companies_created,
                "error_count": len(errors),
                "errors": [{"row": e.row, "field": e.field, "message": e.message}
                           for e in errors[:MAX_ERRORS_SHOWN]]}


# ---------------------------------------------------------------------------------------------- reading files


def read_table(data: bytes, filename: str = "") -> Table:
    """CSV or XLSX bytes → Table (CPU work: call it in a thread)."""
    if not data.strip():
        raise ValidationError("file", "is empty")
    if data[:4] == b"PK\x03\x04":
        return _read_xlsx(data)
    if filename.lower().endswith((".xls", ".xlsx", ".ods")):
        raise ValidationError("file", "only CSV and XLSX spreadsheets are read; save it as .xlsx or .csv")
    return _read_csv(data)


def decode_text(data: bytes) -> tuple[str, str]:
    """UTF-8 (with or without BOM), UTF-16 with BOM (Excel's "Unicode text"), else Windows-1251."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace"), "utf-8"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "utf-16"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("cp1251", errors="replace"), "cp1251"


def detect_delimiter(text: str) -> str:
    """The delimiter that splits the first lines into the same number (>1) of columns most often."""
    sample = "\n".join(text.splitlines()[:30])
    best, best_score = ";", (-1, 0)
    for delimiter in DELIMITERS:
        widths = [len(r) for r in csv.reader(io.StringIO(sample), delimiter=delimiter) if any(c.strip() for c in r)]
        if not widths:
            continue
        width, times = Counter(widths).most_common(1)[0]
        score = (times if width > 1 else 0, width)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _read_csv(data: bytes) -> Table:
    text, encoding = decode_text(data)
    if "\x00" in text:
        raise ValidationError("file", "is not a text spreadsheet (CSV) nor XLSX")
    delimiter = detect_delimiter(text)
    rows = [[_cell(c) for c in r] for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)]
    return _table(rows, "csv", encoding, delimiter)


def _read_xlsx(data: bytes) -> Table:
    from openpyxl import load_workbook  # read-only mode streams the sheet's XML instead of building every cell

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ValidationError("file", "is not a readable XLSX workbook") from exc
    try:
        sheet = book.worksheets[0]
        rows = [[_cell(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    finally:
        book.close()
    return _table(rows, "xlsx")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        # Excel keeps phones and INNs typed as numbers as floats: 79161234567.0, not 7.9161234567e10.
        return str(int(value)) if value.is_integer() and abs(value) < 1e18 else repr(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value).replace("\x00", "").strip()[:MAX_CELL]


def _table(rows: list[list[str]], fmt: str, encoding: str | None = None, delimiter: str | None = None) -> Table:
    while rows and not any(rows[0]):
        rows.pop(0)
    if not rows:
        raise ValidationError("file", "has no rows")
    headers = rows[0]
    while headers and not headers[-1]:
        headers.pop()
    width = max(len(headers), max((len(r) for r in rows[1:]), default=0))
    headers += [""] * (width - len(headers))
    body = [r + [""] * (width - len(r)) for r in rows[1:]]
    return Table(headers, body, fmt, encoding, delimiter)


# ---------------------------------------------------------------------------------------------- mapping


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.lower().replace("ё", "е")).split())


def suggest_mapping(kind: str, headers: Sequence[str]) -> list[str | None]:
    """A field per column from the header's words; each single field goes to its first column only."""
    fields = FIELDS[kind]
    taken: set[str] = set()
    mapping: list[str | None] = []
    for header in headers:
        words = _words(header)
        found = None
        for name in fields:
            if name in taken and name not in MULTI:
                continue
            if words in SYNONYMS[name] or any(words.startswith(s + " ") for s in SYNONYMS[name] if len(s) > 3):
                found = name
                break
        if found:
            taken.add(found)
        mapping.append(found)
    return mapping


def check_mapping(kind: str, headers: Sequence[str], mapping: object) -> list[str | None]:
    """A mapping from the client: a list (a field or null per column) or {header or column number: field}."""
    if mapping is None:
        mapping = suggest_mapping(kind, headers)
    if isinstance(mapping, dict):
        as_list: list[str | None] = [None] * len(headers)
        for key, value in mapping.items():
            index = int(key) if str(key).isdigit() else (headers.index(key) if key in headers else None)
            if index is None or not 0 <= index < len(headers):
                raise ValidationError("mapping", f"no column {key!r} in the file")
            as_list[index] = value
        mapping = as_list
    if not isinstance(mapping, list) or len(mapping) > len(headers):
        raise ValidationError("mapping", "must give a field (or null) for each column")
    mapping = [m or None for m in mapping] + [None] * (len(headers) - len(mapping))
    seen: set[str] = set()
    for name in mapping:
        if name is None:
            continue
        if name not in FIELDS[kind]:
            raise ValidationError("mapping", f"unknown field {name!r}; {kind} take {', '.join(FIELDS[kind])}")
        if name in seen and name not in MULTI:
            raise ValidationError("mapping", f"two columns are mapped to {name!r}")
        seen.add(name)
    missing = [name for name in REQUIRED[kind] if name not in seen]
    if missing:
        raise ValidationError("mapping", f"no column is mapped to {', '.join(missing)}")
    return mapping


# ---------------------------------------------------------------------------------------------- rows


@dataclass(slots=True)
class PartyRow:
    row: int
    name: str
    phones: list[tuple[str, str | None, str]]  # (e164, extension, raw)
    emails: list[str]
    inn: str | None
    company: str
    manager_id: int | None
    notes: str


@dataclass(slots=True)
class ProductRow:
    row: int
    sku: str
    name: str
    unit: str
    price: Decimal | None
    barcode: str | None


@dataclass(slots=True)
class StockRow:
    row: int
    sku: str
    quantity: Decimal


def _values(mapping: Sequence[str | None], cells: Sequence[str]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for name, cell in zip(mapping, cells, strict=False):
        if name is not None and cell.strip():
            values.setdefault(name, []).append(cell.strip())
    return values


def _inn(text: str | None) -> str | None:
    inn = re.sub(r"\s", "", text or "") or None
    if inn is not None and not re.fullmatch(r"[0-9A-Za-z-]{4,20}", inn):
        raise ValidationError("inn", f"{text!r} is not a tax id (INN)")
    return inn


def _party_row(number: int, values: dict[str, list[str]], region: str, managers: dict[str, int]) -> PartyRow:
    name = " ".join(values.get("name", [""])[0].split())
    if not name:
        raise ValidationError("name", "is empty")
    if len(name) > 200:
        raise ValidationError("name", "is longer than 200 characters")
    phones: list[tuple[str, str | None, str]] = []
    for cell in values.get("phone", []):
        for raw in _SPLIT_RE.split(cell):
            if raw.strip():
                phone = parse_phone(raw, region)
                if all((phone.e164, phone.extension) != (e, x) for e, x, _ in phones):
                    phones.append((phone.e164, phone.extension, raw.strip()[:100]))
    emails: list[str] = []
    for cell in values.get("email", []):
        for raw in _SPLIT_RE.split(cell):
            email = clean_email(raw)
            if email and email not in emails:
                emails.append(email)
    manager_id = None
    if values.get("manager"):
        manager_id = managers.get(values["manager"][0].strip().lower())
        if manager_id is None:
            raise ValidationError("manager", f"no user {values['manager'][0]!r} (give a login or a name)")
    return PartyRow(number, name, phones, emails, _inn(values.get("inn", [""])[0]),
                    " ".join(values.get("company", [""])[0].split())[:200], manager_id,
                    values.get("notes", [""])[0][:10000])


def _decimal(text: str, name: str) -> Decimal:
    cleaned = text.replace("\xa0", "").replace(" ", "").replace(",", ".")
    cleaned = re.sub(r"(руб\.?|р\.|₽|rub)$", "", cleaned, flags=re.IGNORECASE)
    try:
        value = Decimal(cleaned)
    except ArithmeticError:
        raise ValidationError(name, f"{text!r} is not a number") from None
    if not value.is_finite():
        raise ValidationError(name, f"{text!r} is not a number")
    return value


def _product_row(number: int, values: dict[str, list[str]]) -> ProductRow:
    sku, name = values.get("sku", [""])[0][:100], " ".join(values.get("name", [""])[0].split())[:500]
    if not sku:
        raise ValidationError("sku", "is empty")
    if not name:
        raise ValidationError("name", "is empty")
    price = None
    if values.get("price"):
        price = stock.parse_money(_decimal(values["price"][0], "price"))
    return ProductRow(number, sku, name, values.get("unit", ["pcs"])[0][:20], price,
                      values.get("barcode", [None])[0])


def _stock_row(number: int, values: dict[str, list[str]]) -> StockRow:
    sku = values.get("sku", [""])[0]
    if not sku:
        raise ValidationError("sku", "is empty")
    quantity = _decimal(values.get("quantity", [""])[0], "quantity")
    if quantity < 0 or quantity > stock.MAX_QUANTITY:
        raise ValidationError("quantity", f"must be from 0 to {stock.MAX_QUANTITY}")
    return StockRow(number, sku, quantity)


def prepare_rows(kind: str, table: Table, mapping: Sequence[str | None], region: str,
                 managers: dict[str, int]) -> tuple[list[Any], list[RowError], int]:
    """Check and tidy every row (CPU work: call it in a thread): (good rows, errors, rows read)."""
    good: list[Any] = []
    errors: list[RowError] = []
    count = 0
    for index, cells in enumerate(table.rows):
        if not any(c.strip() for c in cells):
            continue
        count += 1
        number = index + 2
        values = _values(mapping, cells)
        try:
            if kind in ("contacts", "companies"):
                good.append(_party_row(number, values, region, managers))
            elif kind == "products":
                good.append(_product_row(number, values))
            else:
                good.append(_stock_row(number, values))
        except ValidationError as exc:
            errors.append(RowError(number, exc.field, exc.message))
    return good, errors, count


# ---------------------------------------------------------------------------------------------- saving

# One import of a kind at a time (per chunk): a double click's second import sees the first one's rows.
IMPORT_LOCK = "SELECT pg_advisory_xact_lock(hashtext('callboard:import:' || $1))"
MANAGERS = "SELECT id, login, display_name FROM users WHERE active"
NEXT_IDS = {"contact": "SELECT nextval('contacts_id_seq') FROM generate_series(1, $1)",
            "company": "SELECT nextval('companies_id_seq') FROM generate_series(1, $1)"}
OWNER = {"contact": "contact_id", "company": "company_id"}
FIND_BY_PHONE = {k: f"SELECT {c} AS id, e164 FROM phones WHERE {c} IS NOT NULL AND e164 = ANY($1::text[])"
                 for k, c in OWNER.items()}
FIND_BY_EMAIL = {k: f"SELECT {c} AS id, email FROM emails WHERE {c} IS NOT NULL AND email = ANY($1::text[])"
                 for k, c in OWNER.items()}
FIND_COMPANIES_BY_INN = "SELECT id, tax_id FROM companies WHERE tax_id = ANY($1::text[])"
FIND_COMPANIES_BY_NAME = "SELECT DISTINCT ON (lower(name)) id, lower(name) AS key FROM companies " \
                         "WHERE lower(name) = ANY($1::text[]) ORDER BY lower(name), id"
INSERT_CONTACTS = """
INSERT INTO contacts (id, name, company_id, manager_id, notes)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[])
"""
INSERT_COMPANIES = """
INSERT INTO companies (id, name, tax_id, manager_id, notes)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[])
"""
# An update fills what the file gives and keeps what it leaves empty.
UPDATE_CONTACTS = """
UPDATE contacts c SET name = u.name, company_id = coalesce(u.company_id, c.company_id),
       manager_id = coalesce(u.manager_id, c.manager_id), notes = coalesce(nullif(u.notes, ''), c.notes),
       version = c.version + 1, updated_at = now()
FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[]) AS u(id, name, company_id, manager_id,
                                                                                  notes)
WHERE c.id = u.id
"""
UPDATE_COMPANIES = """
UPDATE companies c SET name = u.name, tax_id = coalesce(u.tax_id, c.tax_id),
       manager_id = coalesce(u.manager_id, c.manager_id), notes = coalesce(nullif(u.notes, ''), c.notes),
       version = c.version + 1, updated_at = now()
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[]) AS u(id, name, tax_id, manager_id, notes)
WHERE c.id = u.id
"""
INSERT_PHONES = {k: f"""
INSERT INTO phones ({c}, e164, extension, raw) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])
ON CONFLICT DO NOTHING""" for k, c in OWNER.items()}
INSERT_EMAILS = {k: f"""
INSERT INTO emails ({c}, email) SELECT * FROM unnest($1::bigint[], $2::text[]) ON CONFLICT DO NOTHING"""
                 for k, c in OWNER.items()}
FIND_PRODUCTS = "SELECT id, sku FROM products WHERE sku = ANY($1::text[])"
FIND_BARCODES = "SELECT sku, barcode FROM products WHERE barcode = ANY($1::text[])"
INSERT_PRODUCTS = """
INSERT INTO products (sku, name, unit, price, barcode)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[], $5::text[])
"""
UPDATE_PRODUCTS = """
UPDATE products p SET name = u.name, unit = u.unit, price = coalesce(u.price, p.price),
       barcode = coalesce(u.barcode, p.barcode)
FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[], $5::text[]) AS u(sku, name, unit, price, barcode)
WHERE p.sku = u.sku
"""
ON_HAND = """
SELECT p.id, p.sku, count(m.id) AS movements,
       coalesce(sum(m.quantity) FILTER (WHERE m.kind = 'receipt'), 0)
       - coalesce(sum(m.quantity) FILTER (WHERE m.kind IN ('shipment', 'write_off')), 0) AS on_hand
FROM products p LEFT JOIN stock_movements m ON m.product_id = p.id
WHERE p.sku = ANY($1::text[]) GROUP BY p.id
"""
INSERT_BATCHES = """
INSERT INTO stock_batches (product_id, warehouse_id, received_at, quantity)
SELECT u.product_id, $3, $4, u.quantity FROM unnest($1::bigint[], $2::numeric[]) AS u(product_id, quantity)
RETURNING id, product_id, quantity
"""
INSERT_RECEIPTS = """
INSERT INTO stock_movements (product_id, warehouse_id, batch_id, kind, quantity, user_id, created_at)
SELECT u.product_id, $4, u.batch_id, 'receipt', u.quantity, $5, $6
FROM unnest($1::bigint[], $2::bigint[], $3::numeric[]) AS u(product_id, batch_id, quantity)
"""


class _DryRun(Exception):
    """Raised inside the outer transaction of a dry run, so everything it wrote is rolled back."""


async def manager_keys(conn: asyncpg.Connection) -> dict[str, int]:
    """Active users by login and by display name (lower case), for the "manager" column."""
    keys: dict[str, int] = {}
    for row in await conn.fetch(MANAGERS):
        keys.setdefault(row["display_name"].strip().lower(), row["id"])
        keys[row["login"]] = row["id"]
    return keys


async def import_table(conn: asyncpg.Connection, viewer: User, kind: str, table: Table, mapping: object, *,
                       region: str, now: datetime, on_duplicate: str = "update", dry_run: bool = False
                       ) -> ImportResult:
    """Import the rows; each chunk is one transaction. A dry run does the same work and rolls it all back, so its
    counts are what the import would give."""
    if kind not in KINDS:
        raise ValidationError("kind", f"one of {', '.join(KINDS)}")
    if on_duplicate not in ON_DUPLICATE:
        raise ValidationError("on_duplicate", "update or skip")
    checked = check_mapping(kind, table.headers, mapping)
    managers = await manager_keys(conn) if "manager" in checked else {}
    good, errors, count = await asyncio.to_thread(prepare_rows, kind, table, checked, region, managers)
    result = ImportResult(kind, dry_run, rows=count, errors=errors)
    apply = {"contacts": _save_parties, "companies": _save_parties, "products": _save_products,
             "stock": save_stock}[kind]
    outer = conn.transaction() if dry_run else None
    if outer is not None:
        await outer.start()
    try:
        state: dict[str, Any] = {}
        for start in range(0, len(good), CHUNK):
            chunk = good[start:start + CHUNK]
            before = (result.created, result.updated, result.skipped, result.companies_created, len(result.errors))
            try:
                async with conn.transaction():
                    await conn.execute(IMPORT_LOCK, kind)
                    await apply(conn, kind, chunk, result, state, on_duplicate=on_duplicate, viewer=viewer, now=now)
            except asyncpg.PostgresError as exc:
                logger.warning("import of %s: a chunk from row %s failed: %s", kind, chunk[0].row, exc)
                result.created, result.updated, result.skipped, result.companies_created = before[:4]
                del result.errors[before[4]:]
                state.clear()  # what this chunk remembered was rolled back with it
                result.errors.extend(RowError(r.row, None, f"not saved: {exc.__class__.__name__}") for r in chunk)
        if outer is not None:
            raise _DryRun
    except _DryRun:
        await outer.rollback()
    except BaseException:
        if outer is not None:
            await outer.rollback()
        raise
    logger.info("import of %s by %s: %s rows, %s created, %s updated, %s skipped, %s errors%s", kind, viewer.login,
                result.rows, result.created, result.updated, result.skipped, len(result.errors),
                " (dry run)" if dry_run else "")
    return result


@dataclass(slots=True)
class _NewParty:
    id: int
    name: str
    inn: str | None
    company_id: int | None
    manager_id: int | None
    notes: str


async def _company_ids(conn: asyncpg.Connection, rows: list[PartyRow], result: ImportResult,
                       state: dict[str, Any]) -> dict[int, int | None]:
    """The company of each contact row: found by INN, else by name; created when the file names a new one."""
    by_inn = {r["tax_id"]: r["id"] for r in await conn.fetch(
        FIND_COMPANIES_BY_INN, sorted({r.inn for r in rows if r.inn}))}
    by_name = {r["key"]: r["id"] for r in await conn.fetch(
        FIND_COMPANIES_BY_NAME, sorted({r.company.lower() for r in rows if r.company}))}
    new: dict[str, int] = {}
    wanted = [r for r in rows if r.company and (r.inn or "") not in by_inn and r.company.lower() not in by_name]
    names = list(dict.fromkeys(r.company.lower() for r in wanted))
    if names:
        ids = [r[0] for r in await conn.fetch(NEXT_IDS["company"], len(names))]
        new = dict(zip(names, ids, strict=True))
        first = {}
        for r in wanted:
            first.setdefault(r.company.lower(), r)
        await conn.execute(INSERT_COMPANIES, ids, [first[n].company for n in names], [first[n].inn for n in names],
                           [first[n].manager_id for n in names], [""] * len(names))
        result.companies_created += len(names)
    out: dict[int, int | None] = {}
    for r in rows:
        out[r.row] = (by_inn.get(r.inn or "") or by_name.get(r.company.lower()) or new.get(r.company.lower())
                      if r.company or r.inn else None)
    return out


async def _save_parties(conn: asyncpg.Connection, kind: str, rows: list[PartyRow], result: ImportResult,
                        state: dict[str, Any], *, on_duplicate: str, viewer: User, now: datetime) -> None:
    owner = "contact" if kind == "contacts" else "company"
    # Duplicates: a stored row with one of the row's phones or e-mails (or, for a company, its INN).
    found: dict[str, int] = {}
    for r in await conn.fetch(FIND_BY_PHONE[owner], sorted({p[0] for row in rows for p in row.phones})):
        found.setdefault("p:" + r["e164"], r["id"])
    for r in await conn.fetch(FIND_BY_EMAIL[owner], sorted({e for row in rows for e in row.emails})):
        found.setdefault("e:" + r["email"], r["id"])
    if owner == "company":
        for r in await conn.fetch(FIND_COMPANIES_BY_INN, sorted({row.inn for row in rows if row.inn})):
            found.setdefault("i:" + r["tax_id"], r["id"])
    companies = await _company_ids(conn, rows, result, state) if owner == "contact" else {}
    fresh_ids = iter([r[0] for r in await conn.fetch(NEXT_IDS[owner], len(rows))])
    inserts: dict[int, _NewParty] = {}
    updates: dict[int, _NewParty] = {}
    phones: list[tuple[int, str, str | None, str]] = []
    emails: list[tuple[int, str]] = []
    for row in rows:
        keys = [f"p:{p[0]}" for p in row.phones] + [f"e:{e}" for e in row.emails]
        if owner == "company" and row.inn:
            keys.insert(0, f"i:{row.inn}")
        match = next((found[k] for k in keys if k in found), None)
        values = _NewParty(match or 0, row.name, row.inn, companies.get(row.row), row.manager_id, row.notes)
        if match is None:
            values.id = next(fresh_ids)
            inserts[values.id] = values
            result.created += 1
        elif on_duplicate == "skip":
            result.skipped += 1
            continue
        else:
            # A row matching one created earlier in this file adds to it; otherwise the stored one is updated.
            target = inserts if match in inserts else updates
            if match in target:
                old = target[match]
                values.inn, values.company_id = values.inn or old.inn, values.company_id or old.company_id
                values.manager_id, values.notes = values.manager_id or old.manager_id, values.notes or old.notes
            target[match] = values
            result.updated += 1
        for key in keys:
            found.setdefault(key, values.id)
        phones += [(values.id, *p) for p in row.phones]
        emails += [(values.id, e) for e in row.emails]
    for sql, batch in ((INSERT_CONTACTS if owner == "contact" else INSERT_COMPANIES, inserts),
                       (UPDATE_CONTACTS if owner == "contact" else UPDATE_COMPANIES, updates)):
        if batch:
            items = list(batch.values())
            third = [v.company_id for v in items] if owner == "contact" else [v.inn for v in items]
            await conn.execute(sql, [v.id for v in items], [v.name for v in items], third,
                               [v.manager_id for v in items], [v.notes for v in items])
    if phones:
        await conn.execute(INSERT_PHONES[owner], *map(list, zip(*phones, strict=True)))
    if emails:
        await conn.execute(INSERT_EMAILS[owner], *map(list, zip(*emails, strict=True)))


async def _save_products(conn: asyncpg.Connection, kind: str, rows: list[ProductRow], result: ImportResult,
                         state: dict[str, Any], *, on_duplicate: str, viewer: User, now: datetime) -> None:
    existing = {r["sku"] for r in await conn.fetch(FIND_PRODUCTS, sorted({r.sku for r in rows}))}
    barcodes = {r["barcode"]: r["sku"] for r in await conn.fetch(
        FIND_BARCODES, sorted({r.barcode for r in rows if r.barcode}))}
    inserts: dict[str, ProductRow] = {}
    updates: dict[str, ProductRow] = {}
    for row in rows:
        if row.barcode and barcodes.setdefault(row.barcode, row.sku) != row.sku:
            result.errors.append(RowError(row.row, "barcode", f"belongs to product {barcodes[row.barcode]}"))
            continue
        if row.sku not in existing and row.sku not in inserts:
            inserts[row.sku] = row
            result.created += 1
        elif on_duplicate == "skip":
            result.skipped += 1
        else:
            target = inserts if row.sku in inserts else updates
            if row.sku in target:  # the same SKU twice in the file: what the later row leaves empty stays
                old = target[row.sku]
                row.price = row.price if row.price is not None else old.price
                row.barcode = row.barcode or old.barcode
            target[row.sku] = row
            result.updated += 1
    for sql, batch in ((INSERT_PRODUCTS, inserts), (UPDATE_PRODUCTS, updates)):
        if batch:
            items = list(batch.values())
            prices = [r.price if r.price is not None or sql is UPDATE_PRODUCTS else Decimal(0) for r in items]
            await conn.execute(sql, [r.sku for r in items], [r.name for r in items], [r.unit for r in items],
                               prices, [r.barcode for r in items])


async def save_stock(conn: asyncpg.Connection, kind: str, rows: list[StockRow], result: ImportResult,
                      state: dict[str, Any], *, on_duplicate: str, viewer: User, now: datetime) -> None:
    """Each row is a count of what is on hand: the difference is received, or written off oldest batch first."""
    seen: dict[str, int] = state.setdefault("skus", {})
    products = {r["sku"]: r for r in await conn.fetch(ON_HAND, sorted({r.sku for r in rows}))}
    await stock.lock_products(conn, [p["id"] for p in products.values()])
    products = {r["sku"]: r for r in await conn.fetch(ON_HAND, sorted(products))}  # read again under the lock
    warehouse = await stock.default_warehouse(conn)
    receipts: list[tuple[int, Decimal]] = []
    for row in rows:
        product = products.get(row.sku)
        if product is None:
            result.errors.append(RowError(row.row, "sku", f"no product with SKU {row.sku!r}; import products first"))
            continue
        if row.sku in seen:
            result.errors.append(RowError(row.row, "sku", f"this SKU is already counted on row {seen[row.sku]}"))
            continue
        seen[row.sku] = row.row
        delta = row.quantity - product["on_hand"]
        if delta == 0 or (product["movements"] and on_duplicate == "skip"):
            result.skipped += 1
            continue
        if product["movements"]:
            result.updated += 1
        else:
            result.created += 1
        if delta > 0:
            receipts.append((product["id"], delta))
        else:
            await stock.ship(conn, product["id"], -delta, now, user_id=viewer.id or None, kind="write_off")
    if receipts:
        batches = await conn.fetch(INSERT_BATCHES, [p for p, _ in receipts], [q for _, q in receipts], warehouse, now)
        await conn.execute(INSERT_RECEIPTS, [b["product_id"] for b in batches], [b["id"] for b in batches],
                           [b["quantity"] for b in batches], warehouse, viewer.id or None, now)


def sample(table: Table, rows: int = 20) -> list[list[str]]:
    return [r for r in table.rows[:rows * 2] if any(c.strip() for c in r)][:rows]
