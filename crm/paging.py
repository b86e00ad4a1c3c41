"""Keyset pages: the `after` cursor (the sort key of a page's last row) and the next page's cursor."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from crm.errors import ValidationError

T = TypeVar("T")
# What each position of a cursor holds; a cursor that does not fit is bad input, never a 500.
_PARSE: dict[type, Callable[[Any], Any]] = {
    int: lambda v: v if isinstance(v, int) and not isinstance(v, bool) else _bad(),
    bool: lambda v: v if isinstance(v, bool) else _bad(),
    str: lambda v: v if isinstance(v, str) else _bad(),
    datetime: lambda v: datetime.fromisoformat(v) if isinstance(v, str) else _bad(),
}


def _bad() -> Any:
    raise ValueError


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next: str | None  # the cursor of the following page; None on the last page


def encode(key: Sequence[Any]) -> str:
    values = [v.isoformat() if isinstance(v, datetime) else v for v in key]
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def decode(cursor: str | None, kinds: Sequence[type]) -> tuple | None:
    """The key in a cursor from `encode`, checked against `kinds`; None for no cursor."""
    if not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != len(kinds):
            raise ValueError
        return tuple(_PARSE[kind](value) for kind, value in zip(kinds, values, strict=True))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValidationError("after", "is not a cursor from this list's next link") from None


def page(rows: list[T], limit: int, key: Callable[[T], Sequence[Any]]) -> Page[T]:
    """`rows` fetched with limit + 1: one more than the page means there is a next page."""
    if len(rows) > limit:
        rows = rows[:limit]
        return Page(rows, encode(key(rows[-1])))
    return Page(rows, None)
