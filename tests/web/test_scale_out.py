"""Two Callboard nodes behind one Redis: an event raised on one node reaches a browser on the other."""

import asyncio
import os
import socket
from dataclasses import replace

import pytest

from cti.calls import AgentRinging
from tests.web.live import SocketUser, session_cookie
from web.app import create_app
from web.keys import NOTIFIER

REDIS_URL = os.environ.get("CALLBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_reachable() -> bool:
    host_port = REDIS_URL.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    try:
        with socket.create_connection((host, int(port or 6379)), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not redis_reachable(), reason=f"no Redis at {REDIS_URL}")
async def test_a_popup_raised_on_node_a_reaches_a_browser_on_node_b(settings, pool, factory, aiohttp_server):
    await factory.user("manager1", extension="101")
    node_settings = replace(settings, redis_url=REDIS_URL)
    node_a = await aiohttp_server(create_app(node_settings, pool))
    node_b = await aiohttp_server(create_app(node_settings, pool))
    url_b = str(node_b.make_url("")).rstrip("/")
    browser = SocketUser()
    await browser.connect(url_b, await session_cookie(url_b, "manager1"))
    try:
        await asyncio.sleep(0.3)  # the Redis subscription of node B is up
        ringing = AgentRinging("lab", "42.1", 1795448000.0, "101", "inbound", "+74951234567", "", False)
        await node_a.app[NOTIFIER].call_event(ringing)
        popup = await browser.wait_for("popup")
        assert (popup["call_id"], popup["display"]) == ("42.1", "+7 495 123-45-67")
    finally:
        await browser.close()
