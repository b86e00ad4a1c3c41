"""The exchange with 1C: /1c/exchange as 1C's "exchange with a website" calls it (catalogue and orders, CommerceML 2),
and POST /api/import/commerceml for files exported from 1C by hand."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from aiohttp import web

from crm import commerceml, errors
from crm import users as users_db
from crm.users import User
from web import keys
from web.auth import SESSION_COOKIE, require_role
from web.exchange import READ_CHUNK, read_upload

logger = logging.getLogger(__name__)

FILE_LIMIT = 8 * 1024 * 1024  # what 1C sends in one request; bigger files come in several (appended)
MAX_FILE = 2 * 1024 ** 3  # one file of an exchange, all its parts together
ROLES = ("admin", "head")


def _answer(*lines: str, status: int = 200) -> web.Response:
    # 1C reads the answer line by line; the first word decides: success, progress or failure.
    return web.Response(text="\n".join(lines) + "\n", status=status, content_type="text/plain", charset="utf-8")


def _failure(reason: str) -> web.Response:
    return _answer("failure", reason)


def _folder(request: web.Request, token: str) -> Path:
    settings = request.app[keys.SETTINGS]
    return settings.data_dir / "1c" / users_db.hash_token(token, settings.session_secret)[:24]


async def _checkauth(request: web.Request) -> web.Response:
    """HTTP basic auth with a Callboard login (head or admin); the answer is the cookie 1C sends from then on."""
    header = request.headers.get("Authorization", "")
    try:
        login, _, password = base64.b64decode(header.removeprefix("Basic ").strip(), validate=True).decode(
            "utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        login = password = ""
    if not header.startswith("Basic ") or not login:
        return web.Response(status=401, text="failure\nlog in with a Callboard login and password\n",
                            headers={"WWW-Authenticate": 'Basic realm="Callboard 1C exchange"'})
    settings = request.app[keys.SETTINGS]
    now = datetime.now(UTC)
    async with request.app[keys.POOL].acquire() as conn:
        try:
            user = await users_db.authenticate(conn, login, password, request.remote or "", now)
        except (errors.AuthenticationFailed, errors.TooManyAttempts):
            logger.info("1C exchange: login %r refused from %s", login[:64], request.remote)
            return _failure("wrong login or password")
        if user.role not in ROLES:
            return _failure("this login may not exchange with 1C: it needs the head or admin role")
        token, _ = await users_db.create_session(conn, user, settings.session_secret, now)
    logger.info("1C exchange: %s logged in from %s", user.login, request.remote)
    return _answer("success", SESSION_COOKIE, token)


async def _session(request: web.Request) -> tuple[User, str] | None:
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token:
        return None
    async with request.app[keys.POOL].acquire() as conn:
        session = await users_db.get_session(conn, token, request.app[keys.SETTINGS].session_secret)
    if session is None or session.user.role not in ROLES:
        return None
    return session.user, token


def _clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)


def _safe_name(name: str) -> str | None:
    """A file 1C names: kept flat by its last part; pictures (import_files/…) are not kept at all."""
    name = name.replace("\\", "/")
    base = name.rsplit("/", 1)[-1]
    if "/" in name or not base or base.startswith(".") or not base.lower().endswith((".xml", ".zip")):
        return None
    return base


async def _receive(request: web.Request, folder: Path) -> web.Response:
    name = _safe_name(request.query.get("filename", ""))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name if name else None
    size = target.stat().st_size if target is not None and target.exists() else 0
    sink = await asyncio.to_thread(open, target, "ab") if target is not None else None
    try:
        while chunk := await request.content.read(READ_CHUNK):
            size += len(chunk)
            if size > MAX_FILE:
                return _failure(f"the file is larger than {MAX_FILE} bytes")
            if sink is not None:
                await asyncio.to_thread(sink.write, chunk)
    finally:
        if sink is not None:
            await asyncio.to_thread(sink.close)
    return _answer("success")


def _unpack_all(folder: Path) -> None:
    for archive in sorted(folder.glob("*.zip")):
        commerceml.unpack(archive, folder)
        archive.unlink()


async def _run_import(app: web.Application, user: User, folder: Path, name: str) -> commerceml.CmlResult:
    await asyncio.to_thread(_unpack_all, folder)
    path = folder / name
    if not path.exists():
        raise errors.ValidationError("filename", f"{name} was not received")
    settings = app[keys.SETTINGS]
    async with app[keys.POOL].acquire() as conn:
        return await commerceml.import_files(conn, user, [path], datetime.now(UTC), settings.onec_price_type or None)


async def _import(request: web.Request, user: User, folder: Path) -> web.Response:
    """Runs the import in a task: a big catalogue takes longer than 1C waits for one answer, so it is told
    "progress" and asks again, and the same task answers."""
    name = _safe_name(request.query.get("filename", ""))
    if name is None or not name.lower().endswith(".xml"):
        return _failure("filename must name an .xml file")
    jobs = request.app[keys.ONEC_JOBS]
    key = f"{folder}/{name}"
    task = jobs.get(key)
    if task is None:
        task = jobs[key] = asyncio.create_task(_run_import(request.app, user, folder, name), name=f"1c-import-{name}")
    done, _ = await asyncio.wait({task}, timeout=request.app[keys.SETTINGS].onec_progress_wait)
    if not done:
        return _answer("progress", f"importing {name}")
    jobs.pop(key, None)
    try:
        result = task.result()
    except errors.ValidationError as exc:
        return _failure(exc.message)
    except Exception as exc:
        logger.exception("1C exchange: import of %s failed", name)
        return _failure(f"import of {name} failed: {exc.__class__.__name__}")
    summary = result.as_json()
    return _answer("success", f"products new {summary['products_created']}, updated {summary['products_updated']}, "
                              f"prices {summary['prices_set']}, errors {len(summary['errors'])}")


async def exchange(request: web.Request) -> web.StreamResponse:
    """GET/POST /1c/exchange?type=catalog|sale&mode=checkauth|init|file|import|query|success."""
    kind, mode = request.query.get("type", ""), request.query.get("mode", "")
    if kind not in ("catalog", "sale", "get_catalog"):
        return _failure("type must be catalog or sale")
    if mode == "checkauth":
        return await _checkauth(request)
    session = await _session(request)
    if session is None:
        return _failure("not logged in: call mode=checkauth first")
    user, token = session
    folder = _folder(request, token)
    if mode == "init":
        await asyncio.to_thread(_clear, folder)
        return _answer("zip=yes", f"file_limit={FILE_LIMIT}")
    if mode == "file":
        return await _receive(request, folder)
    if kind == "catalog" and mode == "import":
        return await _import(request, user, folder)
    if kind == "sale" and mode == "query":
        settings = request.app[keys.SETTINGS]
        async with request.app[keys.POOL].acquire() as conn:
            body = await commerceml.orders_for_1c(conn, datetime.now(UTC), ZoneInfo(settings.timezone),
                                                  settings.currency)
        return web.Response(body=body, content_type="application/xml", charset="utf-8")
    if kind == "sale" and mode == "success":
        async with request.app[keys.POOL].acquire() as conn:
            acknowledged = await commerceml.acknowledge_orders(conn, datetime.now(UTC))
        logger.info("1C exchange: %s orders acknowledged by 1C", acknowledged)
        return _answer("success")
    return _failure(f"mode {mode!r} is not part of type={kind}")


async def import_commerceml_api(request: web.Request) -> web.Response:
    """POST /api/import/commerceml: import.xml, offers.xml, or a zip of them, exported from 1C by hand."""
    user = require_role(request, "head", "admin")
    settings = request.app[keys.SETTINGS]
    data, filename, _ = await read_upload(request, settings.import_max_bytes)
    folder = settings.data_dir / "1c" / f"upload-{uuid.uuid4().hex}"
    try:
        paths = await asyncio.to_thread(_save_upload, folder, data, filename)
        async with request.app[keys.POOL].acquire() as conn:
            result = await commerceml.import_files(conn, user, paths, datetime.now(UTC),
                                                   settings.onec_price_type or None)
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)
    return web.json_response(result.as_json())


def _save_upload(folder: Path, data: bytes, filename: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    if data[:2] == b"PK":  # a zip (an empty one starts PK\x05\x06)
        archive = folder / "upload.zip"
        archive.write_bytes(data)
        paths = commerceml.unpack(archive, folder)
        archive.unlink()
    else:
        name = _safe_name(filename) or "import.xml"
        paths = [folder / (name if name.lower().endswith(".xml") else "import.xml")]
        paths[0].write_bytes(data)
    if not any(p.suffix.lower() == ".xml" for p in paths):
        raise errors.ValidationError("file", "no .xml file in the upload")
    return paths


async def jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    for task in app[keys.ONEC_JOBS].values():
        task.cancel()
    await asyncio.gather(*app[keys.ONEC_JOBS].values(), return_exceptions=True)


def setup(app: web.Application) -> None:
    app.router.add_route("GET", "/1c/exchange", exchange)
    app.router.add_route("POST", "/1c/exchange", exchange)
    app.router.add_post("/api/import/commerceml", import_commerceml_api)
    app[keys.ONEC_JOBS] = {}
    app.cleanup_ctx.append(jobs_ctx)
