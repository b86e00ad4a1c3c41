"""Templates: the jinja2 environment with our filters, and render() for every page."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web

from crm.phones import format_phone
from crm.settings import Settings
from web import keys

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def render(request: web.Request, template: str, http_status: int = 200, **context: Any) -> web.Response:
    env = request.app[keys.TEMPLATES]
    html = env.get_template(template).render(
        user=request.get(keys.USER), csrf_token=request.get(keys.CSRF) or "", path=request.path, **context
    )
    return web.Response(text=html, status=http_status, content_type="text/html")


def make_templates(settings: Settings) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,  # caller IDs and e-mails are chosen by strangers: never markup
        undefined=jinja2.StrictUndefined,
        enable_async=False,
    )
    zone = ZoneInfo(settings.timezone)
    env.filters["phone"] = lambda e164, ext=None: format_phone(e164, ext)
    env.filters["localtime"] = lambda dt, fmt="%d.%m.%Y %H:%M": dt.astimezone(zone).strftime(fmt) if dt else ""
    env.filters["duration"] = format_duration
    env.filters["qty"] = format_quantity
    env.globals["demo"] = settings.demo
    return env


def format_quantity(value) -> str:
    """Decimal('2.000') → '2'; Decimal('2.500') → '2.5'."""
    if value is None:
        return ""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_duration(seconds: float | int | None) -> str:
    """65 → '1:05'; 3725 → '1:02:05'."""
    if seconds is None:
        return ""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
