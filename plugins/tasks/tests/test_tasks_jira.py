"""``jira``: requests checked field by field and against Jira Cloud's OpenAPI description."""
from __future__ import annotations

import base64
import copy
import json
from unittest.mock import ANY

import pytest
import requests
import responses

import hub
from hub.testing import DestinationContract, deliver, make_destination, probe_connection

from hub_tasks.jira import delivery_label

SITE = "https://acme.atlassian.net"
CREATE = f"{SITE}/rest/api/3/issue"
OPTIONS = {"base_url": SITE, "email": "ops@example.com", "api_token": "jira-token-123456", "project": "SUP",
           "assignee": "5b10ac8d82e05b22cc7d4ef5", "labels": ["call-back", "billing"]}
SEARCH = f"{SITE}/rest/api/3/search/jql"
CREATED = {"id": "10042", "key": "SUP-42", "self": f"{SITE}/rest/api/3/issue/10042"}
MARKER = delivery_label("jira", "dlv_test")


class TestJiraContract(DestinationContract):
    destination_type = "jira"
    options = OPTIONS

    def mock_success(self, rsps):
        rsps.add(responses.POST, CREATE, json=CREATED, status=201)


def body_of(call) -> dict:
    return json.loads(call.request.body)


def test_creates_one_issue_with_every_field(sample_report, tasks_jira_spec):
    destination = make_destination("jira", {**OPTIONS, "fields": {"customfield_10042": "analysis.intent"}})
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, json=CREATED, status=201)
        result, ctx = deliver(destination, sample_report)
        (call,) = rsps.calls
    tasks_jira_spec.request(call.request)
    tasks_jira_spec.response(call.request, call.response)
    assert call.request.url == CREATE
    expected_auth = base64.b64encode(b"ops@example.com:jira-token-123456").decode()
    assert call.request.headers["Authorization"] == f"Basic {expected_auth}"
    assert call.request.headers["Content-Type"] == "application/json"
    fields = body_of(call)["fields"]
    assert set(fields) == {"project", "issuetype", "summary", "description", "duedate", "priority", "labels",
                           "assignee", "customfield_10042"}
    assert fields["project"] == {"key": "SUP"}
    assert fields["issuetype"] == {"name": "Task"}
    assert fields["summary"] == "Call back +31 6 23456789 (complaint)"
    assert fields["duedate"] == "2026-03-03"
    assert fields["priority"] == {"name": "High"}  # sentiment 2 -> high -> Jira "High"
    assert fields["labels"] == ["call-back", "billing", MARKER]
    assert MARKER.startswith("hub-") and len(MARKER) == 20
    assert fields["assignee"] == {"accountId": "5b10ac8d82e05b22cc7d4ef5"}
    assert fields["customfield_10042"] == "complaint"
    description = fields["description"]
    assert description["type"] == "doc" and description["version"] == 1
    first = description["content"][0]
    assert first == {"type": "paragraph", "content": [
        {"type": "text", "text": "Call back +31 6 23456789 by 2026-03-03: the issue was not resolved on the call."}]}
    links = [node for paragraph in description["content"] for node in paragraph["content"] if node.get("marks")]
    assert [node["marks"][0]["attrs"]["href"] for node in links] == [
        "https://recordings.example.com/0b7e9a52.mp3", "https://hub.example.com/reports/rep_test"]
    assert ctx.state == {"sent": {"task": {"at": ANY, "times": 1}}, "task_id": "10042", "task_key": "SUP-42",
                         "task_url": f"{SITE}/browse/SUP-42"}
    assert result.message == (f"created Jira task SUP-42 {SITE}/browse/SUP-42 (high priority, due 2026-03-03)")


def test_spec_check_rejects_a_broken_issue_request(sample_report, tasks_jira_spec):
    """The description check must really be on: a malformed body and a missing credential fail it."""
    destination = make_destination("jira", OPTIONS)
    _, ctx = deliver(destination, sample_report, dry_run=True)
    good = ctx.sent[0].body
    broken = copy.deepcopy(good)
    broken["fields"] = ["not", "an", "object"]
    request = requests.Request("POST", CREATE, json=broken, auth=("ops@example.com", "t")).prepare()
    with pytest.raises(Exception) as info:
        tasks_jira_spec.request(request)
    assert "not of type 'object'" in str(info.value)
    tasks_jira_spec.request(requests.Request("POST", CREATE, json=good, auth=("ops@example.com", "t")).prepare())


def test_numeric_project_id_priority_none_and_no_assignee(make_report):
    destination = make_destination("jira", {**OPTIONS, "project": "10000", "assignee": None, "labels": [],
                                            "issue_type": "Bug", "priority": {}, "default_priority": "none"})
    _, ctx = deliver(destination, make_report(), dry_run=True)
    fields = ctx.sent[0].body["fields"]
    assert fields["project"] == {"id": "10000"}
    assert fields["issuetype"] == {"name": "Bug"}
    assert "priority" not in fields and "assignee" not in fields
    assert fields["labels"] == [MARKER]


def test_priority_names_map_each_level(make_report):
    destination = make_destination("jira", {**OPTIONS, "priority_names": {"high": "P1", "medium": "P3"}})
    _, ctx = deliver(destination, make_report(), dry_run=True)
    assert ctx.sent[0].body["fields"]["priority"] == {"name": "P1"}


def test_validation_error_names_destination_field_and_key(sample_report):
    destination = make_destination("jira", OPTIONS, name="support-jira")
    answer = {"errorMessages": [], "errors": {"priority": "Specify the Priority (name) in the string format",
                                              "customfield_10042": "Field cannot be set."}}
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, json=answer, status=400)
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report)
    message = str(info.value)
    assert "'support-jira'" in message and "HTTP 400" in message
    assert "field 'priority': Specify the Priority (name) in the string format (fix the 'priority_names' key" \
        in message
    assert "field 'customfield_10042': Field cannot be set. (fix the 'fields' key)" in message
    assert info.value.http_status == 400


def test_error_messages_without_fields(sample_report):
    destination = make_destination("jira", OPTIONS)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, status=400,
                 json={"errorMessages": ["Issue type 'Task' does not exist."], "errors": {}})
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report)
    assert "Issue type 'Task' does not exist." in str(info.value)


def test_rate_limit_retries_after_the_header(sample_report):
    destination = make_destination("jira", OPTIONS)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, status=429, headers={"Retry-After": "17"}, body="")
        with pytest.raises(hub.Retryable) as info:
            deliver(destination, sample_report)
    assert info.value.retry_after == 17 and info.value.http_status == 429


def test_forbidden_names_the_credentials(sample_report):
    destination = make_destination("jira", OPTIONS, name="support-jira")
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, status=403, json={"errorMessages": ["You do not have permission."]})
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report)
    assert "'support-jira'" in str(info.value) and "api_token" in str(info.value)
    assert "jira-token-123456" not in str(info.value)


@pytest.mark.parametrize("options, message", [
    ({"labels": ["call back"]}, "Jira labels cannot contain spaces"),
    ({"project": "support desk"}, "must be a project key"),
    ({"email": "not-an-email"}, "destinations.jira.email"),
    ({"fields": {"customfield_1": "analysis.["}}, "destinations.jira.fields"),
])
def test_bad_jira_options_fail_at_load(options, message):
    with pytest.raises(Exception) as info:
        make_destination("jira", {**OPTIONS, **options})
    assert message in str(info.value)


def test_missing_required_keys_are_named():
    with pytest.raises(Exception) as info:
        make_destination("jira", {"base_url": SITE})
    for key in ("email", "api_token", "project"):
        assert f"destinations.jira.{key}" in str(info.value)


def test_retry_finds_the_issue_an_unanswered_attempt_created(sample_report, tasks_jira_spec):
    destination = make_destination("jira", OPTIONS)
    found = {"issues": [{"id": "10042", "key": "SUP-42", "self": f"{SITE}/rest/api/3/issue/10042",
                         "fields": {"summary": "Call back +31 6 23456789 (complaint)"}}], "isLast": True}
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, SEARCH, json=found)
        result, ctx = deliver(destination, sample_report, state={"sent": {"task": {"at": 0.0, "times": 1}}}, attempt=2)
        (call,) = rsps.calls
    tasks_jira_spec.request(call.request)
    tasks_jira_spec.response(call.request, call.response)
    assert body_of(call) == {"jql": f'project = "SUP" AND labels = "{MARKER}"', "fields": ["summary"],
                             "maxResults": 1}
    assert ctx.state["task_key"] == "SUP-42" and ctx.state["task_url"] == f"{SITE}/browse/SUP-42"
    assert result.message.startswith("found Jira task SUP-42")


def test_retry_creates_when_the_search_finds_nothing(sample_report, tasks_jira_spec):
    destination = make_destination("jira", OPTIONS)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, SEARCH, json={"issues": [], "isLast": True})
        rsps.add(responses.POST, CREATE, json=CREATED, status=201)
        _, ctx = deliver(destination, sample_report, attempt=2)
        search, create = rsps.calls
    tasks_jira_spec.response(search.request, search.response)
    assert body_of(create)["fields"]["labels"][-1] == MARKER
    assert ctx.state["task_id"] == "10042"


def test_spec_check_rejects_a_broken_search(tasks_jira_spec):
    request = requests.Request("POST", SEARCH, json={"jql": "labels = x", "maxResults": "one", "limit": 1},
                               auth=("ops@example.com", "t")).prepare()
    with pytest.raises(Exception, match="Request body validation error") as info:
        tasks_jira_spec.request(request)
    assert "'one' is not of type 'integer'" in str(info.value.__cause__)


def test_without_the_delivery_label_a_retry_just_creates(sample_report):
    destination = make_destination("jira", {**OPTIONS, "dedupe_label": False})
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, json=CREATED, status=201)
        deliver(destination, sample_report, attempt=2)
        (create,) = rsps.calls
    assert body_of(create)["fields"]["labels"] == ["call-back", "billing"]


def test_adf_paragraphs_line_breaks_and_links():
    from hub_tasks.adf import to_adf

    doc = to_adf("First line\nsee https://x.test/a?b=1.\n\n\nSecond paragraph", links=["https://x.test/a?b=1"])
    assert doc == {"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [
            {"type": "text", "text": "First line"},
            {"type": "hardBreak"},
            {"type": "text", "text": "see "},
            {"type": "text", "text": "https://x.test/a?b=1",
             "marks": [{"type": "link", "attrs": {"href": "https://x.test/a?b=1"}}]},
            {"type": "text", "text": "."}]},
        {"type": "paragraph", "content": [{"type": "text", "text": "Second paragraph"}]}]}
    assert to_adf("  \n ") == {"type": "doc", "version": 1, "content": []}


# --- scoped API tokens, expiry, RateLimit-Reason ----------------------------------------------

GATEWAY = "https://api.atlassian.com/ex/jira/11223344-a1b2-3b33-c444-def123456789"


def test_scoped_token_goes_through_the_gateway_and_links_point_at_the_site(sample_report):
    destination = make_destination("jira", {**OPTIONS, "base_url": GATEWAY, "site_url": SITE})
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, f"{GATEWAY}/rest/api/3/issue", status=201,
                 json={**CREATED, "self": f"{GATEWAY}/rest/api/3/issue/10042"})
        result, ctx = deliver(destination, sample_report)
        assert rsps.calls[0].request.headers["Authorization"].startswith("Basic ")
    assert ctx.state["task_url"] == f"{SITE}/browse/SUP-42"


def test_the_gateway_without_a_site_url_names_the_key():
    with pytest.raises(Exception, match="site_url: required when base_url is https://api.atlassian.com"):
        make_destination("jira", {**OPTIONS, "base_url": GATEWAY})


def test_unauthorized_says_api_tokens_expire(sample_report):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, status=401, body="Client must be authenticated to access this resource.")
        with pytest.raises(hub.Permanent) as info:
            deliver(make_destination("jira", OPTIONS), sample_report)
    reason = info.value.reason
    assert "API tokens expire (at most a year after they are created)" in reason
    assert "https://api.atlassian.com/ex/jira/<cloudId>" in reason and "jira-token-123456" not in reason


@pytest.mark.parametrize("headers, wait", [
    ({"RateLimit-Reason": "jira-burst-based"}, 1.0),
    ({"RateLimit-Reason": "jira-burst-based", "Retry-After": "3"}, 3.0),
    ({"RateLimit-Reason": "jira-per-issue-on-write"}, 2.0),
    ({"RateLimit-Reason": "jira-quota-tenant-based", "X-RateLimit-Reset": "2000-01-01T00:00Z"}, 60.0),
])
def test_rate_limit_reason_decides_the_wait(sample_report, headers, wait):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, status=429, headers=headers, body="")
        with pytest.raises(hub.Retryable) as info:
            deliver(make_destination("jira", OPTIONS), sample_report)
    assert info.value.retry_after == wait and info.value.http_status == 429
    assert f"Jira rate limit {headers['RateLimit-Reason']}" in info.value.reason


def test_quota_waits_until_its_reset(sample_report):
    from datetime import datetime, timedelta, timezone

    reset = (datetime.now(timezone.utc) + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%MZ")
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, CREATE, status=429, body="",
                 headers={"RateLimit-Reason": "jira-quota-tenant-based", "X-RateLimit-Reset": reset})
        with pytest.raises(hub.Retryable) as info:
            deliver(make_destination("jira", OPTIONS), sample_report)
    assert 8 * 60 < info.value.retry_after <= 10 * 60


# --- test_connection: the read calls behind `destinations test` ---------------------------

@responses.activate
def test_jira_asks_who_the_account_is_and_for_the_project():
    responses.add(responses.GET, f"{SITE}/rest/api/3/myself", json={"accountId": "5b10", "displayName": "Ops Bot"})
    responses.add(responses.GET, f"{SITE}/rest/api/3/project/SUP", json={"id": "10000", "key": "SUP"})
    assert probe_connection(make_destination("jira", OPTIONS)) == "authenticated as Ops Bot; project SUP"
    for call in responses.calls:
        expected = base64.b64encode(b"ops@example.com:jira-token-123456").decode()
        assert call.request.headers["Authorization"] == f"Basic {expected}" and call.request.method == "GET"


@responses.activate
def test_jira_names_a_project_it_cannot_see():
    responses.add(responses.GET, f"{SITE}/rest/api/3/myself", json={"accountId": "5b10"})
    responses.add(responses.GET, f"{SITE}/rest/api/3/project/SUP", status=404,
                  json={"errorMessages": ["No project could be found with key 'SUP'."]})
    with pytest.raises(hub.Permanent, match="no project 'SUP' that this account can see"):
        probe_connection(make_destination("jira", OPTIONS))


@responses.activate
def test_jira_bad_token_is_a_401_naming_the_credentials():
    responses.add(responses.GET, f"{SITE}/rest/api/3/myself", status=401, body="")
    with pytest.raises(hub.Permanent) as info:
        probe_connection(make_destination("jira", OPTIONS))
    assert info.value.http_status == 401 and "api_token" in info.value.reason
