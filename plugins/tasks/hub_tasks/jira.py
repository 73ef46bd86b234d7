"""``jira``: a Jira Cloud issue, ``POST /rest/api/3/issue`` with Basic auth (email + API token)."""
from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates

import hub

from .adf import to_adf
from .base import CreatedTask, TrackerDestination, json_or_none
from .followup import FollowUp, FollowUpConfig, level_table

#: Jira's default priority scheme; "none" sends no priority (the project default applies)
DEFAULT_PRIORITY_NAMES = {"urgent": "Highest", "high": "High", "medium": "Medium", "low": "Low"}

#: which configuration key to fix when Jira rejects one of the fields we send
FIELD_KEYS = {"project": "project", "issuetype": "issue_type", "priority": "priority_names",
              "assignee": "assignee", "labels": "labels", "summary": "title", "description": "description",
              "duedate": "due_in_days"}


class JiraConfig(FollowUpConfig):
    base_url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False,
                          metadata={"example": "https://acme.atlassian.net"})
    email = fields.Email(required=True)
    api_token = fields.String(required=True, validate=validate.Length(min=1))
    project = fields.String(required=True, validate=validate.Regexp(
        r"^[A-Z][A-Z0-9_]+$|^\d+$", error="must be a project key like SUP (or a numeric project id)"))
    issue_type = fields.String(load_default="Task", validate=validate.Length(min=1))
    priority_names = level_table(DEFAULT_PRIORITY_NAMES, fields.String(validate=validate.Length(min=1)))
    fields_ = hub.MappingField(data_key="fields", attribute="fields", load_default=None)

    @validates("labels")
    def labels_have_no_spaces(self, value, **kwargs):
        spaced = [label for label in value if any(ch.isspace() for ch in label)]
        if spaced:
            raise ValidationError(f"Jira labels cannot contain spaces: {', '.join(map(repr, spaced))}")


def issue_payload(follow_up: FollowUp, config: dict[str, Any]) -> dict[str, Any]:
    """The body of ``POST /rest/api/3/issue`` for one follow-up."""
    project = config["project"]
    issue_fields: dict[str, Any] = {
        "project": {"id": project} if project.isdigit() else {"key": project},
        "issuetype": {"name": config["issue_type"]},
        "summary": follow_up.title,
        "description": to_adf(follow_up.description),
        "duedate": follow_up.due_iso,
    }
    priority = config["priority_names"].get(follow_up.priority)
    if priority:
        issue_fields["priority"] = {"name": priority}
    if follow_up.labels:
        issue_fields["labels"] = list(follow_up.labels)
    if follow_up.assignee:
        issue_fields["assignee"] = {"accountId": follow_up.assignee}
    issue_fields.update(follow_up.extra)
    return {"fields": issue_fields}


def error_problem(body: Any) -> str | None:
    """Jira's 400 shape ``{"errorMessages": [...], "errors": {field: message}}`` as one line."""
    if not isinstance(body, dict):
        return None
    parts = [str(m) for m in body.get("errorMessages") or []]
    for name, message in (body.get("errors") or {}).items():
        key = FIELD_KEYS.get(name, "fields")
        parts.append(f"field {name!r}: {message} (fix the {key!r} key)")
    return "; ".join(parts) or None


class JiraDestination(TrackerDestination):
    type = "jira"
    vendor = "Jira"
    Config = JiraConfig
    description = "Open a Jira Cloud issue for each call that needs a follow-up"
    rate_limits = {"default": (5, 10)}
    auth_hint = ("Check 'email' and 'api_token' (an Atlassian API token of that account); the account "
                 "needs the Browse projects and Create issues permissions in the project.")

    def extra_fields(self, report) -> dict[str, Any]:
        mapping = self.config["fields"]
        return mapping.evaluate(report) if mapping else {}

    def create(self, follow_up: FollowUp, ctx: hub.DeliveryContext) -> CreatedTask:
        base = self.config["base_url"].rstrip("/")
        response = self.send(
            ctx, "POST", f"{base}/rest/api/3/issue", json=issue_payload(follow_up, self.config),
            auth=(self.config["email"], self.config["api_token"]), headers={"Accept": "application/json"},
            dry_run_response={"id": "10000", "key": f"{self.config['project']}-1",
                              "self": f"{base}/rest/api/3/issue/10000"})
        self.fail(response, error_problem(json_or_none(response)),
                  fix="Check the project's create screen for that field")
        created = json_or_none(response) or {}
        if not created.get("id"):
            self.reject(f"no issue id in the answer: {response.text[:200]}", http_status=response.status_code)
        key = created.get("key")
        return CreatedTask(id=str(created["id"]), key=key, url=f"{base}/browse/{key}" if key else None)
