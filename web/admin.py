"""Administration pages: users (create, change role, extension or devices, deactivate, reset a password),
PBX connections, and one's own password."""

from __future__ import annotations

from aiohttp import web
from multidict import MultiDictProxy

from crm import errors
from crm import users as users_db
from web import keys
from web.auth import SESSION_COOKIE, current_user, require_role
from web.i18n import N_
from web.pages import render
from web.sockets import user_changed
from web.tokens import token_context


async def users_page(request: web.Request) -> web.Response:
    require_role(request, "admin")
    async with request.app[keys.POOL].acquire() as conn:
        people = await users_db.list_users(conn)
    telephony = request.app.get(keys.TELEPHONY)
    return render(request, "users.html", people=people, roles=users_db.ROLES, error=None,
                  pbx_status=telephony.pbx_status() if telephony else {})


# A refused edit shows the page again, with the current data and what went wrong.
_REFUSED = {errors.ValidationError: 422, errors.Conflict: 409, errors.NotFound: 404}


def _version(form: MultiDictProxy) -> int | None:
    """The version the form was rendered with; the edit is refused (409) if the user changed since."""
    text = str(form.get("version", "")).strip()
    if not text:
        return None
    if not text.isdigit():
        raise errors.ValidationError("version", "is not a number; reload the page")
    return int(text)


def _language(form: MultiDictProxy) -> str | None:
    """'' is "as the browser asks"."""
    return str(form.get("language", "")).strip() or None


async def users_action(request: web.Request) -> web.Response:
    require_role(request, "admin")
    form = await request.post()
    action = request.match_info["action"]
    extension = str(form.get("extension", "")).strip() or None
    devices = str(form.get("devices", ""))
    async with request.app[keys.POOL].acquire() as conn:
        try:
            if action == "new":
                if len(str(form.get("password", ""))) < 8:  # the same rule as a reset below
                    raise errors.ValidationError("password", "at least 8 characters")
                created = await users_db.create_user(conn, str(form.get("login", "")).strip().lower(),
                                                     str(form.get("password", "")), str(form.get("role", "")),
                                                     extension, str(form.get("display_name", "")), devices=devices)
                await users_db.set_language(conn, created.id, _language(form))
            else:
                user_id = int(request.match_info["user_id"])
                password = str(form.get("password", ""))
                if password and len(password) < 8:  # checked first: a refused form changes nothing
                    raise errors.ValidationError("password", "at least 8 characters")
                await users_db.update_user(conn, user_id, str(form.get("role", "")), extension,
                                           str(form.get("display_name", "")), form.get("active") == "on",
                                           version=_version(form), devices=devices)
                if password:
                    await users_db.set_password(conn, user_id, password)
                if "language" in form:
                    await users_db.set_language(conn, user_id, _language(form))
        except tuple(_REFUSED) as exc:
            people = await users_db.list_users(conn)
            status = next(code for kind, code in _REFUSED.items() if isinstance(exc, kind))
            return render(request, "users.html", http_status=status, people=people,
                          roles=users_db.ROLES, error=str(exc), pbx_status={})
    if action == "new":
        await user_changed(request.app, created.id, end_sessions=False)
    else:
        # A deactivation or a new password ends the user's sessions and closes their sockets now.
        await user_changed(request.app, user_id, end_sessions=bool(password) or form.get("active") != "on")
    raise web.HTTPFound("/admin/users")


async def password_page(request: web.Request) -> web.Response:
    current_user(request)
    return render(request, "password.html", error=None, done=False, **await token_context(request))


async def password_change(request: web.Request) -> web.Response:
    user = current_user(request)
    form = await request.post()
    new = str(form.get("new", ""))
    if len(new) < 8 or new != str(form.get("repeat", "")):
        return render(request, "password.html", http_status=422, done=False,
                      error=N_("The new password needs at least 8 characters, typed twice the same."),
                      **await token_context(request))
    settings = request.app[keys.SETTINGS]
    keep = users_db.hash_token(request.cookies.get(SESSION_COOKIE, ""), settings.session_secret)
    async with request.app[keys.POOL].acquire() as conn:
        # The other browsers of this person are logged out; this one stays.
        changed = await users_db.change_own_password(conn, user, str(form.get("current", "")), new, keep)
    if not changed:
        return render(request, "password.html", http_status=401, error=N_("The current password is wrong."),
                      done=False, **await token_context(request))
    return render(request, "password.html", error=None, done=True, **await token_context(request))


async def language_change(request: web.Request) -> web.Response:
    """One's own language; the pages follow it from the next request on."""
    user = current_user(request)
    form = await request.post()
    async with request.app[keys.POOL].acquire() as conn:
        await users_db.set_language(conn, user.id, _language(form))
    raise web.HTTPFound("/password")


def setup(app: web.Application) -> None:
    app.router.add_get("/admin/users", users_page)
    app.router.add_post("/admin/users/{action:new}", users_action)
    app.router.add_post("/admin/users/{user_id:\\d+}/{action:edit}", users_action)
    app.router.add_get("/password", password_page)
    app.router.add_post("/password", password_change)
    app.router.add_post("/password/language", language_change)
