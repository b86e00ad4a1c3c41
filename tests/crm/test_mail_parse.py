"""Mail parsing on its own: the corpus fields, and hostile bytes that must never crash the intake."""

from hypothesis import given, settings
from hypothesis import strategies as st

from crm.mail import parse_message, process_stored, store_raw
from tests.conftest import FIXTURES

HANDLED = (ValueError, RecursionError, LookupError, TypeError, IndexError)


def test_corpus_fields():
    form = parse_message((FIXTURES / "mail" / "web_form_ru.eml").read_bytes(), "RU")
    assert (form.kind, form.name, form.phones, form.email) == (
        "web_form", "Анна Кузнецова", ["+79165551234"], "anna.k@example.ru")
    chat = parse_message((FIXTURES / "mail" / "jivo_chat_koi8r.eml").read_bytes(), "RU")
    assert chat.subject == "Новое сообщение из чата"
    assert chat.message.splitlines() == ["[14:02:11] Пётр: Здравствуйте! Есть ли в наличии редуктор Ч-100?",
                                         "[14:02:40] Пётр: Перезвоните, пожалуйста."]
    client = parse_message((FIXTURES / "mail" / "known_client_cp1251_attachment.eml").read_bytes(), "RU")
    assert [(name, kind) for name, kind, _ in client.attachments] == [("Спецификация.pdf", "application/pdf")]
    assert client.text.startswith("Добрый день!")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_parse_or_raise_a_handled_error(data):
    try:
        parse_message(data, "RU")
    except HANDLED:
        pass


@settings(max_examples=100, deadline=None)
@given(headers=st.lists(st.tuples(st.sampled_from(["Subject", "From", "Content-Type", "Reply-To",
                                                    "Content-Transfer-Encoding", "Content-Disposition"]),
                                  st.text(max_size=200).filter(lambda v: "\n" not in v and "\r" not in v)),
                        max_size=8),
       body=st.binary(max_size=500))
def test_odd_headers_parse_or_raise_a_handled_error(headers, body):
    raw = "".join(f"{k}: {v}\r\n" for k, v in headers).encode("utf-8", "replace") + b"\r\n" + body
    try:
        parse_message(raw, "RU")
    except HANDLED:
        pass


async def test_absurd_nesting_is_stored_unparsed_with_the_reason(conn):
    depth = 3000
    raw = b"From: x@example.com\r\n"
    for level in range(depth):
        raw += f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n'.encode()
    raw += b"Content-Type: text/plain\r\n\r\nhi\r\n"
    message_id = await store_raw(conn, raw, "127.0.0.1", "x@example.com", ["sales@x"])
    result = await process_stored(conn, message_id, raw, "RU")
    row = await conn.fetchrow("SELECT status, error, raw FROM mail_messages WHERE id = $1", message_id)
    assert result.status == row["status"] == "unparsed"
    assert row["error"] and bytes(row["raw"]) == raw
