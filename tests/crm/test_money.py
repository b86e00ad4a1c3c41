"""Money on real PostgreSQL: contracts, invoices numbered per year, statements imported and matched once,
hand entries and splits, receivables with ageing, the overdue-invoice job."""

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from crm import contracts, deals, errors, invoices, payments, receivables, stock
from crm.bankstatement import NotAStatement, parse_statement
from tests.crm.statements import OUR_ACCOUNT, Doc, statement_bytes
from tests.crm.test_concurrency import outcomes, slow_writes, twice

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
TODAY = date(2026, 11, 23)
CLIENT_INN = "7701234567"
CLIENT_ACCOUNT = "40702810138000067890"


@pytest.fixture
async def people(factory):
    return {"head": await factory.user("head", role="head"),
            "manager1": await factory.user("manager1", extension="101"),
            "manager2": await factory.user("manager2", extension="102")}


@pytest.fixture
async def sale(conn, factory, people):
    """manager1's client with a 30-day contract and a deal of 10 bearings at 1 220 ₽ (VAT included)."""
    company = await factory.company("ООО «Ромашка»", people["manager1"])
    await conn.execute("UPDATE companies SET tax_id = $2 WHERE id = $1", company.id, CLIENT_INN)
    contract = await contracts.create_contract(
        conn, people["manager1"], number="П-17/2026", signed_on="2026-01-15", company_id=company.id, kind="supply",
        valid_until="2026-12-10", prepayment_percent=0, deferral_days=30)
    product = await stock.create_product(conn, "BRG-6204", "Подшипник 6204-2RS", "pcs", 1220, None, False)
    deal = await deals.create_deal(conn, people["manager1"], "Подшипники для конвейера", NOW, company_id=company.id)
    await deals.add_item(conn, people["manager1"], deal.id, product.id, 10)
    await contracts.set_deal_contract(conn, people["manager1"], deal.id, contract.id)
    return {"company": company, "contract": contract, "product": product, "deal": deal}


async def issue(conn, viewer, deal_id, today=TODAY, **kwargs):
    return await invoices.issue_invoice(conn, viewer, deal_id, today, vat_percent=22, prices_include_vat=True,
                                        **kwargs)


# ------------------------------------------------------------------ contracts

async def test_contracts_rules_visibility_and_expiring_soon(conn, factory, people, sale):
    other = await factory.company("АО «Чужие»", people["manager2"])
    with pytest.raises(errors.NotFound):  # manager1 may not know manager2's company
        await contracts.create_contract(conn, people["manager1"], number="1", signed_on="2026-01-01",
                                        company_id=other.id, kind="supply")
    with pytest.raises(errors.Conflict):
        await contracts.create_contract(conn, people["manager1"], number="п-17/2026", signed_on="2026-02-01",
                                        company_id=sale["company"].id, kind="supply")
    for bad in ({"kind": "loan"}, {"signed_on": "15.01.2026"}, {"valid_until": "2025-01-01"},
                {"prepayment_percent": 101}, {"deferral_days": "-1"}, {"number": " "}):
        args = {"number": "X-1", "signed_on": "2026-01-15", "company_id": sale["company"].id, "kind": "service",
                **bad}
        with pytest.raises(errors.ValidationError):
            await contracts.create_contract(conn, people["head"], **args)
    mine = await contracts.create_contract(conn, people["head"], number="Ч-2", signed_on="2026-01-01",
                                           company_id=other.id, kind="service", valid_until="2027-06-30")
    soon = await contracts.expiring_contracts(conn, people["head"], TODAY, days=30)
    assert [c.number for c in soon] == ["П-17/2026"]
    assert [c.number for c in await contracts.expiring_contracts(conn, people["manager2"], TODAY, 365)] == ["Ч-2"]
    with pytest.raises(errors.ValidationError):  # another company's contract
        await contracts.set_deal_contract(conn, people["head"], sale["deal"].id, mine.id)
    assert (await contracts.deal_contract(conn, people["manager1"], sale["deal"].id)).id == sale["contract"].id


# ------------------------------------------------------------------ invoices

def test_vat_taken_out_of_prices_or_added_on_top():
    assert invoices.vat_totals(Decimal("12200"), 22, True) == (Decimal("10000.00"), Decimal("2200.00"),
                                                             Decimal("12200.00"))
    assert invoices.vat_totals(Decimal("10000"), 22, False) == (Decimal("10000.00"), Decimal("2200.00"),
                                                              Decimal("12200.00"))
    assert invoices.vat_totals(Decimal("100.01"), 20, True) == (Decimal("83.34"), Decimal("16.67"),
                                                              Decimal("100.01"))
    assert invoices.vat_totals(Decimal("500"), None, True) == (Decimal("500.00"), Decimal("0.00"), Decimal("500.00"))


async def test_an_invoice_from_part_of_the_items_then_the_rest(conn, people, sale):
    (item,) = await deals.list_items(conn, sale["deal"].id)
    first = await issue(conn, people["manager1"], sale["deal"].id, lines=[{"deal_item_id": item.id, "quantity": 4}])
    assert (first.year, first.number, first.total, first.vat, first.net) == (
        2026, 1, Decimal("4880.00"), Decimal("880.00"), Decimal("4000.00"))
    assert (first.issued_on, first.due_on, first.contract_number) == (TODAY, TODAY + timedelta(days=30), "П-17/2026")
    assert first.buyer == "ООО «Ромашка»" and first.buyer_tax_id == CLIENT_INN
    with pytest.raises(errors.Conflict):
        await issue(conn, people["manager1"], sale["deal"].id, lines=[{"deal_item_id": item.id, "quantity": 7}])
    rest = await issue(conn, people["manager1"], sale["deal"].id)
    assert (rest.number, rest.total) == (2, Decimal("7320.00"))
    assert [(i.quantity, i.amount) for i in await invoices.list_items(conn, rest.id)] == [(6, Decimal("7320.00"))]
    with pytest.raises(errors.Conflict, match="invoiced already"):
        await issue(conn, people["manager1"], sale["deal"].id)
    with pytest.raises(errors.NotFound):  # not manager2's deal
        await invoices.get_invoice(conn, people["manager2"], rest.id)
    # A cancelled invoice keeps its number; its items may be invoiced again, under the next number.
    cancelled = await invoices.cancel_invoice(conn, people["manager1"], rest.id, NOW)
    assert cancelled.state == "cancelled"
    again = await issue(conn, people["manager1"], sale["deal"].id)
    assert again.number == 3
    for bad in ([{"deal_item_id": 999, "quantity": 1}], [{"deal_item_id": item.id, "quantity": "-1"}], [],
                [{"deal_item_id": "x"}], "all"):
        with pytest.raises(errors.CrmError):
            await issue(conn, people["manager1"], sale["deal"].id, lines=bad)


async def test_numbers_restart_each_year_and_never_repeat_under_concurrency(pool, conn, people, factory):
    product = await stock.create_product(conn, "P-1", "Редуктор", "pcs", 1000, None, False)
    deal_ids = []
    for n in range(6):
        deal = await deals.create_deal(conn, people["head"], f"Сделка {n}", NOW)
        await deals.add_item(conn, people["head"], deal.id, product.id, 1)
        deal_ids.append(deal.id)
    await slow_writes(conn, "invoices", seconds=0.05)

    async def one(deal_id):
        async with pool.acquire() as own:
            return await issue(own, people["head"], deal_id)

    made = await asyncio.gather(*(one(d) for d in deal_ids[:5]))
    assert sorted(i.number for i in made) == [1, 2, 3, 4, 5]
    next_year = await issue(conn, people["head"], deal_ids[5], today=date(2027, 1, 11))
    assert (next_year.year, next_year.number) == (2027, 1)


async def test_issuing_twice_at_once_gives_one_invoice(pool, conn, people, sale):
    await slow_writes(conn, "invoice_items")
    results = await twice(pool, lambda c: issue(c, people["manager1"], sale["deal"].id))
    assert outcomes(results) == ["Conflict", "ok"]
    assert [i.number for i in await invoices.list_invoices(conn, people["head"])] == [1]


async def test_invoice_document_has_what_a_printed_invoice_needs(conn, people, sale):
    invoice = await issue(conn, people["manager1"], sale["deal"].id)
    doc = await invoices.invoice_document(conn, invoice.id)
    assert {k: doc[k] for k in ("number", "year", "issued_on", "due_on", "buyer", "contract", "vat_percent", "net",
                                "vat", "total", "owed", "state", "seller")} == {
        "number": 1, "year": 2026, "issued_on": TODAY, "due_on": date(2026, 12, 23),
        "buyer": {"name": "ООО «Ромашка»", "tax_id": CLIENT_INN},
        "contract": {"number": "П-17/2026", "signed_on": date(2026, 1, 15)}, "vat_percent": 22,
        "net": Decimal("10000.00"), "vat": Decimal("2200.00"), "total": Decimal("12200.00"),
        "owed": Decimal("12200.00"), "state": "issued", "seller": None}
    assert [(i.sku, i.name, i.quantity, i.price) for i in doc["items"]] == [
        ("BRG-6204", "Подшипник 6204-2RS", Decimal("10.000"), Decimal("1220.00"))]


# ------------------------------------------------------------------ statements

def incoming(number, amount, purpose, day="25.11.2026", inn=CLIENT_INN, account=CLIENT_ACCOUNT):
    return Doc(number, day, amount, "ООО «Ромашка»", inn, account, purpose)


SUPPLIER_PAYMENT = Doc("812", "24.11.2026", "56000.00", "АО «Металлснаб»", "6658001234", "40702810516540001111",
                       "Оплата по счету № 4411 от 20.11.2026 за металлопрокат. В т.ч. НДС (22%) 10098.36 руб.",
                       incoming=False)


@pytest.mark.parametrize("encoding", ["cp1251", "cp866", "utf-8"])
def test_statements_in_each_encoding_read_the_same(encoding):
    data = statement_bytes([incoming("317", "12200.00", "Оплата по счету № 1 от 23.11.2026 за подшипники. "
                                     "В т.ч. НДС (22%) 2200.00 руб."), SUPPLIER_PAYMENT], encoding=encoding)
    statement = parse_statement(data)
    assert (statement.encoding, statement.version, statement.accounts) == (encoding, "1.03", (OUR_ACCOUNT,))
    assert (statement.date_from, statement.date_to, statement.problems) == (date(2026, 11, 1), date(2026, 11, 30), [])
    first, second = statement.documents
    assert (first.number, first.doc_date, first.amount, first.payer_inn, first.payer_account,
            first.received_on, statement.direction(first)) == (
        "317", date(2026, 11, 25), Decimal("12200.00"), CLIENT_INN, CLIENT_ACCOUNT, date(2026, 11, 25), "incoming")
    assert first.payer_name.replace('"', "«", 1).replace('"', "»") == "ООО «Ромашка»"
    assert first.purpose.startswith("Оплата по счету № 1 от 23.11.2026")
    assert statement.direction(second) == "outgoing"


def test_a_header_that_lies_about_its_encoding_is_read_as_written():
    data = statement_bytes([incoming("1", "10.00", "Оплата")], encoding="utf-8").replace(
        "Кодировка=UTF-8".encode(), "Кодировка=Windows".encode())
    assert parse_statement(data).documents[0].payer_name == "ООО «Ромашка»"


def test_broken_documents_are_skipped_and_named_the_rest_is_read():
    text = statement_bytes([incoming("1", "100.00", "Оплата по сч. 1"), incoming("2", "сто рублей", "x"),
                            incoming("3", "300.00", "Оплата")], encoding="utf-8").decode()
    text = text.replace("Дата=25.11.2026\r\nСумма=300.00", "Дата=31.02.2026\r\nСумма=300.00")
    text = text.replace("ВидОплаты=01", "ВидОплаты", 1)  # a line without '=' in the first document
    text = text.replace("КонецФайла", "СекцияДокумент=Платежное поручение\r\nНомер=4\r\nСумма=1")  # cut short
    statement = parse_statement(text.encode())
    assert [d.number for d in statement.documents] == ["1"]
    assert statement.problems == [
        (44, "not key=value: 'ВидОплаты'"), (49, "Сумма 'сто рублей' is not an amount"),
        (77, "Дата '31.02.2026' is not dd.mm.yyyy"), (105, "the file ends inside a document (no КонецДокумента)")]


@pytest.mark.parametrize("data", [b"", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "Дата;Сумма;Плательщик\n".encode("cp1251"),
                                  b"1CClientBankExchange\r\nfoo=bar\r\n", b"\x00" * 1000,
                                  "1CClientBankExchange\nВерсияФормата=1.03\nКодировка=KOI8\n".encode()])
def test_what_is_not_a_statement_is_refused_clearly(data):
    with pytest.raises(NotAStatement) as caught:
        parse_statement(data)
    assert caught.value.field == "file"


def test_a_big_statement_parses_in_reasonable_time():
    import time
    docs = [incoming(str(n), f"{n}.00", f"Оплата по счету № {n}") for n in range(1, 20001)]
    data = statement_bytes(docs)
    started = time.perf_counter()
    statement = parse_statement(data)
    assert len(statement.documents) == 20000
    assert time.perf_counter() - started < 5, f"{len(data)} bytes"


def test_invoice_numbers_in_purposes():
    refs = payments.invoice_refs
    assert refs("Оплата по счету № 15 от 03.11.2026 за подшипники, в т.ч. НДС 22%", 2026) == [(2026, 15)]
    assert refs("Опл. по сч.№15,16 и 17 от 03.01.25", 2026) == [(2025, 15), (2025, 16), (2025, 17)]
    assert refs("ОПЛАТА СЧЕТА НА ОПЛАТУ N 7", 2026) == [(2026, 7)]
    assert refs("Оплата по договору П-17/2026, на р/сч 40702810900000012345, счет-фактура 88", 2026) == []
    assert refs("Оплата по счёту 1234567890", 2026) == []


# ------------------------------------------------------------------ import and matching

async def import_bytes(conn, viewer, data, name="выписка.txt"):
    return await payments.import_statement(conn, viewer, parse_statement(data), name, NOW)


async def test_import_matches_by_number_then_inn_and_amount_and_waits_for_a_person(conn, factory, people, sale):
    invoice = await issue(conn, people["manager1"], sale["deal"].id)  # № 1, 12 200
    other_deal = await deals.create_deal(conn, people["manager1"], "Ещё подшипники", NOW,
                                         company_id=sale["company"].id)
    await deals.add_item(conn, people["manager1"], other_deal.id, sale["product"].id, 2)
    second = await issue(conn, people["manager1"], other_deal.id)  # № 2, 2 440
    data = statement_bytes([
        incoming("317", "5000.00", "Частичная оплата по счету № 1 от 23.11.2026 за подшипники"),
        incoming("318", "2440.00", "Оплата за подшипники по договору П-17/2026"),
        incoming("4501", "999.00", "Возврат излишне перечисленных средств", inn="7801999999",
                 account="40702810000000099999"),
        SUPPLIER_PAYMENT])
    summary = await import_bytes(conn, people["head"], data)
    assert (summary.documents, summary.incoming, summary.outgoing, summary.matched, summary.to_match,
            summary.duplicates, summary.problems) == (4, 3, 1, 2, 1, 0, [])
    invoice = await invoices.get_invoice(conn, people["head"], invoice.id)
    second = await invoices.get_invoice(conn, people["head"], second.id)
    assert (invoice.state, invoice.paid, invoice.owed) == ("partly_paid", Decimal("5000.00"), Decimal("7200.00"))
    assert (second.state, second.paid) == ("paid", Decimal("2440.00"))
    waiting = await payments.list_payments(conn, people["head"], to_match=True)
    assert [(p.doc_number, p.unallocated, p.company_id) for p in waiting] == [("4501", Decimal("999.00"), None)]
    # The same file again adds nothing.
    again = await import_bytes(conn, people["head"], data)
    assert (again.incoming, again.matched, again.to_match, again.duplicates) == (3, 0, 0, 3)
    assert len(await payments.list_payments(conn, people["head"])) == 3
    # A manager sees their client's payments, not the stranger's; only head and admin import.
    assert sorted(p.doc_number for p in await payments.list_payments(conn, people["manager1"])) == ["317", "318"]
    assert await payments.list_payments(conn, people["manager2"]) == []
    with pytest.raises(errors.Forbidden):
        await import_bytes(conn, people["manager1"], data)


async def test_a_payment_naming_someone_elses_invoice_waits_and_overpayment_stays_to_match(conn, people, sale):
    await issue(conn, people["manager1"], sale["deal"].id)  # № 1, 12 200, to INN 7701234567
    summary = await import_bytes(conn, people["head"], statement_bytes([
        incoming("1", "12200.00", "Оплата по счету № 1", inn="5003004005", account="40702810000000011111"),
        incoming("2", "15000.00", "Оплата по счету № 1 от 23.11.2026")]))
    assert (summary.matched, summary.to_match) == (1, 1)
    (first, second) = sorted(await payments.list_payments(conn, people["head"]), key=lambda p: p.doc_number)
    assert (first.allocated, second.allocated) == (0, Decimal("12200.00"))
    assert sorted(p.doc_number for p in await payments.list_payments(conn, people["head"], to_match=True)) == ["1", "2"]


async def test_two_imports_of_one_statement_at_once_store_one_set(pool, conn, people, sale):
    await issue(conn, people["manager1"], sale["deal"].id)
    data = statement_bytes([incoming(str(n), "100.00", "Оплата по счету № 1") for n in range(1, 6)])
    await slow_writes(conn, "payments", seconds=0.05)
    results = await twice(pool, lambda c: import_bytes(c, people["head"], data))
    assert sorted((r.incoming, r.matched, r.duplicates) for r in results) == [(5, 0, 5), (5, 5, 0)]
    assert await conn.fetchval("SELECT count(*) FROM payments") == 5
    assert (await invoices.get_invoice(conn, people["head"], 1)).paid == Decimal("500.00")


async def test_a_payment_entered_by_hand_and_split_across_invoices(conn, people, sale):
    first = await issue(conn, people["manager1"], sale["deal"].id, lines=[
        {"deal_item_id": (await deals.list_items(conn, sale["deal"].id))[0].id, "quantity": 5}])  # 6 100
    second = await issue(conn, people["manager1"], sale["deal"].id)  # 6 100
    payment = await payments.enter_payment(
        conn, people["head"], NOW, doc_number="77", doc_date="2026-11-24", amount="10000", payer_name="ООО «Ромашка»",
        payer_inn=CLIENT_INN, payer_account=CLIENT_ACCOUNT, purpose="Оплата за подшипники",
        allocations=[{"invoice_id": first.id, "amount": "6100"}, {"invoice_id": second.id, "amount": "3900.00"}])
    assert ([(a.number, a.amount, a.matched_by) for a in payment.allocations], payment.unallocated) == (
        [(1, Decimal("6100.00"), "manual"), (2, Decimal("3900.00"), "manual")], 0)
    states = [(i.number, i.state, i.owed) for i in await invoices.list_invoices(conn, people["head"])]
    assert states == [(2, "partly_paid", Decimal("2200.00")), (1, "paid", Decimal("0.00"))]
    with pytest.raises(errors.Conflict):  # the same order again
        await payments.enter_payment(conn, people["head"], NOW, doc_number="77", doc_date="2026-11-24",
                                     amount="10000", payer_account=CLIENT_ACCOUNT)
    with pytest.raises(errors.Conflict):  # a paid invoice cannot be cancelled
        await invoices.cancel_invoice(conn, people["head"], first.id, NOW)
    # A wrong match is taken back; the money waits again and is split by hand.
    payment = await payments.unallocate(conn, people["head"], payment.id, second.id, NOW)
    assert payment.unallocated == Decimal("3900.00")
    with pytest.raises(errors.Conflict):  # more than is left of the payment
        await payments.allocate(conn, people["head"], payment.id, [{"invoice_id": second.id, "amount": "4000"}], NOW)
    payment = await payments.allocate(conn, people["head"], payment.id, [{"invoice_id": second.id, "amount": 3900}],
                                      NOW)
    assert payment.unallocated == 0
    for bad in (None, [], [{"invoice_id": second.id}], [{"invoice_id": second.id, "amount": "-5"}],
                [{"invoice_id": second.id, "amount": 1}, {"invoice_id": second.id, "amount": 1}]):
        with pytest.raises(errors.ValidationError):
            await payments.allocate(conn, people["head"], payment.id, bad, NOW)
    with pytest.raises(errors.Forbidden):
        await payments.allocate(conn, people["manager1"], payment.id, [{"invoice_id": second.id, "amount": 1}], NOW)


# ------------------------------------------------------------------ receivables and reminders

async def test_receivables_age_by_the_day_asked_and_per_manager(conn, factory, people, sale):
    product = sale["product"]
    made = []
    for n, (manager, issued) in enumerate([(people["manager1"], date(2026, 6, 1)),  # due 01.07, 145 days late
                                           (people["manager1"], date(2026, 10, 1)),  # due 31.10, 23 days late
                                           (people["manager2"], date(2026, 11, 20))]):  # due 25.11
        deal = await deals.create_deal(conn, manager, f"Сделка {n}", NOW)
        await deals.add_item(conn, manager, deal.id, product.id, 1)
        made.append(await invoices.issue_invoice(conn, manager, deal.id, issued, vat_percent=22,
                                                 prices_include_vat=True,
                                                 due_on=issued + timedelta(days=30 if n < 2 else 5)))
    await payments.enter_payment(conn, people["head"], NOW, doc_number="5", doc_date="2026-11-20", amount="220",
                                 allocations=[{"invoice_id": made[0].id, "amount": 220}])
    report = await receivables.receivables(conn, people["head"], TODAY)
    total = report.total
    assert (total.owed, total.overdue, total.expected_this_month, total.invoices) == (
        Decimal("3440.00"), Decimal("2220.00"), Decimal("1220.00"), 3)
    assert total.buckets == {"not_due": Decimal("1220.00"), "1_30": Decimal("1220.00"), "31_60": 0, "61_90": 0,
                             "over_90": Decimal("1000.00")}
    assert [(m.name, m.owed, m.overdue) for m in report.managers] == [
        ("Manager1", Decimal("2220.00"), Decimal("2220.00")), ("Manager2", Decimal("1220.00"), 0)]
    # As of an earlier day the later payment did not count yet, and the last invoice did not exist.
    earlier = await receivables.receivables(conn, people["head"], date(2026, 11, 1))
    assert (earlier.total.owed, earlier.total.buckets["over_90"], earlier.total.buckets["1_30"]) == (
        Decimal("2440.00"), Decimal("1220.00"), Decimal("1220.00"))
    mine = await receivables.receivables(conn, people["manager2"], TODAY)
    assert [i["number"] for i in mine.invoices] == [made[2].number]


async def test_an_overdue_invoice_gives_its_manager_one_task_and_paying_closes_it(pool, conn, people, sale):
    invoice = await issue(conn, people["manager1"], sale["deal"].id)  # due 23.12.2026
    assert await invoices.flag_overdue_invoices(conn, date(2026, 12, 23), NOW) == []
    later = datetime(2026, 12, 24, 9, 0, tzinfo=UTC)
    results = await twice(pool, lambda c: invoices.flag_overdue_invoices(c, date(2026, 12, 24), later))
    assert sorted(len(r) for r in results) == [0, 1]
    assert await invoices.flag_overdue_invoices(conn, date(2026, 12, 25), later) == []
    tasks = [dict(r) for r in await conn.fetch("SELECT kind, title, assignee_id, state, invoice_id FROM tasks")]
    assert tasks == [{"kind": "overdue_invoice", "title": "Invoice № 1 of 2026 is overdue: ООО «Ромашка»",
                      "assignee_id": people["manager1"].id, "state": "open", "invoice_id": invoice.id}]
    kinds = await conn.fetch("SELECT user_id, kind FROM notifications ORDER BY user_id")
    assert [(r["user_id"], r["kind"]) for r in kinds] == [(people["head"].id, "overdue_invoice"),
                                                         (people["manager1"].id, "overdue_invoice")]
    await payments.enter_payment(conn, people["head"], later, doc_number="9", doc_date="2026-12-24", amount="12200",
                                 payer_inn=CLIENT_INN, purpose="Оплата по счету 1 от 23.11.2026")
    assert await conn.fetchval("SELECT state FROM tasks") == "done"
