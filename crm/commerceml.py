"""CommerceML 2 (versions 2.03-2.10), the format of 1C's exchange with websites: the catalogue (import.xml), prices
and stock (offers.xml) read as a stream, and deals written out as orders."""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from crm import importer
from crm.errors import ValidationError
from crm.importer import ImportResult, StockRow
from crm.users import User

logger = logging.getLogger(__name__)

BATCH = 1000
MAX_UNZIPPED = 2 * 1024 ** 3  # what the files of one zip may add up to once unpacked
ORDER_STAGES = ("invoice", "reservation", "shipment", "installation", "service")  # a deal 1C should know of


@dataclass(slots=True)
class CatalogProduct:
    """A <Товар> of the catalogue."""

    external_id: str
    sku: str
    name: str
    unit: str
    barcode: str | None


@dataclass(slots=True)
class Offer:
    """A <Предложение>: the price of the chosen type and the stock (all warehouses together)."""

    external_id: str
    price: Decimal | None
    quantity: Decimal | None


@dataclass(slots=True)
class CmlResult:
    products_created: int = 0
    products_updated: int = 0
    prices_set: int = 0
    stock: ImportResult = field(default_factory=lambda: ImportResult("stock", False))
    errors: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"files": self.files, "products_created": self.products_created,
                "products_updated": self.products_updated, "prices_set": self.prices_set,
                "stock_created": self.stock.created, "stock_updated": self.stock.updated,
                "stock_unchanged": self.stock.skipped,
                "errors": self.errors[:importer.MAX_ERRORS_SHOWN]
                + [e.message for e in self.stock.errors][:importer.MAX_ERRORS_SHOWN]}


# ------------------------------------------------------------------------------------------------- reading


def _local(tag: str) -> str:
    """'{urn:1C.ru:commerceml_2}Товар' → 'Товар': 2.08+ files have a namespace, older ones none."""
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in element if _local(c.tag) == name), None)


def _children(element: ET.Element | None, name: str) -> list[ET.Element]:
    return [] if element is None else [c for c in element if _local(c.tag) == name]


def _text(element: ET.Element | None, name: str) -> str:
    found = None if element is None else _child(element, name)
    return " ".join((found.text or "").split()) if found is not None else ""


def _number(text: str | None) -> Decimal | None:
    text = (text or "").replace("\xa0", "").replace(" ", "").replace(",", ".")
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _product(element: ET.Element) -> CatalogProduct | None:
    external_id = _text(element, "Ид")
    if not external_id or element.get("Статус") == "Удален" or _text(element, "ПометкаУдаления") == "true":
        return None
    unit = _child(element, "БазоваяЕдиница")
    unit_name = " ".join((unit.text or "").split()) if unit is not None else ""
    if unit is not None and not unit_name:
        unit_name = unit.get("НаименованиеКраткое") or unit.get("НаименованиеПолное") or ""
    return CatalogProduct(external_id[:200], _text(element, "Артикул")[:100], _text(element, "Наименование")[:500],
                          (unit_name or "pcs")[:20], _text(element, "Штрихкод")[:64] or None)


def _stock(element: ET.Element) -> Decimal | None:
    """Stock in every layout 1C writes: per warehouse as attributes (2.07+), as <КоличествоНаСкладах> (2.05), as
    <Остатки> (2.10), else the plain <Количество>. Several warehouses add up: Callboard keeps one stock."""
    per_warehouse: list[Decimal | None] = []
    for store in _children(element, "Склад"):
        per_warehouse.append(_number(store.get("КоличествоНаСкладе")))
    for store in _children(_child(element, "КоличествоНаСкладах"), "КоличествоНаСкладе"):
        per_warehouse.append(_number(_text(store, "Количество")))
    for rest in _children(_child(element, "Остатки"), "Остаток"):
        stores = _children(rest, "Склад")
        if stores:
            per_warehouse += [_number(_text(s, "Количество")) for s in stores]
        else:
            per_warehouse.append(_number(_text(rest, "Количество")))
    known = [q for q in per_warehouse if q is not None]
    if known:
        return max(sum(known, Decimal(0)), Decimal(0))
    quantity = _number(_text(element, "Количество"))
    return None if quantity is None else max(quantity, Decimal(0))


def _offer(element: ET.Element, price_type: str | None) -> Offer | None:
    external_id = _text(element, "Ид")
    if not external_id:
        return None
    price = None
    prices = _children(_child(element, "Цены"), "Цена")
    chosen = [p for p in prices if price_type is None or _text(p, "ИдТипаЦены") == price_type] or prices[:1]
    if chosen:
        price = _number(_text(chosen[0], "ЦенаЗаЕдиницу"))
        coefficient = _number(_text(chosen[0], "Коэффициент"))
        if price is not None and coefficient not in (None, Decimal(0), Decimal(1)):
            price = price / coefficient  # the price of a package of `coefficient` base units
    return Offer(external_id[:200], price, _stock(element))


def iter_file(path: Path, price_type_name: str | None = None) -> Iterator[CatalogProduct | Offer]:
    """The products and offers of a CommerceML file, one at a time: each element is dropped once read, so a file of
    any size is read in little memory. `price_type_name` picks the price type (by name) among several."""
    stack: list[ET.Element] = []
    names: list[str] = []
    price_type_id: str | None = None
    try:
        for event, element in ET.iterparse(path, events=("start", "end")):
            if event == "start":
                stack.append(element)
                names.append(_local(element.tag))
                continue
            name = names.pop()
            stack.pop()
            parent = stack[-1] if stack else None
            item: CatalogProduct | Offer | None = None
            if name == "Товар" and "Каталог" in names:
                item = _product(element)
            elif name == "ТипЦены" and "ПакетПредложений" in names:
                if price_type_id is None and (price_type_name is None or _text(element, "Наименование").lower()
                                              == price_type_name.lower()):
                    price_type_id = _text(element, "Ид")
            elif name == "Предложение" and "ПакетПредложений" in names:
                item = _offer(element, price_type_id)
            else:
                continue
            if parent is not None:
                parent.remove(element)  # read: let it go
            if item is not None:
                yield item
    except ET.ParseError as exc:
        raise ValidationError("file", f"{path.name} is not well-formed XML: {exc}") from None


def _batches(path: Path, price_type: str | None) -> Iterator[list[CatalogProduct | Offer]]:
    batch: list[CatalogProduct | Offer] = []
    for item in iter_file(path, price_type):
        batch.append(item)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def unpack(archive: Path, into: Path) -> list[Path]:
    """The files of a zip 1C sent, flat in `into` (no paths from the archive are trusted)."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.is_dir()]
            if sum(m.file_size for m in members) > MAX_UNZIPPED:
                raise ValidationError("file", f"{archive.name} unpacks to more than {MAX_UNZIPPED} bytes")
            out = []
            for member in members:
                name = Path(member.filename.replace("\\", "/")).name
                if not name or name.startswith("."):
                    continue
                target = into / name
                with zipped.open(member) as source, open(target, "wb") as sink:
                    while chunk := source.read(1024 * 1024):
                        sink.write(chunk)
                out.append(target)
            return out
    except zipfile.BadZipFile as exc:
        raise ValidationError("file", f"{archive.name} is not a zip archive") from exc


def exchange_order(paths: Sequence[Path]) -> list[Path]:
    """XML files in the order 1C means them: the catalogue (import*) before prices and stock (offers*, prices*,
    rests*)."""
    xml = [p for p in paths if p.suffix.lower() == ".xml"]
    return sorted(xml, key=lambda p: (not p.name.lower().startswith("import"), p.name))


# ------------------------------------------------------------------------------------------------- saving

SKUS_TAKEN = "SELECT sku, external_id FROM products WHERE sku = ANY($1::text[])"
BARCODES_TAKEN = "SELECT barcode, external_id FROM products WHERE barcode = ANY($1::text[])"
# A product made by hand or from a spreadsheet with the same SKU becomes 1C's product (keeps its stock and deals).
LINK_BY_SKU = """
UPDATE products p SET external_id = u.external_id
FROM unnest($1::text[], $2::text[]) AS u(external_id, sku)
WHERE p.sku = u.sku AND p.external_id IS NULL
  AND NOT EXISTS (SELECT 1 FROM products q WHERE q.external_id = u.external_id)
"""
UPSERT_PRODUCTS = """
INSERT INTO products AS p (external_id, sku, name, unit, price, barcode)
SELECT u.external_id, u.sku, u.name, u.unit, 0, u.barcode
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(external_id, sku, name, unit, barcode)
ON CONFLICT (external_id) DO UPDATE SET sku = EXCLUDED.sku, name = EXCLUDED.name, unit = EXCLUDED.unit,
    barcode = coalesce(EXCLUDED.barcode, p.barcode)
RETURNING (xmax = 0) AS inserted
"""
# An offer's Ид is the product's, or "product#characteristic" for a variant: the variant counts as its product.
OFFER_PRODUCTS = """
SELECT u.external_id AS offer_id, p.sku FROM unnest($1::text[]) AS u(external_id)
JOIN products p ON p.external_id = u.external_id OR p.external_id = split_part(u.external_id, '#', 1)
"""
SET_PRICES = """
UPDATE products p SET price = u.price FROM unnest($1::text[], $2::numeric[]) AS u(sku, price) WHERE p.sku = u.sku
"""


async def _save_products(conn: asyncpg.Connection, items: list[CatalogProduct], result: CmlResult) -> None:
    unique = {p.external_id: p for p in items}  # the same Ид twice: the later one
    for p in unique.values():
        p.sku = p.sku or p.external_id[:100]  # 1C leaves Артикул empty often: the Ид is unique
        p.name = p.name or p.sku
    taken = {r["sku"]: r["external_id"] for r in await conn.fetch(SKUS_TAKEN, [p.sku for p in unique.values()])}
    codes = {r["barcode"]: r["external_id"] for r in await conn.fetch(
        BARCODES_TAKEN, [p.barcode for p in unique.values() if p.barcode])}
    rows: list[CatalogProduct] = []
    seen_skus: dict[str, str] = {}
    for p in unique.values():
        owner = taken.get(p.sku) or p.external_id  # None: nobody's, or a product not from 1C yet (it is linked)
        if owner != p.external_id or seen_skus.setdefault(p.sku, p.external_id) != p.external_id:
            result.errors.append(f"product {p.external_id}: SKU {p.sku!r} belongs to another product; not imported")
            continue
        if p.barcode and (codes.get(p.barcode) or p.external_id) != p.external_id:
            p.barcode = None  # a barcode another product holds stays with it
        rows.append(p)
    if not rows:
        return
    await conn.execute(LINK_BY_SKU, [p.external_id for p in rows], [p.sku for p in rows])
    inserted = await conn.fetch(UPSERT_PRODUCTS, [p.external_id for p in rows], [p.sku for p in rows],
                                [p.name for p in rows], [p.unit for p in rows], [p.barcode for p in rows])
    created = sum(1 for r in inserted if r["inserted"])
    result.products_created += created
    result.products_updated += len(inserted) - created


async def _save_offers(conn: asyncpg.Connection, items: list[Offer], result: CmlResult, viewer: User,
                       now: datetime, state: dict[str, Any]) -> None:
    skus: dict[str, str] = {}
    for r in await conn.fetch(OFFER_PRODUCTS, [o.external_id for o in items]):
        skus.setdefault(r["offer_id"], r["sku"])
    prices: dict[str, Decimal] = {}
    counts: dict[str, Decimal] = {}
    for offer in items:
        sku = skus.get(offer.external_id)
        if sku is None:
            result.errors.append(f"offer {offer.external_id}: no such product in the catalogue")
            continue
        if offer.price is not None and Decimal(0) <= offer.price <= Decimal("999999999999"):
            prices[sku] = offer.price.quantize(Decimal("0.01"))
        if offer.quantity is not None:
            counts[sku] = counts.get(sku, Decimal(0)) + offer.quantity  # variants of one product add up
    if prices:
        await conn.execute(SET_PRICES, list(prices), list(prices.values()))
        result.prices_set += len(prices)
    if counts:
        rows = [StockRow(0, sku, min(quantity, Decimal("99999999999"))) for sku, quantity in counts.items()]
        # 1C's stock is the truth: each count becomes the on-hand figure (a receipt or write-off of the difference).
        state.pop("skus", None)
        await importer.save_stock(conn, "stock", rows, result.stock, state, on_duplicate="update", viewer=viewer,
                                  now=now)


async def import_files(conn: asyncpg.Connection, viewer: User, paths: Sequence[Path], now: datetime,
                       price_type: str | None = None) -> CmlResult:
    """Import the catalogue, prices and stock; each batch of 1,000 items is one transaction."""
    result = CmlResult()
    for path in exchange_order(paths):
        result.files.append(path.name)
        batches = _batches(path, price_type)
        while (batch := await asyncio.to_thread(next, batches, None)) is not None:
            async with conn.transaction():
                await conn.execute(importer.IMPORT_LOCK, "products")
                products = [i for i in batch if isinstance(i, CatalogProduct)]
                offers = [i for i in batch if isinstance(i, Offer)]
                if products:
                    await _save_products(conn, products, result)
                if offers:
                    await _save_offers(conn, offers, result, viewer, now, {})
    logger.info("CommerceML import by %s of %s: %s products new, %s updated, %s prices, %s stock counts, %s errors",
                viewer.login, ", ".join(result.files), result.products_created, result.products_updated,
                result.prices_set, result.stock.created + result.stock.updated, len(result.errors))
    for error in result.stock.errors:
        logger.info("CommerceML stock: %s", error)
    return result


# ------------------------------------------------------------------------------------------------- orders to 1C

ORDERS_TO_SEND = """
SELECT d.id, d.title, d.needs, d.stage, d.status, d.manual_amount, d.created_at, d.updated_at,
       d.contact_id, ct.name AS contact_name, d.company_id, co.name AS company_name, co.tax_id,
       (SELECT e.email FROM emails e WHERE e.contact_id = d.contact_id ORDER BY e.id LIMIT 1) AS email,
       (SELECT p.e164 FROM phones p WHERE p.contact_id = d.contact_id ORDER BY p.id LIMIT 1) AS phone
FROM deals d LEFT JOIN contacts ct ON ct.id = d.contact_id LEFT JOIN companies co ON co.id = d.company_id
WHERE (d.stage = ANY($1::text[]) OR d.status = 'won') AND d.status <> 'lost'
  AND EXISTS (SELECT 1 FROM deal_items i WHERE i.deal_id = d.id)
  AND NOT EXISTS (SELECT 1 FROM onec_orders o WHERE o.deal_id = d.id AND o.acknowledged_at IS NOT NULL
                  AND o.sent_updated_at >= d.updated_at AND o.sent_stage = d.stage)
ORDER BY d.id
LIMIT $2
"""
ORDER_ITEMS = """
SELECT i.deal_id, i.quantity, i.price, p.sku, p.name, p.unit, p.external_id
FROM deal_items i JOIN products p ON p.id = i.product_id WHERE i.deal_id = ANY($1::bigint[]) ORDER BY i.id
"""
# What was handed over: acknowledged when 1C says success, so an order changed meanwhile is sent again.
RECORD_SENT = """
INSERT INTO onec_orders (deal_id, sent_at, sent_updated_at, sent_stage, acknowledged_at)
SELECT u.deal_id, $3, u.updated_at, u.stage, NULL
FROM unnest($1::bigint[], $2::timestamptz[], $4::text[]) AS u(deal_id, updated_at, stage)
ON CONFLICT (deal_id) DO UPDATE SET sent_at = EXCLUDED.sent_at, sent_updated_at = EXCLUDED.sent_updated_at,
    sent_stage = EXCLUDED.sent_stage, acknowledged_at = NULL
"""
ACKNOWLEDGE = "UPDATE onec_orders SET acknowledged_at = $1 WHERE acknowledged_at IS NULL AND sent_at <= $1"


def _sub(parent: ET.Element, name: str, text: object = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, name, attributes)
    if text is not None:
        element.text = str(text)
    return element


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'))}"


async def orders_for_1c(conn: asyncpg.Connection, now: datetime, zone: ZoneInfo, currency: str = "RUB",
                        limit: int = 500) -> bytes:
    """Deals from the invoice stage on (or won) that 1C has not acknowledged in their current state, as CommerceML
    orders (<Документ>, ХозОперация "Заказ товара")."""
    deals = await conn.fetch(ORDERS_TO_SEND, list(ORDER_STAGES), limit)
    items: dict[int, list[asyncpg.Record]] = {}
    for row in await conn.fetch(ORDER_ITEMS, [d["id"] for d in deals]):
        items.setdefault(row["deal_id"], []).append(row)
    root = ET.Element("КоммерческаяИнформация", {"ВерсияСхемы": "2.05",
                                                "ДатаФормирования": now.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S")})
    for deal in deals:
        lines = items.get(deal["id"], [])
        total = sum((r["quantity"] * r["price"] for r in lines), Decimal(0))
        created = deal["created_at"].astimezone(zone)
        doc = _sub(root, "Документ")
        _sub(doc, "Ид", f"callboard-deal-{deal['id']}")
        _sub(doc, "Номер", deal["id"])
        _sub(doc, "Дата", created.strftime("%Y-%m-%d"))
        _sub(doc, "Время", created.strftime("%H:%M:%S"))
        _sub(doc, "ХозОперация", "Заказ товара")
        _sub(doc, "Роль", "Продавец")
        _sub(doc, "Валюта", "руб" if currency == "RUB" else currency)
        _sub(doc, "Курс", 1)
        _sub(doc, "Сумма", _money(deal["manual_amount"] if deal["manual_amount"] is not None else total))
        party = _sub(_sub(doc, "Контрагенты"), "Контрагент")
        if deal["company_id"] is not None:
            _sub(party, "Ид", f"callboard-company-{deal['company_id']}")
            _sub(party, "Наименование", deal["company_name"])
            _sub(party, "ОфициальноеНаименование", deal["company_name"])
            if deal["tax_id"]:
                _sub(party, "ИНН", deal["tax_id"])
        else:
            _sub(party, "Ид", f"callboard-contact-{deal['contact_id'] or 0}")
            _sub(party, "Наименование", deal["contact_name"] or deal["title"])
            _sub(party, "ПолноеНаименование", deal["contact_name"] or deal["title"])
        _sub(party, "Роль", "Покупатель")
        contacts = _sub(party, "Контакты")
        for kind, value in (("Почта", deal["email"]), ("ТелефонРабочий", deal["phone"])):
            if value:
                contact = _sub(contacts, "Контакт")
                _sub(contact, "Тип", kind)
                _sub(contact, "Значение", value)
        _sub(doc, "Комментарий", "; ".join(t for t in (deal["title"], deal["needs"]) if t))
        goods = _sub(doc, "Товары")
        for line in lines:
            good = _sub(goods, "Товар")
            _sub(good, "Ид", line["external_id"] or line["sku"])
            _sub(good, "Артикул", line["sku"])
            _sub(good, "Наименование", line["name"])
            _sub(good, "БазоваяЕдиница", "шт" if line["unit"] == "pcs" else line["unit"], Код="796",
                 НаименованиеПолное="Штука" if line["unit"] == "pcs" else line["unit"])
            _sub(good, "ЦенаЗаЕдиницу", _money(line["price"]))
            _sub(good, "Количество", f"{line['quantity'].normalize():f}")
            _sub(good, "Сумма", _money(line["price"] * line["quantity"]))
            attributes = _sub(good, "ЗначенияРеквизитов")
            for name, value in (("ВидНоменклатуры", "Товар"), ("ТипНоменклатуры", "Товар")):
                pair = _sub(attributes, "ЗначениеРеквизита")
                _sub(pair, "Наименование", name)
                _sub(pair, "Значение", value)
        attributes = _sub(doc, "ЗначенияРеквизитов")
        for name, value in (("Статус заказа", deal["stage"]), ("Заказ оплачен", "true" if deal["status"] == "won"
                                                                 else "false")):
            pair = _sub(attributes, "ЗначениеРеквизита")
            _sub(pair, "Наименование", name)
            _sub(pair, "Значение", value)
    if deals:
        await conn.execute(RECORD_SENT, [d["id"] for d in deals], [d["updated_at"] for d in deals], now,
                           [d["stage"] for d in deals])
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


async def acknowledge_orders(conn: asyncpg.Connection, now: datetime) -> int:
    """1C answered success: what it was given is acknowledged, and is not sent again until it changes."""
    return int((await conn.execute(ACKNOWLEDGE, now)).split()[-1])

