"""Server-rendered pages: login, contacts and companies (list, search, card, create, edit)."""

from __future__ import annotations

import hmac
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from crm import contacts as contacts_db
from crm import deals as deals_db
from crm import errors, paging
from crm import users as users_db
from crm.contacts import Kind, PartyInput
from web import keys
from web.auth import CSRF_FIELD, SESSION_COOKIE, current_user
from web.errors import path_id
from web.i18n import N_
from web.paging import next_url, page_args
from web.render import render
from web.sockets import disconnect_session
from web.timeline import timeline_context

__all__ = ["render", "setup"]  # render is imported from here by older page modules

logger = logging.getLogger(__name__)

KIND_BY_PATH: dict[str, Kind] = {"contacts": "contact", "companies": "company"}
TITLES = {"contact": (N_("Contacts"), N_("Contact")), "company": (N_("Companies"), N_("Company"))}
LOGIN_CSRF_COOKIE = "callboard_login_csrf"


def _safe_next(target: str | None) -> str:
    """Only local paths: '//evil.example' or 'https://…' must not become an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def secure_cookies(request: web.Request) -> bool:
    """Secure when the browser speaks HTTPS to us, or to the proxy in front (the setting says so)."""
    return request.secure or request.app[keys.SETTINGS].secure_cookies


def _login_form(request: web.Request, http_status: int = 200, **context: Any) -> web.Response:
    """The login form with a fresh CSRF token, echoed by a cookie: another site cannot log a browser in
    to an account of its choosing (login CSRF), since it can neither read the token nor set the cookie."""
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", http_status=http_status, login_csrf=token, **context)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/login",
                        max_age=3600, secure=secure_cookies(request))
    return response


async def login_page(request: web.Request) -> web.Response:
    return _login_form(request, next=_safe_next(request.query.get("next")), error=None)


async def login_submit(request: web.Request) -> web.Response:
    form = await request.post()
    login, password = str(form.get("login", "")), str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "/")))
    sent, expected = str(form.get(CSRF_FIELD, "")), request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not sent or not expected or not hmac.compare_digest(sent, expected):
        logger.warning("login form without its CSRF token from %s", request.remote)
        return _login_form(request, http_status=403, next=target,
                           error="The login form expired or came from another site. Please try again.")
    pool, settings = request.app[keys.POOL], request.app[keys.SETTINGS]
    now = datetime.now(UTC)
    try:
        async with pool.acquire() as conn:
            user = await users_db.authenticate(conn, login, password, request.remote or "", now)
            token, _ = await users_db.create_session(conn, user, settings.session_secret, now)
    except errors.TooManyAttempts:
        return _login_form(request, http_status=429, next=target,
                           error=N_("Too many failed attempts. Wait a few minutes or ask an administrator."))
    except errors.AuthenticationFailed:
        logger.info("failed login for %r from %s", login[:64], request.remote)
        return _login_form(request, http_status=401, next=target, error=N_("Wrong login or password."))
    response = web.HTTPFound(target)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Lax", max_age=7 * 24 * 3600,
                        secure=secure_cookies(request))
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise response


async def logout(request: web.Request) -> web.Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        async with request.app[keys.POOL].acquire() as conn:
            await users_db.delete_session(conn, token, request.app[keys.SETTINGS].session_secret)
        await disconnect_session(request.app, token)  # the live socket of this session ends with it
    response = web.HTTPFound("/login")
    response.del_cookie(SESSION_COOKIE)
    raise response


async def index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/home")


def _kind(request: web.Request) -> Kind:
    return KIND_BY_PATH[request.match_info["section"]]


def _party_id(request: web.Request) -> int:
    return path_id(request, "party_id")


async def party_list(request: web.Request) -> web.Response:
    kind, user = _kind(request), current_user(request)
    query = request.query.get("q", "")
    limit, after = page_args(request, 100)
    async with request.app[keys.POOL].acquire() as conn:
        page = paging.page(await contacts_db.list_parties(conn, user, kind, query,
                                                          request.app[keys.SETTINGS].phone_region, limit=limit + 1,
                                                          after=after), limit, contacts_db.party_key)
        parties = page.items
    return render(request, "parties.html", kind=kind, section=request.match_info["section"], titles=TITLES[kind],
                  parties=parties, query=query, next_url=next_url(request, page))


async def party_card(request: web.Request) -> web.Response:
    kind, user = _kind(request), current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        party = await contacts_db.get_party(conn, user, kind, _party_id(request))
        members = await contacts_db.list_company_contacts(conn, user, party.id) if kind == "company" else []
        deals = await deals_db.list_deals(conn, user, None, party.id if kind == "contact" else None,
                                          party.id if kind == "company" else None)
        history = await timeline_context(conn, request, kind, party.id)  # calls, mail, notes, tasks… (issue 15)
    return render(request, "party.html", kind=kind, section=request.match_info["section"], titles=TITLES[kind],
                  party=party, members=members, deals=deals, **history)


def _form_input(form: MultiDictProxy) -> PartyInput:
    def optional_int(name: str) -> int | None:
        value = str(form.get(name, "")).strip()
        if not value:
            return None
        if not value.isdigit():
            raise errors.ValidationError(name, "must be a number")
        return int(value)

    raws, labels = form.getall("phone", []), form.getall("phone_label", [])
    return PartyInput(
        name=str(form.get("name", "")),
        manager_id=optional_int("manager_id"),
        notes=str(form.get("notes", "")),
        company_id=optional_int("company_id"),
        tax_id=str(form.get("tax_id", "")) or None,
        phones=[(str(raw), str(labels[i]) if i < len(labels) else "") for i, raw in enumerate(raws)],
        emails=[str(e) for e in form.getall("email", [])],
    )


async def _form_context(request: web.Request) -> dict[str, Any]:
    user = current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        managers = await users_db.list_assignees(conn)
        companies = await contacts_db.list_parties(conn, user, "company", None,
                                                   request.app[keys.SETTINGS].phone_region, limit=500)
    if not user.sees_everything:
        managers = [u for u in managers if u.id == user.id]
    return {"managers": managers, "companies": companies}


async def party_form(request: web.Request) -> web.Response:
    kind, user = _kind(request), current_user(request)
    party = None
    if "party_id" in request.match_info:
        async with request.app[keys.POOL].acquire() as conn:
            party = await contacts_db.get_party(conn, user, kind, _party_id(request))
    values = _values_of(party, user)
    return render(request, "party_form.html", kind=kind, section=request.match_info["section"],
                  titles=TITLES[kind], party=party, values=values, error=None, duplicate=None,
                  **await _form_context(request))


def _values_of(party: contacts_db.Party | None, user: users_db.User) -> dict[str, Any]:
    if party is None:
        return {"name": "", "manager_id": None if user.sees_everything else user.id, "notes": "",
                "company_id": None, "tax_id": "", "phones": [], "emails": []}
    return {"name": party.name, "manager_id": party.manager_id, "notes": party.notes, "company_id": party.company_id,
            "tax_id": party.tax_id or "", "phones": [(p.raw, p.label) for p in party.phones],
            "emails": list(party.emails)}


async def party_save(request: web.Request) -> web.Response:
    kind, user = _kind(request), current_user(request)
    form = await request.post()
    data = _form_input(form)
    region = request.app[keys.SETTINGS].phone_region
    existing_id = _party_id(request) if "party_id" in request.match_info else None
    # A phone, e-mail or tax id another record has: warned about, saved only with "save anyway" ticked.
    refuse = not form.get("allow_duplicate")
    duplicate = None
    try:
        async with request.app[keys.POOL].acquire() as conn:
            if existing_id is None:
                party = await contacts_db.create_party(conn, user, kind, data, region, refuse_duplicates=refuse)
            else:
                party = await contacts_db.update_party(conn, user, kind, existing_id, data, region,
                                                       refuse_duplicates=refuse)
    except (errors.ValidationError, errors.Duplicate) as exc:
        if isinstance(exc, errors.Duplicate):
            duplicate = {"field": exc.field, "id": exc.existing_id, "name": await _visible_name(request, kind,
                                                                                                exc.existing_id)}
        # Show the form again with everything the person typed, untouched, and the reason.
        values = {"name": data.name, "manager_id": data.manager_id, "notes": data.notes,
                  "company_id": data.company_id, "tax_id": data.tax_id or "", "phones": data.phones,
                  "emails": data.emails}
        return render(request, "party_form.html", http_status=409 if duplicate else 422, kind=kind,
                      section=request.match_info["section"], titles=TITLES[kind],
                      party={"id": existing_id} if existing_id else None, values=values,
                      error=None if duplicate else str(exc), duplicate=duplicate, **await _form_context(request))
    raise web.HTTPFound(f"/{request.match_info['section']}/{party.id}")


async def _visible_name(request: web.Request, kind: Kind, party_id: int) -> str | None:
    """The duplicate's name if the person may see it; a colleague's client stays unnamed."""
    async with request.app[keys.POOL].acquire() as conn:
        try:
            return (await contacts_db.get_party(conn, current_user(request), kind, party_id)).name
        except errors.NotFound:
            return None


def setup(app: web.Application) -> None:
    router = app.router
    router.add_get("/", index)
    router.add_get("/login", login_page)
    router.add_post("/login", login_submit)
    router.add_post("/logout", logout)
    section = "{section:contacts|companies}"
    router.add_get(f"/{section}", party_list)
    router.add_get(f"/{section}/new", party_form)
    router.add_post(f"/{section}/new", party_save)
    router.add_get(f"/{section}/{{party_id:\\d+}}", party_card)
    router.add_get(f"/{section}/{{party_id:\\d+}}/edit", party_form)
    router.add_post(f"/{section}/{{party_id:\\d+}}/edit", party_save)
