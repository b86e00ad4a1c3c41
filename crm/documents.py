"""Documents attached to a deal (the PDF as sent) and the client's details that documents print."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from crm.errors import NotFound, ValidationError

KINDS = ("offer", "invoice", "contract")


@dataclass(frozen=True, slots=True)
class Client:
    """The buyer as a document names them: the company (or the person), its INN, whom to address."""

    name: str
    tax_id: str
    contact_name: str
    phone: str | None  # E.164
    email: str


@dataclass(frozen=True, slots=True)
class DealDocument:
    id: int
    deal_id: int
    kind: str
    number: str
    language: str
    amount: Decimal
    created_by_name: str | None
    created_at: datetime
    size: int


# The deal is already checked against the user (crm.deals.get_deal); a manager may address a company that is
# assigned to someone else, so this reads the parties without the card's visibility rule.
DEAL_CLIENT = """
SELECT coalesce(nullif(d.legal_entity, ''), co.name, ct.name, '') AS name, coalesce(co.tax_id, '') AS tax_id,
       coalesce(ct.name, '') AS contact_name,
       coalesce((SELECT e164 FROM phones WHERE contact_id = d.contact_id ORDER BY id LIMIT 1),
                (SELECT e164 FROM phones WHERE company_id = d.company_id ORDER BY id LIMIT 1)) AS phone,
       coalesce((SELECT email FROM emails WHERE contact_id = d.contact_id ORDER BY id LIMIT 1), '') AS email
FROM deals d LEFT JOIN companies co ON co.id = d.company_id LEFT JOIN contacts ct ON ct.id = d.contact_id
WHERE d.id = $1
"""
# A double click attaches one row: the same bytes for the same deal and kind are the same document.
INSERT_DOCUMENT = """
INSERT INTO deal_documents (deal_id, kind, number, language, amount, pdf, sha256, created_by, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (deal_id, kind, sha256) DO NOTHING
RETURNING id
"""
FIND_DOCUMENT = "SELECT id FROM deal_documents WHERE deal_id = $1 AND kind = $2 AND sha256 = $3"
_DOCUMENT_COLUMNS = """d.id, d.deal_id, d.kind, d.number, d.language, d.amount, u.display_name AS created_by_name,
       d.created_at, length(d.pdf) AS size"""
LIST_DOCUMENTS = f"""
SELECT {_DOCUMENT_COLUMNS} FROM deal_documents d LEFT JOIN users u ON u.id = d.created_by
WHERE d.deal_id = $1 ORDER BY d.created_at DESC, d.id DESC
"""
GET_DOCUMENT = f"""
SELECT {_DOCUMENT_COLUMNS}, d.pdf FROM deal_documents d LEFT JOIN users u ON u.id = d.created_by
WHERE d.deal_id = $1 AND d.id = $2
"""


async def get_client(conn: asyncpg.Connection, deal_id: int) -> Client:
    row = await conn.fetchrow(DEAL_CLIENT, deal_id)
    if row is None:
        raise NotFound("deal")
    return Client(**dict(row))


async def attach_document(conn: asyncpg.Connection, deal_id: int, kind: str, number: str, language: str,
                          amount: Decimal, pdf: bytes, user_id: int | None, now: datetime) -> tuple[int, bool]:
    """Keep the PDF in the deal's history; (id, True) when new, (id, False) when this very PDF is there already."""
    if kind not in KINDS:
        raise ValidationError("kind", "offer, invoice or contract")
    digest = hashlib.sha256(pdf).hexdigest()
    new_id = await conn.fetchval(INSERT_DOCUMENT, deal_id, kind, number, language, amount, pdf, digest, user_id,
                                 now)
    if new_id is not None:
        return new_id, True
    return await conn.fetchval(FIND_DOCUMENT, deal_id, kind, digest), False


async def list_documents(conn: asyncpg.Connection, deal_id: int) -> list[DealDocument]:
    return [DealDocument(**dict(row)) for row in await conn.fetch(LIST_DOCUMENTS, deal_id)]


async def get_document(conn: asyncpg.Connection, deal_id: int, document_id: int) -> tuple[DealDocument, bytes]:
    row = await conn.fetchrow(GET_DOCUMENT, deal_id, document_id)
    if row is None:
        raise NotFound("document")
    values = dict(row)
    pdf = values.pop("pdf")
    return DealDocument(**values), pdf
