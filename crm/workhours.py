"""Working hours: deadlines such as "call back within 2 hours" count only time the office is open."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class WorkingHours:
    timezone: str = "Europe/Moscow"
    start: time = time(9, 0)
    end: time = time(18, 0)
    days: frozenset[int] = frozenset({0, 1, 2, 3, 4})  # Monday = 0

    def is_open(self, moment: datetime) -> bool:
        local = moment.astimezone(ZoneInfo(self.timezone))
        return local.weekday() in self.days and self.start <= local.time() < self.end

    def add(self, moment: datetime, duration: timedelta) -> datetime:
        """`moment` plus `duration` of open time (a call at 17:30 with 2 h is due next working day 10:30)."""
        zone = ZoneInfo(self.timezone)
        local = moment.astimezone(zone)
        remaining = duration
        for _ in range(400):  # at most a year of closed days; the loop always ends sooner
            day_start = datetime.combine(local.date(), self.start, zone)
            day_end = datetime.combine(local.date(), self.end, zone)
            if local.weekday() in self.days and local < day_end:
                begin = max(local, day_start)
                if begin + remaining <= day_end:
                    return begin + remaining
                remaining -= day_end - begin
            local = datetime.combine(local.date() + timedelta(days=1), self.start, zone)
        raise ValueError("working hours have no open day")


def parse_hours(text: str) -> tuple[time, time]:
    """'09:00-18:00' → (09:00, 18:00)."""
    try:
        start_text, end_text = text.split("-")
        start, end = time.fromisoformat(start_text.strip()), time.fromisoformat(end_text.strip())
    except ValueError as exc:
        raise ValueError(f"{text!r} is not like 09:00-18:00") from exc
    if start >= end:
        raise ValueError("the day must end after it starts")
    return start, end


def parse_days(text: str) -> frozenset[int]:
    """'1-5' (Monday to Friday) or '1,2,3,4,5,6' → weekday numbers, Monday = 0."""
    days: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            first, last = (int(x) for x in part.split("-"))
            days.update(range(first, last + 1))
        elif part:
            days.add(int(part))
    if not days or not all(1 <= d <= 7 for d in days):
        raise ValueError(f"{text!r}: days are 1 (Monday) to 7 (Sunday)")
    return frozenset(d - 1 for d in days)
