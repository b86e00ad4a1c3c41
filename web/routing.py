"""Doors for the dialplan (HTTP for CURL(), FastAGI); the decision is cti.routing's."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from crm.calls import lead_for_unknown_caller
from crm.demo import DEMO_ROUTING_TOKEN
from crm.matching import find_caller
from crm.phones import normalise_caller
from crm.routing_index import IndexKeeper, RoutingIndex
from crm.settings import Settings
from cti.agi import address_allowed, start_agi_server, token_matches
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
    # Leads being written for unknown callers, by number: referenced so they are not collected
    # mid-write, one per number so a spam burst from one number writes once, awaited at shutdown.
    _leads: dict[str, asyncio.Task] = field(default_factory=dict)

    async def route(self, caller: str, did: str, pbx: str | None = None, caller_name: str = "") -> RouteDecision:
        fallback = self.settings.routing_fallback
        if self.index is not None and self.index.ready:
            # Decided from memory, known or unknown caller: no I/O, so no deadline machinery needed.
            match = self.index.find(caller, self.settings.phone_region)
            if match is not None:
                return decide(caller, match, self._state(match, pbx), fallback)
            e164 = normalise_caller(caller, self.settings.phone_region)
            self._lead_later(e164, did, caller_name, pbx)
            return decide(e164, None, None, fallback)
        started = time.perf_counter()
        lookup = asyncio.ensure_future(self._lookup(caller, did, pbx, caller_name))
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

    async def _lookup(self, caller: str, did: str, pbx: str | None, caller_name: str = "") -> RouteDecision:
        region = self.settings.phone_region
        e164 = normalise_caller(caller, region)
        async with self.pool.acquire() as conn:
            match = await find_caller(conn, caller, region, self.settings.suffix_match_digits)
        if match is None:
            self._lead_later(e164, did, caller_name, pbx)
        return decide(e164, match, self._state(match, pbx), self.settings.routing_fallback)

    def _lead_later(self, e164: str | None, did: str, caller_name: str, pbx: str | None) -> None:
        """The answer never waits for the lead. While the call pipeline sees the PBX's calls, the lead is
        its to write (it did at the call's first event, before the dialplan asked): routing writes nothing.
        Without AMI (a routing-only setup, a link down) the lead is written here in the background, and
        again, idempotently, by the pipeline or the CDR backfill once the call is known."""
        if e164 is None or e164 in self._leads:
            return
        if self.telephony is not None and self.telephony.sees_calls(pbx):
            return
        task = asyncio.create_task(self._write_lead(e164, did, caller_name), name=f"lead-for-{e164}")
        self._leads[e164] = task
        task.add_done_callback(lambda _: self._leads.pop(e164, None))

    async def _write_lead(self, e164: str, did: str, caller_name: str) -> None:
        try:
            # The one lead rule (cti.pipeline): the lead gets the caller's name and the heads a live push.
            if self.telephony is not None:
                await self.telephony.pipeline.lead_for_caller(e164, did, caller_name)
            else:
                async with self.pool.acquire() as conn:
                    await lead_for_unknown_caller(conn, e164, did, caller_name)
        except Exception:
            logger.exception("the lead for unknown caller %s was not written (the call pipeline retries at "
                             "the call's end)", e164)

    async def drain(self, timeout: float = 5.0) -> None:
        """Let the leads being written finish (shutdown); those still waiting after `timeout` are cancelled."""
        pending = list(self._leads.values())
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    def _state(self, match, pbx: str | None) -> str | None:
        if match is not None and match.manager_extension and self.telephony is not None:
            return self.telephony.agent_state(match.manager_extension, pbx)
        return None


def _token_ok(request: web.Request, expected: str) -> bool:
    sent = (request.headers.get("X-Callboard-Token") or request.query.get("token")
            or request.headers.get("Authorization", "").removeprefix("Bearer ").strip())
    return token_matches(sent, expected)


def routing_token(settings: Settings) -> str:
    return settings.routing_token or (DEMO_ROUTING_TOKEN if settings.demo else "")


async def route_http(request: web.Request) -> web.Response:
    """GET /api/route?caller=&did=&pbx= → the extension to dial, as text/plain (or JSON on request)."""
    settings = request.app[keys.SETTINGS]
    if (not address_allowed(request.remote or "", settings.routing_allowlist)
            or not _token_ok(request, routing_token(settings))):
        logger.warning("routing request refused from %s", request.remote)
        return web.Response(status=403, text="forbidden\n")
    caller = request.query.get("caller", "")[:64]
    did = request.query.get("did", "")[:64]
    name = (request.query.get("name") or request.query.get("caller_name") or "")[:80]
    decision = await request.app[keys.ROUTER].route(caller, did, request.query.get("pbx") or None, name)
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response(decision.to_json())
    return web.Response(text=decision.target)


async def routing_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    keeper = None
    index = None
    if settings.routing_cache:
        index = RoutingIndex(settings.suffix_match_digits)
        keeper = IndexKeeper(index, app[keys.POOL])
        await keeper.start()
    telephony = app.get(keys.TELEPHONY)
    if telephony is not None:
        telephony.use_index(index)  # the call pipeline looks callers up in the same index first
    router = Router(settings, app[keys.POOL], telephony, index)
    app[keys.ROUTER] = router
    server = None
    if settings.agi_port:
        try:
            server = await start_agi_server(router.route, routing_token(settings), settings.routing_allowlist,
                                            settings.agi_host, settings.agi_port)
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
        await router.drain()
        if keeper is not None:
            await keeper.stop()


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(routing_ctx)
    app.router.add_get("/api/route", route_http)
