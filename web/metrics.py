"""Prometheus /metrics: HTTP requests and routing latency measured as they happen; AMI links, calls in progress,
the call writer's backlog, sockets, mail and the outboxes read at scrape time."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from crm import monitoring
from cti.agi import address_allowed
from web import keys

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ROUTING_PATH = "/api/route"
ROUTING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0)
# generate_latest() writes the classic text format; every Prometheus version reads it under this type.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PBX_STATES = ("connected", "connecting", "disconnected", "standby", "failed")


class HttpMetrics:
    """The per-app registry (no module globals: two apps in one process keep their own counts)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("callboard_http_requests", "HTTP requests answered, by route and status",
                                ("route", "method", "status"), registry=self.registry)
        self.duration = Histogram("callboard_http_request_duration_seconds", "Time to answer an HTTP request",
                                  ("route",), registry=self.registry)
        self.routing = Histogram("callboard_routing_duration_seconds",
                                 "Time to answer the dialplan's routing request (HTTP door)",
                                 buckets=ROUTING_BUCKETS, registry=self.registry)
        self.popup = Histogram("callboard_popup_delay_seconds",
                               "From the PBX's event (its Timestamp) to a call's first popup sent to the ringing "
                               "phone's room",
                               buckets=ROUTING_BUCKETS, registry=self.registry)


METRICS = web.AppKey("http_metrics", HttpMetrics)


def _route(request: web.Request) -> str:
    """The route's pattern (/contacts/{party_id}), never the raw path: ids would make a label per row."""
    info = request.match_info
    resource = info.route.resource if info is not None and info.route is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics = request.app[METRICS]
        took = time.perf_counter() - started
        route = _route(request)
        if not route.startswith("/static/"):
            metrics.requests.labels(route, request.method, str(status)).inc()
            metrics.duration.labels(route).observe(took)
        if request.path == ROUTING_PATH:
            metrics.routing.observe(took)


class Snapshot:
    """What was read at this scrape, as metric families (a fresh one each scrape: nothing shared)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def _allowed(request: web.Request) -> bool:
    settings = request.app[keys.SETTINGS]
    if not address_allowed(request.remote or "", settings.metrics_allowlist):
        return False
    if settings.metrics_token:
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(sent.encode(), settings.metrics_token.encode())
    return True


async def _families(app: web.Application) -> list[Metric]:
    settings = app[keys.SETTINGS]
    families: list[Metric] = []
    telephony = app.get(keys.TELEPHONY)
    if telephony is not None:
        up = GaugeMetricFamily("callboard_pbx_up", "1 while this node reads the PBX's AMI stream", labels=["pbx"])
        state = GaugeMetricFamily("callboard_pbx_state", "The AMI link's state (1 for the current one)",
                                  labels=["pbx", "state"])
        events = CounterMetricFamily("callboard_ami_events", "AMI events received", labels=["pbx"])
        for name, status in telephony.pbx_status().items():
            up.add_metric([name], 1 if status["state"] == "connected" else 0)
            for each in sorted({*PBX_STATES, str(status["state"])}):
                state.add_metric([name, each], 1 if each == status["state"] else 0)
            events.add_metric([name], float(status["events"]))  # type: ignore[arg-type]
        live = GaugeMetricFamily("callboard_calls_in_progress", "Calls going on now", labels=["pbx"])
        for name, tracker in telephony.trackers.items():
            live.add_metric([name], len(tracker.live_calls))
        writer = telephony.writer_status()
        families += [up, state, events, live,
                     GaugeMetricFamily("callboard_writer_backlog", "Call events waiting to be written",
                                       value=float(writer["waiting"])),  # type: ignore[arg-type]
                     GaugeMetricFamily("callboard_writer_failures", "Consecutive failed writes of the call writer",
                                       value=float(writer["failures"]))]  # type: ignore[arg-type]
    sio = app.get(keys.SIO)
    if sio is not None:
        families.append(GaugeMetricFamily("callboard_socket_connections", "Browsers connected by socket.io",
                                          value=len(sio.eio.sockets)))
    handler = app.get(keys.MAIL_HANDLER)
    if handler is not None:
        families.append(CounterMetricFamily("callboard_mail_accepted", "E-mails accepted by the SMTP intake",
                                            value=handler.processed))
        families.append(CounterMetricFamily("callboard_mail_refused",
                                            "SMTP senders or recipients the intake turned away",
                                            value=getattr(handler, "refused", 0)))
    zone = ZoneInfo(settings.timezone)
    now = datetime.now(UTC)
    day_start = datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    async with app[keys.POOL].acquire() as conn:
        figures = await monitoring.database_figures(conn, now, day_start)
    calls = GaugeMetricFamily("callboard_calls_today", "Calls since midnight (company time) by outcome",
                              labels=["outcome"])
    for outcome in ("answered", "missed", "abandoned", "busy", "failed", "unknown"):
        calls.add_metric([outcome], figures["calls_today"].get(outcome, 0))
    families += [calls, GaugeMetricFamily("callboard_login_failures_last_hour", "Failed logins in the last hour",
                                          value=figures["login_failures_last_hour"][""])]
    for name, help_text in (("webhook_deliveries", "Webhook deliveries by state"),
                            ("outgoing_mail", "Outgoing e-mails by state")):
        family = GaugeMetricFamily(f"callboard_{name}", help_text, labels=["state"])
        for state_name, count in sorted(figures[name].items()):
            family.add_metric([state_name], count)
        families.append(family)
    return families


async def metrics(request: web.Request) -> web.Response:
    if not _allowed(request):
        logger.warning("/metrics refused to %s", request.remote)
        raise web.HTTPForbidden(reason="not allowed")
    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(Snapshot(await _families(request.app)))  # type: ignore[arg-type]
    body = generate_latest(request.app[METRICS].registry) + generate_latest(snapshot)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def setup(app: web.Application) -> None:
    app[METRICS] = HttpMetrics()
    app.router.add_get("/metrics", metrics)
