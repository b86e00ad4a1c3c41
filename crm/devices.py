"""Users' devices: the Asterisk endpoints (SIP/150010001, PJSIP/acc7001) that are a person's phones."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable, Sequence

import asyncpg

from crm.errors import Conflict, NotFound, ValidationError

logger = logging.getLogger(__name__)

# Migration 0008 notifies here (payload 'device:<name>' or 'user:<id>') whenever list_device_map may answer
# differently; a listener may simply reload the whole map, which is small.
CHANNEL = "callboard_devices"
MAX_DEVICES = 32

# Channel technologies a person's phone can use, in Asterisk's spelling. Local, Message, Parked, Bridge,
# ConfBridge's CBAnn/CBRec, Snoop and the like are plumbing, never someone's phone.
TECHNOLOGIES = {t.upper(): t for t in ("PJSIP", "SIP", "IAX2", "DAHDI", "SCCP", "Skinny", "MGCP", "UNISTIM",
                                       "OOH323", "H323", "Motif", "WebRTC")}
_DEVICE = re.compile(r"(?P<tech>[A-Za-z][A-Za-z0-9]{0,15})/(?P<endpoint>[A-Za-z0-9_.+-]{1,64})")
# A channel name is the device plus '-' and a sequence: 8 hex digits for chan_sip and chan_pjsip
# (PJSIP/acc7001-0000003c); DAHDI numbers its channels (DAHDI/1-1).
_CHANNEL_SUFFIX = re.compile(r"-[0-9a-fA-F]{8}$")
_DAHDI_SUFFIX = re.compile(r"(?<=\d)-\d+$")
_SEPARATORS = re.compile(r"[\s,;]+")
_HINT = "write TECH/endpoint, e.g. SIP/150010001 or PJSIP/acc7001"

LOCK_USER = "SELECT id FROM users WHERE id = $1 FOR UPDATE"
BUMP_VERSION = "UPDATE users SET version = version + 1 WHERE id = $1"
LIST_DEVICE_MAP = """
SELECT d.device, u.extension FROM user_devices d JOIN users u ON u.id = d.user_id
WHERE u.active AND u.extension IS NOT NULL
"""
LIST_DEVICES = "SELECT device FROM user_devices WHERE user_id = $1 ORDER BY device"
INSERT_DEVICES = """
INSERT INTO user_devices (device, user_id) SELECT unnest($2::text[]), $1
ON CONFLICT (device) DO NOTHING RETURNING device
"""
# Another user's devices among these names, with whose they are, for the error message.
FOREIGN_DEVICES = """
SELECT d.device, u.display_name, u.login FROM user_devices d JOIN users u ON u.id = d.user_id
WHERE d.device = ANY($2::text[]) AND d.user_id <> $1 ORDER BY d.device
"""
DELETE_DEVICES = "DELETE FROM user_devices WHERE user_id = $1 AND device = ANY($2::text[]) RETURNING device"
DELETE_OTHER_DEVICES = "DELETE FROM user_devices WHERE user_id = $1 AND device <> ALL($2::text[]) RETURNING device"


def device_of_channel(channel: str) -> str | None:
    """The device behind a channel name ('SIP/150010001-0000003c' → 'SIP/150010001'); None for plumbing
    (Local/…;1, Message/…, Parked/…) and anything that is not TECH/endpoint."""
    match = _DEVICE.fullmatch((channel or "").strip())
    if match is None or match["tech"].upper() not in TECHNOLOGIES:
        return None
    tech, endpoint = TECHNOLOGIES[match["tech"].upper()], match["endpoint"]
    endpoint = (_DAHDI_SUFFIX if tech == "DAHDI" else _CHANNEL_SUFFIX).sub("", endpoint)
    return f"{tech}/{endpoint}" if endpoint else None


def normalise_device(text: str) -> str:
    """A device as typed by a person ('sip/150010001', a channel name) in its stored form, or ValidationError."""
    text = (text or "").strip()
    device = device_of_channel(text)
    if device is not None:
        return device
    tech = text.partition("/")[0]
    if "/" in text and tech.isalnum() and tech.upper() not in TECHNOLOGIES:
        raise ValidationError("devices", f"{text[:80]!r} is not a phone: {tech[:16]} is not one of "
                                         f"{', '.join(sorted(TECHNOLOGIES.values()))}")
    raise ValidationError("devices", f"{text[:80]!r} is not a device name; {_HINT}")


def parse_devices(value: str | Iterable[str]) -> list[str]:
    """A list of devices from a form field ('SIP/1, PJSIP/2' or one per line) or a list; normalised,
    duplicates dropped, order kept."""
    items = _SEPARATORS.split(value) if isinstance(value, str) else list(value)
    devices: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValidationError("devices", f"must be a list of device names; {_HINT}")
        if item.strip():
            device = normalise_device(item)
            if device not in devices:
                devices.append(device)
    if len(devices) > MAX_DEVICES:
        raise ValidationError("devices", f"at most {MAX_DEVICES} devices per user")
    return devices


async def list_device_map(conn: asyncpg.Connection) -> dict[str, str]:
    """Device → extension of its user, for active users who have an extension."""
    return {row["device"]: row["extension"] for row in await conn.fetch(LIST_DEVICE_MAP)}


async def list_devices(conn: asyncpg.Connection, user_id: int) -> list[str]:
    return [row["device"] for row in await conn.fetch(LIST_DEVICES, user_id)]


async def _claim_user(conn: asyncpg.Connection, user_id: int) -> None:
    if await conn.fetchval(LOCK_USER, user_id) is None:
        raise NotFound("user")


async def _insert(conn: asyncpg.Connection, user_id: int, devices: Sequence[str]) -> bool:
    """Give these devices to the user; Conflict naming the owner when one is somebody else's."""
    added = await conn.fetch(INSERT_DEVICES, user_id, list(devices))
    foreign = await conn.fetch(FOREIGN_DEVICES, user_id, list(devices))
    if foreign:
        raise Conflict("; ".join(f"{r['device']} is already the device of {r['display_name']} ({r['login']})"
                                 for r in foreign))
    return bool(added)


async def add_device(conn: asyncpg.Connection, user_id: int, device: str) -> str:
    """Add one device (normalised; returned); adding a device the user already has changes nothing."""
    device = normalise_device(device)
    async with conn.transaction():
        await _claim_user(conn, user_id)
        if await _insert(conn, user_id, [device]):
            await conn.execute(BUMP_VERSION, user_id)
    return device


async def remove_device(conn: asyncpg.Connection, user_id: int, device: str) -> bool:
    """Remove one of the user's devices; False when the user did not have it (a second click)."""
    device = normalise_device(device)
    async with conn.transaction():
        await _claim_user(conn, user_id)
        removed = await conn.fetch(DELETE_DEVICES, user_id, [device])
        if removed:
            await conn.execute(BUMP_VERSION, user_id)
    return bool(removed)


async def set_devices(conn: asyncpg.Connection, user_id: int, devices: Sequence[str]) -> tuple[str, ...]:
    """Make the user's devices exactly these (already normalised). The caller holds the user's row in
    its transaction (update_user, create_user) and bumps the version."""
    await conn.fetch(DELETE_OTHER_DEVICES, user_id, list(devices))
    if devices:
        await _insert(conn, user_id, devices)
    return tuple(await list_devices(conn, user_id))


async def watch_device_map(pool: asyncpg.Pool, on_change: Callable[[dict[str, str]], None],
                           retry_seconds: float = 5.0) -> None:
    """Call `on_change` with the whole device map at start and after every change (LISTEN on CHANNEL; a burst
    of changes gives one reload); runs until cancelled, reloading after a lost connection."""
    changed = asyncio.Event()

    def notified(*_: object) -> None:
        changed.set()

    while True:
        try:
            async with pool.acquire() as listener:
                listener.add_termination_listener(notified)
                await listener.add_listener(CHANNEL, notified)
                try:
                    while True:
                        # Listening before loading: a change during the load triggers another load.
                        changed.clear()
                        on_change(await list_device_map(listener))
                        await changed.wait()
                finally:
                    listener.remove_termination_listener(notified)
                    if not listener.is_closed():
                        await listener.remove_listener(CHANNEL, notified)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning("device map: %s; reloading in %.0f s", exc, retry_seconds)
            await asyncio.sleep(retry_seconds)
