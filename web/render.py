"""Templates: the jinja2 environment with our filters, and render() for every page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup

from crm.phones import format_phone
from crm.settings import Settings
from web import i18n, keys
from web.i18n import request_reader

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def render(request: web.Request, template: str, http_status: int = 200, **context: Any) -> web.Response:
    env = request.app[keys.TEMPLATES]
    reader = request_reader(request)
    html = env.get_template(template).render(
        user=request.get(keys.USER), csrf_token=request.get(keys.CSRF) or "", path=request.path,
        i18n=reader, lang=reader.language, **context
    )
    response = web.Response(text=html, status=http_status, content_type="text/html")
    response.headers["Content-Language"] = reader.language
    response.headers["Vary"] = "Accept-Language, Cookie"
    return response


def select_options(values: Sequence[Any], texts: Sequence[str]) -> Callable[[Any], Markup]:
    """The <option>s of a select repeated on every row or card of a list (assign to, move to stage), built
    once per page as one escaped string, a row's preselected value marked by one replace of its
    `value="…"` (C string work): looped in Jinja per row, 50 rows × 20 options were half of the missed
    board's rendering (issue 18), and Markup-formatting each option was 90 % of a live board delta with
    1,000 managers (30–120 ms of the event loop a request: bench/screenpop.py --realistic)."""
    markers: dict[Any, str] = {}
    parts = []
    for value, text in zip(values, texts, strict=True):
        marker = f'<option value="{escape(str(value), quote=True)}">'
        markers.setdefault(value, marker)
        parts.append(f"{marker}{escape(str(text), quote=False)}</option>")
    whole = "".join(parts)
    built: dict[Any, Markup] = {}

    def options(selected: Any) -> Markup:
        try:
            marker = markers.get(selected)
        except TypeError:  # an unhashable value selects nothing
            marker = None
        key = marker or ""
        if key not in built:
            built[key] = Markup(whole.replace(marker, marker[:-1] + " selected>") if marker else whole)
        return built[key]

    return options


def make_templates(settings: Settings) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,  # caller IDs and e-mails are chosen by strangers: never markup
        undefined=jinja2.StrictUndefined,
        enable_async=False,
    )
    env.filters["phone"] = lambda e164, ext=None: format_phone(e164, ext)
    i18n.install(env)  # gettext and the locale's formats (dates in the company's zone, money, durations)
    env.globals["demo"] = settings.demo
    env.globals["select_options"] = select_options
    return env
