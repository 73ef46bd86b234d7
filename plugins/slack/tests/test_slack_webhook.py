"""Incoming-webhook mode, the configuration schema, and when nothing is posted."""
from __future__ import annotations

import json

import pytest
import responses

from hub import Permanent, Retryable
from hub.testing import DestinationContract, deliver, make_destination, probe_connection

HOOK = "https://hooks.slack.com/services/T0000AAAA/B0000BBBB/abcdefghijklmnopqrstuvwx"
OPTIONS = {"webhook_url": HOOK}


class TestSlackWebhookContract(DestinationContract):
    destination_type = "slack"
    options = OPTIONS

    def mock_success(self, rsps):
        rsps.add(responses.POST, HOOK, body="ok", content_type="text/plain")


def test_webhook_request_field_by_field(sample_report, mocked_http, check_blocks):
    mocked_http.add(responses.POST, HOOK, body="ok", content_type="text/plain")
    result, ctx = deliver(make_destination("slack", {**OPTIONS, "mentions": ["@channel"]}), sample_report)
    sent = mocked_http.calls[0].request
    assert sent.url == HOOK and sent.method == "POST"
    assert sent.headers["Content-Type"] == "application/json"
    assert "Authorization" not in sent.headers
    body = json.loads(sent.body)
    # An incoming webhook posts to its own channel: only text and blocks are sent.
    assert set(body) == {"text", "blocks"}
    assert check_blocks(body) == []
    assert body["text"].startswith("<!channel> :telephone_receiver: Outbound call to")
    assert ctx.state == {"posted": True, "via": "webhook"}
    assert result.message == "posted to the webhook's channel"
    assert HOOK not in result.message


@pytest.mark.parametrize("status, code, fix", [
    (400, "invalid_payload", "check the `header`, `summary` and `text` templates"),
    (400, "invalid_blocks", "check the `header`, `summary` and `text` templates"),
    (400, "no_text", "check the `header`"),
    (400, "user_not_found", "check `mentions`"),
    (403, "action_prohibited", "ask a Slack admin"),
    (403, "invalid_token", "check `webhook_url`: create a new one"),
    (404, "channel_not_found", "check `webhook_url`: create a new one"),
    (404, "no_service", "the webhook was removed or disabled"),
    (410, "channel_is_archived", "the webhook's channel is archived"),
])
def test_webhook_errors_are_permanent_and_name_the_fix(sample_report, mocked_http, status, code, fix):
    mocked_http.add(responses.POST, HOOK, status=status, body=code, content_type="text/plain")
    with pytest.raises(Permanent) as info:
        deliver(make_destination("slack", OPTIONS, name="sales"), sample_report)
    message = str(info.value)
    assert message.startswith(f"destination 'sales': Slack webhook answered {status} {code}: ")
    assert fix in message
    assert info.value.http_status == status
    assert HOOK not in message and "abcdefghijklmnop" not in message


def test_unknown_webhook_error_is_permanent_with_slacks_words(sample_report, mocked_http):
    mocked_http.add(responses.POST, HOOK, status=400, body="something_new", content_type="text/plain")
    with pytest.raises(Permanent) as info:
        deliver(make_destination("slack", OPTIONS), sample_report)
    assert "HTTP 400 from hooks.slack.com: something_new" in str(info.value)


def test_webhook_429_retries_after_the_wait_asked(sample_report, mocked_http):
    mocked_http.add(responses.POST, HOOK, status=429, body="rate_limited", headers={"Retry-After": "5"})
    with pytest.raises(Retryable) as info:
        deliver(make_destination("slack", OPTIONS), sample_report)
    assert info.value.retry_after == 5.0


def test_webhook_500_rollup_error_retries(sample_report, mocked_http):
    mocked_http.add(responses.POST, HOOK, status=500, body="rollup_error")
    with pytest.raises(Retryable):
        deliver(make_destination("slack", OPTIONS), sample_report)


def test_status_update_that_is_not_an_error_posts_nothing(make_report, mocked_http):
    report = make_report("status-update", call={"id": "c-1", "type": "inbound_phone_call", "status": "in-progress"},
                         error=None)
    result, ctx = deliver(make_destination("slack", OPTIONS), report)
    assert ctx.sent == [] and result.message == "status-update 'in-progress' is not an error: nothing posted"


def test_failed_call_status_update_is_posted(make_report, mocked_http):
    mocked_http.add(responses.POST, HOOK, body="ok")
    deliver(make_destination("slack", OPTIONS), make_report("status-update"))
    body = json.loads(mocked_http.calls[0].request.body)
    assert body["blocks"][0]["text"]["text"] == ":warning: Call failed: +31 6 23456789"


def test_one_message_per_second_per_destination():
    limiter = make_destination("slack", OPTIONS).limiters["default"]
    assert limiter.rate == "1/1s"


# --- configuration --------------------------------------------------------------------------

@pytest.mark.parametrize("options, expected", [
    ({}, "webhook_url: required: an incoming-webhook URL, or set token and channel instead"),
    ({"webhook_url": HOOK, "token": "xoxb-1-2-3", "channel": "C0123ABCDE"}, "not both"),
    ({"token": "xoxb-1-2-3"}, "channel: required with token"),
    ({"token": "abc", "channel": "C0123ABCDE"}, "token: must be a Slack token"),
    ({"webhook_url": "http://hooks.slack.com/services/x"}, "webhook_url"),
    ({**OPTIONS, "mentions": ["here"]}, "not a Slack mention: here"),
    ({**OPTIONS, "header": "{{ unclosed"}, "header"),
    ({**OPTIONS, "analysis_fields": {"Mood": "analysis.["}}, "analysis_fields"),
    ({**OPTIONS, "sentiment_max": 0}, "sentiment_max"),
    ({**OPTIONS, "channel_name": "x"}, "channel_name"),
])
def test_config_problems_name_the_key(options, expected):
    with pytest.raises(Exception) as info:
        make_destination("slack", options, name="alerts")
    assert expected in str(info.value)
    assert "destinations.alerts" in str(info.value)


def test_mentions_shorthand_is_expanded():
    config = make_destination("slack", {**OPTIONS, "mentions": ["@here", "<!subteam^S0123ABC>", "<@U0456DEF>"]}).config
    assert config["mentions"] == ["<!here>", "<!subteam^S0123ABC>", "<@U0456DEF>"]


# --- test_connection: an empty message, which a live webhook refuses without posting ---------

@responses.activate
def test_connection_of_a_live_webhook_posts_nothing():
    responses.add(responses.POST, HOOK, status=400, body="no_text")
    assert probe_connection(make_destination("slack", OPTIONS)).startswith("the webhook is live")
    assert json.loads(responses.calls[0].request.body) == {}


@responses.activate
def test_connection_of_a_removed_webhook_says_so():
    responses.add(responses.POST, HOOK, status=404, body="no_service")
    with pytest.raises(Permanent, match="no_service: the webhook was removed or disabled"):
        probe_connection(make_destination("slack", OPTIONS))

