"""Configuration: defaults < TOML file < environment < command line; a wrong value names itself."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from crm.cdr import quoted_table
from crm.workhours import WorkingHours, parse_days, parse_hours


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True, slots=True)
class PbxSettings:
    name: str
    host: str
    port: int
    username: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None = None
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    session_secret: str = field(default="", repr=False)
    # Behind HTTPS (directly or via a proxy that terminates TLS): cookies get Secure, answers get HSTS.
    secure_cookies: bool = False
    phone_region: str = "RU"
    data_dir: Path = Path("var")
    pbxes: tuple[PbxSettings, ...] = ()
    routing_fallback: str = "sales"
    routing_deadline_ms: int = 250
    routing_token: str = field(default="", repr=False)
    routing_cache: bool = True
    # Long-lived objects (start-up's, the routing index's) moved out of the collector's reach (web/memory.py).
    freeze_gc: bool = True
    timezone: str = "Europe/Moscow"
    recordings_dir: Path | None = None
    # Direction rules (see cti/calls.py): endpoints that are trunks, contexts that take outside calls.
    trunk_endpoints: tuple[str, ...] = ("trunk",)
    # Phones Asterisk names otherwise than by extension, beside those on the users page: device → extension.
    devices: tuple[tuple[str, str], ...] = ()
    # Website forms posting to /api/forms/{key}: (key, the site's origin for CORS, or "*").
    forms: tuple[tuple[str, str], ...] = ()
    inbound_contexts: tuple[str, ...] = ("from-trunk", "from-pstn", "from-external")
    suffix_match_digits: int = 10
    routing_allowlist: tuple[str, ...] = ()
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    originate_channel: str = "PJSIP/{extension}"
    outbound_context: str = "from-internal"
    working_hours: str = "09:00-18:00"
    working_days: str = "1-5"
    callback_minutes: int = 120
    missed_window_days: int = 7
    service_level_seconds: int = 20  # reports: an inbound call answered within this many seconds is in service
    revenue_basis: str = "won"  # reports' revenue: deals won (their amount), invoices issued, or payments received
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_recipients: tuple[str, ...] = ("sales", "info")
    smtp_users: tuple[str, ...] = field(default=(), repr=False)
    smtp_allowlist: tuple[str, ...] = ()
    smtp_max_bytes: int = 20 * 1024 * 1024
    company_name: str = "Your Company LLC"
    company_details: str = ""
    demo: bool = False
    # Backfill after a reconnect (cti/backfill.py): Asterisk's CDR, from cdr_pgsql's table or Master.csv.
    cdr_url: str | None = field(default=None, repr=False)
    cdr_table: str = "cdr"
    cdr_csv: Path | None = None
    cdr_timezone: str | None = None  # the zone Asterisk writes CDR times in; default: `timezone`
    language: str = "ru"  # pages for a reader with no choice of their own and no Accept-Language we speak
    currency: str = "RUB"  # ISO 4217; amounts are shown in it
    # VAT on documents until an admin saves the requisites page (then the database's values count).
    vat_rate: str = "22"
    prices_include_vat: bool = True
    import_max_bytes: int = 64 * 1024 * 1024  # one uploaded spreadsheet or CommerceML file (zip)
    # /metrics: from these networks only (default: this machine), and with this Bearer token when set.
    metrics_allowlist: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    metrics_token: str = field(default="", repr=False)
    webhook_backoff_seconds: float = 30.0  # the first retry of a failed webhook delivery; each next one waits twice
    # Outgoing mail through a relay (empty host: mail is queued, not sent); `mail_from` is the shared sender.
    mail_relay_host: str = ""
    mail_relay_port: int = 587
    mail_relay_user: str = ""
    mail_relay_password: str = field(default="", repr=False)
    mail_relay_security: str = "starttls"  # starttls, ssl (SMTPS, port 465) or none (a relay on the LAN)
    mail_from: str = ""
    mail_backoff: float = 60.0  # the first retry of a message the relay did not take; each next one waits twice
    onec_price_type: str = ""  # the 1C price type (its name) products take their price from; empty: the first
    onec_progress_wait: float = 20.0  # an import answers 1C "progress" after this long, and goes on

    @property
    def recordings_path(self) -> Path:
        return self.recordings_dir or self.data_dir / "recordings"

    @property
    def vat_percent(self) -> int | None:
        """The VAT rate of the settings as a number (None: the seller works without VAT)."""
        return None if self.vat_rate == "none" else int(self.vat_rate)

    @property
    def hours(self) -> WorkingHours:
        start, end = parse_hours(self.working_hours)
        return WorkingHours(self.timezone, start, end, parse_days(self.working_days))


def _parse_port(value: str) -> int:
    port = int(value)
    if not 0 < port < 65536:
        raise ValueError("must be 1..65535")
    return port


def _parse_region(value: str) -> str:
    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown region {value!r} (use a two-letter code such as RU)")
    return region


def _parse_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}") from exc
    return value


def _parse_db_url(value: str) -> str:
    if not value.startswith(("postgres://", "postgresql://")):
        raise ValueError("must start with postgresql://")
    return value


def _parse_redis_url(value: str) -> str:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://")
    return value


def _parse_list(value: str | list[str]) -> tuple[str, ...]:
    items = value if isinstance(value, list) else value.split(",")
    return tuple(item.strip() for item in items if item.strip())


def _parse_positive(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive whole number")
    return number


def _parse_seconds(value: str) -> float:
    seconds = float(value)
    if not 0 < seconds <= 86400:
        raise ValueError("must be more than 0 and at most 86400 seconds")
    return seconds


def _parse_revenue_basis(value: str) -> str:
    basis = value.strip().lower()
    if basis not in ("won", "invoices", "payments"):
        raise ValueError("use won, invoices or payments")
    return basis


def _parse_mail_security(value: str) -> str:
    security = value.strip().lower()
    if security not in ("starttls", "ssl", "none"):
        raise ValueError("use starttls, ssl or none")
    return security


def _parse_mail_from(value: str) -> str:
    address = value.strip().lower()
    if address.count("@") != 1 or not all(address.partition("@")[::2]) or any(c in address for c in " <>,\r\n"):
        raise ValueError(f"{value!r} is not an e-mail address (write it bare: sales@example.ru)")
    return address


def _parse_networks(value: str | list[str]) -> tuple[str, ...]:
    networks = _parse_list(value)
    for network in networks:
        ipaddress.ip_network(network, strict=False)  # raises ValueError naming the bad one
    return networks


def _parse_port_or_off(value: str) -> int:
    return 0 if str(value).strip() in ("0", "off") else _parse_port(value)


def _parse_channel_template(value: str) -> str:
    if "{extension}" not in value or "\n" in value or "\r" in value:
        raise ValueError("must contain {extension}, e.g. PJSIP/{extension}")
    return value


def _parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("use on or off")


def _parse_recipients(value: str | list[str]) -> tuple[str, ...]:
    """'sales@example.com' matches that address; a bare 'sales' matches sales@ at any domain."""
    return tuple(item.lower() for item in _parse_list(value))


def _parse_smtp_users(value: str | list[str]) -> tuple[str, ...]:
    users = _parse_list(value)
    if any(":" not in u or u.startswith(":") for u in users):
        raise ValueError("use login:password pairs separated by commas")
    return users


def _parse_table_name(value: str) -> str:
    quoted_table(value.strip())  # raises ValueError naming the bad name
    return value.strip()


def _checked(parser):
    """Keep the text as given, but only if `parser` accepts it."""
    def check(value: str) -> str:
        parser(str(value))
        return str(value)
    return check


def parse_pbx_url(text: str) -> PbxSettings:
    """`ami://user:secret@host:5038/name` → PbxSettings."""
    parts = urlsplit(text.strip())
    if parts.scheme != "ami" or not parts.hostname or not parts.username:
        raise ValueError(f"{text!r} is not ami://user:secret@host:port/name")
    name = parts.path.strip("/") or parts.hostname
    return PbxSettings(
        name=name,
        host=parts.hostname,
        port=parts.port or 5038,
        username=unquote(parts.username),
        secret=unquote(parts.password or ""),
    )


def _parse_devices(value: str | dict[str, str]) -> tuple[tuple[str, str], ...]:
    """'SIP/150010001=201,SIP/150010002=202' or a TOML table {"SIP/150010001" = "201"}."""
    pairs = value.items() if isinstance(value, dict) else (
        item.partition("=")[::2] for item in _parse_list(value))
    out = []
    for device, extension in pairs:
        device, extension = str(device).strip(), str(extension).strip()
        if "/" not in device or not extension:
            raise ValueError(f"{device}={extension}: write TECH/endpoint=extension, e.g. SIP/150010001=201")
        out.append((device, extension))
    return tuple(out)


def _parse_forms(value: str | dict[str, str]) -> tuple[tuple[str, str], ...]:
    """'site=https://example.ru,landing=*' or a TOML table {site = "https://example.ru"}."""
    pairs = value.items() if isinstance(value, dict) else (
        item.partition("=")[::2] for item in _parse_list(value))
    out = []
    for key, origin in pairs:
        key, origin = str(key).strip(), str(origin).strip().rstrip("/") or "*"
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key):
            raise ValueError(f"{key!r}: a form key is 1-64 letters, digits, - or _")
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ValueError(f"{origin!r}: the site's origin, like https://example.ru, or *")
        out.append((key, origin))
    return tuple(out)


def _parse_pbxes(value: Any) -> tuple[PbxSettings, ...]:
    if isinstance(value, str):
        pbxes = tuple(parse_pbx_url(item) for item in value.split(",") if item.strip())
    else:
        pbxes = tuple(
            PbxSettings(
                name=str(item["name"]),
                host=str(item.get("host", "127.0.0.1")),
                port=_parse_port(str(item.get("port", 5038))),
                username=str(item["username"]),
                secret=str(item.get("secret", "")),
            )
            for item in value
        )
    names = [pbx.name for pbx in pbxes]
    if len(set(names)) != len(names):
        raise ValueError("PBX names must be unique")
    return pbxes


# The languages with a complete catalog in web/locale (a test keeps them complete).
LANGUAGES = ("ru", "en")


def _parse_language(value: str) -> str:
    language = value.strip().lower()
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {value!r} (use one of {', '.join(LANGUAGES)})")
    return language


def _parse_currency(value: str) -> str:
    from babel.numbers import get_currency_name  # imported here: only this setting needs the CLDR tables

    code = value.strip().upper()
    if len(code) != 3 or not code.isalpha() or get_currency_name(code, locale="en") == code:
        raise ValueError(f"unknown currency {value!r} (use an ISO 4217 code such as RUB)")
    return code


def _parse_vat_rate(value: str) -> str:
    from crm.requisites import VAT_RATES

    rate = value.strip().lower().removesuffix("%").strip()
    if rate not in VAT_RATES:
        raise ValueError(f"unknown VAT rate {value!r} (use one of {', '.join(VAT_RATES)})")
    return rate


# (setting name, environment variable, TOML key, parser)
_FIELDS: tuple[tuple[str, str, str, Any], ...] = (
    ("database_url", "DATABASE_URL", "database_url", _parse_db_url),
    ("redis_url", "REDIS_URL", "redis_url", _parse_redis_url),
    ("host", "CALLBOARD_HOST", "host", str),
    ("port", "CALLBOARD_PORT", "port", _parse_port),
    ("session_secret", "CALLBOARD_SESSION_SECRET", "session_secret", str),
    ("secure_cookies", "CALLBOARD_SECURE_COOKIES", "secure_cookies", _parse_bool),
    ("phone_region", "CALLBOARD_PHONE_REGION", "phone_region", _parse_region),
    ("data_dir", "CALLBOARD_DATA_DIR", "data_dir", Path),
    ("pbxes", "CALLBOARD_PBX", "pbx", _parse_pbxes),
    ("routing_fallback", "CALLBOARD_ROUTING_FALLBACK", "routing_fallback", str),
    ("routing_deadline_ms", "CALLBOARD_ROUTING_DEADLINE_MS", "routing_deadline_ms", _parse_positive),
    ("routing_token", "CALLBOARD_ROUTING_TOKEN", "routing_token", str),
    ("routing_cache", "CALLBOARD_ROUTING_CACHE", "routing_cache", _parse_bool),
    ("freeze_gc", "CALLBOARD_FREEZE_GC", "freeze_gc", _parse_bool),
    ("timezone", "CALLBOARD_TIMEZONE", "timezone", _parse_timezone),
    ("recordings_dir", "CALLBOARD_RECORDINGS_DIR", "recordings_dir", Path),
    ("trunk_endpoints", "CALLBOARD_TRUNK_ENDPOINTS", "trunk_endpoints", _parse_list),
    ("inbound_contexts", "CALLBOARD_INBOUND_CONTEXTS", "inbound_contexts", _parse_list),
    ("devices", "CALLBOARD_DEVICES", "devices", _parse_devices),
    ("forms", "CALLBOARD_FORMS", "forms", _parse_forms),
    ("suffix_match_digits", "CALLBOARD_SUFFIX_MATCH_DIGITS", "suffix_match_digits", _parse_positive),
    ("routing_allowlist", "CALLBOARD_ROUTING_ALLOWLIST", "routing_allowlist", _parse_networks),
    ("agi_host", "CALLBOARD_AGI_HOST", "agi_host", str),
    ("agi_port", "CALLBOARD_AGI_PORT", "agi_port", _parse_port_or_off),
    ("originate_channel", "CALLBOARD_ORIGINATE_CHANNEL", "originate_channel", _parse_channel_template),
    ("outbound_context", "CALLBOARD_OUTBOUND_CONTEXT", "outbound_context", str),
    ("working_hours", "CALLBOARD_WORKING_HOURS", "working_hours", _checked(parse_hours)),
    ("working_days", "CALLBOARD_WORKING_DAYS", "working_days", _checked(parse_days)),
    ("callback_minutes", "CALLBOARD_CALLBACK_MINUTES", "callback_minutes", _parse_positive),
    ("missed_window_days", "CALLBOARD_MISSED_WINDOW_DAYS", "missed_window_days", _parse_positive),
    ("service_level_seconds", "CALLBOARD_SERVICE_LEVEL_SECONDS", "service_level_seconds", _parse_positive),
    ("revenue_basis", "CALLBOARD_REVENUE_BASIS", "revenue_basis", _parse_revenue_basis),
    ("smtp_host", "CALLBOARD_SMTP_HOST", "smtp_host", str),
    ("smtp_port", "CALLBOARD_SMTP_PORT", "smtp_port", _parse_port_or_off),
    ("smtp_recipients", "CALLBOARD_SMTP_RECIPIENTS", "smtp_recipients", _parse_recipients),
    ("smtp_users", "CALLBOARD_SMTP_USERS", "smtp_users", _parse_smtp_users),
    ("smtp_allowlist", "CALLBOARD_SMTP_ALLOWLIST", "smtp_allowlist", _parse_networks),
    ("smtp_max_bytes", "CALLBOARD_SMTP_MAX_BYTES", "smtp_max_bytes", _parse_positive),
    ("company_name", "CALLBOARD_COMPANY_NAME", "company_name", str),
    ("company_details", "CALLBOARD_COMPANY_DETAILS", "company_details", str),
    ("cdr_url", "CALLBOARD_CDR_URL", "cdr_url", _parse_db_url),
    ("cdr_table", "CALLBOARD_CDR_TABLE", "cdr_table", _parse_table_name),
    ("cdr_csv", "CALLBOARD_CDR_CSV", "cdr_csv", Path),
    ("cdr_timezone", "CALLBOARD_CDR_TIMEZONE", "cdr_timezone", _parse_timezone),
    ("language", "CALLBOARD_LANGUAGE", "language", _parse_language),
    ("currency", "CALLBOARD_CURRENCY", "currency", _parse_currency),
    ("vat_rate", "CALLBOARD_VAT_RATE", "vat_rate", _parse_vat_rate),
    ("prices_include_vat", "CALLBOARD_PRICES_INCLUDE_VAT", "prices_include_vat", _parse_bool),
    ("import_max_bytes", "CALLBOARD_IMPORT_MAX_BYTES", "import_max_bytes", _parse_positive),
    ("metrics_allowlist", "CALLBOARD_METRICS_ALLOWLIST", "metrics_allowlist", _parse_networks),
    ("metrics_token", "CALLBOARD_METRICS_TOKEN", "metrics_token", str),
    ("webhook_backoff_seconds", "CALLBOARD_WEBHOOK_BACKOFF_SECONDS", "webhook_backoff_seconds", _parse_seconds),
    ("mail_relay_host", "CALLBOARD_MAIL_RELAY_HOST", "mail_relay_host", str),
    ("mail_relay_port", "CALLBOARD_MAIL_RELAY_PORT", "mail_relay_port", _parse_port),
    ("mail_relay_user", "CALLBOARD_MAIL_RELAY_USER", "mail_relay_user", str),
    ("mail_relay_password", "CALLBOARD_MAIL_RELAY_PASSWORD", "mail_relay_password", str),
    ("mail_relay_security", "CALLBOARD_MAIL_RELAY_SECURITY", "mail_relay_security", _parse_mail_security),
    ("mail_from", "CALLBOARD_MAIL_FROM", "mail_from", _parse_mail_from),
    ("mail_backoff", "CALLBOARD_MAIL_BACKOFF_SECONDS", "mail_backoff", _parse_seconds),
    ("onec_price_type", "CALLBOARD_1C_PRICE_TYPE", "onec_price_type", str),
    ("onec_progress_wait", "CALLBOARD_1C_PROGRESS_WAIT", "onec_progress_wait", _parse_seconds),
)


def load_settings(
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings; raise SettingsError naming the variable or key that is wrong."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    file_values: dict[str, Any] = {}
    if config_file is not None:
        try:
            file_values = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"config file {config_file}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {config_file}: {exc}") from exc
        known = {key for _, _, key, _ in _FIELDS}
        unknown = sorted(set(file_values) - known)
        if unknown:
            raise SettingsError(f"config file {config_file}: unknown key(s) {', '.join(unknown)}")
    for name, env_name, key, parse in _FIELDS:
        if env.get(env_name, "") != "":
            raw, source = env[env_name], env_name
        elif key in file_values:
            raw, source = file_values[key], f"{key} in {config_file}"
        else:
            continue
        try:
            values[name] = parse(raw if not isinstance(raw, (int, float)) else str(raw))
        except (ValueError, TypeError, KeyError) as exc:
            raise SettingsError(f"{source}: {exc}") from exc
    settings = Settings(**values)
    if overrides:
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    return settings


def ensure_session_secret(settings: Settings) -> Settings:
    """Keep a generated secret in the data directory so sessions survive restarts."""
    if settings.session_secret:
        return settings
    path = settings.data_dir / "session_secret"
    if path.exists():
        secret = path.read_text(encoding="ascii").strip()
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(32)
        path.write_text(secret, encoding="ascii")
        path.chmod(0o600)
    return replace(settings, session_secret=secret)
