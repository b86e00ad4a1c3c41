"""Demo data, seeded idempotently: users, an admin token, companies and contacts with Russian phones."""

from __future__ import annotations

import logging

import asyncpg

from crm.contacts import PartyInput, create_party, list_parties
from crm.users import User, add_api_token, create_user, get_user_by_login

logger = logging.getLogger(__name__)

DEMO_ADMIN_TOKEN = "demo-admin-token"
DEMO_ROUTING_TOKEN = "demo-token"
# (login, role, extension, display name); the password equals the login. Seeded in the demo's language.
DEMO_USERS = {
    "en": (("head", "head", "100", "Head of Sales"), ("manager1", "manager", "101", "Manager One"),
           ("manager2", "manager", "102", "Manager Two"), ("admin", "admin", None, "Administrator")),
    "ru": (("head", "head", "100", "Елена Соколова"), ("manager1", "manager", "101", "Алексей Иванов"),
           ("manager2", "manager", "102", "Мария Кузнецова"), ("admin", "admin", None, "Администратор")),
}
# (company, tax id, manager login, [(contact name, [phones], [e-mails])], company phones); the phones are the
# same in every language (the demo's call load dials them).
DEMO_COMPANIES_BY_LANGUAGE = {
    "en": (
        ("Demo Industries LLC", "7701234567", "manager1",
         [("Demo Client", ["+7 495 123-45-67"], ["client@demo-industries.example"]),
          ("Ivan Petrov", ["8 916 000-01-01"], ["petrov@demo-industries.example"])],
         ["+7 495 123-45-00"]),
        ("Uralmash Supply", "6601987654", "manager2",
         [("Olga Smirnova", ["+7 916 111-22-33"], ["o.smirnova@uralmash.example"])],
         ["+7 343 200-10-10"]),
        ("Volga Bearings", "6312555000", None,
         [("Sergey Volkov", ["+7 846 333-44-55 доб. 12"], [])],
         []),
    ),
    "ru": (
        ("ООО «Демо Индастриз»", "7701234567", "manager1",
         [("Дмитрий Клиентов", ["+7 495 123-45-67"], ["client@demo-industries.example"]),
          ("Иван Петров", ["8 916 000-01-01"], ["petrov@demo-industries.example"])],
         ["+7 495 123-45-00"]),
        ("АО «Уралмаш-Снаб»", "6601987654", "manager2",
         [("Ольга Смирнова", ["+7 916 111-22-33"], ["o.smirnova@uralmash.example"])],
         ["+7 343 200-10-10"]),
        ("ООО «Волжские подшипники»", "6312555000", None,
         [("Сергей Волков", ["+7 846 333-44-55 доб. 12"], [])],
         []),
    ),
}
DEMO_COMPANIES = DEMO_COMPANIES_BY_LANGUAGE["en"]
# Phone labels in the demo's language.
DEMO_WORDS = {
    "en": {"office": "office", "work": "work"},
    "ru": {"office": "офис", "work": "рабочий"},
}

# Demo mode is refused on a database that holds users but was never seeded by demo mode.
IS_DEMO_DATABASE = """SELECT EXISTS (SELECT 1 FROM users WHERE login = 'manager1'
                                     AND display_name IN ('Manager One', 'Алексей Иванов'))"""
COUNT_USERS = "SELECT count(*) FROM users"


async def may_seed_demo(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval(COUNT_USERS) == 0 or await conn.fetchval(IS_DEMO_DATABASE)


async def seed_demo(conn: asyncpg.Connection, region: str, language: str = "en") -> None:
    language = language if language in DEMO_USERS else "en"
    users: dict[str, User] = {}
    for login, role, extension, name in DEMO_USERS[language]:
        user = await get_user_by_login(conn, login)
        if user is None:
            user = await create_user(conn, login, login, role, extension, name)
        users[login] = user
    await add_api_token(conn, users["admin"].id, DEMO_ADMIN_TOKEN, "demo admin token")
    admin = users["admin"]
    words = DEMO_WORDS[language]
    for company_name, tax_id, manager, contacts, company_phones in DEMO_COMPANIES_BY_LANGUAGE[language]:
        if await list_parties(conn, admin, "company", company_name, region, limit=1):
            continue
        manager_id = users[manager].id if manager else None
        company = await create_party(conn, admin, "company", PartyInput(
            name=company_name, tax_id=tax_id, manager_id=manager_id,
            phones=[(p, words["office"]) for p in company_phones]), region)
        for contact_name, phones, emails in contacts:
            await create_party(conn, admin, "contact", PartyInput(
                name=contact_name, company_id=company.id, manager_id=manager_id,
                phones=[(p, words["work"]) for p in phones], emails=list(emails)), region)
    await _seed_stock_and_deals(conn, users, region, language)
    logger.info("demo data is in place")


# (sku, name, unit, price, made in house, [(quantity, days ago)])
DEMO_PRODUCTS = {
    "en": (
        ("BRG-6205", "Ball bearing 6205-2RS", "pcs", 450, False, [(40, 30)]),
        ("BRG-6310", "Ball bearing 6310", "pcs", 1200, False, [(5, 20)]),
        ("RED-CH100", "Worm gear reducer Ch-100", "pcs", 85000, True, [(2, 60)]),
        ("PMP-K50", "Centrifugal pump K 50-32-125", "pcs", 120000, True, []),
        ("SEAL-50", "Shaft seal kit 50 mm", "set", 900, False, [(300, 250)]),  # slow mover: illiquid
    ),
    "ru": (
        ("BRG-6205", "Подшипник шариковый 6205-2RS", "шт.", 450, False, [(40, 30)]),
        ("BRG-6310", "Подшипник шариковый 6310", "шт.", 1200, False, [(5, 20)]),
        ("RED-CH100", "Редуктор червячный Ч-100", "шт.", 85000, True, [(2, 60)]),
        ("PMP-K50", "Насос центробежный К 50-32-125", "шт.", 120000, True, []),
        ("SEAL-50", "Комплект уплотнений вала 50 мм", "компл.", 900, False, [(300, 250)]),  # illiquid
    ),
}
# Deal titles and needs; the contacts are the first contact of each demo company.
DEMO_DEALS = {
    "en": {"bearings": ("Bearings for the press line", "40 bearings 6205 and 10 bearings 6310 for two presses"),
           "reducers": ("Reducers for the conveyor", ""),
           "pumps": ("Pump station upgrade", "Replace two K 50 pumps")},
    "ru": {"bearings": ("Подшипники для линии прессов", "40 подшипников 6205 и 10 подшипников 6310 на два пресса"),
           "reducers": ("Редукторы для конвейера", ""),
           "pumps": ("Модернизация насосной станции", "Заменить два насоса К 50")},
}


async def _seed_stock_and_deals(conn: asyncpg.Connection, users: dict[str, User], region: str,
                                language: str) -> None:
    from datetime import UTC, datetime, timedelta

    from crm import deals, stock

    now = datetime.now(UTC)
    products = {}
    for sku, name, unit, price, own, batches in DEMO_PRODUCTS[language]:
        product = await stock.product_by_sku(conn, sku)
        if product is None:
            product = await stock.create_product(conn, sku, name, unit, price, None, own)
            for quantity, days_ago in batches:
                await stock.receive(conn, product.id, quantity, now - timedelta(days=days_ago))
        products[sku] = product
    if await conn.fetchval("SELECT count(*) FROM deals"):
        return
    head = users["head"]
    demo_client, olga, volkov = [
        (await list_parties(conn, head, "contact", contacts[0][0], region, limit=1))[0]
        for _, _, _, contacts, _ in DEMO_COMPANIES_BY_LANGUAGE[language]]
    titles = DEMO_DEALS[language]
    bearings = await deals.create_deal(conn, head, titles["bearings"][0], now - timedelta(days=6),
                                       contact_id=demo_client.id, company_id=demo_client.company_id,
                                       manager_id=users["manager1"].id, probability=60, source="phone",
                                       needs=titles["bearings"][1])
    await deals.add_item(conn, head, bearings.id, products["BRG-6205"].id, 30)
    await deals.add_item(conn, head, bearings.id, products["BRG-6310"].id, 10)
    await deals.move_stage(conn, head, bearings.id, "reservation", now - timedelta(days=2))
    reducers = await deals.create_deal(conn, head, titles["reducers"][0], now - timedelta(days=3),
                                       contact_id=olga.id, company_id=olga.company_id,
                                       manager_id=users["manager2"].id, probability=40, source="e-mail")
    await deals.add_item(conn, head, reducers.id, products["RED-CH100"].id, 3)
    await deals.move_stage(conn, head, reducers.id, "offer", now - timedelta(days=1))
    # Stuck: 20 days at "Equipment selection", whose norm is 7.
    await deals.create_deal(conn, head, titles["pumps"][0], now - timedelta(days=20), contact_id=volkov.id,
                            company_id=volkov.company_id, manager_id=users["manager1"].id, probability=20,
                            needs=titles["pumps"][1])
