"""The service backfills from the PBX's CDR the calls that began and ended while its AMI link was down."""

import asyncio
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

from crm.settings import PbxSettings
from cti.ami import AmiConnector
from cti.pipeline import QuietNotifier
from cti.service import TelephonyService
from cti.simulator import AmiSimulator
from tests.cti.faults import until

MOSCOW = ZoneInfo("Europe/Moscow")


def cdr_line(uniqueid: str, start: float, answer: float | None, end: float, disposition: str) -> bytes:
    """One Master.csv line (cdr_csv, loguniqueid + loguserfield), times in the company's zone."""
    def wall(ts: float | None) -> str:
        return "" if ts is None else datetime.fromtimestamp(ts, MOSCOW).strftime('"%Y-%m-%d %H:%M:%S"')
    billsec = int(end - answer) if answer else 0
    return (f'"","79165550011","74951234567","from-trunk","""Ольга"" <79165550011>","PJSIP/trunk-000000aa",'
            f'"PJSIP/101-000000ab","Dial","PJSIP/101,15,t",{wall(start)},{wall(answer)},{wall(end)},'
            f'{int(end - start)},{billsec},"{disposition}","DOCUMENTATION","{uniqueid}",""\n').encode()


async def test_calls_of_an_outage_come_back_from_master_csv(settings, pool, tmp_path):
    csv = tmp_path / "Master.csv"
    csv.write_bytes(b"")
    settings = replace(settings, cdr_csv=csv, cdr_timezone="Europe/Moscow")
    simulator = AmiSimulator("cti", "secret", seed=3)
    await simulator.start()
    service = TelephonyService(settings, pool, QuietNotifier(),
                               pbxes=(PbxSettings("lab", "127.0.0.1", simulator.port, "cti", "secret"),),
                               connector_factory=lambda pbx, sink: AmiConnector(pbx, sink, min_backoff=0.05))
    await service.start()
    try:
        await until(lambda: service.connectors["lab"].state.state == "connected", what="connected")
        await simulator.close_listener()
        await until(lambda: service.connectors["lab"].state.state != "connected", what="link lost")
        gap_start = datetime.now().timestamp()
        await asyncio.sleep(2.5)
        # Two calls the PBX handled while nobody listened: one answered, one missed.
        with csv.open("ab") as out:
            out.write(cdr_line("1900000001.1", gap_start + 0.2, gap_start + 0.5, gap_start + 2.0, "ANSWERED"))
            out.write(cdr_line("1900000002.3", gap_start + 0.3, None, gap_start + 1.5, "NO ANSWER"))
        await simulator.start("127.0.0.1", simulator.port)
        await until(lambda: service.connectors["lab"].state.state == "connected", what="back")

        async def saved():
            async with pool.acquire() as conn:
                return await conn.fetch("SELECT linkedid, outcome, answered_by, observed FROM calls "
                                        "WHERE linkedid LIKE '19000000%' ORDER BY linkedid")
        rows = []
        for _ in range(100):
            rows = await saved()
            if len(rows) == 2:
                break
            await asyncio.sleep(0.1)
        assert [tuple(r) for r in rows] == [("1900000001.1", "answered", "101", False),
                                            ("1900000002.3", "missed", None, False)]
    finally:
        await service.stop()
        await simulator.stop()
