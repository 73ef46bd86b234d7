"""``linear``: a Linear issue through the GraphQL ``issueCreate`` mutation, with variables.

The API key goes in ``Authorization`` as it is (no ``Bearer``: that prefix is for OAuth tokens).
The issue id is chosen here (a UUID fixed per delivery), so a retry whose first answer was lost
can ask Linear whether that issue exists before creating it again.
"""
from __future__ import annotations

import time
from typing import Any

from marshmallow import fields, validate

import hub

from .base import CreatedTask, TrackerDestination, idempotency_uuid, json_or_none
from .call_text import escape_markdown
from .followup import FollowUp, FollowUpConfig

#: Linear's own scale: 0 = no priority, 1 = urgent, 2 = high, 3 = medium, 4 = low
PRIORITY_VALUES = {"none": 0, "urgent": 1, "high": 2, "medium": 3, "low": 4}

ISSUE_CREATE = """\
mutation HubIssueCreate($input: IssueCreateInput!) {
  issueCreate(input: $input) {
    success
    issue { id identifier url }
  }
}"""

ISSUE_LOOKUP = """\
query HubIssueLookup($id: ID!) {
  issues(filter: { id: { eq: $id } }, first: 1) {
    nodes { id identifier url }
  }
}"""

AUTH_CODES = {"AUTHENTICATION_ERROR", "FORBIDDEN", "UNAUTHENTICATED"}
RETRY_CODES = {"RATELIMITED", "INTERNAL_SERVER_ERROR", "SERVICE_UNAVAILABLE"}
RESET_HEADERS = ("X-RateLimit-Requests-Reset", "X-RateLimit-Complexity-Reset", "X-RateLimit-Endpoint-Requests-Reset")


class LinearConfig(FollowUpConfig):
    base_url = fields.Url(load_default="https://api.linear.app", schemes={"http", "https"}, require_tld=False)
    api_key = fields.String(required=True, validate=validate.Length(min=1))
    team_id = fields.String(required=True, validate=validate.Length(min=1))
    project_id = fields.String(load_default=None, allow_none=True)
    state_id = fields.String(load_default=None, allow_none=True)


def issue_input(follow_up: FollowUp, config: dict[str, Any], issue_id: str) -> dict[str, Any]:
    """``IssueCreateInput`` for one follow-up; labels are label ids, the assignee a user id."""
    data: dict[str, Any] = {
        "id": issue_id,
        "teamId": config["team_id"],
        "title": follow_up.title,
        "description": follow_up.description,
        "priority": PRIORITY_VALUES[follow_up.priority],
        "dueDate": follow_up.due_iso,
    }
    if follow_up.assignee:
        data["assigneeId"] = follow_up.assignee
    if follow_up.labels:
        data["labelIds"] = list(follow_up.labels)
    if config["project_id"]:
        data["projectId"] = config["project_id"]
    if config["state_id"]:
        data["stateId"] = config["state_id"]
    return data


def reset_seconds(headers, now: float | None = None) -> float | None:
    """Seconds until Linear's rate-limit window resets (its reset headers are epoch timestamps)."""
    now = time.time() if now is None else now
    waits = []
    for name in RESET_HEADERS:
        try:
            moment = float(headers.get(name) or "")
        except ValueError:
            continue
        if moment > 1e11:  # milliseconds
            moment /= 1000
        waits.append(max(0.0, moment - now))
    return max(waits) if waits else hub.retry_after_seconds(headers.get("Retry-After"))


class LinearDestination(TrackerDestination):
    type = "linear"
    vendor = "Linear"
    escape_call_text = staticmethod(escape_markdown)
    Config = LinearConfig
    description = "Create a Linear issue for each call that needs a follow-up"
    rate_limits = {"default": "5000/3600s"}  # 5,000 requests an hour per API key
    limit_options = ("api_key",)
    secret_options = ("api_key",)
    auth_hint = ("Check 'api_key' (a personal API key from Linear's Settings > Security & access, sent "
                 "without 'Bearer'); its user must be a member of the team 'team_id'.")

    def graphql(self, ctx: hub.DeliveryContext, query: str, variables: dict, dry_run_data: dict) -> dict:
        """One GraphQL call; returns ``data`` or raises with Linear's error mapped."""
        response = self.send(
            ctx, "POST", self.endpoint("/graphql"),
            json={"query": query, "variables": variables},
            headers={"Authorization": self.config["api_key"], "Accept": "application/json"},
            dry_run_response={"data": dry_run_data})
        body = json_or_none(response)
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors:
            self.graphql_errors(response, errors)
        self.fail(response, None)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            self.reject(f"the answer has no GraphQL data: {response.text[:200]}", http_status=response.status_code)
        return data

    def test_connection(self, ctx: hub.DeliveryContext) -> str:
        """``viewer`` (the API key) and ``team(id)`` (the configured team), in one query."""
        data = self.graphql(ctx, "query Test($team: String!) { viewer { id name } team(id: $team) { id key name } }",
                            {"team": self.config["team_id"]}, {"viewer": {"id": "-", "name": "-"}, "team": {"key": "-"}})
        team = data.get("team") or {}
        return f"authenticated as {(data.get('viewer') or {}).get('name')}; team {team.get('key') or team.get('name')}"

    def graphql_errors(self, response, errors: list) -> None:
        first = errors[0] if isinstance(errors[0], dict) else {"message": str(errors[0])}
        extensions = first.get("extensions") or {}
        code = str(extensions.get("code") or "").upper()
        detail = extensions.get("userPresentableMessage") or first.get("message") or "unknown error"
        where = f"destination {self.name!r}: Linear answered {code or 'an error'}"
        if code == "RATELIMITED":
            raise hub.Retryable(f"{where}: {detail}", retry_after=reset_seconds(response.headers) or 60.0,
                                http_status=response.status_code)
        if code in RETRY_CODES or response.status_code >= 500:
            raise hub.Retryable(f"{where}: {detail}", retry_after=hub.retry_after_seconds(
                response.headers.get("Retry-After")), http_status=response.status_code)
        if code in AUTH_CODES or response.status_code in (401, 403):
            raise hub.Permanent(f"{where}: {detail}. {self.auth_hint}", http_status=response.status_code)
        self.reject(f"{code or 'error'}: {detail}", http_status=response.status_code,
                    fix="Check 'team_id', 'labels' (label ids of that team), 'assignee' (a user id), "
                        "'project_id' and 'state_id'")

    def create(self, follow_up: FollowUp, ctx: hub.DeliveryContext) -> CreatedTask:
        issue_id = idempotency_uuid(self.name, ctx.delivery_id)
        data = self.graphql(ctx, ISSUE_CREATE, {"input": issue_input(follow_up, self.config, issue_id)},
                            {"issueCreate": {"success": True, "issue": {
                                "id": issue_id, "identifier": "DRY-1",
                                "url": "https://linear.app/dry-run/issue/DRY-1"}}})
        payload = data.get("issueCreate") or {}
        issue = payload.get("issue") or {}
        if not payload.get("success") or not issue.get("id"):
            self.reject(f"issueCreate did not succeed: {payload}", fix="Check 'team_id' and the other ids")
        return CreatedTask(id=issue["id"], key=issue.get("identifier"), url=issue.get("url"))

    def find_existing(self, follow_up: FollowUp, ctx: hub.DeliveryContext) -> CreatedTask | None:
        issue_id = idempotency_uuid(self.name, ctx.delivery_id)
        data = self.graphql(ctx, ISSUE_LOOKUP, {"id": issue_id}, {"issues": {"nodes": []}})
        nodes = (data.get("issues") or {}).get("nodes") or []
        if not nodes:
            return None
        return CreatedTask(id=nodes[0]["id"], key=nodes[0].get("identifier"), url=nodes[0].get("url"))
