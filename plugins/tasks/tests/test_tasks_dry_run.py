"""For every tracker: a dry run records exactly the request a live delivery sends, and sends nothing."""
from __future__ import annotations

import json
import re

import pytest
import responses

from hub.testing import deliver, make_destination

CASES = {
    "jira": ({"base_url": "https://acme.atlassian.net", "email": "ops@example.com", "api_token": "jira-dry-run-1",
              "project": "SUP"},
             "https://acme.atlassian.net/rest/api/3/issue", {"id": "10042", "key": "SUP-42"}),
    "asana": ({"token": "asana-dry-run-2", "projects": ["1100000000000002"]},
              "https://app.asana.com/api/1.0/tasks", {"data": {"gid": "1209000000000042"}}),
    "linear": ({"api_key": "lin_api_dry_run_3", "team_id": "9cfb482a-81e3-4154-b5b9-2c805e70a02d"},
               "https://api.linear.app/graphql",
               {"data": {"issueCreate": {"success": True, "issue": {"id": "x", "identifier": "SUP-1"}}}}),
    "todoist": ({"token": "todoist-dry-run-4"}, "https://api.todoist.com/api/v1/tasks", {"id": "6X7rM8997g3RQmvh"}),
    "trello": ({"key": "trello-dry-key-5", "token": "trello-dry-run-6", "list_id": "5abbe4b7ddc1b351ef961414"},
               "https://api.trello.com/1/cards", {"id": "65f0c1d2e3f4a5b6c7d8e9f0"}),
}


@pytest.mark.parametrize("type_name", sorted(CASES))
def test_dry_run_records_the_exact_live_request(type_name, sample_report):
    options, url, answer = CASES[type_name]
    destination = make_destination(type_name, options)
    with responses.RequestsMock() as rsps:
        result, dry = deliver(destination, sample_report, dry_run=True)
        assert len(rsps.calls) == 0
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, url, json=answer)
        _, live = deliver(destination, sample_report)
    assert [r.to_dict() for r in dry.sent] == [r.to_dict() for r in live.sent]
    (sent,) = dry.sent
    assert sent.method == "POST" and sent.url.split("?")[0] == url
    if type_name == "trello":  # key and token are query parameters (Trello's documented form)
        assert sent.url == f"{url}?key=[secret]&token=[secret]" and "Authorization" not in sent.headers
    else:
        assert sent.headers["Authorization"] == "[secret]"
    printed = json.dumps(sent.to_dict())
    for secret in options.values():
        if isinstance(secret, str) and "dry" in secret:
            assert secret not in printed
    assert result.message.startswith("would create ")


PLANTED = ("Caller asked us to [reset the password](https://evil.example/login) or visit "
           "<https://evil.example/x>, https://evil.example/y and www.evil.example today.")


def _description(type_name: str, body):
    if type_name == "linear":
        return body["variables"]["input"]["description"]
    return body["desc"] if type_name == "trello" else body["description"]


@pytest.mark.parametrize("type_name", ["linear", "todoist", "trello"])
def test_call_text_cannot_plant_a_link_in_a_markdown_tracker(type_name, make_report):
    """Rendered as CommonMark with linkify (what these trackers do), the caller's text has no link;
    the hub's own links (recording, report) still are, and the text reads as the caller said it."""
    from markdown_it import MarkdownIt

    options, _, _ = CASES[type_name]
    report = make_report(summary=PLANTED, analysis={"follow_up_needed": True, "intent": "[x](https://evil.example)"})
    _, dry = deliver(make_destination(type_name, options), report, dry_run=True)
    description = _description(type_name, dry.sent[0].body)
    html = MarkdownIt("commonmark", {"linkify": True}).enable("linkify").render(description)
    links = [href for href in re.findall(r'href="([^"]+)"', html)]
    assert links == [report.recording_url, f"https://hub.example.com/reports/{report.id}"], html
    text = re.sub(r"<[^>]+>", "", html).replace("&lt;", "<").replace("&gt;", ">")
    assert PLANTED in text


def test_call_text_gets_no_link_mark_in_jira_but_the_report_link_does(make_report):
    options, _, _ = CASES["jira"]
    report = make_report(summary=PLANTED, recording_url="https://recordings.example.com/r.mp3")
    _, dry = deliver(make_destination("jira", options), report, dry_run=True)
    nodes = [n for p in dry.sent[0].body["fields"]["description"]["content"] for n in p["content"]]
    linked = [n["marks"][0]["attrs"]["href"] for n in nodes if n.get("marks")]
    assert linked == ["https://recordings.example.com/r.mp3", f"https://hub.example.com/reports/{report.id}"]
    assert PLANTED in "".join(n.get("text", "") for n in nodes)
