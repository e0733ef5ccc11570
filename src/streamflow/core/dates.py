"""Month dates of StreamFlow: parsing an ``as_of``, its snapshot timestamp, month arithmetic and
the two course months the demo and the defaults use. A leaf module: it imports only ``streamflow.core.errors``."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime

from streamflow.core.errors import InputError

# The course's two months (month_000, month_001): the demo, `bootstrap` and the monitor's defaults.
COURSE_START_AS_OF = date(2024, 1, 31)
DEMO_REF_AS_OF = "2024-01-31"
DEMO_CUR_AS_OF = "2024-02-29"
DEMO_MONTHS: dict[str, str] = {"month_000": DEMO_REF_AS_OF, "month_001": DEMO_CUR_AS_OF}


class InvalidDateError(InputError, ValueError):
    """An as_of that is not a real YYYY-MM-DD calendar date."""


def parse_as_of(value: str | date) -> date:
    """as_of must be a real calendar date (YYYY-MM-DD); it is only ever a bound parameter."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value.strip())
    except (AttributeError, ValueError) as exc:
        raise InvalidDateError(f"as_of must be a date YYYY-MM-DD, got {value!r}") from exc


def as_of_timestamp(d: date) -> datetime:
    """The snapshot timestamp of a month: midnight UTC of its as_of date."""
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def month_as_of(start_as_of: date, month: int) -> date:
    """The as-of date of month index ``month``: ``start_as_of`` plus ``month`` calendar months
    (a month-end start stays on month ends)."""
    y, m = divmod(start_as_of.month - 1 + month, 12)
    year, mon = start_as_of.year + y, m + 1
    last = calendar.monthrange(year, mon)[1]
    start_last = calendar.monthrange(start_as_of.year, start_as_of.month)[1]
    day = last if start_as_of.day == start_last else min(start_as_of.day, last)
    return date(year, mon, day)


def month_dir_name(month: int) -> str:
    """``month_000``-style directory name of month index ``month``."""
    return f"month_{month:03d}"
