"""``todoist``: requests checked field by field and against Todoist's published API v1 reference.

Todoist serves its OpenAPI document only from its docs site (none is stored in shared/specs), so
``reference_problems`` encodes the published reference for ``POST /api/v1/tasks``: the body
fields of "create task" (content required; only one of due_string/due_date/due_datetime;
priority 1 normal .. 4 urgent; labels are names), Bearer token, X-Request-Id of at most 36 bytes.
"""
from __future__ import annotations

import json
import re

import pytest
import requests
import responses

import hub
from hub.testing import DestinationContract, deliver, make_destination, probe_connection

from hub_tasks.base import idempotency_uuid

CREATE = "https://api.todoist.com/api/v1/tasks"
OPTIONS = {"token": "0123456789abcdef0123456789abcdef01234567", "project_id": "6Jf8VQXxpwv56VQ7",
           "labels": ["call-back", "billing"], "assignee": "2671355"}
CREATED = {"id": "6X7rM8997g3RQmvh", "content": "Call back +31 6 23456789 (complaint)", "priority": 3,
           "project_id": "6Jf8VQXxpwv56VQ7", "labels": ["call-back", "billing"],
           "url": "https://app.todoist.com/app/task/6X7rM8997g3RQmvh"}

CREATE_TASK_FIELDS = {"content", "description", "project_id", "section_id", "parent_id", "order", "labels",
                      "priority", "assignee_id", "due_string", "due_date", "due_datetime", "due_lang",
                      "duration", "duration_unit", "deadline_date", "deadline_lang"}


def reference_problems(request: requests.PreparedRequest) -> list[str]:
    problems = []
    if request.method != "POST" or not request.url.split("?")[0].endswith("/api/v1/tasks"):
        problems.append(f"not POST /api/v1/tasks: {request.method} {request.url}")
    if not re.fullmatch(r"Bearer \S+", request.headers.get("Authorization", "")):
        problems.append("Authorization must be 'Bearer <token>'")
    if "application/json" not in request.headers.get("Content-Type", ""):
        problems.append("body must be JSON")
    request_id = request.headers.get("X-Request-Id")
    if request_id is not None and len(request_id.encode()) > 36:
        problems.append("X-Request-Id longer than 36 bytes")
    body = json.loads(request.body)
    problems += [f"unknown field {name!r}" for name in sorted(set(body) - CREATE_TASK_FIELDS)]
    if not isinstance(body.get("content"), str) or not body["content"]:
        problems.append("content is required")
    if "priority" in body and body["priority"] not in (1, 2, 3, 4):
        problems.append("priority must be 1..4")
    if sum(name in body for name in ("due_string", "due_date", "due_datetime")) > 1:
        problems.append("only one of due_string, due_date, due_datetime")
    if "due_date" in body and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(body["due_date"])):
        problems.append("due_date must be YYYY-MM-DD")
    if "labels" in body and not all(isinstance(label, str) for label in body["labels"]):
        problems.append("labels are label names (strings)")
    return problems


class TestTodoistContract(DestinationContract):
    destination_type = "todoist"
    options = OPTIONS

    def mock_success(self, rsps):
        rsps.add(responses.POST, CREATE, json=CREATED)


def test_creates_one_task_with_every_field(sample_report):
    destination = make_destination("todoist", OPTIONS)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, json=CREATED)
        result, ctx = deliver(destination, sample_report)
        (call,) = rsps.calls
    assert reference_problems(call.request) == []
    assert call.request.url == CREATE
    assert call.request.headers["Authorization"] == f"Bearer {OPTIONS['token']}"
    assert call.request.headers["X-Request-Id"] == idempotency_uuid("todoist", "dlv_test")
    body = json.loads(call.request.body)
    assert body == {
        "content": "Call back +31 6 23456789 (complaint)",
        "description": body["description"],
        "priority": 3,  # high; Todoist's 4 is urgent
        "due_date": "2026-03-03",
        "project_id": "6Jf8VQXxpwv56VQ7",
        "labels": ["call-back", "billing"],
        "assignee_id": "2671355",
    }
    assert body["description"].startswith("Call back +31 6 23456789 by 2026-03-03")
    assert ctx.state["task_id"] == "6X7rM8997g3RQmvh"
    assert ctx.state["task_url"] == "https://app.todoist.com/app/task/6X7rM8997g3RQmvh"
    assert result.message.startswith("created Todoist task 6X7rM8997g3RQmvh https://app.todoist.com/")


def test_reference_check_rejects_a_broken_request(sample_report):
    destination = make_destination("todoist", OPTIONS)
    _, ctx = deliver(destination, sample_report, dry_run=True)
    good = ctx.sent[0].body
    headers = {"Authorization": "Bearer t", "X-Request-Id": idempotency_uuid("todoist", "dlv_test")}
    assert reference_problems(requests.Request("POST", CREATE, json=good, headers=headers).prepare()) == []
    broken = {**good, "priority": 5, "due_string": "tomorrow", "project": "Inbox"}
    problems = reference_problems(requests.Request("POST", CREATE, json=broken,
                                                   headers={**headers, "X-Request-Id": "x" * 40}).prepare())
    assert problems == ["X-Request-Id longer than 36 bytes", "unknown field 'project'", "priority must be 1..4",
                        "only one of due_string, due_date, due_datetime"]


@pytest.mark.parametrize("level, value", [("urgent", 4), ("high", 3), ("medium", 2), ("low", 1), ("none", 1)])
def test_priority_levels_map_to_todoist_values(make_report, level, value):
    destination = make_destination("todoist", {**OPTIONS, "priority": {}, "default_priority": level})
    _, ctx = deliver(destination, make_report(), dry_run=True)
    assert ctx.sent[0].body["priority"] == value


def test_due_string_replaces_due_date(make_report):
    destination = make_destination("todoist", {"token": "t0ken-todoist", "due_string": "tomorrow at 10:00",
                                               "due_lang": "en"})
    _, ctx = deliver(destination, make_report(), dry_run=True)
    body = ctx.sent[0].body
    assert body["due_string"] == "tomorrow at 10:00" and body["due_lang"] == "en"
    assert "due_date" not in body and "project_id" not in body  # the Inbox
    assert reference_problems(requests.Request("POST", CREATE, json=body,
                                               headers={"Authorization": "Bearer t"}).prepare()) == []


def test_same_request_id_on_every_attempt_of_a_delivery(sample_report):
    destination = make_destination("todoist", OPTIONS)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, status=502, body="Bad Gateway")
        rsps.add(responses.POST, CREATE, json=CREATED)
        with pytest.raises(hub.Retryable):
            deliver(destination, sample_report)
        _, ctx = deliver(destination, sample_report, state={"sent": {"task": {"at": 0.0, "times": 1}}}, attempt=2)
        first, second = rsps.calls
    assert first.request.headers["X-Request-Id"] == second.request.headers["X-Request-Id"]
    assert ctx.state["task_id"] == "6X7rM8997g3RQmvh"


def test_an_answer_without_url_gets_the_web_app_link(sample_report):
    """API v1 task objects may leave out ``url``; the link is built the way Doist's own client does."""
    destination = make_destination("todoist", OPTIONS)
    answer = {key: value for key, value in CREATED.items() if key != "url"}
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, json=answer)
        result, ctx = deliver(destination, sample_report)
    assert ctx.state["task_url"] == "https://app.todoist.com/app/task/6X7rM8997g3RQmvh"
    assert result.message.startswith("created Todoist task 6X7rM8997g3RQmvh https://app.todoist.com/app/task/")


def test_a_discarded_repeat_keeps_the_earlier_task(sample_report):
    """Todoist discards a repeated X-Request-Id; an answer without a task means the first one stands."""
    destination = make_destination("todoist", OPTIONS)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, json={})
        result, ctx = deliver(destination, sample_report, state={"sent": {"task": {"at": 0.0, "times": 1}}}, attempt=2)
    assert ctx.sent_times("task") == 2
    assert ctx.state["task_id"] == f"x-request-id:{idempotency_uuid('todoist', 'dlv_test')}"
    assert result.message.startswith("created Todoist task x-request-id:")


def test_first_answer_without_a_task_is_permanent(sample_report):
    destination = make_destination("todoist", OPTIONS)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, json={})
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report)
    assert "no id in the answer" in str(info.value)


def test_validation_error_names_destination_argument_and_key(sample_report):
    destination = make_destination("todoist", OPTIONS, name="inbox-todoist")
    answer = {"error": "Invalid argument value", "error_code": 20, "error_tag": "INVALID_ARGUMENT_VALUE",
              "http_code": 400, "error_extra": {"argument": "project_id", "event_id": "c0ffee"}}
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, json=answer, status=400)
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report)
    message = str(info.value)
    assert "'inbox-todoist'" in message and "HTTP 400" in message
    assert "INVALID_ARGUMENT_VALUE: Invalid argument value (argument 'project_id'; fix the 'project_id' key)" \
        in message


def test_rate_limit_uses_error_extra_retry_after(sample_report):
    destination = make_destination("todoist", OPTIONS)
    answer = {"error": "Too many requests", "error_tag": "LIMITS_REACHED", "http_code": 429,
              "error_extra": {"retry_after": 12}}
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, json=answer, status=429)
        with pytest.raises(hub.Retryable) as info:
            deliver(destination, sample_report)
    assert info.value.retry_after == 12


def test_retired_api_answer_is_permanent_with_the_fix(sample_report):
    destination = make_destination("todoist", OPTIONS)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, status=410, body="Gone")
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report)
    assert "https://api.todoist.com" in str(info.value) and "410" in str(info.value)


def test_deleted_user_is_permanent_and_names_the_token(sample_report):
    destination = make_destination("todoist", OPTIONS)
    answer = {"error_tag": "AUTH_USER_DELETED", "error_code": 411, "error": "User deleted", "http_code": 403,
              "error_extra": {}}
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, json=answer, status=403)
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report)
    assert "'token'" in str(info.value) and OPTIONS["token"] not in str(info.value)


@pytest.mark.parametrize("options, message", [
    ({"base_url": "https://api.todoist.com/rest/v2"}, "REST v2 and Sync v9 are retired"),
    ({"due_lang": "english"}, "destinations.todoist.due_lang"),
    ({"token": ""}, "destinations.todoist.token"),
])
def test_bad_todoist_options_fail_at_load(options, message):
    with pytest.raises(Exception) as info:
        make_destination("todoist", {**OPTIONS, **options})
    assert message in str(info.value)


def test_no_15_minutes_ever_see_more_than_1000_requests(tasks_flood):
    tasks_flood(make_destination("todoist", OPTIONS), CREATE, CREATED, "1000/900s")


# --- test_connection: the read calls behind `destinations test` ---------------------------

@responses.activate
def test_todoist_asks_for_the_configured_project():
    project = OPTIONS["project_id"]
    responses.add(responses.GET, f"https://api.todoist.com/api/v1/projects/{project}", json={"id": project, "name": "Calls"})
    assert probe_connection(make_destination("todoist", OPTIONS)) == "token accepted; project 'Calls'"
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {OPTIONS['token']}"
    responses.replace(responses.GET, f"https://api.todoist.com/api/v1/projects/{project}", status=404, body="")
    with pytest.raises(hub.Permanent, match=f"no project '{project}'"):
        probe_connection(make_destination("todoist", OPTIONS))
