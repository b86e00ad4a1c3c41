"""Recordings: streamed with HTTP Range for a seekable <audio>, only to those who may hear them."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from crm import calls as calls_db
from web import keys
from web.auth import current_user


async def recording(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        # NotFound for a call the user may not see: the call's manager, their clients' manager, head, admin.
        call = await calls_db.get_call(conn, user, int(request.match_info["call_id"]))
    if not call.recording:
        raise web.HTTPNotFound(text="this call has no recording")
    # Only the file name stored on the call is used, inside the configured directory: nothing from
    # the request and no directory part the PBX reported can lead elsewhere.
    name = Path(call.recording.replace("\\", "/")).name
    directory = request.app[keys.SETTINGS].recordings_path.resolve()
    path = (directory / name).resolve()
    if not name or name.startswith(".") or path.parent != directory or not path.is_file():
        raise web.HTTPNotFound(text="the recording file is missing")
    content_type = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}.get(path.suffix.lower(),
                                                                                         "application/octet-stream")
    return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "private, max-age=3600"})


def setup(app: web.Application) -> None:
    app.router.add_get("/recordings/{call_id:\\d+}", recording)
