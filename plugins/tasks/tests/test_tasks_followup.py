"""The shared follow-up model: templates, due dates, priority rules, idempotent delivery flow."""
from __future__ import annotations

from datetime import date

import pytest
import responses

import hub
from hub.testing import deliver, make_destination

from hub_tasks import DESTINATIONS
from hub_tasks.base import idempotency_uuid
from hub_tasks.followup import build_follow_up, priority_level

JIRA = {"base_url": "https://acme.atlassian.net", "email": "ops@example.com",
        "api_token": "jira-token-123456", "project": "SUP"}


def follow_up(report, **options):
    destination = make_destination("jira", {**JIRA, **options})
    return build_follow_up(report, destination.config, destination.settings)


def test_default_title_and_description_name_who_why_and_links(sample_report):
    item = follow_up(sample_report)
    assert item.title == "Call back +31 6 23456789 (complaint)"
    lines = item.description.splitlines()
    assert lines[0] == "Call back +31 6 23456789 by 2026-03-03: the issue was not resolved on the call."
    assert sample_report.summary in lines
    assert "- sentiment: 2" in lines and "- resolved: no" in lines and "- intent: complaint" in lines
    assert "Call: outbound, 2026-03-02 09:14 UTC, 5m 12s via Support line" in lines
    assert "Recording: https://recordings.example.com/0b7e9a52.mp3" in lines
    assert lines[-1] == "Report: https://hub.example.com/reports/rep_test"
    assert item.report_url == "https://hub.example.com/reports/rep_test"
    assert item.customer_number == "+31623456789"


def test_web_call_has_no_number_to_call_back(make_report):
    item = follow_up(make_report("end-of-call-report-web-call"))
    assert item.title == "Follow up on a web call"
    assert item.description.startswith("Follow up with the web caller by ")
    assert "Recording:" not in item.description
    assert item.customer_number is None


def test_due_date_counts_calendar_or_business_days(make_report):
    friday = make_report(timestamp="2026-03-06T16:00:00.000Z")
    assert follow_up(friday).due == date(2026, 3, 7)
    assert follow_up(friday, business_days=True).due == date(2026, 3, 9)
    assert follow_up(friday, due_in_days=0).due == date(2026, 3, 6)
    assert follow_up(friday, due_in_days=3, business_days=True).due == date(2026, 3, 11)


def test_priority_rules_pick_the_most_pressing_match(make_report):
    angry = make_report(analysis={"sentiment": 1, "follow_up_needed": True})
    calm = make_report(analysis={"sentiment": 8, "follow_up_needed": True})
    no_analysis = make_report(analysis=None)
    config = make_destination("jira", JIRA).config
    assert priority_level(angry, config) == "high"  # default rule: sentiment <= 3
    assert priority_level(calm, config) == "medium"  # default_priority
    assert priority_level(no_analysis, config) == "medium"
    custom = make_destination("jira", {**JIRA, "priority": {"low": "analysis.sentiment >= 7",
                                                            "urgent": "analysis.sentiment <= 1"},
                                       "default_priority": "none"}).config
    assert list(custom["priority"]) == ["urgent", "low"]
    assert priority_level(angry, custom) == "urgent"
    assert priority_level(calm, custom) == "low"
    assert priority_level(make_report(analysis={"sentiment": 5}), custom) == "none"


def test_assignee_and_labels_come_from_config(sample_report):
    item = follow_up(sample_report, assignee="5b10ac8d82e05b22cc7d4ef5", labels=["call-back", "billing"])
    assert item.assignee == "5b10ac8d82e05b22cc7d4ef5"
    assert item.labels == ("call-back", "billing")


@pytest.mark.parametrize("options, message", [
    ({"priority": {"critical": "analysis.sentiment <= 2"}}, "unknown priority level(s) critical"),
    ({"priority": {"high": "analysis.sentiment <=="}}, "not a valid JMESPath expression"),
    ({"title": "{% if %}"}, "destinations.jira.title"),
    ({"due_in_days": -1}, "destinations.jira.due_in_days"),
    ({"default_priority": "asap"}, "destinations.jira.default_priority"),
])
def test_bad_shared_options_fail_at_load_naming_the_key(options, message):
    with pytest.raises(Exception) as info:
        make_destination("jira", {**JIRA, **options})
    assert message in str(info.value)


def test_template_error_at_delivery_is_permanent_and_names_destination(sample_report):
    # the sandbox refuses attribute access through str.format: a SecurityError at render time
    destination = make_destination("jira", {**JIRA, "title": "{{ '{0.__class__}'.format(summary) }}"},
                                   name="support-jira")
    with responses.RequestsMock() as rsps:
        with pytest.raises(hub.Permanent) as info:
            deliver(destination, sample_report)
        assert len(rsps.calls) == 0
    assert "'support-jira'" in str(info.value) and "template" in str(info.value)
    assert "fix the 'title' key" in str(info.value)


def test_type_error_in_a_template_is_permanent_and_names_the_key(sample_report):
    destination = make_destination("jira", {**JIRA, "description": "{{ duration_seconds + summary }}"})
    with pytest.raises(hub.Permanent) as info:
        deliver(destination, sample_report)
    assert "TypeError" in str(info.value) and "fix the 'description' key" in str(info.value)
    assert "'jira'" in str(info.value)


def test_empty_title_is_permanent(sample_report):
    destination = make_destination("jira", {**JIRA, "title": "{{ nothing }}"})
    with pytest.raises(hub.Permanent) as info:
        deliver(destination, sample_report)
    assert "'title'" in str(info.value)


def test_saved_task_id_means_nothing_is_sent(sample_report):
    destination = make_destination("jira", JIRA)
    with responses.RequestsMock() as rsps:
        result, ctx = deliver(destination, sample_report, attempt=3,
                              state={"task_id": "10001", "task_key": "SUP-9", "task_url": None})
        assert len(rsps.calls) == 0
    assert ctx.sent == []
    assert result.message == "Jira task SUP-9 already exists; nothing created"


def test_idempotency_key_is_stable_per_delivery_and_destination():
    first = idempotency_uuid("jira", "dlv_1")
    assert first == idempotency_uuid("jira", "dlv_1")
    assert first != idempotency_uuid("jira", "dlv_2") != idempotency_uuid("other", "dlv_1")
    assert len(first) == 36 and first[14] == "4"


def test_long_title_and_description_are_cut_under_the_trackers_limits(make_report):
    item = follow_up(make_report(summary="word " * 5000), title="{{ summary }}")
    assert len(item.title) == 255 and item.title.endswith("…")
    assert len(item.description) == 16000 and item.description.endswith("…")


def test_destinations_sharing_a_credential_share_rate_limit_buckets():
    trello = {"key": "k" * 32, "list_id": "5abbe4b7ddc1b351ef961414"}
    one = make_destination("trello", {**trello, "token": "a" * 64}, name="board-one")
    same = make_destination("trello", {**trello, "token": "a" * 64, "list_id": "5abbe4b7ddc1b351ef961415"},
                            name="board-two")
    other = make_destination("trello", {**trello, "token": "b" * 64}, name="board-three")
    assert one.limiter_key() == same.limiter_key() != other.limiter_key()
    assert "a" * 64 not in one.limiter_key()  # a digest, never the token itself
    site = make_destination("jira", JIRA, name="jira-one").limiter_key()
    assert site == make_destination("jira", {**JIRA, "project": "OPS"}, name="jira-two").limiter_key()
    assert site != make_destination("jira", {**JIRA, "email": "bot@example.com"}, name="jira-three").limiter_key()


@pytest.mark.parametrize("destination_class", DESTINATIONS, ids=lambda cls: cls.type)
def test_every_tracker_by_default_acts_on_calls_that_need_a_follow_up(destination_class, make_report):
    assert destination_class.default_when == "analysis.follow_up_needed"
    rule = hub.Rule(destination_class.default_when)
    assert rule.matches(make_report(analysis={"follow_up_needed": True, "sentiment": 7}))
    assert not rule.matches(make_report(analysis={"follow_up_needed": False, "sentiment": 2}))
    assert not rule.matches(make_report(analysis=None))


def test_a_followup_the_create_followup_tool_queued_gives_its_title_and_notes(make_report):
    report = make_report("end-of-call-report-full")
    destination = make_destination("jira", JIRA)
    asked = {"title": "Send the renewal quote", "notes": "Before Friday, by email.", "tool_call_id": "t1"}
    item = build_follow_up(report, destination.config, destination.settings, followup=asked)
    assert item.title == "Send the renewal quote"
    assert item.description.splitlines()[0] == (
        "Asked for during the call with +31 6 23456789, due 2026-03-03: Before Friday, by email.")
    assert report.summary in item.description.splitlines()
    assert destination.accepts_followups


def test_a_followups_notes_are_call_text_in_a_markdown_tracker(make_report):
    from hub_tasks.call_text import escape_markdown

    destination = make_destination("linear", {"api_key": "lin_api_0123456789abcdef",
                                              "team_id": "9cfb482a-81e3-4154-b5b9-2c805e70a02d"})
    asked = {"title": "Call back", "notes": "See [this](https://evil.example)", "tool_call_id": "t2"}
    item = build_follow_up(make_report(), destination.config, destination.settings, escape_markdown, followup=asked)
    assert "[this](https://evil.example)" not in item.description
    assert "\\[this\\]" in item.description
