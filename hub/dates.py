"""Due dates for follow-ups: N calendar days, or N business days (Monday to Friday)."""
from __future__ import annotations

from datetime import date, datetime, timedelta


def due_date(start: date | datetime, days: int, *, business_days: bool = False) -> date:
    """The day ``days`` after ``start``; with ``business_days`` weekends are not counted.

    Counted like a spreadsheet's WORKDAY: one business day after a Friday or a Saturday
    is the Monday.
    """
    day = start.date() if isinstance(start, datetime) else start
    if not business_days:
        return day + timedelta(days=days)
    remaining = days
    while remaining > 0:
        day += timedelta(days=1)
        if day.weekday() < 5:
            remaining -= 1
    return day
