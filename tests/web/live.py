"""Helpers for tests against a real listening server: log in over HTTP, connect socket.io clients."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import socketio


async def session_cookie(base_url: str, login: str) -> str:
    from tests.conftest import post_login

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # an IP host
        resp = await post_login(http, login, login, base_url)
        assert resp.status == 302, await resp.text()
        return resp.cookies["callboard_session"].value


class SocketUser:
    """A real socketio.AsyncClient that records every event it receives."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.received: list[tuple[str, dict]] = []
        self.client.on("*", self._record)

    async def _record(self, event: str, data: dict) -> None:
        self.received.append((event, data))

    async def connect(self, base_url: str, cookie: str | None) -> None:
        headers = {"Cookie": f"callboard_session={cookie}"} if cookie else {}
        await self.client.connect(base_url, headers=headers, transports=["websocket"])

    def events(self, name: str) -> list[dict]:
        return [data for event, data in self.received if event == name]

    async def wait_for(self, name: str, predicate=lambda data: True, timeout: float = 8.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for data in self.events(name):
                if predicate(data):
                    return data
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {name!r} event in time; got {self.received!r}")

    async def close(self) -> None:
        await self.client.disconnect()


CHROMIUM = "/usr/bin/chromium"


def require_chromium() -> None:
    """Browser tests skip on a developer machine without chromium, but fail in CI (it must be there)."""
    import pytest

    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium (see .ci/run)", pytrace=False)
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
