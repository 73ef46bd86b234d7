"""A period summed up in one message: calls, sentiment, unresolved calls, follow-ups, dead deliveries.

``build_digest`` is a pure function of the reports and dead deliveries of the period; the
``sovereign-hub slack digest`` command (commands.py) fetches those and posts the result.
"""
from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from hub import format_duration, format_phone

from . import blockkit as bk
from .message import SENTIMENT_KEY, sentiment_dot

LIST_LIMIT = 10  # calls listed per section; the rest are counted
_SPAN = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """``24h``, ``90m``, ``7d``, ``2w`` back from now, or an ISO date/time (naive = UTC)."""
    now = now or datetime.now(timezone.utc)
    match = _SPAN.match(value)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is neither a span like 24h, 90m, 7d, 2w nor an ISO date/time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _analysis(report) -> dict:
    return report.analysis if isinstance(report.analysis, dict) else {}


def _who(report) -> str:
    if report.call.direction == "web":
        return "web visitor"
    return format_phone(report.customer.number) if report.customer.number else (report.customer.raw or "unknown")


def _call_line(report, settings, detail: str | None) -> str:
    link = f"<{settings.report_url(report.id)}|{bk.escape(_who(report))}>"
    text = f"• {link} {report.occurred_at:%m-%d %H:%M}"
    return text + (f" — {bk.truncate(bk.escape(detail), 140)}" if detail else "")


def _list_section(title: str, lines: list[str]) -> dict | None:
    if not lines:
        return None
    shown = lines[:LIST_LIMIT]
    if len(lines) > LIST_LIMIT:
        shown.append(f"_…and {len(lines) - LIST_LIMIT} more_")
    # Keep whole lines: drop lines from the end rather than cutting one in the middle.
    while bk.length("\n".join([f"*{title}*", *shown])) > bk.SECTION_TEXT and len(shown) > 1:
        shown.pop(-2 if shown[-1].startswith("_…") else -1)
    return bk.section("\n".join([f"*{title}*", *shown]))


def _attempts(count: Any) -> str:
    return f"{count} attempt" + ("" if count == 1 else "s")


def summarize(reports: list, dead: list) -> dict[str, Any]:
    """The figures of the digest (also handy for tests and other outputs)."""
    calls = [r for r in reports if r.event == "end-of-call-report"]
    failed = [r for r in reports if r.event == "status-update" and (r.call.status == "ended-with-error" or r.error)]
    scores = [_analysis(r).get(SENTIMENT_KEY) for r in calls]
    scores = [s for s in scores if isinstance(s, (int, float)) and not isinstance(s, bool)]
    return {
        "calls": len(calls),
        "directions": dict(Counter(r.call.direction for r in calls)),
        "talk_seconds": sum(r.duration_seconds or 0 for r in calls),
        "sentiment_average": round(sum(scores) / len(scores), 1) if scores else None,
        "sentiment_scored": len(scores),
        "unresolved": [r for r in calls if _analysis(r).get("resolved") is False],
        "follow_ups": [r for r in calls if _analysis(r).get("follow_up_needed") is True],
        "failed": failed,
        "dead": list(dead),
    }


def build_digest(reports: list, dead: list, *, since: datetime, until: datetime | None, settings,
                 sentiment_max: int = 10) -> dict:
    """The digest message for reports and dead deliveries of ``since``..``until`` (None: now)."""
    until = until or datetime.now(timezone.utc)
    figures = summarize(reports, dead)
    period = f"{since:%Y-%m-%d %H:%M} – {until:%Y-%m-%d %H:%M} UTC"
    directions = " · ".join(f"{n} {d}" for d, n in sorted(figures["directions"].items()))
    average = figures["sentiment_average"]
    sentiment = (f"{sentiment_dot(average, sentiment_max)} *{average}* / {sentiment_max} "
                 f"({figures['sentiment_scored']} scored)" if average is not None else "–")
    pairs = [
        ("Calls", f"*{figures['calls']}*" + (f" ({directions})" if directions else "")),
        ("Talk time", format_duration(figures["talk_seconds"]) or "0s"),
        ("Average sentiment", sentiment),
        ("Unresolved", str(len(figures["unresolved"]))),
        ("Follow-ups needed", str(len(figures["follow_ups"]))),
        ("Failed calls", str(len(figures["failed"]))),
        ("Dead deliveries", (":rotating_light: " if figures["dead"] else "") + str(len(figures["dead"]))),
    ]
    dead_by_destination = Counter(d.destination for d in figures["dead"])
    dead_lines = [f"• *{bk.escape(d.destination)}* (<{settings.report_url(d.report_id)}|report>, "
                  f"{_attempts(d.attempts)}): {bk.truncate(bk.escape(d.last_error or 'no error text'), 200)}"
                  for d in figures["dead"]]
    follow_up_ids = {r.id for r in figures["follow_ups"]}
    blocks = [
        bk.header(f":bar_chart: Call digest {period}"),
        *bk.field_sections(pairs),
        _list_section("Follow-ups needed", [_call_line(r, settings, r.summary) for r in figures["follow_ups"]]),
        _list_section("Unresolved (no follow-up planned)",
                      [_call_line(r, settings, r.summary) for r in figures["unresolved"] if r.id not in follow_up_ids]),
        _list_section("Failed calls", [_call_line(r, settings, r.error) for r in figures["failed"]]),
        _list_section("Dead deliveries (retry them in the dashboard)", dead_lines),
        bk.context([f"Sovereign Hub · {period}",
                    f"<{settings.public_url.rstrip('/')}/|Open the dashboard>"]),
    ]
    text = (f"Call digest {period}: {figures['calls']} calls, average sentiment "
            f"{average if average is not None else 'n/a'}, {len(figures['unresolved'])} unresolved, "
            f"{len(figures['follow_ups'])} follow-ups, {len(figures['failed'])} failed, "
            f"{len(figures['dead'])} dead deliveries"
            + (f" ({', '.join(f'{k}: {v}' for k, v in dead_by_destination.items())})" if dead_by_destination else ""))
    return bk.message(text, blocks)
