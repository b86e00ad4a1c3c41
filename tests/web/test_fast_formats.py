"""The formats a list page repeats on every row, made cheap (issue 18), say exactly what babel and
phonenumbers say."""

from dataclasses import replace
from decimal import Decimal

import phonenumbers
import pytest
from babel.numbers import format_currency
from babel.units import format_unit

from crm.phones import format_phone
from crm.settings import Settings
from web.i18n import LANGUAGES, I18n

AMOUNTS = (Decimal("0"), Decimal("1234567.891"), Decimal("-5.5"), 1250, 0.1, Decimal("1e6"), Decimal("-0.004"))


@pytest.mark.parametrize("currency", ["RUB", "USD", "EUR", "KZT"])
def test_money_is_babels_format_currency(currency):
    i18n = I18n(replace(Settings(session_secret="x"), currency=currency))
    for language in LANGUAGES:
        reader = i18n.reader(language)
        for amount in AMOUNTS:
            assert reader.money(amount) == format_currency(amount, currency, locale=reader.locale), (language, amount)


def test_durations_formatted_once_read_the_same():
    for language in LANGUAGES:
        reader = I18n(Settings(session_secret="x")).reader(language)

        def unit(value, name, locale=reader.locale):
            return format_unit(value, f"duration-{name}", length="short", locale=locale)

        for seconds in (0, 5, 59, 60, 65, 3599, 3600, 3725, 86399, 360000):
            hours, rest = divmod(seconds, 3600)
            minutes, secs = divmod(rest, 60)
            expected = " ".join(
                ([unit(hours, "hour")] if hours else [])
                + ([unit(f"{minutes:02d}" if hours else minutes, "minute")] if hours or minutes else [])
                + [unit(f"{secs:02d}" if hours or minutes else secs, "second")])
            assert reader.duration(seconds) == reader.duration(seconds) == expected, (language, seconds)


def test_a_cached_phone_reads_as_phonenumbers_formats_it():
    for e164 in ("+74951234567", "+79161234567", "+442079460958", "+100", "junk"):
        try:
            expected = phonenumbers.format_number(phonenumbers.parse(e164, None),
                                                  phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        except phonenumbers.NumberParseException:
            expected = e164
        assert format_phone(e164) == format_phone(e164) == expected
    assert format_phone("+74951234567", "12") == "+7 495 123-45-67 ext. 12"


def test_select_options_built_once_escape_names_and_preselect_the_row_value():
    from web.render import select_options

    options = select_options([1, 2], ['Anna "<b>"', "Boris"])
    assert options(2) == ('<option value="1">Anna "&lt;b&gt;"</option>'
                          '<option value="2" selected>Boris</option>')
    assert "selected" not in options(None) and options(2) is options(2)
    # A value is an attribute: quotes and markup in it stay text; "1" is not the value 1.
    tricky = select_options(['x" onmouseover="alert(1)', 1], ["X", "One"])
    assert tricky('x" onmouseover="alert(1)') == ('<option value="x&quot; onmouseover=&quot;alert(1)" selected>X'
                                                   '</option><option value="1">One</option>')
    assert "selected" not in tricky("1") and "selected" not in tricky([1])
