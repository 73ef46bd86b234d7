"""Dates and durations: follow-up due dates (calendar or business days), and ``24h``-style durations."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta

_DURATION = re.compile(r"^([0-9]{1,9})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``30s``, ``15m``, ``24h``, ``7d``, ``2w`` as a timedelta; ``ValueError`` for anything else."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a duration: use a number and a unit, e.g. 30s, 15m, 24h, 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


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
