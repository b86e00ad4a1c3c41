"""The FastAGI routing door: Asterisk's AGI() asks which extension to dial; the decision comes from a
route function given by the caller (web.routing's Router). panoramisk's fast_agi stays inside cti/.

The dialplan proves itself as on the HTTP door: the peer's address must be in the allowlist and the
request must carry the routing token, as the first AGI argument (`AGI(agi://host/route,TOKEN)`), as
`?token=` in the script URL, or in the channel variable CALLBOARD_TOKEN.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from panoramisk import fast_agi

from cti.routing import RouteDecision

logger = logging.getLogger(__name__)

# (caller, did, pbx, caller name) → the decision
RouteFunction = Callable[[str, str, str | None, str], Awaitable[RouteDecision]]
HEADER_TIMEOUT = 5.0  # seconds for Asterisk to send the AGI environment; it sends it at once
REQUEST_TIMEOUT = 10.0  # the whole conversation after the header; a silent peer is dropped
MAX_HEADER_BYTES = 16 * 1024


def address_allowed(address: str, allowlist: tuple[str, ...]) -> bool:
    """Empty allowlist: any address. Otherwise the peer must be in one of the networks."""
    if not allowlist:
        return True
    try:
        peer = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(peer in ipaddress.ip_network(network, strict=False) for network in allowlist)


def token_matches(sent: str | None, expected: str) -> bool:
    return bool(expected) and bool(sent) and hmac.compare_digest(str(sent).encode(), expected.encode())


def _agi_quote(value: str) -> str:
    return '"' + value.replace("\\", "").replace('"', "").replace("\n", "") + '"'


def _script_and_query(headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    script, _, query = headers.get("agi_network_script", "").partition("?")
    params = dict(item.partition("=")[::2] for item in query.split("&") if item)
    return script.strip("/"), params


def _variable_value(result: dict) -> str | None:
    """GET VARIABLE answers `200 result=1 (value)`; result=0 means the variable is not set."""
    if str(result.get("result", ("0",))[0]) != "1":
        return None
    return str(result["result"][1]) if len(result.get("result", ())) > 1 else None


class AgiApplication(fast_agi.Application):
    """panoramisk's FastAGI app with bounded reads (its own handler loops forever on a peer that closes
    before the blank line), the token and allowlist checks, and a deadline for the whole request."""

    def __init__(self, route: RouteFunction, token: str, allowlist: tuple[str, ...],
                 header_timeout: float = HEADER_TIMEOUT, request_timeout: float = REQUEST_TIMEOUT) -> None:
        super().__init__(loop=asyncio.get_running_loop())
        self.route_call = route
        self.token = token
        self.allowlist = allowlist
        self.header_timeout = header_timeout
        self.request_timeout = request_timeout
        self.add_route("route", self._route_request)

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = (writer.get_extra_info("peername") or ("",))[0]
        try:
            if not address_allowed(str(peer), self.allowlist):
                logger.warning("FastAGI request refused from %s (not in the routing allowlist)", peer)
                return
            try:
                async with asyncio.timeout(self.header_timeout):
                    raw = await reader.readuntil(b"\n\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            if len(raw) > MAX_HEADER_BYTES:
                return
            headers = dict(line.split(": ", 1) for line in raw.decode("utf-8", "replace").split("\n")
                           if ": " in line)
            script, _ = _script_and_query(headers)
            handler = self._route.get(script)
            if handler is None:
                logger.error("FastAGI request for unknown script %r", script[:64])
                return
            request = fast_agi.Request(app=self, headers=headers, reader=reader, writer=writer,
                                       encoding=self.default_encoding)
            try:
                async with asyncio.timeout(self.request_timeout):
                    await handler(request)
            except TimeoutError:
                logger.warning("FastAGI peer %s went silent during %r; dropped", peer, script)
            except (ConnectionError, asyncio.IncompleteReadError):
                logger.info("FastAGI peer hung up during %r", script)
            except Exception:
                logger.exception("FastAGI route %r failed", script)
        finally:
            writer.close()

    async def _token_of(self, request: fast_agi.Request) -> str | None:
        _, params = _script_and_query(request.headers)
        sent = request.headers.get("agi_arg_1") or params.get("token")
        if sent:
            return sent
        return _variable_value(await request.send_command("GET VARIABLE CALLBOARD_TOKEN"))

    async def _route_request(self, request: fast_agi.Request) -> None:
        if not token_matches(await self._token_of(request), self.token):
            logger.warning("FastAGI request refused: missing or wrong routing token")
            await request.send_command(f"SET VARIABLE CALLBOARD_REASON {_agi_quote('forbidden')}")
            return
        caller = request.headers.get("agi_callerid", "")[:64]
        did = (request.headers.get("agi_dnid") or request.headers.get("agi_extension", ""))[:64]
        name = request.headers.get("agi_calleridname", "")[:80]
        decision = await self.route_call(caller, did, None, "" if name in ("unknown", "<unknown>") else name)
        for name, value in (("CALLBOARD_TARGET", decision.target), ("CALLBOARD_KIND", decision.kind),
                            ("CALLBOARD_CONTACT", str(decision.contact_id or "")),
                            ("CALLBOARD_REASON", decision.reason)):
            await request.send_command(f"SET VARIABLE {name} {_agi_quote(value)}")


async def start_agi_server(route: RouteFunction, token: str, allowlist: tuple[str, ...], host: str, port: int,
                           **timeouts: float) -> asyncio.Server:
    app = AgiApplication(route, token, allowlist, **timeouts)
    return await asyncio.start_server(app.handler, host, port, limit=MAX_HEADER_BYTES)
