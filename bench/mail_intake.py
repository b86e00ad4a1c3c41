"""Mail intake benchmark: messages per second parsed and stored, against storing the raw bytes
alone (the baseline) in the same run; and end to end over SMTP (smtplib clients in threads).

    python bench/mail_intake.py [--messages 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import smtplib
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "mail"


async def bench(messages: int) -> None:
    from aiohttp import web

    from crm import mail as mail_db
    from crm.db import open_database
    from crm.settings import Settings
    from web.app import create_app
    from web.keys import SMTP_PORT

    corpus = [p.read_bytes() for p in sorted(CORPUS.glob("*.eml"))]
    data_dir = Path(tempfile.mkdtemp(prefix="callboard-bench-"))
    async with open_database(os.environ.get("DATABASE_URL"), data_dir, announce=lambda t: None) as pool:
        async with pool.acquire() as conn:
            started = time.perf_counter()
            for i in range(messages):
                await mail_db.store_raw(conn, corpus[i % len(corpus)], "127.0.0.1", "a@example.com", ["sales@x"])
            raw_rate = messages / (time.perf_counter() - started)
            started = time.perf_counter()
            for i in range(messages):
                raw = corpus[i % len(corpus)]
                message_id = await mail_db.store_raw(conn, raw, "127.0.0.1", "a@example.com", ["sales@x"])
                await mail_db.process_stored(conn, message_id, raw, "RU")
            full_rate = messages / (time.perf_counter() - started)
        settings = Settings(data_dir=data_dir, session_secret="x", agi_port=0, smtp_port=12525)
        app = create_app(replace(settings), pool)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = app[SMTP_PORT]

        def client(count: int) -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as server:
                for i in range(count):
                    server.sendmail("a@example.com", ["sales@callboard.local"], corpus[i % len(corpus)])

        smtp_messages = messages // 2
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as executor:
            await asyncio.gather(*(asyncio.get_running_loop().run_in_executor(executor, client, smtp_messages // 8)
                                   for _ in range(8)))
        smtp_rate = (smtp_messages // 8 * 8) / (time.perf_counter() - started)
        await runner.cleanup()
    print(f"{messages} messages from a corpus of {len(corpus)} (forms, chat, client mail with attachment, odd ones)")
    print(f"store raw only (baseline)   : {raw_rate:8.0f} msg/s")
    print(f"store + parse + match + file: {full_rate:8.0f} msg/s ({full_rate / raw_rate:.2f}x the baseline)")
    print(f"end to end over SMTP (8 clients): {smtp_rate:8.0f} msg/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    asyncio.run(bench(parser.parse_args().messages))


if __name__ == "__main__":
    main()
