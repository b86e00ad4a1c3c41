"""Templates: the jinja2 environment with our filters, and render() for every page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    once per page, each value preselected on demand: looped in Jinja per row, 50 rows × 20 options were
    half of the missed board's rendering (issue 18)."""
    parts = [(value, Markup('<option value="{}"').format(value), Markup(">{}</option>").format(text))
             for value, text in zip(values, texts, strict=True)]
    built: dict[Any, Markup] = {}

    def options(selected: Any) -> Markup:
        if selected not in built:
            built[selected] = Markup("").join(head + (Markup(" selected") if value == selected else "") + tail
                                              for value, head, tail in parts)
        return built[selected]

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
