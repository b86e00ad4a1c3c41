"""The FastAGI door: the routing token and allowlist as on the HTTP door, and no connection held open."""

import asyncio
import time

import pytest

from cti.agi import start_agi_server
from cti.routing import RouteDecision

DECISION = RouteDecision("101", "manager", "assigned_manager", contact_id=7)


class RecordingRoute:
    """Stands in for web.routing.Router.route: records what it was asked and answers one decision."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def __call__(self, caller: str, did: str, pbx: str | None = None, caller_name: str = "") -> RouteDecision:
        self.asked.append((caller, did))
        return DECISION


@pytest.fixture
async def door():
    route = RecordingRoute()
    server = await start_agi_server(route, "route-token", ("127.0.0.0/8",), "127.0.0.1", 0,
                                    header_timeout=0.5, request_timeout=0.5)
    yield route, server.sockets[0].getsockname()[1]
    server.close()


async def converse(port: int, script: str = "route", arg: str | None = None,
                   variable: str | None = None) -> list[str]:
    """Play Asterisk's side; return the commands received. GET VARIABLE is answered with `variable`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    header = f"agi_network: yes\nagi_network_script: {script}\nagi_callerid: 74951234567\nagi_dnid: 4950000000\n"
    if arg is not None:
        header += f"agi_arg_1: {arg}\n"
    writer.write((header + "\n").encode())
    commands = []
    async with asyncio.timeout(3):
        while line := await _readline(reader):
            command = line.decode().strip()
            commands.append(command)
            if command == "GET VARIABLE CALLBOARD_TOKEN":
                writer.write(f"200 result=1 ({variable})\n".encode() if variable else b"200 result=0\n")
            else:
                writer.write(b"200 result=1\n")
    writer.close()
    return commands


async def _readline(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ConnectionResetError:  # closed by the door with our header unread: the same as a close
        return b""


ROUTED = ['SET VARIABLE CALLBOARD_TARGET "101"', 'SET VARIABLE CALLBOARD_KIND "manager"',
          'SET VARIABLE CALLBOARD_CONTACT "7"', 'SET VARIABLE CALLBOARD_REASON "assigned_manager"']
REFUSED = ['SET VARIABLE CALLBOARD_REASON "forbidden"']


async def test_the_token_comes_as_an_argument_in_the_url_or_in_a_variable(door):
    route, port = door
    assert await converse(port, arg="route-token") == ROUTED
    assert await converse(port, script="route?token=route-token") == ROUTED
    assert await converse(port, variable="route-token") == ["GET VARIABLE CALLBOARD_TOKEN", *ROUTED]
    assert route.asked == [("74951234567", "4950000000")] * 3


async def test_a_missing_or_wrong_token_routes_nothing(door):
    route, port = door
    assert await converse(port) == ["GET VARIABLE CALLBOARD_TOKEN", *REFUSED]
    assert await converse(port, arg="guess") == REFUSED
    assert await converse(port, script="route?token=guess") == REFUSED
    assert await converse(port, variable="guess") == ["GET VARIABLE CALLBOARD_TOKEN", *REFUSED]
    assert route.asked == []


async def test_an_address_outside_the_allowlist_is_refused():
    route = RecordingRoute()
    server = await start_agi_server(route, "route-token", ("10.0.0.0/8",), "127.0.0.1", 0)
    try:
        assert await converse(server.sockets[0].getsockname()[1], arg="route-token") == []
    finally:
        server.close()
    assert route.asked == []


async def test_a_silent_peer_is_dropped_after_the_header_and_before_it(door):
    _, port = door
    # Sends the header, then never answers a command: dropped at the request deadline.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"agi_network: yes\nagi_network_script: route\nagi_arg_1: route-token\n\n")
    started = time.monotonic()
    async with asyncio.timeout(3):
        assert (await reader.readline()).startswith(b"SET VARIABLE")
        assert await reader.read() == b""  # closed by the door
    assert time.monotonic() - started < 2
    writer.close()
    # Connects and sends nothing at all: dropped at the header deadline.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    async with asyncio.timeout(3):
        assert await reader.read() == b""
    writer.close()
