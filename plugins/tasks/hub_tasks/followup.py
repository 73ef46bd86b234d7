"""The follow-up every tracker creates: one model, built once per report, that each tracker only maps.

The operator's keys shared by all five trackers live in ``FollowUpConfig``; ``build_follow_up``
turns a report plus that configuration into a ``FollowUp`` (title, description, due date,
priority level, assignee, labels, links). A tracker module never reads the report itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable

from marshmallow import Schema, ValidationError, fields, validate

import hub

from .call_text import escaped, with_call_textescaped

#: the priority levels of the shared model, most pressing first; each tracker maps them
PRIORITY_LEVELS = ("urgent", "high", "medium", "low", "none")

DEFAULT_TITLE = (
    "{% if followup %}{{ followup.title }}{% else %}"
    "{% if customer.number %}Call back {{ customer.number | phone }}"
    "{% else %}Follow up on a web call{% endif %}"
    "{% if analysis and analysis.intent %} ({{ analysis.intent }}){% endif %}"
    "{% endif %}"
)

DEFAULT_DESCRIPTION = """\
{% if followup %}
Asked for during the call{% if customer.number %} with {{ customer.number | phone }}{% endif %}, due {{ due }}\
{% if followup.notes %}: {{ followup.notes }}{% else %}.{% endif +%}
{% else %}
{% if customer.number %}Call back {{ customer.number | phone }}{% else %}Follow up with the web caller{% endif %}\
 by {{ due }}: {% if analysis and analysis.resolved == false %}the issue was not resolved on the call.\
{% else %}the call asked for a follow-up.{% endif +%}
{% endif %}

{{ summary or "No summary." }}

{% if analysis %}
Analysis:
{% for key, value in analysis | dictsort %}
- {{ key | replace("_", " ") }}: {{ ("yes" if value else "no") if value is boolean else value }}
{% endfor %}

{% endif %}
Call: {{ call.direction }}, {{ occurred_at | datetime }}, {{ duration_seconds | duration }}\
{% if phone_number.name %} via {{ phone_number.name }}{% endif +%}

{% if recording_url %}
Recording: {{ recording_url }}
{% endif %}
Report: {{ report_url }}"""

#: under every tracker's limit (Todoist and Trello take 16,384 characters, Jira 32,767)
MAX_DESCRIPTION = 16000

#: a low sentiment (1-10 scale) makes the follow-up high priority unless the operator says otherwise
DEFAULT_PRIORITY_RULES = {"high": "analysis.sentiment <= 3"}


@dataclass(frozen=True)
class FollowUp:
    """What to create, in tracker-neutral terms."""

    title: str
    description: str
    due: date
    priority: str  # one of PRIORITY_LEVELS
    assignee: str | None = None
    labels: tuple[str, ...] = ()
    report_id: str = ""
    report_url: str = ""
    recording_url: str | None = None
    customer_number: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def due_iso(self) -> str:
        return self.due.isoformat()


class PriorityRulesField(fields.Field):
    """A table ``level = "jmespath rule"``; levels are checked from most to least pressing."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValidationError('must be a table of level = "jmespath rule", e.g. high = "analysis.sentiment <= 3"')
        unknown = sorted(set(value) - set(PRIORITY_LEVELS))
        if unknown:
            raise ValidationError(f"unknown priority level(s) {', '.join(unknown)}; "
                                  f"use {', '.join(PRIORITY_LEVELS)}")
        try:
            return {level: hub.Rule(value[level]) for level in PRIORITY_LEVELS if level in value}
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else {level: rule.expression for level, rule in value.items()}


def level_table(default: dict[str, Any], value_field: fields.Field) -> fields.Dict:
    """A ``{priority level: tracker value}`` table, e.g. Jira priority names per level."""
    return fields.Dict(keys=fields.String(validate=validate.OneOf(PRIORITY_LEVELS)), values=value_field,
                       load_default=lambda: dict(default))


class FollowUpConfig(Schema):
    """The keys every tracker shares. Subclasses add credentials and where the task goes."""

    title = hub.TemplateField(load_default=lambda: hub.Template(DEFAULT_TITLE))
    description = hub.TemplateField(load_default=lambda: hub.Template(DEFAULT_DESCRIPTION))
    due_in_days = fields.Integer(load_default=1, validate=validate.Range(min=0, max=365))
    business_days = fields.Boolean(load_default=False)
    priority = PriorityRulesField(load_default=lambda: PriorityRulesField().deserialize(DEFAULT_PRIORITY_RULES))
    default_priority = fields.String(load_default="medium", validate=validate.OneOf(PRIORITY_LEVELS))
    assignee = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    labels = fields.List(fields.String(validate=validate.Length(min=1)), load_default=list)
    timeout_seconds = fields.Float(load_default=15.0, validate=validate.Range(min=1, max=120))


def priority_level(report: hub.CallReport, config: dict[str, Any]) -> str:
    """The first level whose rule matches the report, else ``default_priority``."""
    for level, rule in config["priority"].items():
        if rule.matches(report):
            return level
    return config["default_priority"]


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def render(config: dict[str, Any], key: str, report: hub.CallReport | dict, extra: dict[str, Any]) -> str:
    """Render the operator's template ``key``; any failure is permanent and names the key."""
    try:
        return config[key].render(report, **extra)
    except hub.Permanent as exc:
        raise hub.Permanent(f"{exc.reason}; fix the {key!r} key") from None


def build_follow_up(report: hub.CallReport, config: dict[str, Any], settings: hub.HubSettings,
                    escape: Callable[[str], str] | None = None, followup: dict[str, Any] | None = None) -> FollowUp:
    """The follow-up for one report; a template that cannot render raises ``Permanent``.

    ``escape`` (a tracker whose descriptions are Markdown) is applied to the call text the
    description template reads; the title is plain text everywhere and is rendered as is.
    ``followup`` is what the ``create_followup`` tool asked for during the call (``title``,
    ``notes``): the templates see it as ``followup`` (None for a report's own follow-up).
    """
    due = hub.due_date(report.occurred_at, config["due_in_days"], business_days=config["business_days"])
    level = priority_level(report, config)
    report_url = settings.report_url(report.id)
    extra = {"report_url": report_url, "due": due.isoformat(), "priority": level, "followup": followup}
    title = render(config, "title", report, extra)
    if not title:
        raise hub.Permanent("the title template rendered an empty string; fix the 'title' key")
    described = with_call_textescaped(report.data, escape) if escape else report
    # the follow-up's title and notes are the LLM's words, steered by the caller: call text too
    described_extra = {**extra, "followup": escaped(followup, escape)} if escape and followup else extra
    return FollowUp(
        title=shorten(" ".join(title.split()), 255),
        description=shorten(render(config, "description", described, described_extra), MAX_DESCRIPTION),
        due=due,
        priority=level,
        assignee=config["assignee"],
        labels=tuple(config["labels"]),
        report_id=report.id,
        report_url=report_url,
        recording_url=report.recording_url,
        customer_number=report.customer.number,
    )
