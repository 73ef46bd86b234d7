"""``jira``: a Jira Cloud issue, ``POST /rest/api/3/issue`` with Basic auth (email + API token)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlsplit

from marshmallow import ValidationError, fields, validate, validates, validates_schema

import hub

from .adf import to_adf
from .base import CreatedTask, TrackerDestination, idempotency_uuid, json_or_none
from .followup import FollowUp, FollowUpConfig, level_table

#: Jira's default priority scheme; "none" sends no priority (the project default applies)
DEFAULT_PRIORITY_NAMES = {"urgent": "Highest", "high": "High", "medium": "Medium", "low": "Low"}

#: what to fix when Jira rejects one of the fields we send
FIELD_FIXES = {
    "project": "fix the 'project' key",
    "issuetype": "fix the 'issue_type' key",
    "priority": "fix the 'priority_names' key (priority_names = {} for a project without priorities)",
    "assignee": "fix the 'assignee' key (an accountId that may be assigned in the project)",
    "labels": "fix the 'labels' key, or add Labels to the project's create screen (or set dedupe_label = false)",
    "summary": "fix the 'title' key",
    "description": "fix the 'description' key",
    "duedate": "add Due date to the project's create screen",
}


#: the gateway a scoped API token must be used through: https://api.atlassian.com/ex/jira/<cloudId>
GATEWAY_HOST = "api.atlassian.com"
#: a 429's RateLimit-Reason when Jira sends no Retry-After: the per-second burst limit (per tenant,
#: endpoint and method) and the per-issue write limit clear within seconds
SHORT_LIMITS = {"jira-burst-based": 1.0, "jira-per-issue-on-write": 2.0}


class JiraConfig(FollowUpConfig):
    base_url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False,
                          metadata={"example": "https://acme.atlassian.net"})
    #: where people open issues; required when base_url is the API gateway (scoped tokens)
    site_url = fields.Url(load_default=None, schemes={"https", "http"}, require_tld=False,
                          metadata={"example": "https://acme.atlassian.net"})
    email = fields.Email(required=True)
    api_token = fields.String(required=True, validate=validate.Length(min=1))
    project = fields.String(required=True, validate=validate.Regexp(
        r"^[A-Z][A-Z0-9_]+$|^\d+$", error="must be a project key like SUP (or a numeric project id)"))
    issue_type = fields.String(load_default="Task", validate=validate.Length(min=1))
    priority_names = level_table(DEFAULT_PRIORITY_NAMES, fields.String(validate=validate.Length(min=1)))
    fields_ = hub.MappingField(data_key="fields", attribute="fields", load_default=None)
    dedupe_label = fields.Boolean(load_default=True)

    @validates_schema
    def gateway_needs_the_site(self, data, **kwargs):
        if urlsplit(data.get("base_url") or "").hostname == GATEWAY_HOST and not data.get("site_url"):
            raise ValidationError("required when base_url is https://api.atlassian.com/ex/jira/<cloudId> (a scoped "
                                  "API token): the site people open issues on, e.g. https://acme.atlassian.net",
                                  "site_url")

    @validates("labels")
    def labels_have_no_spaces(self, value, **kwargs):
        spaced = [label for label in value if any(ch.isspace() for ch in label)]
        if spaced:
            raise ValidationError(f"Jira labels cannot contain spaces: {', '.join(map(repr, spaced))}")


def reset_wait(value: str | None) -> float | None:
    """Seconds until ``X-RateLimit-Reset`` (ISO 8601, e.g. ``2026-03-02T10:15Z``); None if garbled."""
    try:
        moment = datetime.fromisoformat((value or "").strip())
    except ValueError:
        return None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())


def delivery_label(destination_name: str, delivery_id: str) -> str:
    """A label fixed per delivery (``hub-`` + 16 hex), so a retry can search for what it created."""
    return "hub-" + idempotency_uuid(destination_name, delivery_id).replace("-", "")[:16]


def issue_payload(follow_up: FollowUp, config: dict[str, Any], marker: str | None = None) -> dict[str, Any]:
    """The body of ``POST /rest/api/3/issue`` for one follow-up (``marker``: the delivery label)."""
    project = config["project"]
    issue_fields: dict[str, Any] = {
        "project": {"id": project} if project.isdigit() else {"key": project},
        "issuetype": {"name": config["issue_type"]},
        "summary": follow_up.title,
        "description": to_adf(follow_up.description, links=(follow_up.report_url, follow_up.recording_url)),
        "duedate": follow_up.due_iso,
    }
    priority = config["priority_names"].get(follow_up.priority)
    if priority:
        issue_fields["priority"] = {"name": priority}
    labels = list(follow_up.labels) + ([marker] if marker else [])
    if labels:
        issue_fields["labels"] = labels
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
        fix = FIELD_FIXES.get(name, "fix the 'fields' key")
        parts.append(f"field {name!r}: {message} ({fix})")
    return "; ".join(parts) or None


class JiraDestination(TrackerDestination):
    type = "jira"
    vendor = "Jira"
    Config = JiraConfig
    description = "Open a Jira Cloud issue for each call that needs a follow-up"
    rate_limits = {"default": "10/1s"}  # Jira Cloud publishes no fixed figure; it answers 429 + Retry-After
    limit_options = ("base_url", "email")
    secret_options = ("api_token",)
    auth_hint = ("Check 'email' and 'api_token' (an Atlassian API token of that account); the account "
                 "needs the Browse projects and Create issues permissions in the project. Atlassian API tokens "
                 "expire (at most a year after they are created): a token that worked before has likely "
                 "expired; create a new one at https://id.atlassian.com/manage-profile/security/api-tokens. "
                 "A token with scopes works only through base_url = https://api.atlassian.com/ex/jira/<cloudId>.")

    def extra_fields(self, report) -> dict[str, Any]:
        mapping = self.config["fields"]
        return mapping.evaluate(report) if mapping else {}

    def marker(self, ctx: hub.DeliveryContext) -> str | None:
        return delivery_label(self.name, ctx.delivery_id) if self.config["dedupe_label"] else None

    def post(self, ctx: hub.DeliveryContext, path: str, body: dict, dry_run_response: dict):
        return self.send(ctx, "POST", self.endpoint(path), json=body, dry_run_response=dry_run_response,
                         auth=(self.config["email"], self.config["api_token"]),
                         headers={"Accept": "application/json"})

    def create(self, follow_up: FollowUp, ctx: hub.DeliveryContext) -> CreatedTask:
        response = self.post(ctx, "/rest/api/3/issue", issue_payload(follow_up, self.config, self.marker(ctx)),
                             {"id": "10000", "key": f"{self.config['project']}-1",
                              "self": self.endpoint("/rest/api/3/issue/10000")})
        self.check(response, fix="Check the project's create screen for that field")
        return self.issue(response, json_or_none(response))

    def test_connection(self, ctx: hub.DeliveryContext) -> str:
        """``GET /rest/api/3/myself`` (the credential), then the configured project."""
        auth = {"auth": (self.config["email"], self.config["api_token"]), "headers": {"Accept": "application/json"}}
        me = self.probe(ctx, "GET", self.endpoint("/rest/api/3/myself"), "no such API (check base_url)", **auth)
        project = self.config["project"]
        found = self.probe(ctx, "GET", self.endpoint(f"/rest/api/3/project/{quote(project, safe='')}"),
                           f"no project {project!r} that this account can see (check 'project')", **auth)
        return f"authenticated as {me.get('displayName') or me.get('accountId')}; project {found.get('key', project)}"

    def check(self, response, *, fix: str) -> None:
        """``fail`` after reading a 429's ``RateLimit-Reason`` (which of Jira's limits was hit)."""
        reason = response.headers.get("RateLimit-Reason")
        wait = None
        if response.status_code == 429 and reason:
            wait = hub.retry_after_seconds(response.headers.get("Retry-After")) or SHORT_LIMITS.get(reason)
            if wait is None:  # a quota: it resets at X-RateLimit-Reset
                wait = reset_wait(response.headers.get("X-RateLimit-Reset")) or 60.0
            raise hub.Retryable(f"destination {self.name!r}: Jira rate limit {reason}; retrying in {wait:g}s",
                                retry_after=wait, http_status=429)
        self.fail(response, error_problem(json_or_none(response)), fix=fix)

    def issue(self, response, record: Any) -> CreatedTask:
        key = record.get("key") if isinstance(record, dict) else None
        site = (self.config["site_url"] or self.config["base_url"]).rstrip("/")
        return CreatedTask(id=self.answer_id(response, record), key=key, url=f"{site}/browse/{key}" if key else None)

    def find_existing(self, follow_up: FollowUp, ctx: hub.DeliveryContext) -> CreatedTask | None:
        """Search for the delivery label: the issue an attempt created before its answer was lost.

        Jira's search index can lag a few seconds behind a create; retries come later than that.
        """
        marker = self.marker(ctx)
        if marker is None:
            return None
        jql = f'project = "{self.config["project"]}" AND labels = "{marker}"'
        response = self.post(ctx, "/rest/api/3/search/jql", {"jql": jql, "fields": ["summary"], "maxResults": 1},
                             {"issues": []})
        self.check(response, fix="Check 'project'")
        issues = (json_or_none(response) or {}).get("issues") or []
        return self.issue(response, issues[0]) if issues else None
