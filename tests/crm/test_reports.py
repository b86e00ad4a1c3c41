"""Reports on a small hand-made data set: every figure computed by hand and compared whole."""

import asyncio
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest

from crm import errors, reports, stock
from crm.reports import Filters
from tests.crm.report_data import FIRST, LAST, LINE1, LINE2, MSK, NOW, add_call, at, seed


def period(first=FIRST, last=LAST):
    return reports.make_period(first, last, "Europe/Moscow")


ZERO = {"inbound_offered": 0, "inbound_answered": 0, "inbound_missed": 0, "outbound": 0, "outbound_reached": 0,
        "talk_seconds": 0, "avg_talk_seconds": None, "avg_answer_seconds": None, "missed_callers": 0,
        "called_back": 0, "called_back_in_time": 0, "leads": 0, "leads_converted": 0, "deals_created": 0,
        "deals_won": 0, "deals_lost": 0, "revenue_won": 0, "tasks_overdue": 0}


async def test_managers_report_counts_calls_not_legs(conn, factory):
    data = await seed(conn, factory)
    rows = await reports.managers_report(conn, period(), Filters(), NOW)
    m1, m2, m3, head = data["m1"], data["m2"], data["m3"], data["head"]
    assert rows == [
        {"manager_id": head.id, "manager": "Head", "extension": None, **ZERO},
        {"manager_id": m1.id, "manager": "Manager1", "extension": "101", **ZERO,
         "inbound_offered": 4, "inbound_answered": 2, "inbound_missed": 1, "outbound": 2, "outbound_reached": 1,
         "talk_seconds": 380, "avg_talk_seconds": 126.7, "avg_answer_seconds": 7.5, "missed_callers": 1,
         "called_back": 1, "called_back_in_time": 1, "leads": 2, "leads_converted": 1, "deals_created": 2,
         "deals_won": 1, "deals_lost": 1, "revenue_won": Decimal("1000.00"), "tasks_overdue": 2},
        {"manager_id": m2.id, "manager": "Manager2", "extension": "102", **ZERO,
         "inbound_offered": 3, "inbound_answered": 1, "inbound_missed": 1, "talk_seconds": 100,
         "avg_talk_seconds": 100.0, "avg_answer_seconds": 30.0, "missed_callers": 1, "leads": 1,
         "deals_created": 1},
        {"manager_id": m3.id, "manager": "Manager3", "extension": "103", **ZERO},
    ]
    # Filters: one manager; a line (calls and leads on it only); a queue (calls only).
    only = await reports.managers_report(conn, period(), Filters(manager_id=m2.id), NOW)
    assert [r["manager_id"] for r in only] == [m2.id]
    on_line2 = {r["manager"]: (r["inbound_offered"], r["leads"])
                for r in await reports.managers_report(conn, period(), Filters(line=LINE2), NOW)}
    assert on_line2 == {"Head": (0, 0), "Manager1": (0, 0), "Manager2": (0, 0), "Manager3": (0, 0)}
    queue = {r["manager"]: (r["inbound_offered"], r["inbound_answered"])
             for r in await reports.managers_report(conn, period(), Filters(queue="sales"), NOW)}
    assert queue == {"Head": (0, 0), "Manager1": (3, 1), "Manager2": (3, 1), "Manager3": (0, 0)}


async def test_a_manager_sees_only_their_own_figures(conn, factory):
    data = await seed(conn, factory)
    assert reports.scoped(data["m1"], Filters()) == Filters(manager_id=data["m1"].id)
    assert reports.scoped(data["head"], Filters(line=LINE1)) == Filters(line=LINE1)
    with pytest.raises(errors.Forbidden):
        reports.scoped(data["m1"], Filters(manager_id=data["m2"].id))


async def test_funnel(conn, factory):
    await seed(conn, factory)
    funnel = await reports.funnel_report(conn, period(), Filters(), NOW)
    assert funnel["stages"][:3] == [
        {"stage": "selection", "name": "Equipment selection", "entered": 3, "advanced": 1, "conversion": 0.3333,
         "median_days": 1.0, "stuck": 0},
        {"stage": "offer", "name": "Commercial offer", "entered": 1, "advanced": 1, "conversion": 1.0,
         "median_days": 0.9, "stuck": 1},
        {"stage": "invoice", "name": "Invoice / contract", "entered": 0, "advanced": 0, "conversion": None,
         "median_days": None, "stuck": 0},
    ]
    assert {k: v for k, v in funnel.items() if k != "stages"} == {
        "won": 1, "lost": 1, "win_rate": 0.5, "revenue_won": Decimal("1000.00"),
        "loss_reasons": [{"reason": "price", "deals": 1, "amount": Decimal("300.000")}]}


async def test_sources(conn, factory):
    data = await seed(conn, factory)
    report = await reports.sources_report(conn, period(), Filters())
    assert report["leads"] == [
        {"source": "email", "line": "", "utm_source": "", "utm_campaign": "", "leads": 1, "converted": 0,
         "deals": 0, "won": 0, "revenue": 0, "conversion": 0.0},
        {"source": "phone", "line": LINE1, "utm_source": "", "utm_campaign": "", "leads": 1, "converted": 1,
         "deals": 1, "won": 1, "revenue": Decimal("1000.00"), "conversion": 1.0},
        {"source": "web_form", "line": "", "utm_source": "", "utm_campaign": "", "leads": 1, "converted": 0,
         "deals": 0, "won": 0, "revenue": 0, "conversion": 0.0},
    ]
    assert report["deals"] == [
        {"source": "phone", "deals": 1, "won": 1, "lost": 0, "revenue": Decimal("1000.00"), "win_rate": 1.0},
        {"source": "manual", "deals": 2, "won": 0, "lost": 1, "revenue": 0, "win_rate": 0.0},
    ]
    # The won deal came from a lead whose phone call is in the log: the call that led to it.
    await conn.execute("UPDATE calls SET lead_id = $1 WHERE linkedid = 'c1'", data["ids"]["l1"])
    touches = (await reports.sources_report(conn, period(), Filters()))["won_deals"]
    assert [(t["title"], t["amount"], t["source"], t["manager"], t["calls"], t["emails"]) for t in touches] == [
        ("D1", Decimal("1000.00"), "phone", "Manager1", 1, 0)]


async def test_service_level_per_line_day_and_hour(conn, factory):
    data = await seed(conn, factory)
    report = await reports.service_report(conn, period(), Filters(), 20)
    figures = ("offered", "answered", "abandoned", "missed", "failed", "unknown", "answered_in_time")
    assert [(r["line"], r["queue"], *(r[k] for k in figures), r["service_level"], r["avg_wait"], r["max_wait"])
            for r in report["lines"]] == [
        (LINE1, "sales", 4, 2, 0, 1, 0, 1, 1, 0.3333, 18.8, 40),
        (LINE1, "", 1, 1, 0, 0, 0, 0, 1, 1.0, 10.0, 10),
        (LINE2, "sales", 1, 0, 1, 0, 0, 0, 0, 0.0, 12.0, 12),
    ]
    assert report["total"] == {"offered": 6, "answered": 3, "abandoned": 1, "missed": 1, "failed": 0, "unknown": 1,
                               "answered_in_time": 2, "service_level": 0.4, "max_wait": 40, "avg_wait": 16.2}
    # The call that went over midnight belongs to the day it started.
    assert [(r["day"], r["offered"]) for r in report["days"]] == [(date(2026, 3, 2), 5), (date(2026, 3, 3), 1)]
    assert [(r["weekday"], r["hour"], r["offered"]) for r in report["hours"]] == [
        (1, 10, 1), (1, 11, 2), (1, 15, 1), (1, 23, 1), (2, 12, 1)]
    mine = await reports.service_report(conn, period(), Filters(manager_id=data["m1"].id), 20)
    assert mine["total"]["offered"] == 4  # c1, c2, c3, c5: the calls that rang manager1


async def test_a_month_of_one_call_and_no_calls_at_all(conn, factory):
    await seed(conn, factory)
    empty = await reports.service_report(conn, period(date(2025, 1, 1), date(2025, 1, 31)), Filters(), 20)
    assert empty["total"] == {"offered": 0, "answered": 0, "abandoned": 0, "missed": 0, "failed": 0, "unknown": 0,
                              "answered_in_time": 0, "service_level": None, "max_wait": None, "avg_wait": None}
    assert (empty["lines"], empty["days"], empty["hours"]) == ([], [], [])


@pytest.mark.parametrize("metric,figure", [
    ("offered", "inbound_offered"), ("unanswered", "inbound_missed"), ("inbound_answered", "inbound_answered"),
    ("outbound", "outbound"), ("outbound_reached", "outbound_reached")])
async def test_drill_down_lists_the_calls_behind_each_manager_figure(conn, factory, metric, figure):
    data = await seed(conn, factory)
    rows = {r["manager_id"]: r for r in await reports.managers_report(conn, period(), Filters(), NOW)}
    for who in ("m1", "m2", "m3"):
        user = data[who]
        calls = await reports.drill_calls(conn, period(), Filters(manager_id=user.id), metric)
        assert len(calls) == rows[user.id][figure], (who, metric)


async def test_drill_down_deals_and_leads(conn, factory):
    data = await seed(conn, factory)
    ids = data["ids"]
    won = await reports.drill_deals(conn, period(), Filters(), "deals_won", NOW)
    assert [d["id"] for d in won] == [ids["d1"]]
    assert [d["id"] for d in await reports.drill_deals(conn, period(), Filters(), "stuck", NOW, stage="offer")] == [
        ids["d3"]]
    entered = await reports.drill_deals(conn, period(), Filters(), "entered", NOW, stage="selection")
    assert sorted(d["id"] for d in entered) == sorted([ids["d1"], ids["d2"], ids["d4"]])
    lost = await reports.drill_deals(conn, period(), Filters(), "loss_reason", NOW, reason="price")
    assert [d["id"] for d in lost] == [ids["d2"]]
    leads = await reports.drill_leads(conn, period(), Filters(manager_id=data["m1"].id), "leads")
    assert [x["id"] for x in leads] == [ids["l2"], ids["l1"]]
    with pytest.raises(errors.ValidationError):
        await reports.drill_calls(conn, period(), Filters(), "everything")
    with pytest.raises(errors.ValidationError):
        await reports.drill_deals(conn, period(), Filters(), "stuck", NOW)
    service = await reports.drill_calls(conn, period(), Filters(), "answered", day=date(2026, 3, 2), hour=23)
    assert [c["id"] for c in service] == [ids["c5"]]


def test_periods_refuse_reversed_and_huge_ranges():
    with pytest.raises(errors.ValidationError):
        reports.make_period(date(2026, 3, 3), date(2026, 3, 2), "Europe/Moscow")
    with pytest.raises(errors.ValidationError):
        reports.make_period(date(2000, 1, 1), date(2026, 1, 1), "Europe/Moscow")
    one = reports.make_period(date(2026, 3, 2), date(2026, 3, 2), "Europe/Moscow")
    assert (one.start, one.end, one.days) == (at(2, 0), at(3, 0), 1)


async def won(conn, kind: str, client_id: int, amount, closed: datetime, manager_id=None) -> None:
    column = "company_id" if kind == "company" else "contact_id"
    await conn.execute(f"""INSERT INTO deals (title, {column}, manager_id, stage, status, manual_amount, closed_at)
                           VALUES ('w', $1, $2, 'shipment', 'won', $3, $4)""", client_id, manager_id, amount, closed)


async def test_segments_abc_xyz_and_clients_who_stopped_buying(conn, factory, pool):
    m1 = await factory.user("manager1", extension="101")
    head = await factory.user("head", role="head")
    a = await factory.company("Alpha")
    b = await factory.contact("Beta")
    c = await factory.contact("Gamma")
    d = await factory.contact("Delta", manager=m1)
    months = [(2025, m) for m in range(4, 13)] + [(2026, 1), (2026, 2), (2026, 3)]
    for year, month in months:
        await won(conn, "company", a.id, 800, datetime(year, month, 15, 12, tzinfo=MSK))
        await won(conn, "contact", c.id, 80 if (year, month) == (2026, 2) else 50,
                  datetime(year, month, 15, 12, tzinfo=MSK))
    await won(conn, "contact", b.id, 150, datetime(2026, 3, 10, 12, tzinfo=MSK))
    for month in (6, 7, 8):
        await won(conn, "contact", d.id, 300, datetime(2025, month, 1, 12, tzinfo=MSK))
    march = period(date(2026, 3, 1), date(2026, 3, 31))
    report = await reports.segments_report(conn, march, Filters())
    assert [(r["name"], r["revenue"], r["share"], r["abc"], r["months_bought"], r["variation"], r["xyz"])
            for r in report["clients"]] == [
        ("Alpha", Decimal("800.00"), 0.8, "A", 12, 0.0, "X"),
        ("Beta", Decimal("150.00"), 0.15, "B", 1, 3.317, "Z"),
        ("Gamma", Decimal("50.00"), 0.05, "C", 12, 0.158, "Y"),
    ]
    assert report["matrix"] == {"AX": 1, "BZ": 1, "CY": 1}
    assert [(r["name"], r["purchases"], r["usual_days"], r["manager"]) for r in report["stopped"]] == [
        ("Delta", 3, 30.5, "Manager1")]

    async def reactivate():
        async with pool.acquire() as own:
            return await reports.create_reactivation_tasks(own, head, march, Filters(), NOW)

    first, second = await asyncio.gather(reactivate(), reactivate())
    assert sorted([len(first), len(second)]) == [0, 1]  # a double click makes one task
    task = await conn.fetchrow("SELECT kind, title, assignee_id FROM tasks")
    assert tuple(task) == ("follow_up", "Reactivate client: Delta", m1.id)
    with pytest.raises(errors.Forbidden):
        await reports.create_reactivation_tasks(conn, m1, march, Filters(), NOW)


async def test_illiquid_stock_is_counted_per_batch(conn, factory):
    manager = await factory.user("manager1", extension="101")
    from crm import deals

    now = datetime(2026, 11, 23, 9, 0, tzinfo=MSK)
    made = await stock.create_product(conn, "MADE", "Made to order", "pcs", 10, None, True)
    old = await stock.create_product(conn, "OLD", "Old stock", "pcs", 50, None, False)
    fresh = await stock.create_product(conn, "NEW", "New stock", "pcs", 20, None, False)
    deal = await deals.create_deal(conn, manager, "Sales", now)
    await deals.add_item(conn, manager, deal.id, made.id, 5, 10)
    await deals.add_item(conn, manager, deal.id, old.id, 4, 40)
    made_item, old_item = await deals.list_items(conn, deal.id)
    # Made and shipped the same minute: never illiquid.
    await stock.receive(conn, made.id, 5, now)
    await stock.ship(conn, made.id, 5, now, deal_item_id=made_item.id)
    # An old batch, part of it sold now: the sale is of illiquid stock, and the rest stays illiquid.
    await stock.receive(conn, old.id, 10, now - timedelta(days=400))
    await stock.receive(conn, old.id, 3, now - timedelta(days=10))  # young: not illiquid
    await stock.receive(conn, fresh.id, 7, now - timedelta(days=10))
    await stock.ship(conn, old.id, 4, now, deal_item_id=old_item.id)
    assert [(b.sku, b.on_hand) for b in await stock.illiquid(conn, now, 180)] == [("OLD", Decimal("6.000"))]
    sales = await stock.illiquid_sales(conn, now - timedelta(days=1), 180, None)
    assert sales == [{"manager_id": manager.id, "manager": "Manager1", "amount": Decimal("160.00000"),
                      "shipments": 1}]
    # Before the receipt's N days were over, the same batch was not illiquid.
    assert await stock.illiquid(conn, now - timedelta(days=300), 180) == []


async def test_wallboard_figures_for_today(conn, factory):
    await seed(conn, factory)
    today = period(date(2026, 3, 2), date(2026, 3, 2))
    figures = await reports.wallboard_figures(conn, today, 20, at(2, 23, 59))
    assert figures["total"] == {"offered": 5, "answered": 3, "abandoned": 1, "missed": 1, "unknown": 0,
                                "answered_in_time": 2, "service_level": 0.4}
    assert [(r["line"], r["offered"]) for r in figures["lines"]] == [(LINE1, 4), (LINE2, 1)]
    assert (figures["open_callers"], figures["overdue_callbacks"]) == (1, 0)


async def test_a_call_added_later_is_counted(conn, factory):
    await seed(conn, factory)
    await add_call(conn, "late", at(3, 16), outcome="abandoned", ring=25, callee=LINE2)
    report = await reports.service_report(conn, period(), Filters(line=LINE2), 20)
    assert (report["total"]["offered"], report["total"]["abandoned"]) == (2, 2)
