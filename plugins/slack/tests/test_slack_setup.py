"""The normal setup: several Slack destinations with their own rules, sharing a channel's pace,
secrets kept out of every printed line, and ``send-test --dry-run`` through the installed command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import responses

from hub import Permanent, redact
from hub.testing import deliver, load_sample, make_destination

from hub_slack import SlackDestination

API = "https://slack.com/api/chat.postMessage"
HOOK_A = "https://hooks.slack.com/services/T0000AAAA/B0000ESCA/escalationsescalations1"
HOOK_B = "https://hooks.slack.com/services/T0000AAAA/B0000OTHR/otherchannelotherchan2"
TOKEN = "xoxb-3333-4444-setupsetupsetupsetup"
OK = {"ok": True, "channel": "C0SALES001", "ts": "1772442847.000300",
      "message": {"type": "message", "text": "t", "ts": "1772442847.000300"}}


# --- one bucket per channel --------------------------------------------------------------------

def test_destinations_posting_to_one_channel_share_its_bucket():
    sales = make_destination("slack", {"token": TOKEN, "channel": "C0SALES001"}, name="sales")
    leads = make_destination("slack", {"token": TOKEN, "channel": "C0SALES001", "mentions": ["@here"]},
                             name="sales-leads")
    ops = make_destination("slack", {"token": TOKEN, "channel": "C0OPS00001"}, name="ops")
    assert sales.limiters["default"].rate == "1/1s"
    assert sales.limiters["default"] is leads.limiters["default"]
    assert ops.limiters["default"] is not sales.limiters["default"]
    # a channel name with or without its '#' is one channel
    named = make_destination("slack", {"token": TOKEN, "channel": "#escalations"}, name="a")
    bare = make_destination("slack", {"token": TOKEN, "channel": "escalations"}, name="b")
    assert named.limiter_key() == bare.limiter_key()
    assert named.limiters["default"] is bare.limiters["default"]


def test_one_webhook_is_one_bucket_and_its_url_is_not_the_key():
    first = make_destination("slack", {"webhook_url": HOOK_A}, name="escalations")
    again = make_destination("slack", {"webhook_url": HOOK_A, "mentions": ["@channel"]}, name="escalations-loud")
    other = make_destination("slack", {"webhook_url": HOOK_B}, name="other")
    assert first.limiters["default"] is again.limiters["default"]
    assert first.limiters["default"] is not other.limiters["default"]
    assert "escalationsescalations1" not in first.limiter_key()


def test_second_message_to_a_shared_channel_waits_for_the_bucket(sample_report, mocked_http):
    mocked_http.add(responses.POST, API, json=OK)
    sales = make_destination("slack", {"token": TOKEN, "channel": "C0SALES001"}, name="sales")
    leads = make_destination("slack", {"token": TOKEN, "channel": "C0SALES001"}, name="sales-leads")
    deliver(sales, sample_report)
    # the shared window (1 a second) is now full: the other destination must wait ~1 s
    assert leads.limiters["default"].acquire() == pytest.approx(1.0, abs=0.1)


# --- secrets ------------------------------------------------------------------------------------

def test_token_and_webhook_url_are_secret_options():
    assert SlackDestination.secret_options == ("token", "webhook_url")


def test_literal_secrets_are_redacted_everywhere(sample_report, mocked_http):
    """Written literally in the TOML (not { env = ... }), they are still masked."""
    hook = "https://hooks.slack.com/services/T0000AAAA/B0000LITR/literalwebhooksecret77"
    token = "xoxb-5555-6666-literaltokenliteraltoken"
    webhook = make_destination("slack", {"webhook_url": hook}, name="lit-hook")
    bot = make_destination("slack", {"token": token, "channel": "C0SALES001"}, name="lit-bot")
    assert redact(f"posting to {hook} with {token}") == "posting to [secret] with [secret]"

    _, ctx = deliver(webhook, sample_report, dry_run=True)
    printed = json.dumps([r.to_dict() for r in ctx.sent])
    assert ctx.sent[0].url == "[secret]" and "literalwebhooksecret77" not in printed
    _, ctx = deliver(bot, sample_report, dry_run=True)
    assert ctx.sent[0].headers["Authorization"] == "[secret]" and token not in json.dumps(ctx.sent[0].to_dict())

    mocked_http.add(responses.POST, hook, status=503, body=f"upstream said {hook}")
    with pytest.raises(Exception) as info:
        deliver(webhook, sample_report)
    assert "literalwebhooksecret77" not in str(info.value) and "lit-hook" in str(info.value)


# --- template errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["header", "summary", "text"])
def test_a_template_that_fails_when_rendered_is_permanent_and_names_the_key(sample_report, mocked_http, key):
    destination = make_destination("slack", {"webhook_url": HOOK_A, key: "{{ duration_seconds / 0 }}"},
                                   name="escalations")
    with pytest.raises(Permanent) as info:
        deliver(destination, sample_report)
    message = str(info.value)
    assert message.startswith(f"destination 'escalations': the `{key}` template failed on report rep_test: ")
    assert "ZeroDivisionError" in message and f"fix `{key}`" in message
    assert len(mocked_http.calls) == 0


def test_caller_name_cannot_ping_through_the_notification_text(make_report):
    report = make_report(customer={"number": "+31623456789", "name": "<!channel> Mallory & co"})
    destination = make_destination("slack", {"webhook_url": HOOK_A})
    _, ctx = deliver(destination, report, dry_run=True)
    body = ctx.sent[0].body
    assert "<!channel>" not in body["text"]
    assert body["text"].startswith(":telephone_receiver: Outbound call to &lt;!channel&gt; Mallory &amp; co")
    assert body["blocks"][0]["text"]["type"] == "plain_text"  # the header shows the name as written


# --- several destinations, each with its own rule, through the hub --------------------------------

@pytest.fixture
def routed(request, hub_config):
    hub_config["server"] = {"public_url": "https://hub.example.com"}
    hub_config["destinations"] = {
        "escalations": {"type": "slack", "when": "analysis.sentiment <= 3 || analysis.intent == 'complaint'",
                        "webhook_url": HOOK_A, "mentions": ["@here"]},
        "sales": {"type": "slack", "when": "analysis.intent == 'sales'", "token": TOKEN,
                  "channel": "C0SALES001", "mentions": ["<!subteam^S0123ABC>"]},
        "call-failures": {"type": "slack", "events": ["status-update"], "token": TOKEN, "channel": "C0OPS00001"},
    }
    return request.getfixturevalue("app"), request.getfixturevalue("signed_post")


def test_each_report_reaches_the_channel_whose_rule_matches(routed, check_blocks, check_post_message):
    app, post = routed
    complaint = load_sample("end-of-call-report-full")
    lead = load_sample("end-of-call-report-full")
    lead["message"].update(call={"id": "c-sales-1", "type": "inbound_phone_call", "status": "ended"},
                           analysis={"sentiment": 8, "intent": "sales", "resolved": True, "follow_up_needed": True})
    for payload in (complaint, lead, load_sample("status-update")):
        assert post(payload).status_code == 202
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, HOOK_A, body="ok")
        rsps.add(responses.POST, API, json=OK)
        app.hub.dispatcher.run_due()
        calls = [(c.request.url, json.loads(c.request.body)) for c in rsps.calls]

    assert len(calls) == 3
    hook_bodies = [body for url, body in calls if url == HOOK_A]
    api_bodies = {body["channel"]: body for url, body in calls if url == API}
    (escalation,) = hook_bodies
    assert escalation["text"].startswith("<!here> :telephone_receiver: Outbound call to +31 6 23456789 (sentiment 2)")
    assert set(api_bodies) == {"C0SALES001", "C0OPS00001"}
    sales, failure = api_bodies["C0SALES001"], api_bodies["C0OPS00001"]
    assert sales["text"].startswith("<!subteam^S0123ABC> :telephone_receiver: Inbound call from")
    assert "(sentiment 8)" in sales["text"]
    assert failure["blocks"][0]["text"]["text"] == ":warning: Call failed: +31 6 23456789"
    assert failure["blocks"][2]["text"]["text"] == "*Error:* SIP trunk rejected the call: 503 Service Unavailable"
    for _, body in calls:
        assert check_blocks(body) == []
    for call in rsps.calls:
        if call.request.url == API:
            assert check_post_message(call.request) == []


# --- send-test --dry-run through the installed command ----------------------------------------------

COMMAND = Path(sys.executable).with_name("sovereign-hub")
CONFIG = """
[store]
url = "sqlite:///{db}"
[sources.hms]
secret = "whsec_slack_cli_test_secret"
[phone]
default_region = "NL"
[server]
public_url = "https://hub.acme.test"

[destinations.escalations]
type = "slack"
when = "analysis.sentiment <= 3 || analysis.intent == 'complaint'"
webhook_url = "{hook}"
mentions = ["@here"]

[destinations.sales]
type = "slack"
when = "analysis.intent == 'sales'"
token = {{ env = "SLACK_CLI_TEST_TOKEN" }}
channel = "C0SALES001"
"""
CLI_HOOK = "https://hooks.slack.com/services/T0000AAAA/B0000CLIT/clitestwebhooksecret99"
CLI_TOKEN = "xoxb-7777-8888-clitestclitestclitest"


@pytest.mark.skipif(not COMMAND.exists(), reason="the sovereign-hub command is not installed beside python")
def test_send_test_dry_run_prints_the_message_json_with_secrets_masked(tmp_path, check_blocks):
    config = tmp_path / "hub.toml"
    config.write_text(textwrap.dedent(CONFIG.format(db=tmp_path / "hub.db", hook=CLI_HOOK)))
    env = {**os.environ, "SLACK_CLI_TEST_TOKEN": CLI_TOKEN}
    outputs = {}
    for name in ("escalations", "sales"):
        run = subprocess.run([str(COMMAND), "send-test", name, "--dry-run", "-c", str(config)],
                             capture_output=True, text=True, env=env, timeout=60)
        assert run.returncode == 0, run.stderr
        assert "clitestwebhooksecret99" not in run.stdout + run.stderr and CLI_TOKEN not in run.stdout + run.stderr
        (outputs[name],) = json.loads(run.stdout)
        outputs[name]["stderr"] = run.stderr
    hook, bot = outputs["escalations"], outputs["sales"]
    assert hook["method"] == "POST" and hook["url"] == "[secret]"  # a literal webhook URL is masked too
    assert set(hook["body"]) == {"text", "blocks"} and check_blocks(hook["body"]) == []
    assert hook["body"]["text"].startswith("<!here> ")
    assert "dry run: would post to the webhook's channel" in hook["stderr"]
    assert bot["url"] == API and bot["headers"]["Authorization"] == "[secret]"
    assert bot["body"]["channel"] == "C0SALES001" and check_blocks(bot["body"]) == []
    assert "https://hub.acme.test/reports/send-test" in json.dumps(bot["body"])
    assert "dry run: would post to channel C0SALES001" in bot["stderr"]
