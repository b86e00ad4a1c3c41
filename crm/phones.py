"""Phone numbers: E.164 normalisation with a default region, internal extensions told apart."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

from crm.errors import ValidationError

# 'доб. 101', 'ext. 101', 'x101', '#101' at the end of a number: the office extension behind it.
_EXTENSION_RE = re.compile(r"(?:доб\.?|добавочный|ext\.?|extension|x|#)\s*(\d{1,6})\s*$", re.IGNORECASE)
_INTERNAL_RE = re.compile(r"\d{2,5}")
# What an unknown or withheld caller looks like in Asterisk's CallerIDNum.
_FORMATTING_RE = re.compile(r"[\s().\-]")
_CALLER_RE = re.compile(r"\+?\d{6,20}")
_WITHHELD = frozenset({"", "anonymous", "unknown", "<unknown>", "restricted", "private", "unavailable", "s"})


@dataclass(frozen=True, slots=True)
class Phone:
    e164: str
    extension: str | None = None


def parse_phone(text: str, region: str) -> Phone:
    """Normalise a phone typed by a person; raise ValidationError when it is no phone."""
    raw = (text or "").strip()
    if not raw:
        raise ValidationError("phone", "is empty")
    if len(raw) > 64:
        raise ValidationError("phone", "is too long to be a phone number")
    extension = None
    match = _EXTENSION_RE.search(raw)
    if match:
        extension = match.group(1)
        raw = raw[: match.start()].strip(" ,;")
    digits = re.sub(r"\D", "", raw)
    if _INTERNAL_RE.fullmatch(raw.strip()):
        raise ValidationError("phone", f"{raw!r} is an internal extension, not a phone number")
    if re.search(r"[^\d\s()+\-./]", raw) or not digits:
        raise ValidationError("phone", f"{text!r} is not a phone number")
    if raw.startswith("00"):
        raw = "+" + digits[2:]
    number = _parse(raw, region)
    if number is None:
        raise ValidationError("phone", f"{text!r} is not a valid phone number")
    return Phone(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), extension)


def _parse(raw: str, region: str) -> phonenumbers.PhoneNumber | None:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        number = None
    if number is not None and phonenumbers.is_valid_number(number):
        return number
    if not raw.startswith("+"):
        # A full international number typed without '+' (e.g. 442079460958).
        try:
            number = phonenumbers.parse("+" + raw, None)
        except phonenumbers.NumberParseException:
            return None
        if phonenumbers.is_valid_number(number):
            return number
    return None


def is_internal_extension(text: str) -> bool:
    return bool(_INTERNAL_RE.fullmatch((text or "").strip()))


@lru_cache(maxsize=65536)
def normalise_caller(text: str | None, region: str) -> str | None:
    """E.164 of a caller ID from the PBX, or None for withheld, internal or junk caller IDs.

    Cached: phonenumbers costs ~70 µs a parse, and the same callers ring again and again.
    """
    # Formatting a person or an API client may add ('+7 916 999-88-77') is not part of the number.
    value = _FORMATTING_RE.sub("", text or "")
    if value.lower() in _WITHHELD or is_internal_extension(value) or len(value) > 32:
        return None
    # Trunks often prefix digits with '+' or send them bare; anything else is junk.
    if not _CALLER_RE.fullmatch(value):
        return None
    try:
        return parse_phone(value, region).e164
    except ValidationError:
        return None


def format_phone(e164: str, extension: str | None = None) -> str:
    """+74951234567 → '+7 495 123-45-67' (the way people read it)."""
    text = _international(e164)
    return f"{text} ext. {extension}" if extension else text


@lru_cache(maxsize=65536)
def _international(e164: str) -> str:
    """Cached: a parse and format costs ~150 µs, and a page of 50 calls or missed callers shows up to 100."""
    try:
        number = phonenumbers.parse(e164, None)
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    except phonenumbers.NumberParseException:
        return e164


def search_digits(query: str, region: str) -> str | None:
    """The E.164 a search box query could mean, if it looks like a phone."""
    try:
        return parse_phone(query, region).e164
    except ValidationError:
        return None
