"""``todoist``: a Todoist task through the unified API v1, ``POST /api/v1/tasks``.

The old REST v2 (``/rest/v2/tasks``) is retired and answers 410. Each create carries an
``X-Request-Id`` fixed per delivery, so Todoist discards a repeat of a request it already ran.
"""
from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates

import hub

from .base import TASK, CreatedTask, TrackerDestination, idempotency_uuid, json_or_none
from .call_text import escape_markdown
from .followup import FollowUp, FollowUpConfig

#: Todoist counts upward: 1 = normal (p4 in the apps) ... 4 = urgent (p1 in the apps)
PRIORITY_VALUES = {"urgent": 4, "high": 3, "medium": 2, "low": 1, "none": 1}

#: where a task opens in the web app (the v1 answer may carry no ``url``; Doist's own client builds it so)
TASK_URL = "https://app.todoist.com/app/task/{id}"

FIELD_KEYS = {"project_id": "project_id", "section_id": "section_id", "labels": "labels",
              "assignee_id": "assignee", "due_date": "due_in_days", "due_string": "due_string",
              "content": "title", "description": "description", "priority": "priority"}


class TodoistConfig(FollowUpConfig):
    base_url = fields.Url(load_default="https://api.todoist.com", schemes={"http", "https"}, require_tld=False)
    token = fields.String(required=True, validate=validate.Length(min=1))
    project_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    section_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    due_string = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    due_lang = fields.String(load_default=None, allow_none=True, validate=validate.Length(equal=2))

    @validates("base_url")
    def not_the_retired_api(self, value, **kwargs):
        if "/rest/v2" in value or "/sync/v9" in value or "/api/v1" in value:
            raise ValidationError("give the host only, e.g. https://api.todoist.com (the plugin adds /api/v1; "
                                  "REST v2 and Sync v9 are retired)")


def task_payload(follow_up: FollowUp, config: dict[str, Any]) -> dict[str, Any]:
    """The body of ``POST /api/v1/tasks``; labels are label names, the assignee a user id."""
    task: dict[str, Any] = {"content": follow_up.title, "description": follow_up.description,
                            "priority": PRIORITY_VALUES[follow_up.priority]}
    if config["due_string"]:
        task["due_string"] = config["due_string"]
        if config["due_lang"]:
            task["due_lang"] = config["due_lang"]
    else:
        task["due_date"] = follow_up.due_iso
    if config["project_id"]:
        task["project_id"] = config["project_id"]
    if config["section_id"]:
        task["section_id"] = config["section_id"]
    if follow_up.labels:
        task["labels"] = list(follow_up.labels)
    if follow_up.assignee:
        task["assignee_id"] = follow_up.assignee
    return task


def error_problem(response) -> tuple[str | None, float | None]:
    """Todoist's ``{"error", "error_code", "error_tag", "error_extra": {...}}`` (or plain text)."""
    body = json_or_none(response)
    if not isinstance(body, dict):
        text = (response.text or "").strip()
        return (text[:300] or None), None
    extra = body.get("error_extra") if isinstance(body.get("error_extra"), dict) else {}
    message = str(body.get("error") or body.get("error_tag") or "unknown error")
    if body.get("error_tag"):
        message = f"{body['error_tag']}: {message}"
    argument = extra.get("argument")
    if argument:
        message += f" (argument {argument!r}; fix the {FIELD_KEYS.get(argument, argument)!r} key)"
    retry_after = extra.get("retry_after")
    return message, float(retry_after) if isinstance(retry_after, (int, float)) else None


class TodoistDestination(TrackerDestination):
    type = "todoist"
    vendor = "Todoist"
    escape_call_text = staticmethod(escape_markdown)
    Config = TodoistConfig
    description = "Add a Todoist task for each call that needs a follow-up"
    rate_limits = {"default": "1000/900s"}  # 1,000 requests per 15 minutes per user
    limit_options = ("token",)
    secret_options = ("token",)
    auth_hint = ("Check 'token' (the API token under Todoist Settings > Integrations > Developer); the "
                 "account must be able to add tasks to 'project_id'.")

    def test_connection(self, ctx: hub.DeliveryContext) -> str:
        """``GET /api/v1/projects/{project_id}`` (or the project list when none is configured)."""
        project = self.config["project_id"]
        path = f"/api/v1/projects/{project}" if project else "/api/v1/projects"
        found = self.probe(ctx, "GET", self.endpoint(path), f"no project {project!r} that this token can see "
                           f"(check 'project_id')", params=None if project else {"limit": 1},
                           headers={"Authorization": f"Bearer {self.config['token']}"})
        return f"token accepted; project {found.get('name')!r}" if project else "token accepted"

    def create(self, follow_up: FollowUp, ctx: hub.DeliveryContext) -> CreatedTask:
        request_id = idempotency_uuid(self.name, ctx.delivery_id)
        response = self.send(
            ctx, "POST", self.endpoint("/api/v1/tasks"),
            json=task_payload(follow_up, self.config),
            headers={"Authorization": f"Bearer {self.config['token']}", "X-Request-Id": request_id},
            dry_run_response={"id": "6X7rM8997g3RQmvh", "content": follow_up.title,
                              "url": "https://app.todoist.com/app/task/6X7rM8997g3RQmvh"})
        if response.status_code == 410:
            self.reject("HTTP 410 Gone: this Todoist API version is retired",
                        fix="Set 'base_url' to https://api.todoist.com (API v1)", http_status=410)
        problem, retry_after = error_problem(response) if response.status_code >= 400 else (None, None)
        self.fail(response, problem, fix="Check the configured ids and names", retry_after=retry_after)
        task = json_or_none(response)
        if not (isinstance(task, dict) and task.get("id")) and ctx.sent_times(TASK) > 1:
            # Todoist discards a request whose X-Request-Id it already ran: the earlier attempt's
            # task stands, though this answer does not say which it is
            return CreatedTask(id=f"x-request-id:{request_id}")
        task_id = self.answer_id(response, task)
        return CreatedTask(id=task_id, url=task.get("url") or TASK_URL.format(id=task_id))
