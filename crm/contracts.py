"""Contracts with clients: number, dates, kind, payment terms, the signed scan; the deal's contract; expiring soon."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import asyncpg

from crm.errors import Conflict, NotFound, ValidationError
from crm.users import User

KINDS = ("supply", "service")
MAX_SCAN_BYTES = 10 * 1024 * 1024
SCAN_TYPES = ("application/pdf", "image/jpeg", "image/png", "image/tiff")


@dataclass(frozen=True, slots=True)
class Contract:
    id: int
    number: str
    signed_on: date
    company_id: int
    company_name: str
    manager_id: int | None
    kind: str
    valid_until: date | None
    prepayment_percent: int
    deferral_days: int
    notes: str
    scan_name: str | None
    version: int
    created_at: datetime

    def expired(self, today: date) -> bool:
        return self.valid_until is not None and self.valid_until < today


_SELECT = """
SELECT c.id, c.number, c.signed_on, c.company_id, co.name AS company_name, co.manager_id, c.kind, c.valid_until,
       c.prepayment_percent, c.deferral_days, c.notes, s.file_name AS scan_name, c.version, c.created_at
FROM contracts c JOIN companies co ON co.id = c.company_id LEFT JOIN contract_scans s ON s.contract_id = c.id
"""
# A manager sees the contracts of their companies and of companies nobody manages (as on the company pages).
_VISIBLE = "($2::bigint IS NULL OR co.manager_id = $2 OR co.manager_id IS NULL)"
GET_CONTRACT = _SELECT + f"WHERE c.id = $1 AND {_VISIBLE}"
LIST_CONTRACTS = _SELECT + f"""
WHERE ($1::bigint IS NULL OR c.company_id = $1) AND {_VISIBLE}
ORDER BY c.signed_on DESC, c.id DESC LIMIT 500
"""
# In force today and ending within the window; the soonest first.
EXPIRING = _SELECT + f"""
WHERE c.valid_until BETWEEN $1 AND $3 AND {_VISIBLE}
ORDER BY c.valid_until, c.id
"""
INSERT_CONTRACT = """
INSERT INTO contracts (number, signed_on, company_id, kind, valid_until, prepayment_percent, deferral_days, notes,
                       created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id
"""
COMPANY_VISIBLE = """
SELECT 1 FROM companies WHERE id = $1 AND ($2::bigint IS NULL OR manager_id = $2 OR manager_id IS NULL)
"""
UPSERT_SCAN = """
INSERT INTO contract_scans (contract_id, file_name, content_type, content, uploaded_by) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (contract_id) DO UPDATE SET file_name = EXCLUDED.file_name, content_type = EXCLUDED.content_type,
    content = EXCLUDED.content, uploaded_by = EXCLUDED.uploaded_by, uploaded_at = now()
"""
GET_SCAN = "SELECT file_name, content_type, content FROM contract_scans WHERE contract_id = $1"
LOCK_DEAL = "SELECT company_id FROM deals WHERE id = $1 AND ($2::bigint IS NULL OR manager_id = $2) FOR UPDATE"
SET_DEAL_CONTRACT = "UPDATE deals SET contract_id = $2, updated_at = now() WHERE id = $1"
DEAL_CONTRACT = "SELECT contract_id FROM deals WHERE id = $1"


def _scope(viewer: User) -> int | None:
    return None if viewer.sees_everything else viewer.id


def parse_date(value, name: str, required: bool = True) -> date | None:
    """A day as a date or 'YYYY-MM-DD' (what forms and JSON send)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if value in (None, ""):
        if required:
            raise ValidationError(name, "is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(name, "must be a date, YYYY-MM-DD")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(name, "must be a date, YYYY-MM-DD") from None


def parse_whole(value, name: str, low: int, high: int, default: int = 0) -> int:
    """A whole number in [low, high], from JSON or a form."""
    if value in (None, ""):
        return default
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(name, f"must be a whole number from {low} to {high}")
    return value


async def get_contract(conn: asyncpg.Connection, viewer: User, contract_id: int) -> Contract:
    row = await conn.fetchrow(GET_CONTRACT, contract_id, _scope(viewer))
    if row is None:
        raise NotFound("contract")
    return Contract(**dict(row))


async def list_contracts(conn: asyncpg.Connection, viewer: User, company_id: int | None = None) -> list[Contract]:
    return [Contract(**dict(r)) for r in await conn.fetch(LIST_CONTRACTS, company_id, _scope(viewer))]


async def expiring_contracts(conn: asyncpg.Connection, viewer: User, today: date, days: int = 30) -> list[Contract]:
    rows = await conn.fetch(EXPIRING, today, _scope(viewer), today + timedelta(days=days))
    return [Contract(**dict(r)) for r in rows]


async def create_contract(conn: asyncpg.Connection, viewer: User, *, number: str, signed_on, company_id: int | None,
                          kind: str, valid_until=None, prepayment_percent=0, deferral_days=0,
                          notes: str = "") -> Contract:
    number = (number or "").strip()
    if not number:
        raise ValidationError("number", "is required")
    if len(number) > 64:
        raise ValidationError("number", "at most 64 characters")
    if kind not in KINDS:
        raise ValidationError("kind", "supply or service")
    if company_id is None:
        raise ValidationError("company_id", "is required")
    signed = parse_date(signed_on, "signed_on")
    until = parse_date(valid_until, "valid_until", required=False)
    if until is not None and until < signed:
        raise ValidationError("valid_until", "must not be before the signing date")
    prepayment = parse_whole(prepayment_percent, "prepayment_percent", 0, 100)
    deferral = parse_whole(deferral_days, "deferral_days", 0, 365)
    if not await conn.fetchval(COMPANY_VISIBLE, company_id, _scope(viewer)):
        raise NotFound("company")
    try:
        contract_id = await conn.fetchval(INSERT_CONTRACT, number, signed, company_id, kind, until, prepayment,
                                          deferral, (notes or "")[:5000], viewer.id or None)
    except asyncpg.UniqueViolationError:
        raise Conflict("this company already has a contract with this number") from None
    return await get_contract(conn, viewer, contract_id)


async def attach_scan(conn: asyncpg.Connection, viewer: User, contract_id: int, file_name: str, content_type: str,
                      content: bytes) -> Contract:
    await get_contract(conn, viewer, contract_id)
    if not content:
        raise ValidationError("scan", "the file is empty")
    if len(content) > MAX_SCAN_BYTES:
        raise ValidationError("scan", "the file is larger than 10 MB")
    if content_type not in SCAN_TYPES:
        raise ValidationError("scan", "PDF, JPEG, PNG or TIFF")
    name = (file_name or "scan").replace("/", "_").replace("\\", "_")[:200]
    await conn.execute(UPSERT_SCAN, contract_id, name, content_type, content, viewer.id or None)
    return await get_contract(conn, viewer, contract_id)


async def get_scan(conn: asyncpg.Connection, viewer: User, contract_id: int) -> tuple[str, str, bytes]:
    await get_contract(conn, viewer, contract_id)
    row = await conn.fetchrow(GET_SCAN, contract_id)
    if row is None:
        raise NotFound("scan")
    return row["file_name"], row["content_type"], row["content"]


async def set_deal_contract(conn: asyncpg.Connection, viewer: User, deal_id: int, contract_id: int | None) -> None:
    """The deal refers to a contract of its own company (or to none)."""
    async with conn.transaction():
        deal = await conn.fetchrow(LOCK_DEAL, deal_id, _scope(viewer))
        if deal is None:
            raise NotFound("deal")
        if contract_id is not None:
            contract = await get_contract(conn, viewer, contract_id)
            if contract.company_id != deal["company_id"]:
                raise ValidationError("contract_id", "the contract is with another company than the deal's")
        await conn.execute(SET_DEAL_CONTRACT, deal_id, contract_id)


async def deal_contract(conn: asyncpg.Connection, viewer: User, deal_id: int) -> Contract | None:
    contract_id = await conn.fetchval(DEAL_CONTRACT, deal_id)
    if contract_id is None:
        return None
    try:
        return await get_contract(conn, viewer, contract_id)
    except NotFound:
        return None
