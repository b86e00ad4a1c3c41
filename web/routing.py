"""Doors for the dialplan (HTTP for CURL(), FastAGI); the decision is cti.routing's."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from aiohttp import web
from panoramisk import fast_agi

from crm.demo import DEMO_ROUTING_TOKEN
from crm.leads import get_or_create_phone_lead
from crm.matching import find_caller
from crm.phones import normalise_caller
from crm.routing_index import IndexKeeper, RoutingIndex
from crm.settings import Settings
from cti.routing import RouteDecision, decide, fallback_for
from cti.service import TelephonyService
from web import keys

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Router:
    """Looks the caller up and decides, always within the deadline; shared by both doors."""

    settings: Settings
    pool: asyncpg.Pool
    telephony: TelephonyService | None
    index: RoutingIndex | None = None

    async def route(self, caller: str, did: str, pbx: str | None = None) -> RouteDecision:
        fallback = self.settings.routing_fallback
        if self.index is not None and self.index.ready:
            # A known caller is decided from memory: no I/O, so no deadline machinery needed.
            match = self.index.find(caller, self.settings.phone_region)
            if match is not None:
                return decide(caller, match, self._state(match, pbx), fallback)
        started = time.perf_counter()
        lookup = asyncio.ensure_future(self._lookup(caller, did, pbx))
        try:
            # shield: a slow lookup still finishes (and creates the lead) after we answered.
            async with asyncio.timeout(self.settings.routing_deadline_ms / 1000):
                decision = await asyncio.shield(lookup)
        except TimeoutError:
            logger.warning("routing for caller %r took over %d ms; answered the fallback %r", caller[:32],
                           self.settings.routing_deadline_ms, fallback)
            return fallback_for("timeout", fallback)
        except Exception:
            logger.exception("routing for caller %r failed; answered the fallback %r", caller[:32], fallback)
            return fallback_for("error", fallback)
        logger.debug("routed %r → %s (%s) in %.1f ms", caller[:32], decision.target, decision.reason,
                     (time.perf_counter() - started) * 1000)
        return decision

    async def _lookup(self, caller: str, did: str, pbx: str | None) -> RouteDecision:
        region = self.settings.phone_region
        e164 = normalise_caller(caller, region)
        lead_id = None
        if self.index is not None and self.index.ready:
            match = self.index.find(caller, region)  # known callers: no database round trip
        else:
            async with self.pool.acquire() as conn:
                match = await find_caller(conn, caller, region, self.settings.suffix_match_digits)
        if match is None and e164 is not None:
            async with self.pool.acquire() as conn:
                lead, _ = await get_or_create_phone_lead(conn, e164, did)
            lead_id = lead.id
        return decide(e164, match, self._state(match, pbx), self.settings.routing_fallback, lead_id)

    def _state(self, match, pbx: str | None) -> str | None:
        if match is not None and match.manager_extension and self.telephony is not None:
            return self.telephony.agent_state(match.manager_extension, pbx)
        return None


def _token_ok(request: web.Request, expected: str) -> bool:
    sent = (request.headers.get("X-Callboard-Token") or request.query.get("token")
            or request.headers.get("Authorization", "").removeprefix("Bearer ").strip())
    return bool(expected) and bool(sent) and hmac.compare_digest(sent, expected)


def _address_ok(request: web.Request, allowlist: tuple[str, ...]) -> bool:
    if not allowlist:
        return True
    try:
        address = ipaddress.ip_address(request.remote or "")
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False) for network in allowlist)


def routing_token(settings: Settings) -> str:
    return settings.routing_token or (DEMO_ROUTING_TOKEN if settings.demo else "")


async def route_http(request: web.Request) -> web.Response:
    """GET /api/route?caller=&did=&pbx= → the extension to dial, as text/plain (or JSON on request)."""
    settings = request.app[keys.SETTINGS]
    if not _address_ok(request, settings.routing_allowlist) or not _token_ok(request, routing_token(settings)):
        logger.warning("routing request refused from %s", request.remote)
        return web.Response(status=403, text="forbidden\n")
    caller = request.query.get("caller", "")[:64]
    did = request.query.get("did", "")[:64]
    decision = await request.app[keys.ROUTER].route(caller, did, request.query.get("pbx") or None)
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response(decision.to_json())
    return web.Response(text=decision.target)


# ------------------------------------------------------------------ FastAGI

class AgiApplication(fast_agi.Application):
    """panoramisk's FastAGI app; its handler loops forever on a connection closed before the blank
    line (read() returns b'' and the loop never ends), so reading the request is bounded here."""

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                raw = await reader.readuntil(b"\n\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        headers = dict(line.split(": ", 1) for line in raw.decode("utf-8", "replace").split("\n") if ": " in line)
        script = headers.get("agi_network_script", "").split("?")[0].strip("/")
        route = self._route.get(script)
        if route is None:
            logger.error("FastAGI request for unknown script %r", script)
        else:
            request = fast_agi.Request(app=self, headers=headers, reader=reader, writer=writer,
                                       encoding=self.default_encoding)
            try:
                await route(request)
            except (ConnectionError, asyncio.IncompleteReadError):
                logger.info("FastAGI peer hung up during %r", script)
            except Exception:
                logger.exception("FastAGI route %r failed", script)
        writer.close()


def _agi_quote(value: str) -> str:
    return '"' + value.replace("\\", "").replace('"', "").replace("\n", "") + '"'


def make_agi_app(router: Router) -> AgiApplication:
    app = AgiApplication(loop=asyncio.get_running_loop())

    async def route(request: fast_agi.Request) -> None:
        caller = request.headers.get("agi_callerid", "")
        did = request.headers.get("agi_dnid") or request.headers.get("agi_extension", "")
        decision = await router.route(caller, did)
        for name, value in (("CALLBOARD_TARGET", decision.target), ("CALLBOARD_KIND", decision.kind),
                            ("CALLBOARD_CONTACT", str(decision.contact_id or "")),
                            ("CALLBOARD_REASON", decision.reason)):
            await request.send_command(f"SET VARIABLE {name} {_agi_quote(value)}")

    app.add_route("route", route)
    return app


async def routing_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    keeper = None
    index = None
    if settings.routing_cache:
        index = RoutingIndex(settings.suffix_match_digits)
        keeper = IndexKeeper(index, app[keys.POOL])
        await keeper.start()
    router = Router(settings, app[keys.POOL], app.get(keys.TELEPHONY), index)
    app[keys.ROUTER] = router
    server = None
    if settings.agi_port:
        agi = make_agi_app(router)
        try:
            server = await asyncio.start_server(agi.handler, settings.agi_host, settings.agi_port)
            app[keys.AGI_PORT] = server.sockets[0].getsockname()[1]
            logger.info("FastAGI routing on agi://%s:%d/route", settings.agi_host, app[keys.AGI_PORT])
        except OSError as exc:
            logger.error("FastAGI port %s:%d unavailable (%s); the HTTP routing door still works",
                         settings.agi_host, settings.agi_port, exc.strerror)
    try:
        yield
    finally:
        if server is not None:
            server.close()
            await server.wait_closed()
        if keeper is not None:
            await keeper.stop()


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(routing_ctx)
    app.router.add_get("/api/route", route_http)
