"""``asana``: an Asana task, ``POST /api/1.0/tasks`` with ``{"data": ...}`` and a personal access token."""
from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

import hub

from .base import CreatedTask, TrackerDestination, json_or_none
from .followup import FollowUp, FollowUpConfig, level_table

#: which configuration key to fix when Asana names a field in its error message
FIELD_KEYS = {"assignee": "assignee", "projects": "projects", "project": "projects", "workspace": "workspace",
              "tags": "labels", "tag": "labels",
              "custom_fields": "priority_field / priority_options", "due_on": "due_in_days", "name": "title",
              "notes": "description"}

GID = validate.Regexp(r"^\d+$", error="must be an Asana gid (digits only)")


class AsanaConfig(FollowUpConfig):
    base_url = fields.Url(load_default="https://app.asana.com/api/1.0", schemes={"http", "https"},
                          require_tld=False)
    token = fields.String(required=True, validate=validate.Length(min=1))
    workspace = fields.String(load_default=None, allow_none=True, validate=GID)
    projects = fields.List(fields.String(validate=GID), load_default=list)
    priority_field = fields.String(load_default=None, allow_none=True, validate=GID)
    priority_options = level_table({}, fields.String(validate=GID))

    @validates_schema
    def somewhere_to_put_it(self, data, **kwargs):
        if not data.get("workspace") and not data.get("projects"):
            raise ValidationError("set 'workspace' or 'projects' (a task needs a workspace or a project)")
        if data.get("priority_options") and not data.get("priority_field"):
            raise ValidationError("'priority_options' needs 'priority_field' (the gid of an enum custom field)",
                                  "priority_field")


def task_payload(follow_up: FollowUp, config: dict[str, Any]) -> dict[str, Any]:
    """The body of ``POST /tasks``; tags are the configured ``labels`` (tag gids)."""
    task: dict[str, Any] = {"name": follow_up.title, "notes": follow_up.description, "due_on": follow_up.due_iso}
    if config["workspace"]:
        task["workspace"] = config["workspace"]
    if config["projects"]:
        task["projects"] = list(config["projects"])
    if follow_up.assignee:
        task["assignee"] = follow_up.assignee
    if follow_up.labels:
        task["tags"] = list(follow_up.labels)
    option = config["priority_options"].get(follow_up.priority)
    if config["priority_field"] and option:
        task["custom_fields"] = {config["priority_field"]: option}
    return {"data": task}


def error_problem(body: Any) -> str | None:
    """Asana's ``{"errors": [{"message": "assignee: Not a recognized ID", "help": ...}]}`` as one line."""
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return None
    parts = []
    for error in body["errors"]:
        message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
        name = message.split(":", 1)[0].strip()
        parts.append(f"{message} (fix the {FIELD_KEYS[name]!r} key)" if name in FIELD_KEYS else message)
    return "; ".join(parts) or None


class AsanaDestination(TrackerDestination):
    type = "asana"
    vendor = "Asana"
    Config = AsanaConfig
    description = "Create an Asana task for each call that needs a follow-up"
    # 150 requests a minute on a free domain, 1,500 on a paid one: rate_limits = { default = "1500/60s" }
    rate_limits = {"default": "150/60s"}
    limit_options = ("token",)
    secret_options = ("token",)
    auth_hint = ("Check 'token' (an Asana personal access token); its user must be a member of the "
                 "workspace and projects, and the token needs the tasks:write scope.")

    def test_connection(self, ctx: hub.DeliveryContext) -> str:
        """``GET /users/me``: the token, and the workspaces its user belongs to."""
        me = self.probe(ctx, "GET", self.endpoint("/users/me"), "no such API (check base_url)",
                        params={"opt_fields": "name,workspaces"},
                        headers={"Authorization": f"Bearer {self.config['token']}", "Accept": "application/json"})
        user = me.get("data") or {}
        workspaces = {w.get("gid") for w in user.get("workspaces") or []}
        if self.config["workspace"] and self.config["workspace"] not in workspaces:
            raise hub.Permanent(f"destination {self.name!r}: Asana: the token's user is not a member of workspace "
                                f"{self.config['workspace']!r} (check 'workspace')")
        return f"authenticated as {user.get('name') or user.get('gid')}"

    def create(self, follow_up: FollowUp, ctx: hub.DeliveryContext) -> CreatedTask:
        response = self.send(
            ctx, "POST", self.endpoint("/tasks"), params={"opt_fields": "name,permalink_url"},
            json=task_payload(follow_up, self.config),
            headers={"Authorization": f"Bearer {self.config['token']}", "Accept": "application/json"},
            dry_run_response={"data": {"gid": "1200000000000001", "resource_type": "task",
                                       "name": follow_up.title,
                                       "permalink_url": "https://app.asana.com/0/0/1200000000000001"}})
        self.fail(response, error_problem(json_or_none(response)))
        task = (json_or_none(response) or {}).get("data")
        return CreatedTask(id=self.answer_id(response, task, "gid"), url=task.get("permalink_url"))
