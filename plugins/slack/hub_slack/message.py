"""One call report -> one Block Kit message (top-level ``text`` + ``blocks``).

Layout: header (who called) / context (when, duration, our line, assistant) / the summary
(or the error of a failed call) with the mentions / the analysis as fields, sentiment first
with a coloured dot / analysis problems / buttons to the report and the recording.
"""
from __future__ import annotations

import json
from typing import Any

from hub import Permanent, Template, format_duration, format_phone

from . import blockkit as bk

DEFAULT_HEADER = Template(
    "{% if event == 'status-update' %}:warning: Call failed: {{ caller }}"
    "{% elif call.direction == 'web' %}:globe_with_meridians: Web call"
    "{% elif call.direction == 'outbound' %}:telephone_receiver: Outbound call to {{ caller }}"
    "{% else %}:telephone_receiver: Inbound call from {{ caller }}{% endif %}"
)
DEFAULT_SUMMARY = Template(
    "{% if event == 'status-update' %}*Error:* {{ error or 'the platform gave no error text' }}"
    "{% else %}{{ summary or '_No summary for this call._' }}{% endif %}"
)
DEFAULT_TEXT = Template(
    "{{ title }}{% if sentiment is not none %} (sentiment {{ sentiment }}){% endif %}"
    "{% if event == 'status-update' %}: {{ error }}{% elif summary %}: {{ summary }}{% endif %}"
)

SENTIMENT_KEY = "sentiment"


def caller(report) -> str:
    """The other party as a person reads it: '+31 6 23456789', with the name when known."""
    customer = report.customer
    if report.call.direction == "web":
        return "web visitor"
    number = format_phone(customer.number) if customer.number else (customer.raw or "unknown number")
    return f"{customer.name} ({number})" if customer.name else number


def local_time(moment) -> str:
    """A time each reader sees in their own time zone (Slack's date token), UTC as the fallback."""
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{moment:%Y-%m-%d %H:%M} UTC>"


def sentiment_dot(value: Any, scale_max: int) -> str:
    """A coloured dot for a sentiment: numbers by their share of the scale, words by meaning."""
    if isinstance(value, bool) or value is None:
        return ":white_circle:"
    if isinstance(value, (int, float)):
        share = value / scale_max
        return ":red_circle:" if share <= 0.3 else ":large_yellow_circle:" if share <= 0.6 else ":large_green_circle:"
    word = str(value).lower()
    if word in ("negative", "angry", "bad", "frustrated"):
        return ":red_circle:"
    if word in ("positive", "happy", "good"):
        return ":large_green_circle:"
    return ":large_yellow_circle:"


def show_value(value: Any) -> str:
    """An analysis value as mrkdwn: Yes/No, lists joined, objects as compact JSON, all escaped."""
    if value is True:
        return "Yes"
    if value is False:
        return "No"
    if value is None or value == "" or value == [] or value == {}:
        return "–"
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return bk.escape(", ".join(str(v) for v in value))
    if isinstance(value, (dict, list)):
        return bk.escape(json.dumps(value, ensure_ascii=False))
    return bk.escape(value)


def label_for(key: str) -> str:
    """``follow_up_needed`` -> ``Follow up needed``."""
    text = key.replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:]


def analysis_pairs(report, config: dict) -> list[tuple[str, str]]:
    """The fields to show: ``analysis_fields`` (label -> JMESPath) or every analysis key."""
    scale_max = config.get("sentiment_max", 10)
    mapping = config.get("analysis_fields")
    if mapping:
        values = [(label, rule.search(report), rule.expression.strip() in ("analysis.sentiment", "sentiment"))
                  for label, rule in mapping.rules.items()]
    else:
        analysis = report.analysis or {}
        keys = sorted(analysis, key=lambda k: k != SENTIMENT_KEY)  # sentiment first, others as given
        values = [(label_for(k), analysis[k], k == SENTIMENT_KEY) for k in keys]
    pairs = []
    for label, value, is_sentiment in values:
        if is_sentiment and value is not None and not isinstance(value, (dict, list)):
            suffix = f" / {scale_max}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
            pairs.append((label, f"{sentiment_dot(value, scale_max)} *{bk.escape(value)}*{suffix}"))
        else:
            pairs.append((label, show_value(value)))
    return pairs


def template_extras(report, config: dict, settings) -> dict[str, Any]:
    """Names the templates see besides the report's own fields.

    ``summary`` and ``error`` are replaced by their mrkdwn-escaped forms, so a summary that
    contains ``<`` or ``&`` can neither break the message nor ping anyone.
    """
    analysis = report.analysis if isinstance(report.analysis, dict) else {}
    return {
        "caller": caller(report),
        "report_url": settings.report_url(report.id),
        "summary": bk.escape(report.summary) if report.summary else "",
        "error": bk.escape(report.error) if report.error else "",
        "sentiment": analysis.get(SENTIMENT_KEY),
        "mentions": " ".join(config.get("mentions") or []),
    }


def render(key: str, default: Template, report, config: dict, destination: str, **names: Any) -> str:
    """The operator's template ``key`` (or the default) rendered; a failure names the key to fix."""
    try:
        return (config.get(key) or default).render(report, **names)
    except Permanent as exc:
        raise Permanent(f"destination {destination!r}: the `{key}` template failed on report {report.id}: "
                        f"{exc.reason}; fix `{key}` (or remove it for the default)") from None


def build_message(report, config: dict, settings, destination: str = "slack") -> dict:
    """The message for one report; every text kept within Slack's limits."""
    extras = template_extras(report, config, settings)
    # A template that renders nothing must not yield an empty text object (Slack rejects those).
    title = render("header", DEFAULT_HEADER, report, config, destination, **extras) or "Call report"
    body = render("summary", DEFAULT_SUMMARY, report, config, destination, **extras) or "_No summary._"
    # The header is plain text; the notification text is mrkdwn, so the title is escaped there.
    safe_title = bk.escape(title)
    fallback = render("text", DEFAULT_TEXT, report, config, destination, title=safe_title, **extras) or safe_title
    mentions = extras["mentions"]
    report_url = extras["report_url"]

    facts = [f":calendar: {local_time(report.occurred_at)}"]
    if report.duration_seconds is not None:
        facts.append(f":stopwatch: {format_duration(report.duration_seconds)}")
    line = report.phone_number
    number = format_phone(line.number) if line.number else ""
    line_label = f"{line.name} ({number})" if line.name and number else (line.name or number)
    if line_label:
        facts.append(f":phone: {bk.escape(line_label)}")
    assistant_name = (report.assistant or {}).get("name") if isinstance(report.assistant, dict) else None
    if assistant_name:
        facts.append(f":robot_face: {bk.escape(assistant_name)}")

    # The cut summary keeps room for a pointer to the full text in the dashboard.
    more = f" <{report_url}|full text in the hub>"
    prefix = f"{mentions}\n" if mentions else ""
    room = bk.SECTION_TEXT - bk.length(prefix)
    summary_text = body if bk.length(body) <= room else bk.truncate(body, room - bk.length(more)) + more

    blocks: list[dict | None] = [bk.header(title), bk.context(facts), bk.section(prefix + summary_text)]
    blocks.extend(bk.field_sections(analysis_pairs(report, config)))
    if report.analysis_errors:
        problems = "; ".join(bk.escape(e) for e in report.analysis_errors)
        blocks.append(bk.context([f":warning: The analysis did not match the configured schema: {problems}"]))
    blocks.append(bk.actions([
        bk.button("Open report", report_url, "open_report", style="primary"),
        bk.button("Play recording", report.recording_url or "", "play_recording")
        if config.get("show_recording", True) else None,
    ]))
    text = f"{mentions} {fallback}" if mentions else fallback
    return bk.message(text, blocks)
