"""One process, several doors: database, web app and telephony started together, stopped cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from crm.db import open_database
from crm.demo import may_seed_demo, seed_demo
from crm.settings import Settings

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 1.0  # seconds for in-flight requests once the listener is closed


class DemoRefused(RuntimeError):
    """Demo mode must never write demo users into a real company's database."""


async def prepare_demo(pool, settings: Settings) -> None:
    async with pool.acquire() as conn:
        if not await may_seed_demo(conn):
            raise DemoRefused("--demo refused: this database already holds real users; point DATABASE_URL "
                              "at an empty database or drop --demo")
        await seed_demo(conn, settings.phone_region, settings.language)
    logger.warning("DEMO MODE: demo users head/manager1/manager2/admin (password = login), "
                   "API token demo-admin-token. Not for real data.")


async def run_server(settings: Settings, ready: asyncio.Event | None = None,
                     stop: asyncio.Event | None = None) -> int:
    from web.app import create_app

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass
    async with open_database(settings.database_url, settings.data_dir) as pool:
        if settings.demo:
            try:
                await prepare_demo(pool, settings)
            except DemoRefused as exc:
                print(str(exc))
                return 2
        app = create_app(settings, pool)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        try:
            # Requests still running when we stop get this long; with sockets closed on shutdown (web.sockets)
            # the whole stop stays within 5 s.
            site = web.TCPSite(runner, settings.host, settings.port, shutdown_timeout=SHUTDOWN_TIMEOUT)
            await site.start()
            print(f"Callboard is serving on http://{settings.host}:{settings.port}/"
                  + ("  (DEMO MODE)" if settings.demo else ""), flush=True)
            if ready is not None:
                ready.set()
            await stop.wait()
            print("Stopping…", flush=True)
        finally:
            started = loop.time()
            await runner.cleanup()
            logger.info("stopped the web app and its doors in %.1f s", loop.time() - started)
    return 0
