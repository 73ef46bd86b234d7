"""The analytics figures: calls, sentiment, every analysis field, durations and deliveries over a
window of UTC days, for one line, one assistant or all.

Each field of the configured ``[analysis] schema`` is summarized by its type, so what the
assistant is asked to fill in (intent, resolution, follow-up, quality) shows without more
configuration: an enum counts each value, a boolean gives the share of true, a number its
average and its average per day. Only end-of-call reports count as calls. The figures are
computed from the window's reports in one pass (the window is at most ``MAX_DAYS``).
"""
from __future__ import annotations

import csv
import io
import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .report import CallReport
from .store import DEAD, SUCCEEDED

if TYPE_CHECKING:
    from .store import Delivery, Store

CALL_EVENT = "end-of-call-report"
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
#: call duration buckets: (label, lower bound in seconds); each runs to the next one's bound
DURATION_BUCKETS = (("under 30 s", 0), ("30 s to 1 min", 30), ("1 to 2 min", 60), ("2 to 5 min", 120),
                    ("5 to 10 min", 300), ("10 min or more", 600))


@dataclass(frozen=True)
class FieldSummary:
    """One analysis field: ``kind`` is ``enum`` (``counts``), ``boolean`` (``rate`` of true) or
    ``number`` (``average``, and ``per_day`` averages for the trend); ``answered`` counts the
    calls whose analysis held a value of the field's type."""

    name: str
    kind: str
    answered: int
    counts: dict[str, int] | None = None
    rate: float | None = None
    average: float | None = None
    per_day: list[float | None] | None = None


@dataclass(frozen=True)
class DestinationSummary:
    """Deliveries of the window's calls to one destination; ``p50_seconds``/``p95_seconds``: from
    the report's acknowledgement (received_at) to the delivery's success."""

    name: str
    deliveries: int
    succeeded: int
    dead: int
    success_rate: float | None
    p50_seconds: float | None
    p95_seconds: float | None


@dataclass(frozen=True)
class DurationBucket:
    bucket: str
    calls: int


@dataclass(frozen=True)
class Analytics:
    since: datetime
    dates: list[str]
    line: str | None
    assistant: str | None
    calls: int
    calls_per_day: list[int]
    sentiment_per_day: list[float | None]
    hour_of_week: list[list[int]]  # [weekday Mon..Sun][hour 0..23], UTC
    fields: list[FieldSummary]
    durations: list[DurationBucket]
    destinations: list[DestinationSummary]
    lines: list[str]  # every line and assistant seen in the window, for choosing one
    assistants: list[str]


def assistant_name(report: CallReport) -> str | None:
    assistant = report.assistant if isinstance(report.assistant, dict) else {}
    return assistant.get("name") or assistant.get("id")


def compute(store: Store, schema: dict | None, since: datetime, days: int, *, line: str | None = None,
            assistant: str | None = None) -> Analytics:
    dates = [(since + timedelta(days=n)).date().isoformat() for n in range(days)]
    index = {date: n for n, date in enumerate(dates)}
    seen = [r for r in store.list_reports(since=since, limit=None) if r.event == CALL_EVENT]
    calls = [r for r in seen if (line is None or r.phone_number.number == line)
             and (assistant is None or assistant_name(r) == assistant)]
    per_day = [0] * days
    hour_of_week = [[0] * 24 for _ in WEEKDAYS]
    durations = Counter()
    for report in calls:
        when = report.received_at
        per_day[index[when.date().isoformat()]] += 1
        hour_of_week[when.weekday()][when.hour] += 1
        if report.duration_seconds is not None:
            durations[_bucket(report.duration_seconds)] += 1
    properties = (schema or {}).get("properties") or {}
    summaries = [s for s in (_summarize(name, spec, calls, index, days) for name, spec in properties.items()) if s]
    sentiment = _daily_averages(calls, "sentiment", index, days)
    return Analytics(
        since=since, dates=dates, line=line, assistant=assistant, calls=len(calls), calls_per_day=per_day,
        sentiment_per_day=sentiment, hour_of_week=hour_of_week, fields=summaries,
        durations=[DurationBucket(label, durations[label]) for label, _ in DURATION_BUCKETS],
        destinations=_destinations(store, calls),
        lines=sorted({r.phone_number.number for r in seen if r.phone_number.number}),
        assistants=sorted({name for r in seen if (name := assistant_name(r))}))


def _bucket(seconds: float) -> str:
    return next(label for label, low in reversed(DURATION_BUCKETS) if seconds >= low)


def _kind(spec: dict) -> str | None:
    types = spec.get("type")
    types = set(types) if isinstance(types, list) else {types}
    if "enum" in spec:
        return "enum"
    if "boolean" in types:
        return "boolean"
    if types & {"integer", "number"}:
        return "number"
    return None


def _value(report: CallReport, name: str, kind: str) -> Any:
    """The field's value when it is of the field's kind (an analysis that broke its schema is left out)."""
    value = (report.analysis or {}).get(name) if isinstance(report.analysis, dict) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind == "number":
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None
    return value if isinstance(value, (str, int, float, bool)) else None


def _daily_averages(calls: list[CallReport], name: str, index: dict[str, int], days: int) -> list[float | None]:
    sums, counts = [0.0] * days, [0] * days
    for report in calls:
        value = _value(report, name, "number")
        if value is not None:
            n = index[report.received_at.date().isoformat()]
            sums[n] += value
            counts[n] += 1
    return [round(s / c, 2) if c else None for s, c in zip(sums, counts)]


def _summarize(name: str, spec: Any, calls: list[CallReport], index: dict[str, int], days: int) -> FieldSummary | None:
    kind = _kind(spec) if isinstance(spec, dict) else None
    if kind is None:
        return None
    values = [v for v in (_value(r, name, kind) for r in calls) if v is not None]
    if kind == "enum":
        counted = Counter(str(v) for v in values)
        counts = {str(option): counted.pop(str(option), 0) for option in spec["enum"]} | dict(counted)
        return FieldSummary(name, kind, len(values), counts=counts)
    if kind == "boolean":
        return FieldSummary(name, kind, len(values), rate=round(sum(values) / len(values), 3) if values else None)
    return FieldSummary(name, kind, len(values), average=round(sum(values) / len(values), 2) if values else None,
                        per_day=_daily_averages(calls, name, index, days))


def _destinations(store: Store, calls: list[CallReport]) -> list[DestinationSummary]:
    received = {r.id: r.received_at for r in calls}
    by_name: dict[str, list[Delivery]] = {}
    for rows in store.deliveries_by_report(received).values():
        for delivery in rows:
            by_name.setdefault(delivery.destination, []).append(delivery)
    summaries = []
    for name, rows in sorted(by_name.items()):
        done = [d for d in rows if d.status == SUCCEEDED]
        dead = sum(d.status == DEAD for d in rows)
        waits = sorted((d.updated_at - received[d.report_id]).total_seconds() for d in done)
        finished = len(done) + dead
        summaries.append(DestinationSummary(name, len(rows), len(done), dead,
                                            round(len(done) / finished, 3) if finished else None,
                                            percentile(waits, 50), percentile(waits, 95)))
    return summaries


def percentile(ordered: list[float], p: float) -> float | None:
    """The nearest-rank percentile of an ascending list (None for an empty one)."""
    if not ordered:
        return None
    return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 3)


def to_csv(figures: Analytics) -> str:
    """Every figure as ``figure,key,value`` rows (one table a spreadsheet can pivot)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["figure", "key", "value"])
    for date, calls, sentiment in zip(figures.dates, figures.calls_per_day, figures.sentiment_per_day):
        writer.writerow(["calls_per_day", date, calls])
        writer.writerow(["average_sentiment", date, "" if sentiment is None else sentiment])
    for day, hours in zip(WEEKDAYS, figures.hour_of_week):
        for hour, n in enumerate(hours):
            writer.writerow(["calls_by_hour_of_week", f"{day} {hour:02d}:00", n])
    for summary in figures.fields:
        if summary.kind == "enum":
            writer.writerows([f"{summary.name}.count", value, n] for value, n in summary.counts.items())
        elif summary.kind == "boolean":
            writer.writerow([f"{summary.name}.rate_true", "", "" if summary.rate is None else summary.rate])
        else:
            writer.writerow([f"{summary.name}.average", "", "" if summary.average is None else summary.average])
            writer.writerows([f"{summary.name}.average_per_day", date, "" if v is None else v]
                             for date, v in zip(figures.dates, summary.per_day))
    writer.writerows(["duration", d.bucket, d.calls] for d in figures.durations)
    for d in figures.destinations:
        for key in ("deliveries", "succeeded", "dead", "success_rate", "p50_seconds", "p95_seconds"):
            value = getattr(d, key)
            writer.writerow([f"destination.{key}", d.name, "" if value is None else value])
    return out.getvalue()
