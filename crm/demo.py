"""Demo data, seeded idempotently: users, an admin token, companies and contacts with Russian phones."""

from __future__ import annotations

import logging

import asyncpg

from crm.contacts import PartyInput, create_party, list_parties
from crm.users import User, add_api_token, create_user, get_user_by_login

logger = logging.getLogger(__name__)

DEMO_ADMIN_TOKEN = "demo-admin-token"
DEMO_ROUTING_TOKEN = "demo-token"
# (login, role, extension, display name); the password equals the login.
DEMO_USERS = (
    ("head", "head", "100", "Head of Sales"),
    ("manager1", "manager", "101", "Manager One"),
    ("manager2", "manager", "102", "Manager Two"),
    ("admin", "admin", None, "Administrator"),
)
# (company, tax id, manager login, [(contact name, [phones], [e-mails])], company phones)
DEMO_COMPANIES = (
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
)

# Demo mode is refused on a database that holds users but was never seeded by demo mode.
IS_DEMO_DATABASE = "SELECT EXISTS (SELECT 1 FROM users WHERE login = 'manager1' AND display_name = 'Manager One')"
COUNT_USERS = "SELECT count(*) FROM users"


async def may_seed_demo(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval(COUNT_USERS) == 0 or await conn.fetchval(IS_DEMO_DATABASE)


async def seed_demo(conn: asyncpg.Connection, region: str) -> None:
    users: dict[str, User] = {}
    for login, role, extension, name in DEMO_USERS:
        user = await get_user_by_login(conn, login)
        if user is None:
            user = await create_user(conn, login, login, role, extension, name)
        users[login] = user
    await add_api_token(conn, users["admin"].id, DEMO_ADMIN_TOKEN, "demo admin token")
    admin = users["admin"]
    for company_name, tax_id, manager, contacts, company_phones in DEMO_COMPANIES:
        if await list_parties(conn, admin, "company", company_name, region, limit=1):
            continue
        manager_id = users[manager].id if manager else None
        company = await create_party(conn, admin, "company", PartyInput(
            name=company_name, tax_id=tax_id, manager_id=manager_id,
            phones=[(p, "office") for p in company_phones]), region)
        for contact_name, phones, emails in contacts:
            await create_party(conn, admin, "contact", PartyInput(
                name=contact_name, company_id=company.id, manager_id=manager_id,
                phones=[(p, "work") for p in phones], emails=list(emails)), region)
    logger.info("demo data is in place")
