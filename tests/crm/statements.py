"""Bank statements in the 1C exchange format, written the way Russian banks write them, for the money tests."""

from __future__ import annotations

from dataclasses import dataclass

OUR_ACCOUNT = "40702810900000012345"
OUR_INN = "7705001122"
DECLARED = {"cp1251": "Windows", "cp866": "DOS", "utf-8": "UTF-8"}


@dataclass(frozen=True)
class Doc:
    number: str
    day: str  # dd.mm.yyyy
    amount: str
    payer: str
    payer_inn: str
    payer_account: str
    purpose: str
    incoming: bool = True


def statement_text(docs: list[Doc], day_from: str = "01.11.2026", day_to: str = "30.11.2026",
                   encoding: str = "cp1251", version: str = "1.03") -> str:
    lines = ["1CClientBankExchange", f"ВерсияФормата={version}", f"Кодировка={DECLARED[encoding]}",
             "Отправитель=Бухгалтерия предприятия, редакция 3.0", "Получатель=", "ДатаСоздания=30.11.2026",
             "ВремяСоздания=18:05:11", f"ДатаНачала={day_from}", f"ДатаКонца={day_to}", f"РасчСчет={OUR_ACCOUNT}",
             "Документ=Платежное поручение", "СекцияРасчСчет", f"ДатаНачала={day_from}", f"ДатаКонца={day_to}",
             f"РасчСчет={OUR_ACCOUNT}", "НачальныйОстаток=1250000.00", "ВсегоПоступило=0.00", "ВсегоСписано=0.00",
             "КонечныйОстаток=1250000.00", "КонецРасчСчет"]
    for doc in docs:
        ours = ("ООО «Промтехника»", OUR_INN, OUR_ACCOUNT)
        theirs = (doc.payer, doc.payer_inn, doc.payer_account)
        payer, receiver = (theirs, ours) if doc.incoming else (ours, theirs)
        lines += [
            "СекцияДокумент=Платежное поручение", f"Номер={doc.number}", f"Дата={doc.day}", f"Сумма={doc.amount}",
            f"ПлательщикСчет={payer[2]}", f"Плательщик=ИНН {payer[1]} {payer[0]}", f"ПлательщикИНН={payer[1]}",
            f"Плательщик1={payer[0]}", "ПлательщикКПП=770501001", f"ПлательщикРасчСчет={payer[2]}",
            "ПлательщикБанк1=ПАО СБЕРБАНК", "ПлательщикБанк2=г. Москва", "ПлательщикБИК=044525225",
            "ПлательщикКорсчет=30101810400000000225", f"ПолучательСчет={receiver[2]}",
            f"Получатель=ИНН {receiver[1]} {receiver[0]}", f"ПолучательИНН={receiver[1]}",
            f"Получатель1={receiver[0]}", f"ПолучательРасчСчет={receiver[2]}", "ПолучательБанк1=АО «АЛЬФА-БАНК»",
            "ПолучательБанк2=г. Москва", "ПолучательБИК=044525593", "ПолучательКорсчет=30101810200000000593",
            "ВидОплаты=01", "Очередность=5",
            f"{'ДатаПоступило' if doc.incoming else 'ДатаСписано'}={doc.day}",
            f"НазначениеПлатежа={doc.purpose}", "КонецДокумента"]
    lines.append("КонецФайла")
    return "\r\n".join(lines) + "\r\n"


def statement_bytes(docs: list[Doc], encoding: str = "cp1251", **kwargs) -> bytes:
    text = statement_text(docs, encoding=encoding, **kwargs)
    if encoding == "cp866":  # DOS has no « »: such banks write plain quotes
        text = text.replace("«", '"').replace("»", '"')
    return text.encode(encoding)
