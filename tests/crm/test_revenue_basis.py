"""The reports' revenue counted by deals won, by invoices issued or by payments received (`revenue_basis`), on the
hand-made data set plus invoices and payments whose figures are known."""

from datetime import date
from decimal import Decimal

import pytest

from crm import errors, payments, reports
from crm.reports import Filters
from tests.crm.report_data import NOW, seed
from tests.crm.test_reports import period

INSERT_INVOICE = """
INSERT INTO invoices (year, number, issued_on, due_on, deal_id, company_id, buyer, vat_percent, prices_include_vat,
                      net, vat, total, state)
VALUES (2026, $1, $2::date, $2::date + 30, $3, $4, 'Buyer', NULL, true, $5, 0, $5, $6) RETURNING id
"""


async def money(conn, factory, data) -> None:
    """D1 (manager1, won on 3 March for 1 000) invoiced 1 200 on 2 March, paid 400 on 3 March and 500 on 10 March;
    D4 (manager2, in progress) invoiced 250 on 3 March, paid 100 then; a 999 invoice of D4 cancelled;
    D3 (manager2, made in February) invoiced 800 on 20 February, paid in full on 2 March."""
    ids, head = data["ids"], data["head"]
    x = await factory.company("Client X", data["m1"])
    y = await factory.company("Client Y", data["m2"])
    for deal, company in (("d1", x), ("d3", y), ("d4", y)):
        await conn.execute("UPDATE deals SET company_id = $2 WHERE id = $1", ids[deal], company.id)
    a = await conn.fetchval(INSERT_INVOICE, 1, date(2026, 3, 2), ids["d1"], x.id, Decimal(1200), "issued")
    b = await conn.fetchval(INSERT_INVOICE, 2, date(2026, 3, 3), ids["d4"], y.id, Decimal(250), "issued")
    await conn.fetchval(INSERT_INVOICE, 3, date(2026, 3, 3), ids["d4"], y.id, Decimal(999), "cancelled")
    d = await conn.fetchval(INSERT_INVOICE, 4, date(2026, 2, 20), ids["d3"], y.id, Decimal(800), "issued")
    for number, day, amount, invoice in (("1", "2026-03-03", "400", a), ("2", "2026-03-10", "500", a),
                                         ("3", "2026-03-03", "100", b), ("4", "2026-03-02", "800", d)):
        await payments.enter_payment(conn, head, NOW, doc_number=number, doc_date=day, amount=amount,
                                     allocations=[{"invoice_id": invoice, "amount": amount}])


@pytest.mark.parametrize("basis, by_manager, funnel, sources, abc", [
    # Deals won in the period: D1's 1 000.
    ("won", {"Manager1": 1000, "Manager2": 0}, 1000, [("phone", 1000), ("manual", 0)], [("Client X", 1000, "A")]),
    # Invoices issued in the period (the cancelled one is nothing); a deal's invoices whenever for its source.
    ("invoices", {"Manager1": 1200, "Manager2": 250}, 1450, [("phone", 1200), ("manual", 250)],
     [("Client X", 1200, "A"), ("Client Y", 250, "B")]),
    # Payments received in the period (D3's, made in February, counts; D1's of 10 March does not).
    ("payments", {"Manager1": 400, "Manager2": 900}, 1300, [("phone", 900), ("manual", 100)],
     [("Client Y", 900, "A"), ("Client X", 400, "A")]),
])
async def test_revenue_by_each_basis(conn, factory, basis, by_manager, funnel, sources, abc):
    data = await seed(conn, factory)
    await money(conn, factory, data)
    managers = await reports.managers_report(conn, period(), Filters(), NOW, basis)
    assert {r["manager"]: r["revenue_won"] for r in managers if r["manager"] in by_manager} == by_manager
    assert [r["deals_won"] for r in managers if r["manager"] == "Manager1"] == [1]  # deal counts do not change
    report = await reports.funnel_report(conn, period(), Filters(), NOW, basis)
    assert (report["revenue_won"], report["won"]) == (funnel, 1)
    by_source = await reports.sources_report(conn, period(), Filters(), basis)
    assert [(r["source"], r["revenue"]) for r in by_source["deals"]] == sources
    assert [r["revenue"] for r in by_source["leads"] if r["source"] == "phone"] == [sources[0][1]]
    segments = await reports.segments_report(conn, period(), Filters(), basis)
    assert [(c["name"], c["revenue"], c["abc"]) for c in segments["clients"]] == abc
    # A manager's own figures by the same basis.
    mine = await reports.managers_report(conn, period(), Filters(manager_id=data["m2"].id), NOW, basis)
    assert [r["revenue_won"] for r in mine] == [by_manager["Manager2"]]


async def test_xyz_months_follow_the_basis(conn, factory):
    data = await seed(conn, factory)
    await money(conn, factory, data)
    march = reports.make_period(date(2026, 3, 1), date(2026, 3, 31), "Europe/Moscow")
    segments = await reports.segments_report(conn, march, Filters(), "payments")
    # Client X paid in March only (400 + 500): one month of twelve with a purchase.
    assert [(c["name"], c["revenue"], c["months_bought"]) for c in segments["clients"]] == [
        ("Client X", 900, 1), ("Client Y", 900, 1)]


async def test_an_unknown_basis_is_refused(conn, factory):
    with pytest.raises(errors.ValidationError):
        await reports.managers_report(conn, period(), Filters(), NOW, "orders")
