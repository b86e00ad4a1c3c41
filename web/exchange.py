"""Spreadsheets in and out: the import page, /api/import/{kind} (+ /preview), and /export/{list}.{csv|xlsx}."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import BodyPartReader, web

from crm import errors, importer
from crm import exporter as exporter_db
from crm.leads import SOURCES, STATUSES
from web import keys
from web.auth import current_user, require_role
from web.i18n import N_, Reader, request_reader
from web.render import render

logger = logging.getLogger(__name__)

KIND_TITLES = {"contacts": N_("Contacts"), "companies": N_("Companies"), "products": N_("Products"),
               "stock": N_("Stock"), "calls": N_("Calls"), "leads": N_("Leads"), "deals": N_("Deals")}
FIELD_NAMES = {"name": N_("Name"), "phone": N_("Phone"), "email": N_("E-mail"), "company": N_("Company"),
               "inn": N_("INN"), "manager": N_("Manager"), "notes": N_("Notes"), "sku": N_("SKU"),
               "unit": N_("Unit"), "price": N_("Price"), "barcode": N_("Barcode"), "quantity": N_("Quantity")}
COLUMN_NAMES = {
    "id": N_("No."), "started_at": N_("Started"), "direction": N_("Direction"), "outcome": N_("Outcome"),
    "caller": N_("Caller"), "callee": N_("Called number"), "contact": N_("Contact"), "company": N_("Company"),
    "manager": N_("Manager"), "ring_seconds": N_("Ringing, s"), "talk_seconds": N_("Talk, s"), "name": N_("Name"),
    "phones": N_("Phones"), "emails": N_("E-mails"), "notes": N_("Notes"), "inn": N_("INN"),
    "created_at": N_("Created"), "status": N_("Status"), "source": N_("Source"), "phone": N_("Phone"),
    "email": N_("E-mail"), "first_message": N_("First message"), "title": N_("Title"), "stage": N_("Stage"),
    "amount": N_("Amount"), "probability": N_("Probability, %"), "stage_changed_at": N_("In the stage since"),
    "sku": N_("SKU"), "unit": N_("Unit"), "price": N_("Price"), "on_hand": N_("On hand"),
    "reserved": N_("Reserved"), "available": N_("Available"),
}
CODE_COLUMNS = frozenset({"direction", "outcome", "status", "source", "stage", "unit"})
OUTCOMES = ("answered", "missed", "abandoned", "busy", "failed", "unknown")
DEAL_STATUSES = ("in_progress", "won", "lost")
EXPORT_FORMATS = ("csv", "xlsx")
READ_CHUNK = 256 * 1024


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


async def read_upload(request: web.Request, limit: int, field: str = "file") -> tuple[bytes, str, dict[str, str]]:
    """The uploaded file (multipart `file`, or the raw body) and the other form fields; read as a stream, so the
    app's small body limit for JSON does not apply and a file past `limit` is refused without being kept."""
    fields: dict[str, str] = dict(request.query)
    data, filename = bytearray(), ""
    if request.content_type == "multipart/form-data":
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == field:
                filename = part.filename or ""
                while chunk := await part.read_chunk(READ_CHUNK):
                    data += chunk
                    if len(data) > limit:
                        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
            elif part.name:
                fields[part.name] = (await part.text())[:100_000]
    elif request.content_type != "application/x-www-form-urlencoded":  # a form without a file is no file
        while chunk := await request.content.read(READ_CHUNK):
            data += chunk
            if len(data) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
    if not data:
        raise errors.ValidationError(field, "send the file as multipart field 'file' or as the request body")
    return bytes(data), filename, fields


def _kind(request: web.Request) -> str:
    kind = request.match_info["kind"]
    if kind not in importer.KINDS:
        raise errors.NotFound("import kind")
    return kind


def _mapping(fields: dict[str, str]) -> object:
    text = fields.get("mapping", "").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise errors.ValidationError("mapping", "must be JSON: a list of fields or an object") from None


async def import_page(request: web.Request) -> web.Response:
    require_role(request, "head", "admin")
    reader = request_reader(request)
    fields = {kind: [[name, reader.gettext(FIELD_NAMES[name])] for name in names]
              for kind, names in importer.FIELDS.items()}
    return render(request, "import.html", kinds=importer.KINDS, kind_titles=KIND_TITLES, fields=fields,
                  required=importer.REQUIRED, lists=exporter_db.LISTS)


async def preview_api(request: web.Request) -> web.Response:
    """Read the file and suggest a mapping: what the preview page shows before anything is saved."""
    require_role(request, "head", "admin")
    kind = _kind(request)
    data, filename, _ = await read_upload(request, request.app[keys.SETTINGS].import_max_bytes)
    table = await asyncio.to_thread(importer.read_table, data, filename)
    return web.json_response({
        "kind": kind, "format": table.format, "encoding": table.encoding, "delimiter": table.delimiter,
        "headers": table.headers, "rows": importer.sample(table), "row_count": len(table.rows),
        "mapping": importer.suggest_mapping(kind, table.headers), "fields": list(importer.FIELDS[kind]),
        "required": list(importer.REQUIRED[kind]),
    })


async def import_api(request: web.Request) -> web.Response:
    """POST /api/import/{kind}: the file, dry_run, on_duplicate (update | skip) and an optional mapping."""
    viewer = require_role(request, "head", "admin")
    kind = _kind(request)
    settings = request.app[keys.SETTINGS]
    data, filename, fields = await read_upload(request, settings.import_max_bytes)
    table = await asyncio.to_thread(importer.read_table, data, filename)
    async with request.app[keys.POOL].acquire() as conn:
        result = await importer.import_table(
            conn, viewer, kind, table, _mapping(fields), region=settings.phone_region, now=datetime.now(UTC),
            on_duplicate=fields.get("on_duplicate", "update") or "update", dry_run=_flag(fields.get("dry_run")))
    return web.json_response(result.as_json())


# ------------------------------------------------------------------------------------------------- export


def _filters(request: web.Request, name: str) -> exporter_db.Filters:
    """The list page's own query string, checked the way the page checks it."""
    query = request.query
    if name == "calls":
        since = until = None
        if day := query.get("day", ""):
            try:
                since = datetime.strptime(day, "%Y-%m-%d").replace(
                    tzinfo=ZoneInfo(request.app[keys.SETTINGS].timezone))
            except ValueError:
                raise errors.ValidationError("day", "use YYYY-MM-DD") from None
            until = since + timedelta(days=1)
        outcome = query.get("outcome") or None
        if outcome is not None and outcome not in OUTCOMES:
            raise errors.ValidationError("outcome", f"one of {', '.join(OUTCOMES)}")
        return exporter_db.Filters(since=since, until=until, outcome=outcome)
    if name == "leads":
        status, source = query.get("status") or None, query.get("source") or None
        if status is not None and status not in STATUSES:
            raise errors.ValidationError("status", f"one of {', '.join(STATUSES)}")
        if source is not None and source not in SOURCES:
            raise errors.ValidationError("source", f"one of {', '.join(SOURCES)}")
        return exporter_db.Filters(status=status, source=source)
    if name == "deals":
        status = query.get("status") or "in_progress"  # as the deals page: open deals unless asked
        if status not in (*DEAL_STATUSES, "all"):
            raise errors.ValidationError("status", f"one of {', '.join(DEAL_STATUSES)}, all")
        return exporter_db.Filters(status=None if status == "all" else status)
    return exporter_db.Filters(q=(query.get("q") or "").strip()[:100] or None)


def _cell(reader: Reader, column: str, value: Any, zone: ZoneInfo, for_xlsx: bool) -> Any:
    if value is None:
        return "" if not for_xlsx else None
    if isinstance(value, datetime):
        local = value.astimezone(zone).replace(tzinfo=None, microsecond=0)
        return local if for_xlsx else local.isoformat(sep=" ", timespec="minutes")
    if column in CODE_COLUMNS and isinstance(value, str):
        return reader.label(value)
    if isinstance(value, Decimal):
        if for_xlsx:
            return float(value)  # a number Excel sums, not text
        text = format(value.normalize() if value == value.to_integral() else value, "f")
        return text.replace(".", ",") if reader.language == "ru" else text  # as Excel of that locale reads it
    return value


async def export_list(request: web.Request) -> web.StreamResponse:
    """GET /export/{list}.{csv|xlsx} with the list page's filters: CSV in UTF-8 with BOM and ';' (Excel opens it
    as is in Russian locales), or XLSX."""
    viewer = current_user(request)
    name, fmt = request.match_info["list"], request.match_info["format"]
    if name not in exporter_db.LISTS or fmt not in EXPORT_FORMATS:
        raise errors.NotFound("export")
    filters = _filters(request, name)
    settings = request.app[keys.SETTINGS]
    reader, zone = request_reader(request), ZoneInfo(settings.timezone)
    columns = exporter_db.COLUMNS[name]
    header = [reader.gettext(COLUMN_NAMES[c]) for c in columns]
    stamp = datetime.now(zone).strftime("%Y-%m-%d-%H%M")
    disposition = f'attachment; filename="{name}-{stamp}.{fmt}"'
    async with request.app[keys.POOL].acquire() as conn:
        rows = exporter_db.export_rows(conn, viewer, name, filters, settings.phone_region)
        if fmt == "xlsx":
            table = [[_cell(reader, c, v, zone, True) for c, v in zip(columns, row, strict=True)]
                     async for row in rows]
            body = await asyncio.to_thread(write_xlsx, reader.gettext(KIND_TITLES.get(name, name)), header, table)
            return web.Response(body=body, headers={"Content-Disposition": disposition}, content_type=(
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"))
        response = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8",
                                               "Content-Disposition": disposition})
        await response.prepare(request)
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
        buffer.write("\ufeff")
        writer.writerow(header)
        async for row in rows:
            writer.writerow([_cell(reader, c, v, zone, False) for c, v in zip(columns, row, strict=True)])
            if buffer.tell() > 64 * 1024:
                await response.write(buffer.getvalue().encode("utf-8"))
                buffer.seek(0)
                buffer.truncate()
        await response.write(buffer.getvalue().encode("utf-8"))
        await response.write_eof()
        return response


def write_xlsx(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """A workbook in openpyxl's write-only mode (rows streamed to the file, not kept as cell objects)."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet(title[:31] or "Sheet")
    sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def setup(app: web.Application) -> None:
    app.router.add_get("/import", import_page)
    app.router.add_post("/api/import/{kind:contacts|companies|products|stock}/preview", preview_api)
    app.router.add_post("/api/import/{kind:contacts|companies|products|stock}", import_api)
    app.router.add_get("/export/{list:[a-z]+}.{format:[a-z]+}", export_list)
