"""Bot mode never posts twice: a post whose answer was lost is looked up by its metadata first.

``FakeSlack`` is a local Slack behind ``responses``: ``chat.postMessage`` keeps each message
(with its metadata) and can lose its answer after accepting it (a ReadTimeout), and
``conversations.history`` answers from what was kept, newest first, between ``oldest`` and
``latest``, ``limit`` a page, paged with ``cursor``, the metadata only with
``include_all_metadata``. Every request is checked against Slack's spec and every answer
against the spec's response schemas (conftest), and the history request against what
slack_sdk's ``WebClient.conversations_history`` sends for the same arguments.
"""
from __future__ import annotations

import json
import logging
import time
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import responses
from slack_sdk import WebClient

from hub import Retryable
from hub.store import deliveries, utcnow
from hub.testing import deliver, load_sample, make_destination, probe_connection

from hub_slack import lookup

TOKEN = "xoxb-1111-2222-nodupesnodupesnodupes"
CHANNEL = "C0CALLS0001"
API = "https://slack.com/api"
OPTIONS = {"token": TOKEN, "channel": CHANNEL}
T0 = 1772442840.0  # the clock at the first attempt (2026-03-02 09:14 UTC)


class FakeSlack:
    def __init__(self, rsps, check_response, *, now):
        self.messages: list[dict] = []  # oldest first
        self.lose_answers = 0
        self.history_error: dict | None = None
        self.check_response = check_response
        self.now = now
        rsps.add_callback(responses.POST, f"{API}/chat.postMessage", callback=self.post_message)
        rsps.add_callback(responses.GET, f"{API}/conversations.history", callback=self.history)

    def post_message(self, request):
        body = json.loads(request.body)
        body["channel"] = {"calls": CHANNEL}.get(body["channel"].lstrip("#"), body["channel"])  # the ID answers
        ts = f"{self.now():.6f}"
        self.messages.append({"type": "message", "subtype": "bot_message", "text": body["text"], "ts": ts,
                              "bot_id": "B0123ABCD", **({"metadata": body["metadata"]} if "metadata" in body else {})})
        if self.lose_answers:
            self.lose_answers -= 1
            raise requests.exceptions.ReadTimeout("HTTPSConnectionPool(host='slack.com', port=443): Read timed out.")
        return self.answer({"ok": True, "channel": body["channel"], "ts": ts,
                            "message": {"type": "message", "text": body["text"], "ts": ts}})

    def history(self, request):
        if self.history_error is not None:
            return self.answer(self.history_error, "default", "conversations.history")
        query = dict(parse_qsl(urlsplit(request.url).query))
        oldest, latest = float(query.get("oldest", 0)), float(query.get("latest", "inf"))
        limit, start = int(query.get("limit", 100)), int(query.get("cursor", "0"))
        inside = [m for m in reversed(self.messages) if oldest < float(m["ts"]) < latest]
        page = inside[start:start + limit]
        if query.get("include_all_metadata") != "true":
            page = [{k: v for k, v in m.items() if k != "metadata"} for m in page]
        more = start + limit < len(inside)
        answer = {"ok": True, "messages": page, "has_more": more, "pin_count": 0, "channel_actions_ts": None,
                  "channel_actions_count": 0}
        if more:
            answer["response_metadata"] = {"next_cursor": str(start + limit)}
        return self.answer(answer, "200", "conversations.history")

    def answer(self, payload, status="200", method="chat.postMessage"):
        assert self.check_response(status, payload, method) == [], payload
        return 200, {"Content-Type": "application/json"}, json.dumps(payload)

    def add_others(self, count: int, at: float) -> None:
        """Messages of other people in the channel, one every 0.1 s from ``at``."""
        for i in range(count):
            self.messages.append({"type": "message", "text": f"chatter {i}", "ts": f"{at + i / 10:.6f}",
                                  "user": "U0OTHER001"})
        self.messages.sort(key=lambda m: float(m["ts"]))


@pytest.fixture
def clock(monkeypatch):
    now = [T0]
    monkeypatch.setattr(lookup, "now", lambda: now[0])
    return now


@pytest.fixture
def slack(mocked_http, check_response, clock):
    return FakeSlack(mocked_http, check_response, now=lambda: clock[0])


def calls(rsps, method: str) -> list:
    return [c.request for c in rsps.calls if urlsplit(c.request.url).path == f"/api/{method}"]


def first_attempt(destination, report, slack):
    """Attempt 1 as the dispatcher runs it; returns the state it would save, and its error."""
    ctx = destination.context(delivery_id="dlv_test", attempt=1)
    with pytest.raises(Retryable) as info:
        destination.deliver(report, ctx)
    return ctx.state, info.value


# --- the lost answer -----------------------------------------------------------------------------

def test_a_retry_finds_the_message_whose_answer_was_lost_and_posts_nothing(
        sample_report, slack, mocked_http, clock, check_post_message, check_read_method):
    destination = make_destination("slack", OPTIONS, name="calls")
    slack.lose_answers = 1
    state, error = first_attempt(destination, sample_report, slack)
    assert "ReadTimeout" in error.reason and len(slack.messages) == 1  # Slack has it; we never heard
    assert "posted" not in state and state["sent"]["message"] == {"at": T0, "times": 1}
    assert state["first_sent_at"] == T0

    clock[0] = T0 + 60  # the dispatcher's back-off
    result, ctx = deliver(destination, sample_report, state=state, attempt=2)

    assert len(calls(mocked_http, "chat.postMessage")) == 1  # no second post
    assert len(slack.messages) == 1
    (history,) = calls(mocked_http, "conversations.history")
    assert check_read_method(history) == []
    query = dict(parse_qsl(urlsplit(history.url).query))
    assert query == {"channel": CHANNEL, "oldest": f"{T0 - 60:.6f}", "latest": f"{T0 + 180:.6f}",
                     "include_all_metadata": "true", "limit": "200"}
    assert history.headers["Authorization"] == f"Bearer {TOKEN}"
    ts = slack.messages[0]["ts"]
    assert result.message == (f"found the message an earlier attempt posted to channel {CHANNEL} (ts {ts}, answer "
                              f"lost); not posted again")
    assert ctx.state["posted"] is True and ctx.state["ts"] == ts and ctx.state["channel"] == CHANNEL
    assert ctx.state["found"] is True
    assert not ctx.was_sent("message") and "first_sent_at" not in ctx.state
    # and the delivery is done: a third attempt (a replay) posts nothing and looks nothing up
    again, _ = deliver(destination, sample_report, state=ctx.state, attempt=3)
    assert again.message.startswith(f"already posted to channel {CHANNEL} (ts {ts})")
    assert len(mocked_http.calls) == 2
    for request in calls(mocked_http, "chat.postMessage"):
        assert check_post_message(request) == []


def test_the_history_request_is_the_one_slack_sdk_sends(sample_report, slack, mocked_http, clock, monkeypatch):
    destination = make_destination("slack", OPTIONS)
    slack.lose_answers = 1
    state, _ = first_attempt(destination, sample_report, slack)
    clock[0] += 60
    deliver(destination, sample_report, state=state, attempt=2)
    (history,) = calls(mocked_http, "conversations.history")
    ours = dict(parse_qsl(urlsplit(history.url).query))

    built = {}
    monkeypatch.setattr(WebClient, "api_call", lambda self, method, **kw: built.update(method=method, **kw))
    WebClient(token=TOKEN).conversations_history(channel=CHANNEL, oldest=ours["oldest"], latest=ours["latest"],
                                                 include_all_metadata=True, limit=200)
    assert built["method"] == "conversations.history" and built["http_verb"] == "GET"
    sdk = {k: v for k, v in built["params"].items() if v is not None}
    assert set(sdk) == set(ours)
    for key, value in sdk.items():
        assert ours[key] == ("true" if value is True else str(value)), key


def test_every_bot_post_names_the_report_and_the_delivery_in_its_metadata(sample_report, slack, mocked_http):
    destination = make_destination("slack", OPTIONS)
    ctx = destination.context(delivery_id="dlv_0042")
    destination.deliver(sample_report, ctx)
    (post,) = calls(mocked_http, "chat.postMessage")
    assert json.loads(post.body)["metadata"] == {
        "event_type": "sovereign_hub_call_report",
        "event_payload": {"report_id": sample_report.id, "delivery_id": "dlv_0042"}}
    assert slack.messages[0]["metadata"]["event_payload"]["delivery_id"] == "dlv_0042"


def test_the_metadata_check_rejects_what_slack_would_ignore(check_metadata, check_response):
    assert check_metadata({"event_type": "sovereign_hub_call_report", "event_payload": {"report_id": "r"}}) == []
    assert check_metadata({"event_type": "sovereign.hub", "event_payload": {}})  # a period: ignored by Slack
    assert check_metadata({"event_type": "x"})
    assert check_metadata({"event_type": "x", "event_payload": {"k": None}})
    # and the history answers' check is live: a message with malformed metadata is caught
    page = {"ok": True, "has_more": False, "pin_count": 0, "channel_actions_ts": None, "channel_actions_count": 0,
            "messages": [{"type": "message", "text": "t", "ts": "1772442840.000000", "metadata": {"event_type": 5}}]}
    assert check_response("200", page, "conversations.history")


def test_a_retry_that_finds_nothing_posts_once(sample_report, slack, mocked_http, clock):
    """The answer was lost before Slack accepted it (the request never arrived): post it now, once."""
    destination = make_destination("slack", OPTIONS)
    state = {"sent": {"message": {"at": T0, "times": 1}}, "first_sent_at": T0, "attempt": 1, "attempt_at": T0}
    slack.add_others(3, T0 + 5)  # the channel is not quiet
    clock[0] = T0 + 30
    result, ctx = deliver(destination, sample_report, state=state, attempt=2)
    assert len(calls(mocked_http, "conversations.history")) == 1
    assert len(calls(mocked_http, "chat.postMessage")) == 1
    assert result.message == f"posted to channel {CHANNEL} (ts {ctx.state['ts']})"
    assert not ctx.was_sent("message") and "found" not in ctx.state


def test_two_lost_answers_are_looked_up_from_the_first_send(sample_report, slack, mocked_http, clock):
    destination = make_destination("slack", OPTIONS)
    # attempt 1 was sent at T0 and attempt 2 at T0 + 600, neither answered, neither visible yet
    state = {"sent": {"message": {"at": T0 + 600, "times": 2}}, "first_sent_at": T0, "attempt": 2,
             "attempt_at": T0 + 600}
    clock[0] = T0 + 1800
    deliver(destination, sample_report, state=state, attempt=3)
    (history,) = calls(mocked_http, "conversations.history")
    query = dict(parse_qsl(urlsplit(history.url).query))
    assert (query["oldest"], query["latest"]) == (f"{T0 - 60:.6f}", f"{T0 + 600 + 180:.6f}")


# --- pagination ---------------------------------------------------------------------------------

def test_the_look_up_pages_with_the_cursor(sample_report, slack, mocked_http, clock, check_read_method):
    destination = make_destination("slack", OPTIONS)
    slack.lose_answers = 1
    state, _ = first_attempt(destination, sample_report, slack)
    slack.add_others(450, T0 + 1)  # a busy channel: 450 newer messages in the window
    clock[0] = T0 + 90
    result, ctx = deliver(destination, sample_report, state=state, attempt=2)
    pages = calls(mocked_http, "conversations.history")
    assert [dict(parse_qsl(urlsplit(p.url).query)).get("cursor") for p in pages] == [None, "200", "400"]
    assert all(check_read_method(p) == [] for p in pages)
    assert ctx.state["found"] is True and len(calls(mocked_http, "chat.postMessage")) == 1


def test_a_look_up_past_its_page_bound_posts_and_says_so(sample_report, slack, mocked_http, clock, caplog):
    destination = make_destination("slack", OPTIONS, name="busy")
    state = {"sent": {"message": {"at": T0, "times": 1}}, "first_sent_at": T0, "attempt": 1, "attempt_at": T0}
    slack.add_others(lookup.MAX_PAGES * lookup.PAGE_SIZE + 1, T0 - 50)
    clock[0] = T0 + 120
    with caplog.at_level(logging.WARNING, logger="hub_slack.lookup"):
        deliver(destination, sample_report, state=state, attempt=2)
    assert len(calls(mocked_http, "conversations.history")) == lookup.MAX_PAGES
    assert len(calls(mocked_http, "chat.postMessage")) == 1
    assert "destination 'busy': the look-up for delivery dlv_test read 1000 messages" in caplog.text


# --- when Slack does not let us look --------------------------------------------------------------

@pytest.mark.parametrize("error, fix", [
    ({"ok": False, "error": "missing_scope", "needed": "channels:history", "provided": "chat:write"},
     "add the channels:history scope (groups:history for a private channel) under OAuth & Permissions and "
     "reinstall the app (Slack: needed channels:history)"),
    ({"ok": False, "error": "channel_not_found"}, "/invite @<app> in the channel"),
])
def test_without_the_scope_it_posts_again_and_says_once_what_would_fix_it(
        sample_report, slack, mocked_http, clock, caplog, error, fix):
    destination = make_destination("slack", OPTIONS, name="sales")
    slack.history_error = error
    state = {"sent": {"message": {"at": T0, "times": 1}}, "first_sent_at": T0, "attempt": 1, "attempt_at": T0}
    clock[0] = T0 + 60
    with caplog.at_level(logging.WARNING, logger="hub_slack.lookup"):
        result, ctx = deliver(destination, sample_report, state=state, attempt=2)
        deliver(destination, sample_report, state=dict(state), attempt=2)  # another delivery, same destination
    assert len(calls(mocked_http, "chat.postMessage")) == 2  # today's behaviour: posted again
    assert result.message.startswith(f"posted to channel {CHANNEL}")
    warnings = [r.getMessage() for r in caplog.records if r.name == "hub_slack.lookup"]
    assert len(warnings) == 1  # once per destination
    assert warnings[0].startswith(f"destination 'sales': cannot look up a post whose answer was lost (Slack error "
                                  f"{error['error']}): ")
    assert fix in warnings[0] and "may appear twice" in warnings[0]
    assert TOKEN not in caplog.text


def test_not_in_channel_for_history_posts_again(sample_report, slack, mocked_http, clock, caplog):
    """chat:write.public posts to a public channel without joining it; history needs membership."""
    destination = make_destination("slack", OPTIONS)
    slack.history_error = {"ok": False, "error": "not_in_channel"}
    state = {"sent": {"message": {"at": T0, "times": 1}}, "first_sent_at": T0, "attempt": 1, "attempt_at": T0}
    with caplog.at_level(logging.WARNING, logger="hub_slack.lookup"):
        deliver(destination, sample_report, state=state, attempt=2)
    assert len(calls(mocked_http, "chat.postMessage")) == 1
    assert "Slack error not_in_channel): /invite @<app> in the channel" in caplog.text


@pytest.mark.parametrize("state", [
    {"sent": {"message": {"at": T0, "times": 1}}, "first_sent_at": T0, "attempt": 1, "attempt_at": T0},
    {"attempt": 1, "attempt_at": T0},  # attempt 3 of a delivery whose attempt 2 died with its state
])
def test_a_failing_look_up_retries_instead_of_posting_blind(sample_report, slack, mocked_http, clock, state):
    destination = make_destination("slack", OPTIONS)
    slack.history_error = {"ok": False, "error": "ratelimited"}
    attempt = 2 if "sent" in state else 3
    ctx = destination.context(delivery_id="dlv_test", attempt=attempt, state=state)
    with pytest.raises(Retryable, match="ratelimited"):
        destination.deliver(sample_report, ctx)
    assert calls(mocked_http, "chat.postMessage") == []
    assert ctx.state == state  # the next attempt looks over the same window again
    slack.history_error = None
    deliver(destination, sample_report, state=ctx.state, attempt=attempt + 1)
    assert len(calls(mocked_http, "conversations.history")) == 2


# --- which attempts look ------------------------------------------------------------------------------

def test_an_attempt_whose_worker_died_is_looked_up_too(sample_report, slack, mocked_http, clock):
    """Attempt 2 posted and its worker died before the state was saved: attempt 3 sees only attempt 1's state."""
    destination = make_destination("slack", OPTIONS)
    state = {"attempt": 1, "attempt_at": T0}  # attempt 1 failed cleanly (say, Slack rate-limited it)
    clock[0] = T0 + 300
    # attempt 2 posted this one, and its worker died before the state was saved
    slack.messages.append({"type": "message", "text": "t", "ts": f"{T0 + 200:.6f}", "metadata": {
        "event_type": "sovereign_hub_call_report",
        "event_payload": {"report_id": sample_report.id, "delivery_id": "dlv_test"}}})
    result, ctx = deliver(destination, sample_report, state=state, attempt=3)
    (history,) = calls(mocked_http, "conversations.history")
    query = dict(parse_qsl(urlsplit(history.url).query))
    assert query["oldest"] == f"{T0 - 60:.6f}" and "latest" not in query  # from attempt 1 on, up to now
    assert ctx.state["found"] is True and calls(mocked_http, "chat.postMessage") == []


def test_attempts_that_ended_with_slacks_answer_do_not_look(sample_report, slack, mocked_http, clock):
    destination = make_destination("slack", OPTIONS)
    mocked_http.replace(responses.POST, f"{API}/chat.postMessage", status=429, json={"ok": False, "error":
                                                                                     "ratelimited"},
                        headers={"Retry-After": "3"})
    state, error = first_attempt(destination, sample_report, slack)
    assert error.http_status == 429 and not state.get("sent") and state["attempt"] == 1
    mocked_http.replace(responses.POST, f"{API}/chat.postMessage", json={
        "ok": True, "channel": CHANNEL, "ts": "1772442900.000100",
        "message": {"type": "message", "text": "t", "ts": "1772442900.000100"}})
    deliver(destination, sample_report, state=state, attempt=2)
    assert calls(mocked_http, "conversations.history") == []


def test_a_dry_run_looks_nothing_up(sample_report, mocked_http):
    destination = make_destination("slack", OPTIONS)
    _, ctx = deliver(destination, sample_report, dry_run=True,
                     state={"sent": {"message": {"at": T0, "times": 1}}, "attempt": 1})
    assert [r.url for r in ctx.sent] == [f"{API}/chat.postMessage"] and len(mocked_http.calls) == 0


# --- a channel given by name ------------------------------------------------------------------------

LIST = f"{API}/conversations.list"
CHANNELS = {"ok": True, "channels": [{"id": "C0GENERAL01", "name": "general"}, {"id": CHANNEL, "name": "calls"}],
            "response_metadata": {"next_cursor": ""}}


def test_a_channel_name_is_resolved_with_conversations_list(sample_report, slack, mocked_http, clock,
                                                            check_read_method, check_response):
    assert check_response("200", CHANNELS, "conversations.list") == []
    mocked_http.add(responses.GET, LIST, json=CHANNELS)
    destination = make_destination("slack", {"token": TOKEN, "channel": "#calls"})
    state = {"sent": {"message": {"at": T0, "times": 1}}, "first_sent_at": T0, "attempt": 1, "attempt_at": T0}
    deliver(destination, sample_report, state=state, attempt=2)
    (listed,) = calls(mocked_http, "conversations.list")
    assert check_read_method(listed) == []
    assert dict(parse_qsl(urlsplit(listed.url).query)) == {"types": "public_channel,private_channel",
                                                           "exclude_archived": "true", "limit": "1000"}
    (history,) = calls(mocked_http, "conversations.history")
    assert dict(parse_qsl(urlsplit(history.url).query))["channel"] == CHANNEL
    # resolved once: the next look-up goes straight to the history
    deliver(destination, sample_report, state=dict(state), attempt=2)
    assert len(calls(mocked_http, "conversations.list")) == 1


def test_a_posts_answer_teaches_the_channel_id(sample_report, slack, mocked_http, clock):
    destination = make_destination("slack", {"token": TOKEN, "channel": "calls"})
    deliver(destination, sample_report)  # Slack's answer names the channel by ID
    state = {"sent": {"message": {"at": T0, "times": 1}}, "first_sent_at": T0, "attempt": 1, "attempt_at": T0}
    deliver(destination, sample_report, state=state, attempt=2)
    assert calls(mocked_http, "conversations.list") == []


def test_a_channel_name_without_channels_read_posts_again(sample_report, slack, mocked_http, clock, caplog):
    mocked_http.add(responses.GET, LIST, json={"ok": False, "error": "missing_scope", "needed": "channels:read"})
    destination = make_destination("slack", {"token": TOKEN, "channel": "calls"})
    state = {"sent": {"message": {"at": T0, "times": 1}}, "first_sent_at": T0, "attempt": 1, "attempt_at": T0}
    with caplog.at_level(logging.WARNING, logger="hub_slack.lookup"):
        deliver(destination, sample_report, state=state, attempt=2)
    assert len(calls(mocked_http, "chat.postMessage")) == 1
    assert "or set `channel` to the channel ID" in caplog.text


# --- test_connection says whether the look-up works ----------------------------------------------------

WHO = {"ok": True, "url": "https://acme.slack.com/", "team": "Acme", "user": "hub", "team_id": "T1", "user_id": "U1"}


@pytest.mark.parametrize("answer, words", [
    ({"ok": True, "messages": [], "has_more": False}, "; no-duplicate look-up available"),
    ({"ok": False, "error": "missing_scope", "needed": "channels:history"},
     "; no-duplicate look-up NOT available (missing_scope): add the channels:history scope"),
])
def test_connection_says_whether_the_look_up_is_available(mocked_http, answer, words):
    mocked_http.add(responses.GET, f"{API}/auth.test", json=WHO)
    mocked_http.add(responses.GET, f"{API}/conversations.info", json={"ok": True, "channel": {"id": CHANNEL,
                                                                                               "name": "calls"}})
    mocked_http.add(responses.GET, f"{API}/conversations.history", json=answer)
    said = probe_connection(make_destination("slack", OPTIONS))
    assert said.startswith("authenticated as hub in Acme; channel #calls") and words in said


def test_connection_of_a_webhook_says_it_cannot_look_up(mocked_http):
    hook = "https://hooks.slack.com/services/T0000AAAA/B0000NODU/nodupesnodupesnodupes1"
    mocked_http.add(responses.POST, hook, status=400, body="no_text")
    said = probe_connection(make_destination("slack", {"webhook_url": hook}))
    assert said.endswith("an incoming webhook cannot look up a post whose answer was lost (use a bot token for that)")


# --- through the hub: the state the dispatcher saves carries the mark across attempts -------------

def test_through_the_dispatcher_a_lost_answer_is_posted_once(hub_config, request, mocked_http, check_response):
    hub_config["destinations"] = {"calls": {"type": "slack", "token": TOKEN, "channel": CHANNEL}}
    app, post = request.getfixturevalue("app"), request.getfixturevalue("signed_post")
    slack = FakeSlack(mocked_http, check_response, now=time.time)
    slack.lose_answers = 1
    assert post(load_sample("end-of-call-report-full")).status_code == 202
    app.hub.dispatcher.run_due()
    (delivery,) = app.hub.store.list_deliveries()
    assert delivery.status == "pending" and delivery.state["sent"]["message"]["times"] == 1
    with app.hub.store.write() as conn:  # the back-off is over
        conn.execute(deliveries.update().where(deliveries.c.id == delivery.id).values(next_attempt_at=utcnow()))
    app.hub.dispatcher.run_due()
    done = app.hub.store.get_delivery(delivery.id)
    assert done.status == "succeeded" and done.state["found"] is True
    assert done.result.startswith("found the message an earlier attempt posted to channel")
    assert len(calls(mocked_http, "chat.postMessage")) == 1 and len(slack.messages) == 1


def test_connection_resolves_a_channel_name_first(mocked_http, check_read_method):
    mocked_http.add(responses.GET, f"{API}/auth.test", json=WHO)
    mocked_http.add(responses.GET, LIST, json=CHANNELS)
    mocked_http.add(responses.GET, f"{API}/conversations.info", json={"ok": True, "channel": {"id": CHANNEL,
                                                                                               "name": "calls"}})
    mocked_http.add(responses.GET, f"{API}/conversations.history", json={"ok": True, "messages": [],
                                                                         "has_more": False})
    said = probe_connection(make_destination("slack", {"token": TOKEN, "channel": "#calls"}))
    assert said == ("authenticated as hub in Acme; channel #calls; no-duplicate look-up available "
                    "(conversations.history with message metadata)")
    info, history = calls(mocked_http, "conversations.info"), calls(mocked_http, "conversations.history")
    assert [dict(parse_qsl(urlsplit(r.url).query))["channel"] for r in info + history] == [CHANNEL, CHANNEL]
    assert len(calls(mocked_http, "conversations.list")) == 1
    assert [check_read_method(c.request) for c in mocked_http.calls] == [[]] * 4


def test_connection_with_a_name_and_no_channels_read_says_the_look_up_needs_the_id(mocked_http):
    mocked_http.add(responses.GET, f"{API}/auth.test", json=WHO)
    mocked_http.add(responses.GET, LIST, json={"ok": False, "error": "missing_scope", "needed": "channels:read"})
    mocked_http.add(responses.GET, f"{API}/conversations.info", json={"ok": False, "error": "missing_scope"})
    said = probe_connection(make_destination("slack", {"token": TOKEN, "channel": "calls"}))
    assert "channel calls not checked" in said
    assert said.endswith("no-duplicate look-up NOT available (missing_scope): add channels:read (groups:read for a "
                         "private channel), or set `channel` to the channel ID (Slack: needed channels:read); until "
                         "then a retry after a lost answer may post twice")


def test_the_read_method_check_rejects_an_invalid_request(check_read_method):
    class Sent:  # token in the URL, a channel name, a misspelt and a mistyped argument, limit too high
        method = "POST"
        url = (f"{API}/conversations.history?token=xoxb-1&channel=calls&oldest=yesterday&limit=5000"
               "&include_all_metadata=yes&incluce=true")
        headers = {}

    joined = "\n".join(check_read_method(Sent))
    for expected in ("method POST, expected GET", "token: send it as Authorization: Bearer", "token: in the URL",
                     "channel: 'calls' is not a conversation ID", "oldest: must be a Unix timestamp",
                     "limit: 5000 not in 1..999", "include_all_metadata: must be a boolean",
                     "incluce: not an argument of conversations.history"):
        assert expected in joined, joined
    Sent.url = f"{API}/conversations.history?oldest=1.5"
    assert "channel: required, missing" in "\n".join(check_read_method(Sent))
