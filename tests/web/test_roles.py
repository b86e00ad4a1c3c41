"""The accountant enters money; the warehouse receives goods; a manager does neither."""

from datetime import UTC, datetime

from crm import deals, stock
from tests.conftest import csrf_headers, login

STATEMENT = ("1CClientBankExchange\r\nВерсияФормата=1.03\r\nКодировка=Windows\r\nРасчСчет=40702810900000000001\r\n"
             "СекцияДокумент=Платежное поручение\r\nНомер=1\r\nДата=01.11.2026\r\nСумма=100.00\r\n"
             "ПлательщикСчет=40702810000000000099\r\nПлательщикИНН=7701234567\r\nПлательщик1=ООО Ромашка\r\n"
             "ПолучательСчет=40702810900000000001\r\nНазначениеПлатежа=Оплата по счету № 999\r\n"
             "ДатаПоступило=01.11.2026\r\nКонецДокумента\r\nКонецФайла\r\n").encode("cp1251")


async def test_the_accountant_imports_statements_and_a_manager_cannot(client, factory):
    await factory.user("accountant", role="accountant")
    await factory.user("manager1", extension="101")
    csrf = await login(client, "manager1")
    refused = await client.post("/api/bank-statements", data=STATEMENT,
                                headers={**csrf_headers(csrf), "Content-Type": "text/plain"})
    assert refused.status == 403
    await client.post("/logout", data={"csrf_token": csrf})
    csrf = await login(client, "accountant")
    resp = await client.post("/api/bank-statements", data=STATEMENT,
                             headers={**csrf_headers(csrf), "Content-Type": "text/plain"})
    assert resp.status in (200, 201), await resp.text()
    assert (await resp.json())["incoming"] == 1
    assert (await client.get("/receivables")).status == 200


async def test_the_warehouse_receives_goods_and_a_manager_cannot_mark_an_order_received(client, factory, conn):
    await factory.user("sklad", role="warehouse")
    manager = await factory.user("manager1", extension="101")
    product = await stock.create_product(conn, "PMP-1", "Pump", "pcs", 100, None, False)
    deal = await deals.create_deal(conn, manager, "Pumps", datetime.now(UTC))
    csrf = await login(client, "manager1")
    assert (await client.post("/api/stock/movements", headers=csrf_headers(csrf),
                              json={"product_id": product.id, "kind": "receipt", "quantity": 5})).status == 403
    refused = await client.post(f"/api/deals/{deal.id}/order-done", headers=csrf_headers(csrf),
                                json={"kind": "supplier", "order_id": 1})
    assert refused.status == 403
    await client.post("/logout", data={"csrf_token": csrf})
    csrf = await login(client, "sklad")
    resp = await client.post("/api/stock/movements", headers=csrf_headers(csrf),
                             json={"product_id": product.id, "kind": "receipt", "quantity": 5})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["on_hand"] in ("5", 5, "5.000")
    assert (await client.get(f"/deals/{deal.id}")).status == 200  # the warehouse sees the deals it ships
