"""Languages: gettext catalogs, the reader's language, Babel formats, and labels for the API's English codes."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web
from babel import Locale
from babel.dates import format_date, format_time
from babel.numbers import NumberPattern, format_currency, format_decimal, format_percent, get_currency_symbol
from babel.support import NullTranslations, Translations
from babel.units import format_unit

from crm.settings import LANGUAGES, Settings
from web import keys

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"
JS_DOMAIN = "js"  # the messages of static/*.js, served to the page as JSON


def N_(message: str) -> str:
    """Marks a message for extraction; it is translated where it is shown, for that reader."""
    return message


# The codes the API keeps in English, with the words people read for them. A code not listed here is shown
# as it is, with '_' as a space (a test keeps every listed word translated).
CODE_LABELS = {
    # call outcomes and directions
    "answered": N_("answered"), "missed": N_("missed"), "abandoned": N_("abandoned"), "busy": N_("busy"),
    "failed": N_("failed"), "unknown": N_("unknown"), "inbound": N_("inbound"), "outbound": N_("outbound"),
    "internal": N_("internal"),
    # missed-call board: reasons, states, resolutions
    "no_answer": N_("no answer"), "abandoned_in_queue": N_("abandoned in queue"),
    "abandoned_while_ringing": N_("abandoned while ringing"), "outside_working_hours": N_("outside working hours"),
    "open": N_("open"), "in_progress": N_("in progress"), "resolved": N_("resolved"),
    "called_back": N_("called back"), "called_us_again": N_("called us again"), "spam": N_("spam"),
    "wrong_number": N_("wrong number"), "reached_another_way": N_("reached another way"),
    "not_needed": N_("not needed"),
    # leads: statuses and sources
    "new": N_("new"), "in_work": N_("in work"), "qualified": N_("qualified"), "converted": N_("converted"),
    "junk": N_("junk"), "phone": N_("phone"), "email": N_("e-mail"), "e-mail": N_("e-mail"),
    "web_form": N_("web form"), "chat": N_("chat"), "manual": N_("manual"), "call": N_("call"),
    # deals: statuses and loss reasons
    "won": N_("won"), "lost": N_("lost"), "price": N_("price"), "competitor": N_("competitor"),
    "no_budget": N_("no budget"), "no_decision": N_("no decision"), "lead_time": N_("lead time"),
    "spec_mismatch": N_("spec mismatch"), "other": N_("other"),
    # agents
    "idle": N_("idle"), "ringing": N_("ringing"), "in_call": N_("in call"), "offline": N_("offline"),
    # roles
    "manager": N_("manager"), "head": N_("head"), "admin": N_("admin"), "accountant": N_("accountant"),
    "warehouse": N_("warehouse"),
    # mail intake: kinds and statuses; orders
    "request": N_("request"), "order": N_("order"), "parsed": N_("parsed"), "unparsed": N_("unparsed"),
    "filed": N_("filed"), "received": N_("received"), "done": N_("done"),
    # production order states; stock movement kinds (web/stock.py)
    "planned": N_("planned"), "made": N_("made"), "receipt": N_("receipt"), "shipment": N_("shipment"),
    "write_off": N_("write-off"), "transfer_out": N_("transfer out"), "transfer_in": N_("transfer in"),
    "reservation": N_("reservation"), "release": N_("release"), "warehouse_id": N_("warehouse"),
    "expires_on": N_("expiry date"), "planned_on": N_("planned date"), "document_number": N_("document number"),
    "sku": N_("SKU"), "barcode": N_("barcode"), "state": N_("state"),
    # things named in "not found" messages
    "contact": N_("contact"), "company": N_("company"), "deal": N_("deal"), "lead": N_("lead"),
    "user": N_("user"), "task": N_("task"), "product": N_("product"), "item": N_("item"),
    "attachment": N_("attachment"), "missed caller": N_("missed caller"),
    "open missed caller": N_("open missed caller"), "open order": N_("open order"),
    # PBX connection states; units of stock
    "connected": N_("connected"), "connecting": N_("connecting"), "disconnected": N_("disconnected"),
    "standby": N_("standby"), "closed": N_("closed"), "pcs": N_("pcs"), "set": N_("set"),
    # form fields named by domain errors ("name: is empty")
    "name": N_("name"), "display_name": N_("name"), "emails": N_("e-mail"),
    "phones": N_("phones"), "extension": N_("extension"), "login": N_("login"), "password": N_("password"),
    "company_id": N_("company"), "manager_id": N_("manager"), "tax_id": N_("tax id"), "version": N_("version"),
    "devices": N_("devices"), "language": N_("language"), "role": N_("role"), "quantity": N_("quantity"),
    "product_id": N_("product"), "reason": N_("reason"), "title": N_("title"),
    # money: contract kinds, invoice states, how a payment was matched, payment sources, fields, things
    "supply": N_("supply"), "service": N_("service"), "issued": N_("issued"), "partly_paid": N_("partly paid"),
    "paid": N_("paid"), "cancelled": N_("cancelled"), "number": N_("number"), "inn_amount": N_("by INN and amount"),
    "statement": N_("bank statement"), "invoice": N_("invoice"), "payment": N_("payment"),
    "contract": N_("contract"), "allocation": N_("allocation"), "scan": N_("scan"), "file": N_("file"),
    "signed_on": N_("signing date"), "valid_until": N_("valid until"), "kind": N_("kind"),
    "prepayment_percent": N_("prepayment"), "deferral_days": N_("days to pay"), "due_on": N_("due date"),
    "doc_number": N_("payment order number"), "doc_date": N_("date"), "amount": N_("amount"),
    "payer_inn": N_("payer's INN"), "invoice_id": N_("invoice"), "deal_item_id": N_("item"),
    "items": N_("items"), "allocations": N_("allocations"), "contract_id": N_("contract"), "as_of": N_("date"),
    # lead distribution: actions, fields, things
    "round_robin": N_("round robin"), "assign": N_("assign"), "rule": N_("rule"), "channel": N_("channel"),
    "action": N_("action"), "prefixes": N_("number prefixes"), "manager_ids": N_("managers"),
    "unassigned_minutes": N_("minutes without a manager"), "untouched_minutes": N_("minutes untouched"),
    "company_name": N_("company"), "first_message": N_("first message"),
}
# Domain errors shown on forms ("field: reason"); a reason not listed here is shown as written.
DOMAIN_MESSAGES = (
    N_("someone changed this lead meanwhile; reload it to see their change"),
    N_("only the head of sales or an admin sets lead distribution"), N_("prefixes are text like +7495"),
    N_("a prefix is + and 1 to 8 digits, like +7495"), N_("assign or round_robin"), N_("a list of user ids"),
    N_("choose at least one manager"), N_("assign gives the lead to one manager; choose round robin for more"),
    N_("no active manager with this id"), N_("minutes from 0 (never) to 10080 (a week)"), N_("must be text"),
    N_("one of phone, email, web_form, chat, manual, or empty for any"),
    N_("is empty"), N_("is required"), N_("must be a number"), N_("is longer than 200 characters"),
    N_("must be 2 to 6 digits"), N_("use 2-64 lower-case letters, digits, '.', '_' or '-'"),
    N_("at least 8 characters"), N_("give at least a name, a phone or an e-mail"), N_("no such company"),
    N_("another user has this extension"), N_("choose a manager"), N_("is not a number; reload the page"),
    N_("must be more than zero"), N_("must be zero or more"), N_("choose a product"),
    N_("say why the lead is junk"), N_("this person already has an open lead"),
    N_("assign the lead to a manager first"), N_("nothing is reserved for this item yet"),
    N_("the task is already closed"), N_("a product with this SKU or barcode exists"),
    N_("is too long to be a phone number"),
    N_("is required (at most 64 characters)"), N_("must be a date, YYYY-MM-DD"), N_("supply or service"),
    N_("must not be before the signing date"), N_("must not be before the invoice date"),
    N_("an INN is 10 or 12 digits"), N_("give at least one {invoice_id, amount}"), N_("choose at least one item"),
    N_("no such item on this deal"), N_("the contract is with another company than the deal's"),
    N_("choose the statement file"), N_("choose the scanned file"), N_("the file is empty"),
    N_("the file is larger than 10 MB"), N_("PDF, JPEG, PNG or TIFF"), N_("an invoice is named twice"),
    N_("this company already has a contract with this number"), N_("more than is left to invoice on this item"),
    N_("everything on this deal is invoiced already"), N_("the deal has no items"),
    N_("the invoice is cancelled already"), N_("payments are allocated to this invoice; take them off first"),
    N_("more than is left of the payment"), N_("the invoice is cancelled"), N_("more than the invoice still owes"),
    N_("this payment is entered already (same date, number, amount and payer's account)"),
    N_("only the head of sales or an admin enters and matches payments"),
    N_("this is not a bank statement in the 1C exchange format (1CClientBankExchange)"),
    N_("the header has no ВерсияФормата: not a 1C exchange statement"),
)
# Deal stages are rows (deal_stages.name); their names as seeded by migration 0007.
STAGE_NAMES = (N_("Equipment selection"), N_("Commercial offer"), N_("Invoice / contract"),
               N_("Reservation and production"), N_("Shipment"), N_("Installation"), N_("Service"))

# Task titles and notifications are written by crm/ in English, from a fixed set of sentences (the row's `kind`
# is the code, the sentence holds the parameters). They are translated where they are shown, by matching these
# sentences; a group named in _LABELLED is itself a code to label. JavaScript gets the same table.
SERVER_TEXTS = (
    (r"^Call back (?P<number>.+) \(nobody assigned\)$", N_("Call back %(number)s (nobody assigned)")),
    (r"^Call back (?P<number>.+)$", N_("Call back %(number)s")),
    (r"^New lead: (?P<what>call|email|web form|chat|manual) from (?P<number>\+.*)$",
     N_("New lead: %(what)s from %(number)s")),
    (r"^New lead \((?P<source>[a-z ]+)\) without a phone or e-mail$",
     N_("New lead (%(source)s) without a phone or e-mail")),
    (r"^New lead \((?P<source>[a-z ]+)\): (?P<name>.*)$", N_("New lead (%(source)s): %(name)s")),
    (r"^New lead: (?P<name>.*)$", N_("New lead: %(name)s")),
    (r"^Lead for you: (?P<name>.*)$", N_("Lead for you: %(name)s")),
    (r"^Lead waiting for a manager for (?P<minutes>\d+) min: (?P<name>.*)$",
     N_("Lead waiting for a manager for %(minutes)s min: %(name)s")),
    (r"^Lead untouched for (?P<minutes>\d+) min by (?P<manager>.*?): (?P<name>.*)$",
     N_("Lead untouched for %(minutes)s min by %(manager)s: %(name)s")),
    (r"^Deal stuck at “(?P<stage>[^”]*)”: (?P<title>.*)$", N_("Deal stuck at “%(stage)s”: %(title)s")),
    (r"^Reactivate client: (?P<name>.*)$", N_("Reactivate client: %(name)s")),
    (r"^Invoice № (?P<number>\d+) of (?P<year>\d{4}) is overdue: (?P<buyer>.*)$",
     N_("Invoice № %(number)s of %(year)s is overdue: %(buyer)s")),
    (r"^This (?P<thing>[a-z ]+) does not exist, or it is not yours\.$",
     N_("This %(thing)s does not exist, or it is not yours.")),
    (r"^Reply: (?P<subject>.*)$", N_("Reply: %(subject)s")),
    (r"^New (?P<kind>[a-z ]+) from (?P<name>.*)$", N_("New %(kind)s from %(name)s")),
    (r"^only (?P<quantity>[0-9.]+) on hand$", N_("only %(quantity)s on hand")),
    (r"^only (?P<quantity>[0-9.]+) on hand in this warehouse$", N_("only %(quantity)s on hand in this warehouse")),
)
_LABELLED = ("what", "source", "kind", "stage", "thing")
_SERVER_TEXTS = tuple((re.compile(pattern, re.S), message) for pattern, message in SERVER_TEXTS)

# Dates as `28.11.2026 19:41` (ru) or `11/28/26 7:41 PM` (en): CLDR's short date and short time; the pages'
# JavaScript formats with Intl.DateTimeFormat and these options, in the company's time zone, not the browser's.
_INTL_OPTIONS = {
    "ru": {"date": {"day": "2-digit", "month": "2-digit", "year": "numeric"},
           "time": {"hour": "2-digit", "minute": "2-digit", "hourCycle": "h23"}},
    "en": {"date": {"day": "numeric", "month": "numeric", "year": "2-digit"},
           "time": {"hour": "numeric", "minute": "2-digit"}},
}


# Each language by its own name, as people look for it in a list.
LANGUAGE_NAMES = tuple((code, Locale.parse(code).get_display_name(code).capitalize()) for code in LANGUAGES)


def load_translations(language: str, domain: str = DOMAIN) -> NullTranslations:
    """The compiled catalog (.mo); a missing one is a packaging error, shown as English rather than a crash."""
    return Translations.load(str(LOCALE_DIR), [language], domain)


@dataclass(frozen=True)
class Reader:
    """Everything language-dependent for one language: messages, labels and formats, in the company's zone."""

    language: str
    zone: ZoneInfo
    currency: str
    translations: NullTranslations
    js_translations: NullTranslations
    locale: Locale = field(init=False)

    catalog: dict[str, Any] = field(init=False)
    # babel's format_unit costs ~100 µs and a list page asks for the same few values (0–59 minutes or
    # seconds, a few hours) hundreds of times: each (value, unit) is formatted once.
    unit_texts: dict[tuple[int | str, str], str] = field(init=False, default_factory=dict, repr=False)
    money_pattern: NumberPattern | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "locale", Locale.parse(self.language))
        object.__setattr__(self, "catalog", self._js_catalog())
        object.__setattr__(self, "money_pattern", self._money_pattern())

    def _money_pattern(self) -> NumberPattern | None:
        """The locale's currency pattern with the symbol written in: babel's format_currency looks up the
        currency's plural name for every amount even when the pattern only shows the symbol (~60 % of its
        ~300 µs; a deals board shows 350 amounts). None for a pattern that shows the code or the name."""
        pattern = self.locale.currency_formats["standard"]
        if any("¤¤" in part for part in (*pattern.prefix, *pattern.suffix)):
            return None
        symbol = get_currency_symbol(self.currency, self.locale)
        fast = copy.copy(pattern)
        fast.prefix = tuple(part.replace("¤", symbol) for part in pattern.prefix)
        fast.suffix = tuple(part.replace("¤", symbol) for part in pattern.suffix)
        return fast

    def gettext(self, message: str) -> str:
        return self.translations.ugettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self.translations.ungettext(singular, plural, n)

    def label(self, code: str | None) -> str:
        """An English code (outcome, status, reason, stage name) as the reader's word."""
        if not code:
            return ""
        return self.gettext(CODE_LABELS.get(code, code.replace("_", " ")))

    def text(self, message: str | None) -> str:
        """A sentence that reached us as data: a stored task title, a domain error ("field: reason")."""
        if not message:
            return ""
        translated = self.gettext(message)
        if translated != message:
            return translated
        for pattern, template in _SERVER_TEXTS:
            match = pattern.match(message)
            if match:
                values = {k: self.label(v) if k in _LABELLED else v for k, v in match.groupdict().items()}
                return self.gettext(template) % values
        field_name, sep, reason = message.partition(": ")
        if sep and field_name.isidentifier():
            return f"{self.label(field_name)}: {self.gettext(reason)}"
        return message

    def money(self, value: Decimal | float | int | None) -> str:
        if value is None:
            return ""
        if self.money_pattern is None:
            return format_currency(value, self.currency, locale=self.locale)
        # What format_currency does with its defaults, the symbol already in the pattern.
        return self.money_pattern.apply(value, self.locale, currency=self.currency, currency_digits=True,
                                        decimal_quantization=True, group_separator=True, numbering_system="latn")

    def number(self, value: Decimal | float | int | None) -> str:
        """Up to three decimals, none when whole: 2 → '2', 2.5 → '2,5', 1250 → '1 250'."""
        if value is None:
            return ""
        return format_decimal(value, format="#,##0.###", locale=self.locale)

    def percent(self, value: float | None) -> str:
        """`value` in percent (53.2 → '53 %')."""
        return "—" if value is None else format_percent(value / 100, locale=self.locale)

    def moment(self, value: datetime | date | str | None, what: str = "datetime") -> str:
        """A moment in the company's zone ('28.11.2026 19:41'), or a day ('28.11.2026'; also from 'YYYY-MM-DD')."""
        if value is None or value == "":
            return ""
        if isinstance(value, str):
            value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        local = value.astimezone(self.zone) if isinstance(value, datetime) else value
        day = format_date(local, "short", locale=self.locale)
        if what == "date" or not isinstance(value, datetime):
            return day
        return f"{day} {format_time(local, 'short', locale=self.locale)}"

    def duration(self, seconds: float | int | None) -> str:
        """65 → '1 мин 05 с' / '1 min 05 sec'; 3725 → '1 ч 02 мин 05 с'."""
        if seconds is None:
            return ""
        hours, rest = divmod(int(round(seconds)), 3600)
        minutes, secs = divmod(rest, 60)
        parts = []
        if hours:
            parts.append(self._unit(hours, "hour"))
        if hours or minutes:
            parts.append(self._unit(f"{minutes:02d}" if hours else minutes, "minute"))
        parts.append(self._unit(f"{secs:02d}" if hours or minutes else secs, "second"))
        return " ".join(parts)

    def _unit(self, value: int | str, unit: str) -> str:
        text = self.unit_texts.get((value, unit))
        if text is None:
            text = format_unit(value, f"duration-{unit}", length="short", locale=self.locale)
            if len(self.unit_texts) < 4096:  # hours are unbounded in theory
                self.unit_texts[(value, unit)] = text
        return text

    def _js_catalog(self) -> dict[str, Any]:
        """What the pages' JavaScript needs to speak: its messages, the labels, the server texts and the formats."""
        messages = {m: self.js_translations.ugettext(m) for m in _js_messages(self.js_translations)}
        labels = {code: self.label(code) for code in CODE_LABELS}
        labels.update({name: self.gettext(name) for name in STAGE_NAMES})
        units = {unit: format_unit("{0}", f"duration-{unit}", length="short", locale=self.locale)
                 for unit in ("hour", "minute", "second")}
        return {
            "language": self.language, "zone": str(self.zone.key), "messages": messages, "labels": labels,
            "server_texts": [[pattern.replace("(?P<", "(?<"), self.gettext(message)]
                             for pattern, message in SERVER_TEXTS],
            "labelled": list(_LABELLED), "units": units, "intl": _INTL_OPTIONS[self.language],
        }


def _js_messages(translations: NullTranslations) -> list[str]:
    catalog = getattr(translations, "_catalog", {})
    return sorted(key for key in catalog if isinstance(key, str) and key)


class I18n:
    """One Reader per language, built once at start; picks the reader for a request."""

    def __init__(self, settings: Settings) -> None:
        zone = ZoneInfo(settings.timezone)
        self.default = settings.language
        self.readers = {lang: Reader(lang, zone, settings.currency, load_translations(lang),
                                     load_translations(lang, JS_DOMAIN)) for lang in LANGUAGES}

    def reader(self, language: str | None) -> Reader:
        return self.readers.get(language or "", self.readers[self.default])

    def choose(self, user_language: str | None, accept_language: str | None) -> Reader:
        """The person's own choice, else the first language of the browser's list we speak, else the setting."""
        if user_language in self.readers:
            return self.readers[user_language]
        return self.reader(negotiate(accept_language or ""))


def request_reader(request: web.Request) -> Reader:
    """The reader for this request: the logged-in person's language, else the browser's, else the setting."""
    user = request.get(keys.USER)
    return request.app[keys.I18N].choose(user.language if user else None, request.headers.get("Accept-Language"))


def negotiate(accept_language: str) -> str | None:
    """'en-US,en;q=0.9,ru;q=0.8' → 'en'; the order is by q, then as written."""
    ranked = []
    for position, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if quality > 0 and primary in LANGUAGES:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else None


@jinja2.pass_context
def _gettext(context: jinja2.runtime.Context, message: str) -> str:
    return context["i18n"].gettext(message)


@jinja2.pass_context
def _ngettext(context: jinja2.runtime.Context, singular: str, plural: str, n: int) -> str:
    return context["i18n"].ngettext(singular, plural, n)


def _reader_filter(method: str) -> Any:
    @jinja2.pass_context
    def apply(context: jinja2.runtime.Context, value: Any, *args: Any) -> str:
        return getattr(context["i18n"], method)(value, *args)

    apply.__name__ = method
    return apply


def install(env: jinja2.Environment) -> None:
    """gettext in templates ({% trans %}, _()) and the format filters; each reads the reader the page was
    rendered for (the `i18n` variable), so one environment serves every language."""
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(_gettext, _ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.globals["languages"] = LANGUAGE_NAMES
    for name, method in (("localtime", "moment"), ("duration", "duration"), ("qty", "number"),
                         ("money", "money"), ("number", "number"), ("percent", "percent"), ("label", "label"),
                         ("tr", "text")):
        env.filters[name] = _reader_filter(method)
