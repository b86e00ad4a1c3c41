"""Amounts in Russian words, as documents write them: «Двести пятьдесят тысяч пятьдесят рублей 00 копеек»."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

_UNITS_MASCULINE = ("", "один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять")
_UNITS_FEMININE = ("", "одна", "две", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять")
_TEENS = ("десять", "одиннадцать", "двенадцать", "тринадцать", "четырнадцать", "пятнадцать", "шестнадцать",
          "семнадцать", "восемнадцать", "девятнадцать")
_TENS = ("", "", "двадцать", "тридцать", "сорок", "пятьдесят", "шестьдесят", "семьдесят", "восемьдесят",
         "девяносто")
_HUNDREDS = ("", "сто", "двести", "триста", "четыреста", "пятьсот", "шестьсот", "семьсот", "восемьсот",
             "девятьсот")
# Each power of a thousand: its forms for 1, 2-4 and 5+ (and 11-14), and whether its numerals are feminine
# ("одна тысяча", "две тысячи", but "один миллион", "два миллиона").
_SCALES = (
    (("", "", ""), False),
    (("тысяча", "тысячи", "тысяч"), True),
    (("миллион", "миллиона", "миллионов"), False),
    (("миллиард", "миллиарда", "миллиардов"), False),
    (("триллион", "триллиона", "триллионов"), False),
)
ROUBLES = ("рубль", "рубля", "рублей")
KOPECKS = ("копейка", "копейки", "копеек")
LIMIT = Decimal(1000) ** len(_SCALES)


def plural(number: int, forms: tuple[str, str, str]) -> str:
    """The Russian form for a count: 1 рубль, 2 рубля, 5 рублей, 11 рублей, 21 рубль, 111 рублей."""
    last_two = number % 100
    last = number % 10
    if 11 <= last_two <= 14 or last == 0 or last >= 5:
        return forms[2]
    return forms[0] if last == 1 else forms[1]


def _triad(number: int, feminine: bool) -> list[str]:
    """0..999 in words ('' for 0)."""
    hundreds, rest = divmod(number, 100)
    words = [_HUNDREDS[hundreds]]
    if 10 <= rest <= 19:
        words.append(_TEENS[rest - 10])
    else:
        tens, units = divmod(rest, 10)
        words += [_TENS[tens], (_UNITS_FEMININE if feminine else _UNITS_MASCULINE)[units]]
    return [w for w in words if w]


def number_in_words(number: int, feminine: bool = False) -> str:
    """A whole number ≥ 0 in words: 2001 → 'две тысячи один' (feminine: 'две тысячи одна')."""
    if number < 0 or number >= LIMIT:
        raise ValueError(f"{number} is out of range for words")
    if number == 0:
        return "ноль"
    words: list[str] = []
    scale = 0
    while number:
        number, triad = divmod(number, 1000)
        if triad:
            forms, scale_feminine = _SCALES[scale]
            part = _triad(triad, scale_feminine if scale else feminine)
            if scale:
                part.append(plural(triad, forms))
            words[:0] = part
        scale += 1
    return " ".join(words)


def roubles_in_words(amount: Decimal | int | str) -> str:
    """250050 → 'Двести пятьдесят тысяч пятьдесят рублей 00 копеек' (kopecks in figures, as 1C and banks write)."""
    value = Decimal(amount).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if value < 0:
        raise ValueError("a negative amount has no words on a document")
    roubles = int(value)
    kopecks = int((value - roubles) * 100)
    text = f"{number_in_words(roubles)} {plural(roubles, ROUBLES)} {kopecks:02d} {plural(kopecks, KOPECKS)}"
    return text[0].upper() + text[1:]
