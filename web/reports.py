"""Report pages and /api/reports/*: filters, drill-down, SVG charts, CSV/XLSX export; the live wallboard."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import socketio
from aiohttp import web
from babel.dates import get_day_names

from crm import errors
from crm import reports as reports_db
from crm import users as users_db
from crm.leads import SOURCES
from crm.reports import Filters, Period
from web import keys
from web.auth import current_user, require_role
from web.errors import MAX_ID
from web.i18n import N_, Reader, request_reader
from web.jobs import background_task
from web.render import render

logger = logging.getLogger(__name__)

REPORTS = ("managers", "funnel", "sources", "service", "segments")
TITLES = {"managers": N_("Managers"), "funnel": N_("Funnel"), "sources": N_("Sources"),
          "service": N_("Service level"), "segments": N_("ABC/XYZ clients")}
DRILLS = ("calls", "deals", "leads")
# The heading of a drill-down page: which number's rows these are.
METRIC_TITLES = {
    "offered": N_("calls offered"), "unanswered": N_("calls not answered"), "inbound_answered": N_("answered"),
    "outbound": N_("outbound calls"), "outbound_reached": N_("outbound calls with an answer"),
    "answered": N_("answered"), "answered_in_time": N_("answered in time"), "abandoned": N_("abandoned"),
    "missed": N_("missed"), "failed": N_("failed"), "unknown": N_("unknown"), "deals_created": N_("new deals"),
    "deals_won": N_("won"), "deals_lost": N_("lost"), "entered": N_("entered the stage"),
    "stuck": N_("stuck at the stage"), "loss_reason": N_("lost for the reason"), "leads": N_("leads"),
    "leads_converted": N_("converted leads"),
}
FORMATS = ("html", "json", "csv", "xlsx")
WALLBOARD_ROOM = "wallboard"
WALLBOARD_TICK = 1.0  # seconds between looks at the figures; changes go out at most this often, as deltas
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass(frozen=True, slots=True)
class Query:
    period: Period
    filters: Filters
    threshold: int
    format: str
    params: dict[str, str]  # the query as given (without format), for links that keep the filters
    revenue_basis: str = "won"  # won / invoices / payments: the setting, or the query's `revenue_basis`


def _text_param(request: web.Request, name: str, limit: int = 100) -> str | None:
    value = request.query.get(name, "").strip()
    if len(value) > limit or "\x00" in value:
        raise errors.ValidationError(name, f"must be at most {limit} characters")
    return value or None


def _date_param(request: web.Request, name: str, default: date) -> date:
    value = request.query.get(name, "").strip()
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise errors.ValidationError(name, "must be a date as YYYY-MM-DD") from None


def _int_param(request: web.Request, name: str, low: int, high: int) -> int | None:
    value = request.query.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or len(value) > 19 or not low <= int(value) <= high:
        raise errors.ValidationError(name, f"must be a whole number from {low} to {high}")
    return int(value)


def parse_query(request: web.Request, default_format: str) -> Query:
    """`from`/`to` local dates (default: this month to today), filters, `sl` seconds, `format`."""
    settings = request.app[keys.SETTINGS]
    today = datetime.now(ZoneInfo(settings.timezone)).date()
    first = _date_param(request, "from", today.replace(day=1))
    last = _date_param(request, "to", today)
    period = reports_db.make_period(first, last, settings.timezone)
    fmt = request.query.get("format", default_format)
    if fmt not in FORMATS:
        raise errors.ValidationError("format", f"one of {', '.join(FORMATS)}")
    filters = Filters(_int_param(request, "manager", 1, MAX_ID), _text_param(request, "line"),
                      _text_param(request, "queue"), _text_param(request, "source"))
    threshold = _int_param(request, "sl", 1, 3600) or settings.service_level_seconds
    basis = request.query.get("revenue_basis") or settings.revenue_basis
    if basis not in reports_db.REVENUE_BASES:
        raise errors.ValidationError("revenue_basis", f"one of {', '.join(reports_db.REVENUE_BASES)}")
    params = {k: v for k, v in request.query.items() if k != "format" and v}
    params.update({"from": first.isoformat(), "to": last.isoformat()})
    return Query(period, reports_db.scoped(current_user(request), filters), threshold, fmt, params, basis)


def _now() -> datetime:
    return datetime.now(UTC)


async def compute(request: web.Request, name: str, query: Query) -> Any:
    async with request.app[keys.POOL].acquire() as conn:
        if name == "managers":
            return await reports_db.managers_report(conn, query.period, query.filters, _now(), query.revenue_basis)
        if name == "funnel":
            return await reports_db.funnel_report(conn, query.period, query.filters, _now(), query.revenue_basis)
        if name == "sources":
            return await reports_db.sources_report(conn, query.period, query.filters, query.revenue_basis)
        if name == "service":
            return await reports_db.service_report(conn, query.period, query.filters, query.threshold)
        return await reports_db.segments_report(conn, query.period, query.filters, query.revenue_basis)


async def compute_drill(request: web.Request, kind: str, query: Query) -> list[dict]:
    metric = request.query.get("metric", "")
    async with request.app[keys.POOL].acquire() as conn:
        if kind == "calls":
            day = _date_param(request, "day", None) if request.query.get("day") else None
            return await reports_db.drill_calls(conn, query.period, query.filters, metric, day,
                                                _int_param(request, "hour", 0, 23), query.threshold,
                                                _int_param(request, "weekday", 1, 7))
        if kind == "deals":
            return await reports_db.drill_deals(conn, query.period, query.filters, metric, _now(),
                                                _text_param(request, "stage"), _text_param(request, "reason"))
        return await reports_db.drill_leads(conn, query.period, query.filters, metric)


# ---------------------------------------------------------------------------------------------------- JSON


def jsonable(value: Any) -> Any:
    """Money as strings with two decimals (as the rest of the API), dates as ISO 8601."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def _envelope(name: str, query: Query, data: Any) -> dict[str, Any]:
    body = {"report": name, "from": query.period.first.isoformat(), "to": query.period.last.isoformat(),
            "timezone": query.period.timezone,
            "filters": {"manager": query.filters.manager_id, "line": query.filters.line,
                        "queue": query.filters.queue, "source": query.filters.source}}
    if name == "service":
        body["threshold_seconds"] = query.threshold
    else:
        body["revenue_basis"] = query.revenue_basis
    return body | {"data": jsonable(data)}


# ---------------------------------------------------------------------------------------------------- export


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    columns: tuple[tuple[str, str], ...]  # (key, the heading people read)
    rows: list[dict[str, Any]]


MANAGER_COLUMNS = (
    ("manager", N_("Manager")), ("inbound_offered", N_("Inbound offered")),
    ("inbound_answered", N_("Inbound answered")), ("inbound_missed", N_("Inbound missed")),
    ("outbound", N_("Outbound calls")), ("outbound_reached", N_("Outbound reached")),
    ("talk_seconds", N_("Talk time, s")), ("avg_talk_seconds", N_("Average talk, s")),
    ("avg_answer_seconds", N_("Average time to answer, s")), ("missed_callers", N_("Missed callers")),
    ("called_back", N_("Called back")), ("called_back_in_time", N_("Called back in time")),
    ("leads", N_("Leads")), ("leads_converted", N_("Leads converted")), ("deals_created", N_("Deals created")),
    ("deals_won", N_("Deals won")), ("deals_lost", N_("Deals lost")), ("revenue_won", N_("Revenue won")),
    ("tasks_overdue", N_("Overdue tasks")),
)
SERVICE_COLUMNS = (
    ("offered", N_("Offered")), ("answered", N_("Answered")), ("abandoned", N_("Abandoned")),
    ("missed", N_("Missed")), ("failed", N_("Failed")), ("unknown", N_("Unknown")),
    ("answered_in_time", N_("Answered in time")), ("service_level", N_("Service level")),
    ("avg_wait", N_("Average wait, s")), ("max_wait", N_("Longest wait, s")),
)


def tables(name: str, data: Any, reader: Reader) -> list[Table]:
    """The report as tables, for CSV and XLSX: one sheet each."""
    def table(title: str, columns: tuple[tuple[str, str], ...], rows: list[dict]) -> Table:
        return Table(reader.gettext(title), tuple((k, reader.gettext(label)) for k, label in columns), rows)

    if name == "managers":
        return [table(TITLES[name], MANAGER_COLUMNS, data)]
    if name == "funnel":
        stages = [r | {"name": reader.gettext(r["name"])} for r in data["stages"]]
        reasons = [r | {"reason": reader.label(r["reason"])} for r in data["loss_reasons"]]
        return [table(TITLES[name], (("name", N_("Stage")), ("entered", N_("Entered")),
                                     ("advanced", N_("Went on")), ("conversion", N_("Conversion")),
                                     ("median_days", N_("Median days")), ("stuck", N_("Stuck"))), stages),
                table(N_("Loss reasons"), (("reason", N_("Reason")), ("deals", N_("Deals")),
                                           ("amount", N_("Amount"))), reasons)]
    if name == "sources":
        leads = [r | {"source": reader.label(r["source"])} for r in data["leads"]]
        deals = [r | {"source": reader.label(r["source"])} for r in data["deals"]]
        return [table(N_("Leads"), (("source", N_("Channel")), ("line", N_("Line")),
                                    ("utm_source", N_("UTM source")), ("utm_campaign", N_("UTM campaign")),
                                    ("leads", N_("Leads")), ("converted", N_("Converted")), ("deals", N_("Deals")),
                                    ("won", N_("Won")), ("revenue", N_("Revenue"))), leads),
                table(N_("Deals"), (("source", N_("Source")), ("deals", N_("Deals")), ("won", N_("Won")),
                                    ("lost", N_("Lost")), ("revenue", N_("Revenue")),
                                    ("win_rate", N_("Win rate"))), deals),
                table(N_("Won deals"), (("title", N_("Deal")), ("amount", N_("Amount")), ("source", N_("Source")),
                                        ("manager", N_("Manager")), ("calls", N_("Calls")),
                                        ("emails", N_("E-mails"))), data["won_deals"])]
    if name == "service":
        return [table(N_("Lines and queues"), (("line", N_("Line")), ("queue", N_("Queue")), *SERVICE_COLUMNS),
                      data["lines"]),
                table(N_("Days"), (("day", N_("Day")), *SERVICE_COLUMNS), data["days"])]
    clients = [r | {"name": r["name"]} for r in data["clients"]]
    return [table(TITLES[name], (("name", N_("Client")), ("manager", N_("Manager")), ("revenue", N_("Revenue")),
                                 ("share", N_("Share")), ("abc", "ABC"), ("months_bought", N_("Months bought")),
                                 ("variation", N_("Variation")), ("xyz", "XYZ")), clients),
            table(N_("Stopped buying"), (("name", N_("Client")), ("manager", N_("Manager")),
                                         ("purchases", N_("Purchases")), ("usual_days", N_("Usual interval, days")),
                                         ("last_purchase", N_("Last purchase"))), data["stopped"])]


def _cell(value: Any, zone: ZoneInfo) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(zone).replace(tzinfo=None)  # spreadsheets know no zones: the company's time
    if isinstance(value, Decimal):
        return float(round(value, 2))
    return value


def write_csv(sheets: list[Table], zone: ZoneInfo) -> bytes:
    """UTF-8 with a BOM and ';' between fields: what Excel set to Russian opens without asking."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    for number, sheet in enumerate(sheets):
        if number:
            writer.writerow([])
        if len(sheets) > 1:
            writer.writerow([sheet.title])
        writer.writerow([label for _, label in sheet.columns])
        for row in sheet.rows:
            values = [_cell(row.get(key), zone) for key, _ in sheet.columns]
            writer.writerow(["" if v is None else str(v).replace(".", ",") if isinstance(v, float) else v
                             for v in values])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def write_xlsx(sheets: list[Table], zone: ZoneInfo) -> bytes:
    """One sheet per table (openpyxl's write-only mode: rows stream out, memory stays flat)."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    for sheet in sheets:
        # Sheet names: at most 31 characters, none of []:*?/\
        ws = book.create_sheet("".join(c for c in sheet.title if c not in "[]:*?/\\")[:31] or "Report")
        ws.append([label for _, label in sheet.columns])
        for row in sheet.rows:
            ws.append([_cell(row.get(key), zone) for key, _ in sheet.columns])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def export(request: web.Request, name: str, query: Query, sheets: list[Table]) -> web.Response:
    zone = ZoneInfo(query.period.timezone)
    filename = f"callboard-{name}-{query.period.first.isoformat()}-{query.period.last.isoformat()}"
    if query.format == "csv":
        body = await asyncio.to_thread(write_csv, sheets, zone)
        return web.Response(body=body, content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'})
    body = await asyncio.to_thread(write_xlsx, sheets, zone)
    return web.Response(body=body, content_type=XLSX_TYPE,
                        headers={"Content-Disposition": f'attachment; filename="{filename}.xlsx"'})


# ---------------------------------------------------------------------------------------------------- charts


def bars(items: list[tuple[str, float | int | Decimal | None, str, str | None]]) -> dict[str, Any]:
    """A horizontal bar chart as data for the template's inline SVG: (label, value, shown text, link)."""
    top = max((float(v or 0) for _, v, _, _ in items), default=0) or 1
    rows = [{"label": label, "width": round(400 * float(value or 0) / top, 1), "text": text, "href": href,
             "y": 24 * i} for i, (label, value, text, href) in enumerate(items)]
    return {"rows": rows, "height": 24 * len(rows) + 4}


def charts_for(name: str, data: Any, link: Callable[..., str], reader: Reader) -> dict[str, Any]:
    """The bar charts of a report page, each bar a link to the rows behind it."""
    def pct(value: float | None) -> str:
        return reader.percent(None if value is None else value * 100)

    if name == "managers":
        return {"answered": bars([(r["manager"], r["inbound_answered"], str(r["inbound_answered"]),
                                   link("/reports/calls", metric="inbound_answered", manager=r["manager_id"]))
                                  for r in data]),
                "revenue": bars([(r["manager"], r["revenue_won"], reader.money(r["revenue_won"]),
                                  link("/reports/deals", metric="deals_won", manager=r["manager_id"]))
                                 for r in data])}
    if name == "funnel":
        return {"entered": bars([(reader.gettext(s["name"]), s["entered"], str(s["entered"]),
                                  link("/reports/deals", metric="entered", stage=s["stage"]))
                                 for s in data["stages"]])}
    if name == "sources":
        per_channel: dict[str, int] = {}
        for row in data["leads"]:
            per_channel[row["source"]] = per_channel.get(row["source"], 0) + row["leads"]
        return {"leads": bars([(reader.label(k), v, str(v), link("/reports/leads", metric="leads", source=k))
                               for k, v in sorted(per_channel.items(), key=lambda kv: -kv[1])]),
                "revenue": bars([(reader.label(r["source"]), r["revenue"], reader.money(r["revenue"]), None)
                                 for r in data["deals"]])}
    if name == "service":
        return {"days": bars([(reader.moment(r["day"], "date"), (r["service_level"] or 0) * 100,
                               pct(r["service_level"]), link("/reports/calls", metric="answered_in_time",
                                                             day=r["day"].isoformat()))
                              for r in data["days"]])}
    return {"revenue": bars([(r["name"], r["revenue"], reader.money(r["revenue"]), None)
                             for r in data["clients"][:15]])}


def heat(cells: list[dict[str, Any]], value: Callable[[dict], float | None]) -> dict[tuple[int, int], int]:
    """(weekday, hour) → a level 0..5 for the heat map's colour class."""
    values = {(c["weekday"], c["hour"]): value(c) for c in cells}
    top = max((v for v in values.values() if v), default=0) or 1
    return {k: (0 if not v else 1 + min(4, int(4 * v / top))) for k, v in values.items()}


def _link(query: Query, path: str, **extra: Any) -> str:
    params = {k: v for k, v in query.params.items() if k in ("from", "to", "manager", "line", "queue", "source",
                                                             "sl")}
    params.update({k: str(v) for k, v in extra.items() if v is not None})
    return f"{path}?{urlencode(params)}"


# ---------------------------------------------------------------------------------------------------- handlers


async def _managers(request: web.Request) -> list:
    async with request.app[keys.POOL].acquire() as conn:
        return await users_db.list_assignees(conn)


def weekday_names(reader: Reader) -> list[str]:
    names = get_day_names("abbreviated", locale=reader.locale)
    return [names[i] for i in range(7)]


async def report_page(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    query = parse_query(request, "html")
    data = await compute(request, name, query)
    if query.format == "json":
        return web.json_response(_envelope(name, query, data))
    if query.format in ("csv", "xlsx"):
        return await export(request, name, query, tables(name, data, request_reader(request)))
    def link(path: str, **extra: Any) -> str:
        return _link(query, path, **extra)

    return render(request, f"reports_{name}.html", report=name, reports=REPORTS, titles=TITLES, data=data,
                  query=query, managers=await _managers(request) if current_user(request).sees_everything else [],
                  link=link, heat=heat, charts_data=charts_for(name, data, link, request_reader(request)),
                  offered_of=lambda cell: cell["offered"],
                  weekdays=weekday_names(request_reader(request)), sources=SOURCES,
                  export_link=lambda fmt: _link(query, request.path, format=fmt))


async def report_api(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    query = parse_query(request, "json")
    data = await compute(request, name, query)
    if query.format in ("csv", "xlsx"):
        return await export(request, name, query, tables(name, data, request_reader(request)))
    if query.format == "html":
        raise errors.ValidationError("format", "json, csv or xlsx")
    return web.json_response(_envelope(name, query, data))


DRILL_COLUMNS = {
    "calls": (("started_at", N_("Started")), ("direction", N_("Direction")), ("caller", N_("Caller")),
              ("callee", N_("Called")), ("queue", N_("Queue")), ("outcome", N_("Outcome")),
              ("manager", N_("Manager")), ("ring_seconds", N_("Ring, s")), ("talk_seconds", N_("Talk, s"))),
    "deals": (("id", "#"), ("title", N_("Deal")), ("stage", N_("Stage")), ("status", N_("Status")),
              ("source", N_("Source")), ("manager", N_("Manager")), ("amount", N_("Amount")),
              ("created_at", N_("Created")), ("closed_at", N_("Closed"))),
    "leads": (("id", "#"), ("created_at", N_("Created")), ("source", N_("Channel")), ("line", N_("Line")),
              ("status", N_("Status")), ("name", N_("Name")), ("manager", N_("Manager"))),
}


async def drill_page(request: web.Request) -> web.StreamResponse:
    kind = request.match_info["kind"]
    query = parse_query(request, "html")
    rows = await compute_drill(request, kind, query)
    if query.format == "json":
        return web.json_response({"kind": kind, "metric": request.query.get("metric"), "items": jsonable(rows),
                                  "limit": reports_db.MAX_ROWS})
    if query.format in ("csv", "xlsx"):
        reader = request_reader(request)
        sheet = Table(reader.gettext(N_("Rows")), tuple((k, reader.gettext(v)) for k, v in DRILL_COLUMNS[kind]),
                      rows)
        return await export(request, kind, query, [sheet])
    return render(request, "reports_drill.html", kind=kind, rows=rows, query=query, reports=REPORTS, titles=TITLES,
                  metric=METRIC_TITLES.get(request.query.get("metric", ""), ""), limit=reports_db.MAX_ROWS,
                  export_link=lambda fmt: _link(query, request.path, format=fmt, metric=request.query.get("metric"),
                                                stage=request.query.get("stage"), reason=request.query.get("reason"),
                                                day=request.query.get("day"), hour=request.query.get("hour"),
                                                weekday=request.query.get("weekday")),
                  link=lambda path, **extra: _link(query, path, **extra))


async def drill_api(request: web.Request) -> web.StreamResponse:
    query = parse_query(request, "json")
    if query.format != "json":
        return await drill_page(request)
    rows = await compute_drill(request, request.match_info["kind"], query)
    return web.json_response({"kind": request.match_info["kind"], "metric": request.query.get("metric"),
                              "items": jsonable(rows), "limit": reports_db.MAX_ROWS})


async def reactivate(request: web.Request) -> web.Response:
    """Reactivation tasks for the clients who stopped buying (a page form or the API)."""
    require_role(request, "head", "admin")
    query = parse_query(request, "json")
    async with request.app[keys.POOL].acquire() as conn:
        created = await reports_db.create_reactivation_tasks(conn, current_user(request), query.period,
                                                             query.filters, _now())
    if request.path.startswith("/api/"):
        return web.json_response({"created": created}, status=201 if created else 200)
    raise web.HTTPFound(_link(query, "/reports/segments", done=len(created)))


async def index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/reports/managers" + (f"?{request.query_string}" if request.query_string else ""))


# ---------------------------------------------------------------------------------------------------- wallboard


def waiting_callers(app: web.Application) -> list[dict[str, Any]]:
    """Inbound calls not answered yet, from the telephony's live call state (read only; the node holding the
    PBX's lease knows them)."""
    telephony = app.get(keys.TELEPHONY)
    if telephony is None:
        return []
    out = []
    for tracker in telephony.trackers.values():
        for call in tracker.live_calls:
            leg = tracker.legs.get(call.first_leg)
            if call.answered_at is not None or call.originated or leg is None or leg.kind != "trunk":
                continue  # answered, or not a customer calling in
            out.append({"call_id": call.call_id, "caller": leg.caller_num, "since": call.started,
                        "queue": call.queue or "", "ringing": bool(call.agents_rang)})
    return sorted(out, key=lambda c: c["since"])


class Wallboard:
    """Keeps the last figures sent and pushes only what changed to the sockets watching the wallboard."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.last: dict[str, Any] = {}
        self.since: dict[str, tuple[str, float]] = {}  # extension → (state, when it was first seen in it)

    async def snapshot(self) -> dict[str, Any]:
        app = self.app
        settings = app[keys.SETTINGS]
        zone = ZoneInfo(settings.timezone)
        now = datetime.now(UTC)
        today = now.astimezone(zone).date()
        async with app[keys.POOL].acquire() as conn:
            figures = await reports_db.wallboard_figures(
                conn, reports_db.make_period(today, today, settings.timezone), settings.service_level_seconds, now)
            people = await conn.fetch(AGENTS)
        telephony = app.get(keys.TELEPHONY)
        states = telephony.agent_states() if telephony is not None else {}
        flat: dict[str, Any] = {"total": figures["total"], "open_callers": figures["open_callers"],
                                "overdue_callbacks": figures["overdue_callbacks"],
                                "waiting": waiting_callers(app)}
        for line in figures["lines"]:
            flat[f"line:{line['line']}"] = line
        for person in people:
            ext = person["extension"]
            state = states.get(ext, "offline")
            if self.since.get(ext, ("",))[0] != state:
                self.since[ext] = (state, now.timestamp())
            flat[f"agent:{ext}"] = {"extension": ext, "name": person["display_name"], "state": state,
                                    "since": self.since[ext][1]}
        return jsonable(flat)

    async def tick(self, sio: socketio.AsyncServer) -> dict[str, Any] | None:
        """Send the changes since the last tick (a removed key as null); None when nothing changed."""
        current = await self.snapshot()
        changes = {k: v for k, v in current.items() if self.last.get(k) != v}
        changes.update({k: None for k in self.last if k not in current})
        self.last = current
        if changes:
            await sio.emit("wallboard", {"full": False, "changes": changes}, room=WALLBOARD_ROOM)
            return changes
        return None


# Agents on the wallboard: active people with a phone.
AGENTS = "SELECT extension, display_name FROM users WHERE active AND extension IS NOT NULL ORDER BY extension"


async def watch_wallboard(app: web.Application) -> None:
    """Look at the figures every tick while someone on this node watches the wallboard."""
    board, sio = app[keys.WALLBOARD], app[keys.SIO]
    while True:
        await asyncio.sleep(WALLBOARD_TICK)
        if not any(True for _ in sio.manager.get_participants("/", WALLBOARD_ROOM)):
            board.last = {}  # the next watcher starts from a full snapshot anyway
            continue
        try:
            await board.tick(sio)
        except Exception:  # a database hiccup must not end the wallboard
            logger.exception("wallboard update failed")


wallboard_loop = background_task("wallboard", watch_wallboard)  # the cleanup_ctx


def register_socket(app: web.Application) -> None:
    sio = app[keys.SIO]

    async def join(sid: str, data: Any = None) -> None:
        session = await sio.get_session(sid)
        if session.get("role") not in ("head", "admin"):
            return
        await sio.enter_room(sid, WALLBOARD_ROOM)
        board = app[keys.WALLBOARD]
        snapshot = await board.snapshot()
        if not board.last:
            board.last = snapshot  # the first watcher: the next tick sends only what changes from here
        await sio.emit("wallboard", {"full": True, "changes": snapshot}, to=sid)

    sio.on("wallboard_join", join)


async def wallboard_page(request: web.Request) -> web.Response:
    require_role(request, "head", "admin")
    snapshot = await request.app[keys.WALLBOARD].snapshot()
    agents = [v for k, v in snapshot.items() if k.startswith("agent:")]
    lines = [v for k, v in snapshot.items() if k.startswith("line:")]
    return render(request, "wallboard.html", board=snapshot, agents=agents, lines=lines,
                  now=_now().timestamp())


async def wallboard_api(request: web.Request) -> web.Response:
    require_role(request, "head", "admin")
    return web.json_response(await request.app[keys.WALLBOARD].snapshot())



def openapi_paths(error: dict[str, Any]) -> dict[str, Any]:
    """The reports' entries in /api/openapi.json (web.api)."""
    def param(name: str, kind: str, text: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "in": "query", "description": text, "schema": {"type": kind, **extra}}

    common = [param("from", "string", "first local day, YYYY-MM-DD (default: the 1st of this month)", format="date"),
              param("to", "string", "last local day, included (default: today); at most "
                    f"{reports_db.MAX_DAYS} days after `from`", format="date"),
              param("manager", "integer", "a user id (a manager always gets their own figures)"),
              param("line", "string", "the DID an inbound call dialled (E.164)"), param("queue", "string", "queue"),
              param("source", "string", "lead channel or deal source"),
              param("format", "string", "json (default), csv (UTF-8 with BOM, ';') or xlsx",
                    enum=["json", "csv", "xlsx"])]
    summaries = {
        "managers": "Per manager: inbound offered/answered/not answered (call level), outbound and reached, talk "
                    "time, time to answer, missed callers called back (in time), leads, deals, revenue, overdue tasks",
        "funnel": "Deals entering each stage, conversion to the next, median days, stuck now, win rate, revenue, "
                  "loss reasons",
        "sources": "Leads and deals by channel, line and UTM tags; conversion and revenue; won deals with the calls "
                   "and e-mails before them",
        "service": "Per line and queue, day and weekday×hour: offered, answered, abandoned, missed, service level "
                   "(answered within `sl` seconds of calls with a known outcome), average and longest wait",
        "segments": "Clients by ABC (revenue share 80/15/5 %) and XYZ (month-to-month variation over 12 months); "
                    "clients who stopped buying",
    }
    ok = {"200": {"description": "the report: {report, from, to, timezone, filters, data}"}, "403": error,
          "422": error}
    paths: dict[str, Any] = {f"/api/reports/{name}": {"get": {
        "summary": summary,
        "parameters": common + ([param("sl", "integer", "service level threshold, seconds")] if name == "service"
                                else [param("revenue_basis", "string", "revenue counted by deals won, invoices "
                                            "issued or payments received (default: the setting "
                                            "CALLBOARD_REVENUE_BASIS)", enum=list(reports_db.REVENUE_BASES))]),
        "responses": ok}}
        for name, summary in summaries.items()}
    for kind, metrics in (("calls", reports_db.CALL_METRICS), ("deals", reports_db.DEAL_METRICS),
                          ("leads", reports_db.LEAD_METRICS)):
        paths[f"/api/reports/{kind}"] = {"get": {
            "summary": f"Drill-down: the {kind} behind a report's number (newest {reports_db.MAX_ROWS})",
            "parameters": [*common, param("metric", "string", "which number", enum=list(metrics)),
                           *([param("day", "string", "a local day", format="date"), param("hour", "integer", "0-23"),
                              param("weekday", "integer", "1 (Monday) to 7")] if kind == "calls" else []),
                           *([param("stage", "string", "for entered / stuck"),
                              param("reason", "string", "for loss_reason")] if kind == "deals" else [])],
            "responses": {"200": {"description": "{kind, metric, items, limit}"}, "422": error}}}
    paths["/api/reports/segments/reactivate"] = {"post": {
        "summary": "A follow-up task for the manager of each client who stopped buying (head, admin); once",
        "parameters": common[:-1], "responses": {"201": {"description": "{created: [task ids]}"},
                                                 "200": {"description": "nothing new"}, "403": error}}}
    paths["/api/wallboard"] = {"get": {
        "summary": "The wallboard's figures now (head, admin); live: socket.io event `wallboard_join`, then "
                   "`wallboard` messages {full, changes} with only what changed",
        "responses": {"200": {"description": "agents, waiting callers, today's figures per line"}, "403": error}}}
    return paths


def setup(app: web.Application) -> None:
    """After realtime.setup: the wallboard's socket event joins the app's socket.io server."""
    app[keys.WALLBOARD] = Wallboard(app)
    names = "|".join(REPORTS)
    r = app.router
    r.add_get("/reports", index)
    r.add_get(f"/reports/{{name:{names}}}", report_page)
    r.add_get(f"/api/reports/{{name:{names}}}", report_api)
    r.add_get("/reports/{kind:calls|deals|leads}", drill_page)
    r.add_get("/api/reports/{kind:calls|deals|leads}", drill_api)
    r.add_post("/reports/segments/reactivate", reactivate)
    r.add_post("/api/reports/segments/reactivate", reactivate)
    r.add_get("/wallboard", wallboard_page)
    r.add_get("/api/wallboard", wallboard_api)
    if keys.SIO in app:
        register_socket(app)
        app.cleanup_ctx.append(wallboard_loop)
