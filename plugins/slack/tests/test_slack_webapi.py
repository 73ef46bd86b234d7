"""Bot-token mode: chat.postMessage checked against Slack's Web API description, and its errors."""
from __future__ import annotations

import json
import re

import pytest
import responses

from hub import Permanent, Retryable
from hub.testing import DestinationContract, deliver, make_destination, probe_connection

TOKEN = "xoxb-1111-2222-abcdefghijklmnop"
CHANNEL = "C0123ABCDE"
URL = "https://slack.com/api/chat.postMessage"
OPTIONS = {"token": TOKEN, "channel": CHANNEL}
OK = {"ok": True, "channel": CHANNEL, "ts": "1772442847.000200",
      "message": {"type": "message", "subtype": "bot_message", "text": "fallback", "ts": "1772442847.000200",
                  "bot_id": "B0123ABCD"}}


class TestSlackWebApiContract(DestinationContract):
    destination_type = "slack"
    options = OPTIONS

    def mock_success(self, rsps):
        rsps.add(responses.POST, URL, json=OK)


def test_mocked_answers_match_the_spec(check_response):
    assert check_response("200", OK) == []
    assert check_response("default", {"ok": False, "error": "channel_not_found"}) == []
    # and the check is live: a malformed answer is caught
    assert check_response("200", {"ok": True, "channel": "general", "ts": "12"})


def test_post_message_request_matches_the_spec_field_by_field(sample_report, mocked_http, check_post_message,
                                                              check_blocks):
    mocked_http.add(responses.POST, URL, json=OK)
    destination = make_destination("slack", {**OPTIONS, "mentions": ["@here"]})
    result, ctx = deliver(destination, sample_report)

    assert len(mocked_http.calls) == 1
    sent = mocked_http.calls[0].request
    assert check_post_message(sent) == []
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["Content-Type"] == "application/json; charset=utf-8"
    body = json.loads(sent.body)
    assert set(body) == {"channel", "text", "blocks", "unfurl_links", "unfurl_media", "metadata"}
    assert body["metadata"] == {"event_type": "sovereign_hub_call_report",
                                "event_payload": {"report_id": sample_report.id, "delivery_id": "dlv_test"}}
    assert body["channel"] == CHANNEL
    assert body["unfurl_links"] is False and body["unfurl_media"] is False
    assert body["text"].startswith("<!here> :telephone_receiver: Outbound call to +31 6 23456789 (sentiment 2)")
    assert check_blocks(body) == []
    assert body["blocks"][2]["text"]["text"].startswith("<!here>\nCustomer reported")

    assert ctx.state == {"posted": True, "via": "chat.postMessage", "channel": CHANNEL, "ts": "1772442847.000200",
                         "attempt": 1, "attempt_at": ctx.state["attempt_at"]}
    assert result.message == f"posted to channel {CHANNEL} (ts 1772442847.000200)"
    assert ctx.sent[0].headers["Authorization"] == "[secret]"
    assert TOKEN not in json.dumps([r.to_dict() for r in ctx.sent])


def test_the_spec_check_rejects_an_invalid_request(slack_spec, check_post_message):
    class Sent:  # what a broken client would send: wrong path, no token, misspelt and mistyped arguments
        method = "POST"
        url = "https://slack.com/api/chat.postMessag"
        headers = {"Content-Type": "text/plain"}
        body = json.dumps({"chanel": CHANNEL, "text": 5, "unfurl_links": "no", "blocks": {"type": "section"}})

    problems = check_post_message(Sent)
    joined = "\n".join(problems)
    for expected in ("url https://slack.com/api/chat.postMessag", "content type 'text/plain'",
                     "token: required", "channel: required", "chanel: not an argument",
                     "text: must be a string", "unfurl_links: must be a boolean", "blocks: must be a JSON array"):
        assert expected in joined, joined


def test_dry_run_prints_the_exact_request_and_sends_nothing(sample_report, mocked_http, check_post_message):
    destination = make_destination("slack", OPTIONS)
    result, ctx = deliver(destination, sample_report, dry_run=True)
    assert len(mocked_http.calls) == 0
    (sent,) = ctx.sent
    assert sent.method == "POST" and sent.url == URL
    assert sent.body["channel"] == CHANNEL and sent.body["blocks"][0]["type"] == "header"
    assert result.message == f"would post to channel {CHANNEL} (ts 0000000000.000000)"

    class Recorded:
        method, url, headers, body = sent.method, sent.url, {**sent.headers, "Authorization": "Bearer x"}, sent.body
    assert check_post_message(Recorded) == []


def test_redelivery_after_success_posts_nothing(sample_report, mocked_http):
    mocked_http.add(responses.POST, URL, json=OK)
    destination = make_destination("slack", OPTIONS)
    _, ctx = deliver(destination, sample_report)
    result, ctx2 = deliver(destination, sample_report, state=ctx.state, attempt=2)
    assert ctx2.sent == [] and len(mocked_http.calls) == 1
    assert result.message == f"already posted to channel {CHANNEL} (ts 1772442847.000200); not posted again"


@pytest.mark.parametrize("error, fix", [
    ("channel_not_found", "check `channel`: use the channel ID"),
    ("not_in_channel", "/invite @<app> in the channel"),
    ("is_archived", "`channel` is archived"),
    ("invalid_auth", "check `token`: a bot token (xoxb-…)"),
    ("not_authed", "check `token`"),
    ("missing_scope", "add chat:write"),
    ("invalid_blocks", "check the `header`, `summary` and `text` templates"),
    ("msg_blocks_too_long", "check the `header`, `summary` and `text` templates"),
    ("some_new_error", "chat.postMessage#errors"),
])
def test_api_errors_are_permanent_and_name_the_fix(sample_report, mocked_http, error, fix):
    mocked_http.add(responses.POST, URL, json={"ok": False, "error": error})
    destination = make_destination("slack", OPTIONS, name="escalations")
    with pytest.raises(Permanent) as info:
        deliver(destination, sample_report)
    message = str(info.value)
    assert message.startswith(f"destination 'escalations': Slack error {error}: ")
    assert fix in message
    assert TOKEN not in message


def test_invalid_blocks_carries_slacks_details(sample_report, mocked_http):
    mocked_http.add(responses.POST, URL, json={
        "ok": False, "error": "invalid_blocks",
        "response_metadata": {"messages": ["[ERROR] must be less than 3001 characters [json-pointer:/blocks/2/text/text]"]}})
    with pytest.raises(Permanent) as info:
        deliver(make_destination("slack", OPTIONS), sample_report)
    assert "([ERROR] must be less than 3001 characters [json-pointer:/blocks/2/text/text])" in str(info.value)


def test_ratelimited_in_body_retries_after_the_wait_asked(sample_report, mocked_http):
    mocked_http.add(responses.POST, URL, json={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "12"})
    with pytest.raises(Retryable) as info:
        deliver(make_destination("slack", OPTIONS), sample_report)
    assert info.value.retry_after == 12.0
    assert "ratelimited" in str(info.value)


def test_rate_limited_as_the_spec_spells_it_retries(sample_report, mocked_http, check_response):
    answer = {"ok": False, "error": "rate_limited"}  # the 2020 spec's code (today's Slack says "ratelimited")
    assert check_response("default", answer) == []
    mocked_http.add(responses.POST, URL, json=answer)
    with pytest.raises(Retryable) as info:
        deliver(make_destination("slack", OPTIONS, name="sales"), sample_report)
    assert info.value.retry_after == 1.0  # no Retry-After given: wait a second, the channel's pace
    assert str(info.value).startswith("destination 'sales': Slack error rate_limited: ")


@pytest.mark.parametrize("error", ["channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "no_text",
                                   "not_authed", "invalid_auth", "account_inactive"])
def test_error_answers_the_spec_lists_are_permanent(sample_report, mocked_http, check_response, error):
    answer = {"ok": False, "error": error}
    assert check_response("default", answer) == []  # the mock is an answer Slack documents
    mocked_http.add(responses.POST, URL, json=answer)
    with pytest.raises(Permanent) as info:
        deliver(make_destination("slack", OPTIONS), sample_report)
    assert f"Slack error {error}: " in str(info.value)
    assert re.search(r"`(channel|token|header|summary|text)`", str(info.value))  # names the key to fix


def test_http_429_retries_after_the_wait_asked(sample_report, mocked_http):
    mocked_http.add(responses.POST, URL, status=429, json={"ok": False, "error": "ratelimited"},
                    headers={"Retry-After": "30"})
    with pytest.raises(Retryable) as info:
        deliver(make_destination("slack", OPTIONS), sample_report)
    assert info.value.retry_after == 30.0 and info.value.http_status == 429


@pytest.mark.parametrize("answer", [
    {"json": {"ok": False, "error": "internal_error"}},
    {"json": {"ok": False, "error": "service_unavailable"}},
    {"status": 502, "body": "<html>bad gateway</html>"},
    {"status": 200, "body": "<html>not json</html>"},
])
def test_transient_failures_retry(sample_report, mocked_http, answer):
    mocked_http.add(responses.POST, URL, **answer)
    with pytest.raises(Retryable):
        deliver(make_destination("slack", OPTIONS), sample_report)


def test_failed_attempt_leaves_no_posted_state(sample_report, mocked_http):
    mocked_http.add(responses.POST, URL, json={"ok": False, "error": "internal_error"})
    destination = make_destination("slack", OPTIONS)
    ctx = destination.context(delivery_id="d1")
    with pytest.raises(Retryable):
        destination.deliver(sample_report, ctx)
    assert "posted" not in ctx.state
    # Slack: internal_error means "it's possible some aspect of the operation succeeded": the next attempt looks
    assert ctx.was_sent("message")


@pytest.mark.parametrize("api_url, posted_to", [
    ("https://slack-gov.com/api", "https://slack-gov.com/api/chat.postMessage"),   # GovSlack
    ("http://127.0.0.1:8765/api/", "http://127.0.0.1:8765/api/chat.postMessage"),   # a local Slack for tests
])
def test_api_url_moves_the_web_api(api_url, posted_to, sample_report, mocked_http):
    """Only the base moves: the request is the one checked against Slack's spec at slack.com."""
    mocked_http.add(responses.POST, posted_to, json=OK)
    mocked_http.add(responses.POST, "https://slack.com/api/chat.postMessage", json=OK)
    _, moved = deliver(make_destination("slack", {**OPTIONS, "api_url": api_url}, name="gov"), sample_report)
    _, default = deliver(make_destination("slack", OPTIONS, name="com"), sample_report)
    assert [r.url for r in moved.sent] == [posted_to]
    gov, com = (call.request for call in mocked_http.calls)
    assert (gov.body, gov.headers["Authorization"]) == (com.body, com.headers["Authorization"])


def test_api_url_defaults_to_slack_com_and_must_be_a_url():
    assert make_destination("slack", OPTIONS).config["api_url"] == "https://slack.com/api"
    with pytest.raises(Exception, match='api_url: "slack-gov.com/api" is not an absolute http\\(s\\) URL'):
        make_destination("slack", {**OPTIONS, "api_url": "slack-gov.com/api"})


# --- test_connection: auth.test, then conversations.info (shared/specs/slack: auth.test needs no
# scope; conversations.info needs channels:read, groups:read, im:read or mpim:read) -------------

AUTH_TEST = "https://slack.com/api/auth.test"
INFO = "https://slack.com/api/conversations.info"
HISTORY = "https://slack.com/api/conversations.history"
HISTORY_PAGE = {"ok": True, "messages": [{"type": "message", "text": "hello", "ts": "1772442800.000100"}],
                "has_more": False, "pin_count": 0, "channel_actions_ts": None, "channel_actions_count": 0}
WHO = {"ok": True, "url": "https://acme.slack.com/", "team": "Acme", "user": "hub", "team_id": "T1", "user_id": "U1"}


@responses.activate
def test_connection_names_the_token_s_user_and_the_channel():
    responses.add(responses.GET, AUTH_TEST, json=WHO)
    responses.add(responses.GET, INFO, json={"ok": True, "channel": {"id": CHANNEL, "name": "calls"}})
    responses.add(responses.GET, HISTORY, json=HISTORY_PAGE)
    assert probe_connection(make_destination("slack", OPTIONS)) == (
        "authenticated as hub in Acme; channel #calls; no-duplicate look-up available "
        "(conversations.history with message metadata)")
    auth, info, history = responses.calls
    assert auth.request.headers["Authorization"] == info.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert info.request.params == {"channel": CHANNEL}
    assert history.request.params == {"channel": CHANNEL, "limit": "1"}


@responses.activate
@pytest.mark.parametrize("error, words", [("invalid_auth", "check `token`"), ("channel_not_found", "check `channel`")])
def test_connection_says_what_is_wrong(error, words):
    responses.add(responses.GET, AUTH_TEST, json=WHO if error == "channel_not_found" else {"ok": False, "error": error})
    responses.add(responses.GET, INFO, json={"ok": False, "error": error})
    with pytest.raises(Permanent, match=f"Slack error {error}: {re.escape(words)}"):
        probe_connection(make_destination("slack", OPTIONS))


@responses.activate
def test_connection_without_channels_read_leaves_the_channel_unchecked():
    responses.add(responses.GET, AUTH_TEST, json=WHO)
    responses.add(responses.GET, INFO, json={"ok": False, "error": "missing_scope", "needed": "channels:read"})
    responses.add(responses.GET, HISTORY, json=HISTORY_PAGE)
    assert "not checked (that needs the channels:read scope" in probe_connection(make_destination("slack", OPTIONS))

