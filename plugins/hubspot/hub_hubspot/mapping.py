"""Report -> HubSpot property values for the call, the follow-up task and the deal.

Formats follow HubSpot's CRM v3 reference: ``hs_timestamp`` in UTC ISO 8601,
``hs_call_duration`` in milliseconds, ``hs_call_direction`` INBOUND/OUTBOUND from the
HubSpot user's side, ``hs_call_recording_url`` HTTPS only; rich-text bodies as HTML.
"""
from __future__ import annotations

import calendar
import html
from datetime import datetime, time, timezone
from typing import Any

from hub import due_date

from .properties import ConversionError, number_text

# From the HubSpot user's side: the customer calling in, or a web visitor starting a call, is INBOUND.
DIRECTIONS = {"inbound": "INBOUND", "outbound": "OUTBOUND", "web": "INBOUND"}
CALL_STATUSES = {"ended": "COMPLETED", "completed": "COMPLETED", "busy": "BUSY", "no-answer": "NO_ANSWER",
                 "failed": "FAILED", "ended-with-error": "FAILED", "canceled": "CANCELED", "cancelled": "CANCELED"}
PRIORITIES = ("HIGH", "MEDIUM", "LOW")  # the values HubSpot's tasks reference lists
TASK_TYPES = ("CALL", "EMAIL", "TODO")

DEFAULT_CALL_TITLE = (
    "{{ 'Web' if call.direction == 'web' else call.direction|capitalize }} call"
    "{% if customer.number %} with {{ customer.number|phone }}{% endif %}"
)
DEFAULT_CALL_BODY = """{{ summary or 'No summary.' }}

{% for key, value in (analysis or {}).items() %}
{{ key|replace('_', ' ')|capitalize }}: {% if value is sameas true %}yes{% elif value is sameas false %}no{% else %}{{ value }}{% endif %}

{% endfor %}
{% if analysis_errors %}
Analysis problems: {{ analysis_errors|join('; ') }}
{% endif %}
{% if duration_seconds is not none %}
Duration: {{ duration_seconds|duration }}
{% endif %}
Report: {{ report_url }}"""
DEFAULT_TASK_SUBJECT = (
    "Follow up{% if analysis and analysis.intent %} ({{ analysis.intent }}){% endif %}: "
    "{{ customer.number|phone if customer.number else 'web caller' }}"
)
DEFAULT_TASK_BODY = """{{ summary or 'No summary.' }}

Call on {{ occurred_at|datetime }}, {{ duration_seconds|duration }}.
Report: {{ report_url }}"""
DEFAULT_DEAL_NAME = (
    "{{ (analysis.intent if analysis and analysis.intent else 'Sales')|capitalize }} opportunity: "
    "{{ customer.number|phone if customer.number else 'web caller' }}"
)
DEFAULT_DEAL_DESCRIPTION = "{{ summary }}\n\nReport: {{ report_url }}"


def as_html(text: str) -> str:
    """Plain template output as HubSpot rich text: escaped, one ``<br>`` per line break."""
    return "<br>".join(html.escape(line) for line in text.splitlines())


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_ms(moment: datetime) -> str:
    """Unix milliseconds, the form HubSpot's search filters take for date-time properties."""
    utc = moment.astimezone(timezone.utc)
    return str(calendar.timegm(utc.timetuple()) * 1000 + utc.microsecond // 1000)


def call_properties(report, call_cfg: dict, *, report_url: str, owner_id: str | None,
                    note: str | None = None) -> dict[str, str]:
    body = call_cfg["body"].render(report, report_url=report_url)
    if note:
        body = f"{body}\n{note}"
    props = {
        "hs_timestamp": iso(report.occurred_at),
        "hs_call_title": call_cfg["title"].render(report, report_url=report_url),
        "hs_call_body": as_html(body),
        "hs_call_status": CALL_STATUSES.get((report.call.status or "ended").lower(), "COMPLETED"),
    }
    if report.duration_seconds is not None:
        props["hs_call_duration"] = str(round(report.duration_seconds * 1000))
    direction = DIRECTIONS.get(report.call.direction)
    if direction:
        props["hs_call_direction"] = direction
    ours, theirs = report.phone_number.number, report.customer.number
    caller, callee = (theirs, ours) if report.call.direction != "outbound" else (ours, theirs)
    if caller:
        props["hs_call_from_number"] = caller
    if callee:
        props["hs_call_to_number"] = callee
    if report.recording_url and report.recording_url.lower().startswith("https://"):
        props["hs_call_recording_url"] = report.recording_url
    if owner_id:
        props["hubspot_owner_id"] = owner_id
    return props


def task_priority(report, follow_up: dict) -> str:
    """The first of HIGH, MEDIUM, LOW whose rule holds; else the default."""
    rules = follow_up["priority"].rules if follow_up["priority"] else {}
    for level in PRIORITIES:
        if level in rules and rules[level].matches(report):
            return level
    return follow_up["default_priority"]


def task_due(report, follow_up: dict) -> datetime:
    """Due N (business) days after the call, at the call's time of day (UTC)."""
    start = report.occurred_at.astimezone(timezone.utc)
    day = due_date(start, follow_up["due_in_days"], business_days=follow_up["business_days"])
    return datetime.combine(day, start.timetz())


def task_properties(report, follow_up: dict, *, report_url: str, owner_id: str | None) -> dict[str, str]:
    props = {
        "hs_timestamp": iso(task_due(report, follow_up)),
        "hs_task_subject": follow_up["subject"].render(report, report_url=report_url),
        "hs_task_body": as_html(follow_up["body"].render(report, report_url=report_url)),
        "hs_task_status": "NOT_STARTED",
        "hs_task_priority": task_priority(report, follow_up),
        "hs_task_type": follow_up["type"],
    }
    if owner_id:
        props["hubspot_owner_id"] = owner_id
    return props


def deal_properties(report, deal: dict, *, report_url: str, owner_id: str | None) -> tuple[dict[str, str], list[str]]:
    props = {
        "dealname": deal["name"].render(report, report_url=report_url),
        "pipeline": deal["pipeline"],
        "dealstage": deal["stage"],
    }
    problems = []
    description = deal["description"].render(report, report_url=report_url)
    if description:
        props["description"] = description
    if deal["amount"] is not None:
        amount: Any = deal["amount"].search(report)
        if amount is not None:
            try:
                props["amount"] = number_text(amount)
            except ConversionError as exc:
                problems.append(f"deal.amount: not sent, {exc}")
    if deal["close_in_days"] is not None:
        close = due_date(report.occurred_at, deal["close_in_days"])
        props["closedate"] = iso(datetime.combine(close, time(0, 0), tzinfo=timezone.utc))
    if owner_id:
        props["hubspot_owner_id"] = owner_id
    return props, problems
