"""Keyset paging for list pages and APIs: `limit` and `after` in, a "next" link out (crm.paging)."""

from __future__ import annotations

from aiohttp import web

from crm import errors
from crm.paging import Page


def page_args(request: web.Request, default: int, maximum: int = 500) -> tuple[int, str | None]:
    """The page size asked for (bounded) and the cursor of the page before, if any."""
    try:
        limit = min(max(int(request.query.get("limit", default)), 1), maximum)
    except ValueError:
        raise errors.ValidationError("limit", "must be an integer") from None
    after = request.query.get("after") or None
    if after is not None and len(after) > 512:
        raise errors.ValidationError("after", "is not a cursor from this list's next link")
    return limit, after


def next_url(request: web.Request, page: Page) -> str | None:
    """This list with the same filters, one page on; None on the last page."""
    if page.next is None:
        return None
    query = {k: v for k, v in request.query.items() if k not in ("after", "offset")}
    query["after"] = page.next
    return str(request.rel_url.with_query(query))


def page_json(request: web.Request, page: Page, items: list) -> dict:
    """The list body every list API answers: its items, the next cursor and the next page's address."""
    return {"items": items, "next": page.next, "next_url": next_url(request, page)}
