"""Bank statements in the 1C exchange text format (1CClientBankExchange 1.02/1.03): bytes → documents, no I/O."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from crm.errors import ValidationError

logger = logging.getLogger(__name__)

MAGIC = b"1CClientBankExchange"
# `Кодировка=` as it reads in each encoding a bank may write: the header line itself shows the encoding.
_ENCODINGS = {"utf-8": "utf-8", "cp1251": "cp1251", "cp866": "cp866"}
_DECLARED = {"windows": "cp1251", "dos": "cp866", "utf-8": "utf-8", "utf8": "utf-8"}
_KEY = "Кодировка="
_DOC_START = "СекцияДокумент"
_DOC_END = "КонецДокумента"
_ACCOUNT_START = "СекцияРасчСчет"
_ACCOUNT_END = "КонецРасчСчет"
_FILE_END = "КонецФайла"
_LEADING_INN = re.compile(r"^ИНН\s*\d{10,12}\s+")
MAX_PROBLEMS = 100  # a broken file reports its first problems, not a million lines of them


class NotAStatement(ValidationError):
    """The file is not a 1CClientBankExchange statement."""

    def __init__(self, message: str) -> None:
        super().__init__("file", message)


@dataclass(frozen=True, slots=True)
class StatementDocument:
    """One payment document of the statement, as the bank wrote it."""

    kind: str
    number: str
    doc_date: date
    amount: Decimal
    payer_account: str
    payer_inn: str
    payer_name: str
    receiver_account: str
    receiver_inn: str
    receiver_name: str
    purpose: str
    received_on: date | None
    written_off_on: date | None
    line: int


@dataclass(slots=True)
class Statement:
    version: str
    encoding: str
    accounts: tuple[str, ...]
    date_from: date | None
    date_to: date | None
    documents: list[StatementDocument] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, what is wrong): skipped documents

    def direction(self, doc: StatementDocument) -> str:
        """incoming (to one of our accounts), outgoing (from one), or other (neither can be told)."""
        if doc.receiver_account and doc.receiver_account in self.accounts:
            return "incoming"
        if doc.payer_account and doc.payer_account in self.accounts:
            return "outgoing"
        if doc.received_on is not None and doc.written_off_on is None:
            return "incoming"
        if doc.written_off_on is not None:
            return "outgoing"
        return "other"


def detect_encoding(head: bytes) -> str:
    """The Python codec of the file: where `Кодировка=` is readable tells; the value must agree or is overruled,
    since a header written in UTF-8 that says Windows is UTF-8 all the same."""
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8"
    for codec in _ENCODINGS.values():
        at = head.find(_KEY.encode(codec))
        if at < 0:
            continue
        value = head[at + len(_KEY.encode(codec)):].split(b"\n", 1)[0].decode(codec, "replace").strip().lower()
        declared = _DECLARED.get(value)
        if declared is None:
            raise NotAStatement(f"unknown encoding {value!r} in the header (Windows, DOS or UTF-8)")
        if declared != codec:
            logger.info("statement says %s but is written in %s; reading it as %s", declared, codec, codec)
        return codec
    # The header must name the encoding; without it, UTF-8 when it decodes, else the usual Windows.
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        return "cp1251"


def _date(value: str) -> date:
    return datetime.strptime(value.strip(), "%d.%m.%Y").date()


def _amount(value: str) -> Decimal:
    text = value.strip().replace(" ", "").replace("\xa0", "").replace(",", ".")
    amount = Decimal(text)
    if not amount.is_finite() or amount <= 0 or amount >= Decimal("1e12") or amount != amount.quantize(
            Decimal("0.01")):
        raise InvalidOperation(value)
    return amount


def _document(fields: dict[str, str], kind: str, line: int) -> StatementDocument:
    """Raises ValueError naming the field that cannot be read."""
    for name in ("Номер", "Дата", "Сумма"):
        if not fields.get(name, "").strip():
            raise ValueError(f"{name} is missing")
    try:
        doc_date = _date(fields["Дата"])
    except ValueError:
        raise ValueError(f"Дата {fields['Дата']!r} is not dd.mm.yyyy") from None
    try:
        amount = _amount(fields["Сумма"])
    except (InvalidOperation, ValueError):
        raise ValueError(f"Сумма {fields['Сумма']!r} is not an amount") from None

    def optional_date(name: str) -> date | None:
        value = fields.get(name, "").strip()
        if not value:
            return None
        try:
            return _date(value)
        except ValueError:
            raise ValueError(f"{name} {value!r} is not dd.mm.yyyy") from None

    def party(prefix: str) -> str:
        name = fields.get(f"{prefix}1", "").strip() or fields.get(prefix, "").strip()
        return _LEADING_INN.sub("", name)  # `Плательщик=ИНН 7701234567 ООО «Ромашка»`

    purpose = fields.get("НазначениеПлатежа", "").strip() or " ".join(
        fields.get(f"НазначениеПлатежа{i}", "").strip() for i in range(1, 7)).strip()
    return StatementDocument(
        kind=kind, number=fields["Номер"].strip()[:64], doc_date=doc_date, amount=amount,
        payer_account=fields.get("ПлательщикСчет", "").strip() or fields.get("ПлательщикРасчСчет", "").strip(),
        payer_inn=fields.get("ПлательщикИНН", "").strip(), payer_name=party("Плательщик")[:500],
        receiver_account=fields.get("ПолучательСчет", "").strip() or fields.get("ПолучательРасчСчет", "").strip(),
        receiver_inn=fields.get("ПолучательИНН", "").strip(), receiver_name=party("Получатель")[:500],
        purpose=purpose[:2000], received_on=optional_date("ДатаПоступило"),
        written_off_on=optional_date("ДатаСписано"), line=line)


def parse_statement(data: bytes) -> Statement:
    """Read a statement; a document that cannot be read is skipped and named in `problems`.
    Raises NotAStatement for anything that is not a 1CClientBankExchange file. CPU work: run it in a thread."""
    if not data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(MAGIC):
        raise NotAStatement("this is not a bank statement in the 1C exchange format (1CClientBankExchange)")
    encoding = detect_encoding(data[:4096])
    text = data.decode(encoding, errors="replace")
    header: dict[str, str] = {}
    accounts: list[str] = []
    statement = Statement("", encoding, (), None, None)
    section: str | None = None  # None (header), "account", "document"
    fields: dict[str, str] = {}
    kind, started = "", 0

    def problem(line: int, what: str) -> None:
        if len(statement.problems) < MAX_PROBLEMS:
            statement.problems.append((line, what))

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip().lstrip("\ufeff")
        if not line or line == MAGIC.decode():
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if key == _DOC_START:
            if section == "document":
                problem(started, "the document has no КонецДокумента")
            section, fields, kind, started = "document", {}, value.strip(), number
            continue
        if key == _DOC_END:
            if section != "document":
                problem(number, "КонецДокумента without СекцияДокумент")
                continue
            try:
                statement.documents.append(_document(fields, kind, started))
            except ValueError as exc:
                problem(started, str(exc))
            section = None
            continue
        if key == _ACCOUNT_START:
            section = "account"
            continue
        if key == _ACCOUNT_END:
            section = None
            continue
        if key == _FILE_END:
            break
        if not sep:
            problem(number, f"not key=value: {line[:40]!r}")
            continue
        if section == "document":
            fields[key] = value
        elif section == "account":
            if key == "РасчСчет" and value.strip():
                accounts.append(value.strip())
        else:
            if key == "РасчСчет" and value.strip():
                accounts.append(value.strip())
            else:
                header.setdefault(key, value.strip())
    if section == "document":
        problem(started, "the file ends inside a document (no КонецДокумента)")
    if "ВерсияФормата" not in header:
        raise NotAStatement("the header has no ВерсияФормата: not a 1C exchange statement")
    statement.version = header["ВерсияФормата"]
    statement.accounts = tuple(dict.fromkeys(accounts))
    for name, attr in (("ДатаНачала", "date_from"), ("ДатаКонца", "date_to")):
        try:
            setattr(statement, attr, _date(header[name]) if header.get(name) else None)
        except ValueError:
            problem(0, f"{name} {header[name]!r} is not dd.mm.yyyy")
    return statement
