"""Phone normalisation: the forms people type, internal extensions, garbage."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm.errors import ValidationError
from crm.phones import Phone, format_phone, normalise_caller, parse_phone


@pytest.mark.parametrize("text", ["8 (495) 123-45-67", "+7 495 1234567", "74951234567", "4951234567",
                                  "+7(495)123-45-67", "8-495-123-45-67", "007 495 123 45 67"])
def test_moscow_number_in_every_form_is_one_e164(text):
    assert parse_phone(text, "RU") == Phone("+74951234567")


@pytest.mark.parametrize("text, extension", [("+7 495 123-45-67 доб. 101", "101"), ("8 495 1234567 ext. 12", "12"),
                                             ("84951234567 Доб.7", "7")])
def test_office_extension_is_kept_beside_the_number(text, extension):
    assert parse_phone(text, "RU") == Phone("+74951234567", extension)


@pytest.mark.parametrize("text", ["101", "12", "10234"])
def test_short_digit_strings_are_internal_extensions_not_phones(text):
    with pytest.raises(ValidationError, match="internal extension"):
        parse_phone(text, "RU")


@pytest.mark.parametrize("text", ["", "   ", "hello", "<script>alert(1)</script>", "123456789", "+7 495",
                                  "1" * 80, "8 495 123-45-67; DROP TABLE phones"])
def test_garbage_is_a_clear_validation_error(text):
    with pytest.raises(ValidationError) as info:
        parse_phone(text, "RU")
    assert info.value.field == "phone"


def test_foreign_number_keeps_its_country():
    assert parse_phone("+44 20 7946 0958", "RU").e164 == "+442079460958"
    assert parse_phone("442079460958", "RU").e164 == "+442079460958"


@pytest.mark.parametrize("caller", ["anonymous", "Anonymous", "unknown", "<unknown>", "", None, "restricted",
                                    "<script>", "101", "abc123456789"])
def test_withheld_internal_and_junk_caller_ids_have_no_e164(caller):
    assert normalise_caller(caller, "RU") is None


def test_caller_ids_from_a_trunk_normalise():
    assert normalise_caller("79160000101", "RU") == "+79160000101"
    assert normalise_caller("+79160000101", "RU") == "+79160000101"
    assert normalise_caller("89160000101", "RU") == "+79160000101"


def test_display_format_is_how_people_read_it():
    assert format_phone("+74951234567") == "+7 495 123-45-67"
    assert format_phone("+74951234567", "101") == "+7 495 123-45-67 ext. 101"


@given(st.text(max_size=100))
def test_any_text_either_parses_or_fails_cleanly(text):
    try:
        phone = parse_phone(text, "RU")
    except ValidationError:
        return
    assert phone.e164.startswith("+") and phone.e164[1:].isdigit()
