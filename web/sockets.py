"""Which socket.io connections belong to which session and user, so ending a session cuts its sockets."""

from __future__ import annotations

import logging

from aiohttp import web

from crm import users as users_db
from crm.users import hash_token
from web import keys

logger = logging.getLogger(__name__)


def session_room(app: web.Application, token: str) -> str:
    """A room per session; named by the stored hash, never by the cookie itself."""
    return f"session:{hash_token(token, app[keys.SETTINGS].session_secret)}"


def user_sockets_room(user_id: int) -> str:
    return f"user:{user_id}"  # the same room realtime.user_room() names: every socket of the user is in it


async def _disconnect_room(app: web.Application, room: str) -> int:
    sio = app.get(keys.SIO)
    if sio is None:
        return 0
    # socket.io keeps the room membership; on several nodes each node cuts the sockets it holds (a node
    # holding none finds an empty room), the others' sockets end when their node hears of the same change.
    sids = [sid for sid, _ in sio.manager.get_participants("/", room)]
    for sid in sids:
        await sio.disconnect(sid)
    if sids:
        logger.info("cut %d socket(s) of %s", len(sids), room.split(":", 1)[0])
    return len(sids)


async def disconnect_session(app: web.Application, token: str) -> int:
    """Logout: the sockets opened with this session's cookie close now."""
    return await _disconnect_room(app, session_room(app, token))


async def disconnect_user(app: web.Application, user_id: int) -> int:
    """Deactivation or password reset: every socket of the user closes now (call after the sessions
    were deleted, or the browser reconnects with its old cookie and is let in again)."""
    return await _disconnect_room(app, user_sockets_room(user_id))


async def disconnect_all(app: web.Application) -> None:
    """on_shutdown: the listener is closed already; open sockets would hold aiohttp's graceful wait (its
    shutdown timeout) and reconnect at once, so they are told to go now."""
    sio = app.get(keys.SIO)
    if sio is None:
        return
    sids = [sid for sid, _ in sio.manager.get_participants("/", None)]
    for sid in sids:
        await sio.disconnect(sid)
    await sio.shutdown()
    logger.info("closed %d socket.io connection(s) for shutdown", len(sids))


async def user_changed(app: web.Application, user_id: int, end_sessions: bool) -> None:
    """After an admin edit: the telephony side learns the user's devices now (not at its next poll);
    a deactivation or a password reset ends the user's sessions and closes their sockets."""
    if end_sessions:
        async with app[keys.POOL].acquire() as conn:
            await users_db.delete_user_sessions(conn, user_id)
        await disconnect_user(app, user_id)
    telephony = app.get(keys.TELEPHONY)
    if telephony is not None:
        await telephony.refresh_devices()
