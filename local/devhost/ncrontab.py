"""NCRONTAB schedules, as the timer trigger reads them (times in UTC).

Six fields ``{second} {minute} {hour} {day} {month} {day-of-week}``; five fields (no seconds) are
accepted too. Each field takes ``*``, numbers, ranges ``a-b``, steps ``*/n`` / ``a-b/n`` / ``a/n``,
lists ``a,b``, and month (JAN-DEC) or day (SUN-SAT) names. Day-of-week 0 is Sunday.

As in NCrontab (and unlike Vixie cron), a time must match both the day and the day-of-week field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


class CronError(ValueError):
    pass


def _value(text: str, low: int, high: int, names: list[str] | None, *, field: str) -> int:
    upper = text.upper()
    if names and upper in names:
        return names.index(upper) + (1 if field == "month" else 0)
    if not text.isdigit():
        raise CronError(f"{field}: {text!r} is not a number")
    number = int(text)
    if not low <= number <= high:
        raise CronError(f"{field}: {number} is outside {low}-{high}")
    return number


def parse_field(text: str, low: int, high: int, *, field: str, names: list[str] | None = None) -> frozenset[int]:
    """The set of values one field allows."""
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{field}: empty list item in {text!r}")
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{field}: bad step {step_text!r}")
            step = int(step_text)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            first, last = part.split("-", 1)
            start = _value(first, low, high, names, field=field)
            end = _value(last, low, high, names, field=field)
            if end < start:
                raise CronError(f"{field}: range {part!r} runs backwards")
        else:
            start = _value(part, low, high, names, field=field)
            # "a/n" means from a to the end of the range, every n (as in NCrontab).
            end = high if step > 1 else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        fields = expression.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        if len(fields) != 6:
            raise CronError(f"{expression!r}: expected 6 fields (second minute hour day month weekday)")
        return cls(
            expression=expression,
            seconds=parse_field(fields[0], 0, 59, field="second"),
            minutes=parse_field(fields[1], 0, 59, field="minute"),
            hours=parse_field(fields[2], 0, 23, field="hour"),
            days=parse_field(fields[3], 1, 31, field="day"),
            months=parse_field(fields[4], 1, 12, field="month", names=_MONTHS),
            days_of_week=parse_field(fields[5], 0, 6, field="day-of-week", names=_DAYS),
        )

    def matches(self, when: datetime) -> bool:
        return (
            when.second in self.seconds
            and when.minute in self.minutes
            and when.hour in self.hours
            and self._day_matches(when)
        )

    def _day_matches(self, when: datetime) -> bool:
        # Python's weekday() is Monday=0; cron's day-of-week is Sunday=0.
        return when.month in self.months and when.day in self.days and (when.weekday() + 1) % 7 in self.days_of_week

    def next_after(self, after: datetime) -> datetime:
        """The first matching time strictly after ``after`` (naive times are taken as UTC)."""
        if after.tzinfo is None:
            after = after.replace(tzinfo=UTC)
        current = after.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        # Skips whole months, days, hours and minutes that cannot match; 5 years covers Feb 29 on a weekday.
        limit = current + timedelta(days=366 * 5)
        while current < limit:
            if current.month not in self.months:
                year, month = (current.year + 1, 1) if current.month == 12 else (current.year, current.month + 1)
                current = current.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)
                continue
            if not self._day_matches(current):
                current = (current + timedelta(days=1)).replace(hour=0, minute=0, second=0)
                continue
            if current.hour not in self.hours:
                current = (current + timedelta(hours=1)).replace(minute=0, second=0)
                continue
            if current.minute not in self.minutes:
                current = (current + timedelta(minutes=1)).replace(second=0)
                continue
            if current.second not in self.seconds:
                current += timedelta(seconds=1)
                continue
            return current
        raise CronError(f"{self.expression!r}: no occurrence within five years")

    def occurrences(self, after: datetime, count: int) -> list[datetime]:
        result: list[datetime] = []
        for _ in range(count):
            after = self.next_after(after)
            result.append(after)
        return result
