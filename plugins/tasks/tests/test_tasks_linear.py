"""``linear``: the GraphQL document and variables checked against Linear's schema, field by field."""
from __future__ import annotations

import json
import time

import pytest
import responses

import hub
from hub.testing import DestinationContract, deliver, make_destination, probe_connection

from hub_tasks.base import idempotency_uuid
from hub_tasks.linear import ISSUE_CREATE, ISSUE_LOOKUP

ENDPOINT = "https://api.linear.app/graphql"
OPTIONS = {"api_key": "lin_api_0123456789abcdef", "team_id": "9cfb482a-81e3-4154-b5b9-2c805e70a02d",
           "assignee": "4e3b2a10-0000-4000-8000-00000000a11c", "labels": ["2f0c4f1e-0000-4000-8000-0000000001ab"]}
ISSUE = {"id": idempotency_uuid("linear", "dlv_test"), "identifier": "SUP-12",
         "url": "https://linear.app/acme/issue/SUP-12/call-back"}
CREATED = {"data": {"issueCreate": {"success": True, "issue": ISSUE}}}


class TestLinearContract(DestinationContract):
    destination_type = "linear"
    options = OPTIONS

    def mock_success(self, rsps):
        rsps.add(responses.POST, ENDPOINT, json=CREATED)


def test_creates_one_issue_with_variables_valid_for_the_schema(sample_report, tasks_linear_schema):
    destination = make_destination("linear", {**OPTIONS, "project_id": "proj-1", "state_id": "state-1"})
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, ENDPOINT, json=CREATED)
        result, ctx = deliver(destination, sample_report)
        (call,) = rsps.calls
    assert call.request.headers["Authorization"] == "lin_api_0123456789abcdef"  # no "Bearer"
    body = json.loads(call.request.body)
    tasks_linear_schema.check(body)
    assert body["query"] == ISSUE_CREATE
    data = body["variables"]["input"]
    assert data == {
        "id": idempotency_uuid("linear", "dlv_test"),
        "teamId": "9cfb482a-81e3-4154-b5b9-2c805e70a02d",
        "title": "Call back +31 6 23456789 (complaint)",
        "description": data["description"],
        "priority": 2,  # high
        "dueDate": "2026-03-03",
        "assigneeId": "4e3b2a10-0000-4000-8000-00000000a11c",
        "labelIds": ["2f0c4f1e-0000-4000-8000-0000000001ab"],
        "projectId": "proj-1",
        "stateId": "state-1",
    }
    assert data["description"].startswith("Call back +31 6 23456789 by 2026-03-03")
    assert "Report: https://hub.example.com/reports/rep_test" in data["description"]
    assert ctx.state["task_id"] == ISSUE["id"] and ctx.state["task_key"] == "SUP-12"
    assert result.message.startswith("created Linear task SUP-12 https://linear.app/acme/issue/SUP-12")


def test_schema_check_rejects_bad_documents_and_variables(sample_report, tasks_linear_schema):
    destination = make_destination("linear", OPTIONS)
    _, ctx = deliver(destination, sample_report, dry_run=True)
    good = ctx.sent[0].body
    tasks_linear_schema.check(good)
    wrong_type = {**good, "variables": {"input": {**good["variables"]["input"], "priority": "high"}}}
    assert any("Int cannot represent" in p for p in tasks_linear_schema.errors(wrong_type))
    missing_team = {**good, "variables": {"input": {k: v for k, v in good["variables"]["input"].items()
                                                    if k != "teamId"}}}
    assert any("teamId" in p for p in tasks_linear_schema.errors(missing_team))
    unknown_field = {**good, "query": good["query"].replace("identifier", "ticketNumber")}
    assert any("ticketNumber" in p for p in tasks_linear_schema.errors(unknown_field))
    tasks_linear_schema.check({"query": ISSUE_LOOKUP, "variables": {"id": ISSUE["id"]}})


@pytest.mark.parametrize("level, value", [("urgent", 1), ("high", 2), ("medium", 3), ("low", 4), ("none", 0)])
def test_priority_levels_map_to_linear_values(make_report, level, value):
    destination = make_destination("linear", {**OPTIONS, "priority": {}, "default_priority": level})
    _, ctx = deliver(destination, make_report(), dry_run=True)
    assert ctx.sent[0].body["variables"]["input"]["priority"] == value


def test_retry_finds_the_issue_an_unanswered_attempt_created(sample_report, tasks_linear_schema):
    destination = make_destination("linear", OPTIONS)
    found = {"data": {"issues": {"nodes": [ISSUE]}}}
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, ENDPOINT, json=found)
        result, ctx = deliver(destination, sample_report, state={"sent": {"task": {"at": 0.0, "times": 1}}}, attempt=2)
        (call,) = rsps.calls
    body = json.loads(call.request.body)
    tasks_linear_schema.check(body)
    assert body == {"query": ISSUE_LOOKUP, "variables": {"id": ISSUE["id"]}}
    assert ctx.state["task_id"] == ISSUE["id"]
    assert result.message.startswith("found Linear task SUP-12")


def test_retry_creates_with_the_same_id_when_nothing_was_created(sample_report):
    destination = make_destination("linear", OPTIONS)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, ENDPOINT, json={"data": {"issues": {"nodes": []}}})
        rsps.add(responses.POST, ENDPOINT, json=CREATED)
        _, ctx = deliver(destination, sample_report, state={"sent": {"task": {"at": 0.0, "times": 1}}}, attempt=2)
        lookup, create = rsps.calls
    assert json.loads(create.request.body)["variables"]["input"]["id"] == ISSUE["id"]
    assert ctx.state["task_key"] == "SUP-12"


def test_ratelimited_error_in_a_200_retries_after_the_reset(sample_report):
    destination = make_destination("linear", OPTIONS)
    reset_ms = int((time.time() + 40) * 1000)
    answer = {"errors": [{"message": "Rate limit exceeded", "extensions": {"code": "RATELIMITED"}}]}
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, ENDPOINT, json=answer, status=200,
                 headers={"X-RateLimit-Requests-Remaining": "0", "X-RateLimit-Requests-Reset": str(reset_ms)})
        with pytest.raises(hub.Retryable) as info:
            deliver(destination, sample_report)
    assert 35 <= info.value.retry_after <= 41
    assert "RATELIMITED" in str(info.value)


def test_ratelimited_as_http_400(sample_report):
    destination = make_destination("linear", OPTIONS)
    answer = {"errors": [{"message": "Rate limit exceeded", "extensions": {"code": "RATELIMITED"}}]}
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, ENDPOINT, json=answer, status=400)
        with pytest.raises(hub.Retryable) as info:
            deliver(destination, sample_report)
    assert info.value.retry_after == 60.0


def test_authentication_error_is_permanent_with_the_fix(sample_report):
    destination = make_destination("linear", OPTIONS, name="eng-linear")
    answer = {"errors": [{"message": "Authentication required, not authenticated",
                          "extensions": {
                              "code": "AUTHENTICATION_ERROR", "type": "authentication error",
                              "userPresentableMessage": "You need to authenticate to access this operation."}}]}
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, ENDPOINT, json=answer, status=400)
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report)
    message = str(info.value)
    assert "'eng-linear'" in message and "'api_key'" in message and "without 'Bearer'" in message
    assert "lin_api_0123456789abcdef" not in message


def test_invalid_input_is_permanent_and_names_the_keys(sample_report):
    destination = make_destination("linear", OPTIONS, name="eng-linear")
    answer = {"data": None, "errors": [{"message": "Argument Validation Error", "extensions": {
        "code": "INVALID_INPUT", "userPresentableMessage": "labelIds contains an id of another team"}}]}
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, ENDPOINT, json=answer)
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report)
    message = str(info.value)
    assert "'eng-linear'" in message
    assert "INVALID_INPUT: labelIds contains an id of another team" in message
    assert "'labels'" in message


def test_unsuccessful_payload_is_permanent(sample_report):
    destination = make_destination("linear", OPTIONS)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, ENDPOINT, json={"data": {"issueCreate": {"success": False, "issue": None}}})
        with pytest.raises(hub.Permanent):
            deliver(destination, sample_report)


def test_an_answer_without_graphql_data_is_permanent(sample_report):
    destination = make_destination("linear", OPTIONS)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, ENDPOINT, body="<html>proxy page</html>", status=200)
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report)
    assert "no GraphQL data" in str(info.value) and "<html>proxy page" in str(info.value)


# --- test_connection: the read calls behind `destinations test` ---------------------------

@responses.activate
def test_linear_asks_for_the_viewer_and_the_team_in_one_query():
    responses.add(responses.POST, "https://api.linear.app/graphql",
                  json={"data": {"viewer": {"id": "u1", "name": "Ops"}, "team": {"id": "t", "key": "SUP", "name": "Support"}}})
    assert probe_connection(make_destination("linear", OPTIONS)) == "authenticated as Ops; team SUP"
    [call] = responses.calls
    body = json.loads(call.request.body)
    assert "viewer { id name }" in body["query"] and body["variables"] == {"team": OPTIONS["team_id"]}
    assert call.request.headers["Authorization"] == OPTIONS["api_key"]  # no Bearer for an API key
