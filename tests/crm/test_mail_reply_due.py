"""A reply task's deadline counts office hours: mail on Saturday night is due on Monday, not at 02:25."""

from datetime import datetime
from zoneinfo import ZoneInfo

from crm import mail as mail_db
from crm.workhours import WorkingHours

MOSCOW = ZoneInfo("Europe/Moscow")
RAW = (b"From: Ivan Petrov <ivan@client.example>\r\nTo: sales@demo\r\nSubject: Price list\r\n\r\n"
       b"Please send the price list.\r\n")


async def test_saturday_night_mail_is_due_monday_morning(conn, factory):
    manager = await factory.user("manager1", extension="101")
    await factory.contact("Ivan Petrov", manager=manager, emails=["ivan@client.example"])
    message_id = await mail_db.store_raw(conn, RAW, "127.0.0.1", "ivan@client.example", ["sales@demo"])
    saturday_night = datetime(2026, 11, 28, 22, 25, tzinfo=MOSCOW)
    await mail_db.process_stored(conn, message_id, RAW, "RU", reply_within_hours=4, now=saturday_night,
                                 hours=WorkingHours("Europe/Moscow"))
    due = await conn.fetchval("SELECT due_at FROM tasks WHERE mail_message_id = $1", message_id)
    assert due.astimezone(MOSCOW) == datetime(2026, 11, 30, 13, 0, tzinfo=MOSCOW)  # Monday 09:00 + 4 h
