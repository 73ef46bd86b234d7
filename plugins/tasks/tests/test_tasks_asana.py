"""``asana``: requests checked field by field and against Asana's OpenAPI description."""
from __future__ import annotations

import copy
import json

import pytest
import requests
import responses

import hub
from hub.testing import DestinationContract, deliver, make_destination, probe_connection

API = "https://app.asana.com/api/1.0"
CREATE = f"{API}/tasks"
OPTIONS = {"token": "2/1200/1200:asana-pat-123456", "workspace": "1100000000000001",
           "projects": ["1100000000000002"], "assignee": "me", "labels": ["1100000000000003"]}
CREATED = {"data": {"gid": "1209000000000042", "resource_type": "task",
                    "name": "Call back +31 6 23456789 (complaint)",
                    "permalink_url": "https://app.asana.com/0/1100000000000002/1209000000000042"}}


class TestAsanaContract(DestinationContract):
    destination_type = "asana"
    options = OPTIONS

    def mock_success(self, rsps):
        rsps.add(responses.POST, CREATE, json=CREATED, status=201)


def test_creates_one_task_with_every_field(sample_report, tasks_asana_spec):
    destination = make_destination("asana", {**OPTIONS, "priority_field": "1100000000000010",
                                             "priority_options": {"high": "1100000000000011"}})
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, json=CREATED, status=201)
        result, ctx = deliver(destination, sample_report)
        (call,) = rsps.calls
    tasks_asana_spec.request(call.request)
    tasks_asana_spec.response(call.request, call.response)
    assert call.request.url == f"{CREATE}?opt_fields=name%2Cpermalink_url"
    assert call.request.headers["Authorization"] == "Bearer 2/1200/1200:asana-pat-123456"
    body = json.loads(call.request.body)
    assert list(body) == ["data"]
    task = body["data"]
    assert set(task) == {"name", "notes", "due_on", "workspace", "projects", "assignee", "tags", "custom_fields"}
    assert task["name"] == "Call back +31 6 23456789 (complaint)"
    assert task["notes"].startswith("Call back +31 6 23456789 by 2026-03-03: the issue was not resolved")
    assert task["notes"].endswith("Report: https://hub.example.com/reports/rep_test")
    assert task["due_on"] == "2026-03-03"
    assert task["workspace"] == "1100000000000001"
    assert task["projects"] == ["1100000000000002"]
    assert task["assignee"] == "me"
    assert task["tags"] == ["1100000000000003"]
    assert task["custom_fields"] == {"1100000000000010": "1100000000000011"}
    assert ctx.state["task_id"] == "1209000000000042"
    assert ctx.state["task_url"] == "https://app.asana.com/0/1100000000000002/1209000000000042"
    assert "created Asana task 1209000000000042 https://app.asana.com/" in result.message


def test_spec_check_rejects_a_broken_task_request(sample_report, tasks_asana_spec):
    destination = make_destination("asana", OPTIONS)
    _, ctx = deliver(destination, sample_report, dry_run=True)
    good = ctx.sent[0].body
    headers = {"Authorization": "Bearer x"}
    tasks_asana_spec.request(requests.Request("POST", CREATE, json=good, headers=headers).prepare())
    broken = copy.deepcopy(good)
    broken["data"]["due_on"] = "tomorrow"  # not a date
    broken["data"]["projects"] = "1100000000000002"  # not an array
    with pytest.raises(Exception) as info:
        tasks_asana_spec.request(requests.Request("POST", CREATE, json=broken, headers=headers).prepare())
    assert "is not of type 'array'" in str(info.value) or "is not a 'date'" in str(info.value)


def test_priority_without_custom_field_and_minimal_task(make_report):
    destination = make_destination("asana", {"token": "asana-pat-123456", "projects": ["1100000000000002"]})
    _, ctx = deliver(destination, make_report(), dry_run=True)
    task = ctx.sent[0].body["data"]
    assert set(task) == {"name", "notes", "due_on", "projects"}


def test_validation_error_names_destination_and_key(sample_report):
    destination = make_destination("asana", OPTIONS, name="billing-asana")
    answer = {"errors": [{"message": "assignee: Not a recognized ID: me2",
                          "help": "For more information on API status codes and how to handle them, read the docs"}]}
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, json=answer, status=400)
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report)
    message = str(info.value)
    assert "'billing-asana'" in message and "HTTP 400" in message
    assert "assignee: Not a recognized ID: me2 (fix the 'assignee' key)" in message


def test_premium_only_field_is_permanent(sample_report):
    destination = make_destination("asana", OPTIONS)
    answer = {"errors": [{"message": "custom_fields: Custom fields are a premium feature"}]}
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, json=answer, status=402)
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report)
    assert "(fix the 'priority_field / priority_options' key)" in str(info.value)


def test_rate_limit_retries_after_the_header(sample_report):
    destination = make_destination("asana", OPTIONS)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, status=429, headers={"Retry-After": "30"},
                 json={"errors": [{"message": "You have made too many requests recently."}]})
        with pytest.raises(hub.Retryable) as info:
            deliver(destination, sample_report)
    assert info.value.retry_after == 30


def test_unauthorized_names_token_never_its_value(sample_report):
    destination = make_destination("asana", OPTIONS)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, status=401, json={"errors": [{"message": "Not Authorized"}]})
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report)
    assert "'token'" in str(info.value) and "asana-pat-123456" not in str(info.value)


@pytest.mark.parametrize("options, message", [
    ({"workspace": None, "projects": []}, "set 'workspace' or 'projects'"),
    ({"workspace": "acme"}, "must be an Asana gid"),
    ({"priority_options": {"high": "1100000000000011"}}, "'priority_options' needs 'priority_field'"),
])
def test_bad_asana_options_fail_at_load(options, message):
    with pytest.raises(Exception) as info:
        make_destination("asana", {**OPTIONS, **options})
    assert message in str(info.value)


def test_no_minute_ever_sees_more_than_the_free_plans_150_requests(tasks_flood):
    tasks_flood(make_destination("asana", OPTIONS), CREATE, CREATED, "150/60s")


def test_a_paid_domain_sets_its_own_limit(tasks_flood):
    free = make_destination("asana", OPTIONS)  # the core hands the type its checked rate_limits option
    paid = type(free)("asana", {**free.config, "rate_limits": {"default": "1500/60s"}})
    tasks_flood(paid, CREATE, CREATED, "1500/60s")


# --- test_connection: the read calls behind `destinations test` ---------------------------

@responses.activate
def test_asana_asks_for_users_me_and_checks_the_workspace():
    responses.add(responses.GET, f"{API}/users/me", json={"data": {"gid": "1", "name": "Ops", "workspaces": [
        {"gid": OPTIONS["workspace"], "name": "Acme"}]}})
    assert probe_connection(make_destination("asana", OPTIONS)) == "authenticated as Ops"
    [call] = responses.calls
    assert call.request.headers["Authorization"] == f"Bearer {OPTIONS['token']}"
    assert call.request.params == {"opt_fields": "name,workspaces"}
    responses.replace(responses.GET, f"{API}/users/me", json={"data": {"gid": "1", "workspaces": []}})
    with pytest.raises(hub.Permanent, match="not a member of workspace"):
        probe_connection(make_destination("asana", OPTIONS))
