"""The digest: a pure function of a period's reports and dead deliveries, and the command end to end."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import click
import pytest
import responses
from click.testing import CliRunner

from hub import DeliveryRecord, HubSettings
from hub.testing import analysis_schema, load_sample, normalize_payload

from hub_slack import register_commands
from hub_slack.digest import build_digest, parse_since, summarize

SETTINGS = HubSettings(public_url="https://hub.example.com", default_region="NL")
SINCE = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
UNTIL = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
HOOK = "https://hooks.slack.com/services/T0000AAAA/B0000BBBB/digestdigestdigest"


def call(report_id, name="end-of-call-report-full", **fields):
    payload = load_sample(name)
    payload["message"].update(fields)
    return normalize_payload(payload, report_id=report_id, analysis=analysis_schema())


def period_reports():
    return [
        call("r1"),  # sentiment 2, complaint, unresolved, follow-up
        call("r2", analysis={"sentiment": 8, "intent": "sales", "resolved": True, "follow_up_needed": False},
             call={"id": "c2", "type": "inbound_phone_call", "status": "ended"}, duration_seconds=60),
        call("r3", analysis={"sentiment": 5, "intent": "support", "resolved": False, "follow_up_needed": False},
             call={"id": "c3", "type": "inbound_phone_call", "status": "ended"}, duration_seconds=28,
             summary="Asked about <opening hours> & left"),
        call("r4", "end-of-call-report-web-call"),  # no analysis
        call("r5", "status-update"),  # ended-with-error
    ]


DEAD = [DeliveryRecord(
    id="d1", report_id="r1", destination="hubspot", status="dead", attempts=1, next_attempt_at=None,
    lease_until=None, last_error="destination 'hubspot': HTTP 401 from api.hubapi.com (unauthorized): bad token.",
    result=None, state={}, created_at=datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc),
    updated_at=datetime(2026, 3, 2, 8, 0, 1, tzinfo=timezone.utc))]


def test_parse_since():
    now = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
    assert parse_since("24h", now=now) == now - timedelta(hours=24)
    assert parse_since("90m", now=now) == now - timedelta(minutes=90)
    assert parse_since("7d", now=now) == now - timedelta(days=7)
    assert parse_since("2w", now=now) == now - timedelta(weeks=2)
    assert parse_since("2026-03-01", now=now) == datetime(2026, 3, 1, tzinfo=timezone.utc)
    assert parse_since("2026-03-01T10:00:00+01:00", now=now) == datetime(2026, 3, 1, 9, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="neither a span"):
        parse_since("yesterday", now=now)


def test_figures():
    figures = summarize(period_reports(), DEAD)
    assert figures["calls"] == 4
    assert figures["directions"] == {"outbound": 1, "inbound": 2, "web": 1}
    assert figures["talk_seconds"] == 312 + 60 + 28 + 45
    assert figures["sentiment_average"] == 5.0 and figures["sentiment_scored"] == 3
    assert [r.id for r in figures["unresolved"]] == ["r1", "r3"]
    assert [r.id for r in figures["follow_ups"]] == ["r1"]
    assert [r.id for r in figures["failed"]] == ["r5"]
    assert figures["dead"] == DEAD


def test_digest_message_field_by_field(check_blocks):
    message = build_digest(period_reports(), DEAD, since=SINCE, until=UNTIL, settings=SETTINGS)
    assert check_blocks(message) == []
    blocks = message["blocks"]
    assert blocks[0]["text"]["text"] == ":bar_chart: Call digest 2026-03-01 09:00 – 2026-03-02 09:00 UTC"
    assert [f["text"] for f in blocks[1]["fields"]] == [
        "*Calls*\n*4* (2 inbound · 1 outbound · 1 web)",
        "*Talk time*\n7m 25s",
        "*Average sentiment*\n:large_yellow_circle: *5.0* / 10 (3 scored)",
        "*Unresolved*\n2",
        "*Follow-ups needed*\n1",
        "*Failed calls*\n1",
        "*Dead deliveries*\n:rotating_light: 1",
    ]
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]
    assert sections[0].startswith("*Follow-ups needed*\n• <https://hub.example.com/reports/r1|+31 6 23456789> "
                                  "03-02 09:14 — Customer reported that the invoice")
    assert sections[1] == ("*Unresolved (no follow-up planned)*\n• <https://hub.example.com/reports/r3|"
                           "+31 6 23456789> 03-02 09:14 — Asked about &lt;opening hours&gt; &amp; left")
    assert sections[2] == ("*Failed calls*\n• <https://hub.example.com/reports/r5|+31 6 23456789> 03-02 09:09 — "
                           "SIP trunk rejected the call: 503 Service Unavailable")
    assert sections[3] == ("*Dead deliveries (retry them in the dashboard)*\n• *hubspot* "
                           "(<https://hub.example.com/reports/r1|report>, 1 attempt): destination 'hubspot': "
                           "HTTP 401 from api.hubapi.com (unauthorized): bad token.")
    assert blocks[-1]["elements"][1]["text"] == "<https://hub.example.com/|Open the dashboard>"
    assert message["text"] == ("Call digest 2026-03-01 09:00 – 2026-03-02 09:00 UTC: 4 calls, average sentiment 5.0, "
                               "2 unresolved, 1 follow-ups, 1 failed, 1 dead deliveries (hubspot: 1)")


def test_quiet_period_digest_is_still_valid(check_blocks):
    message = build_digest([], [], since=SINCE, until=UNTIL, settings=SETTINGS)
    assert check_blocks(message) == []
    assert [f["text"] for f in message["blocks"][1]["fields"]][:3] == [
        "*Calls*\n*0*", "*Talk time*\n0s", "*Average sentiment*\n–"]
    assert len(message["blocks"]) == 3  # header, figures, context: no empty lists


def test_busy_period_lists_are_capped(check_blocks):
    reports = [call(f"r{i}", summary="long " * 400) for i in range(40)]
    dead = [replace(DEAD[0], id=f"d{i}", last_error="x" * 5000) for i in range(30)]
    message = build_digest(reports, dead, since=SINCE, until=UNTIL, settings=SETTINGS)
    assert check_blocks(message) == []
    follow = message["blocks"][2]["text"]["text"]
    assert follow.count("\n• ") == 10 and follow.endswith("_…and 30 more_")
    dead_section = message["blocks"][3]["text"]["text"]
    assert dead_section.startswith("*Dead deliveries") and dead_section.endswith("_…and 20 more_")


# --- the command, end to end through the hub's public surface --------------------------------

def _toml(hub_config: dict, db_url: str) -> str:
    return f"""
[server]
public_url = "https://hub.example.com"
[store]
url = "{db_url}"
[sources.hms]
secret = "{hub_config['sources']['hms']['secret']}"
[admin]
token = "{hub_config['admin']['token']}"
[phone]
default_region = "NL"
[destinations.digest]
type = "slack"
when = "analysis.intent == 'never'"
webhook_url = "{HOOK}"
[destinations.crm]
type = "webhook"
url = "https://crm.example.com/hook"
"""


@pytest.fixture
def filled_hub(request, hub_config, tmp_path):
    """A store with the sample reports and one dead delivery, and a TOML file for the CLI."""
    hub_config["server"] = {"public_url": "https://hub.example.com"}
    hub_config["destinations"] = {
        "digest": {"type": "slack", "when": "analysis.intent == 'never'", "webhook_url": HOOK},
        "crm": {"type": "webhook", "url": "https://crm.example.com/hook"},
    }
    app = request.getfixturevalue("app")
    post = request.getfixturevalue("signed_post")
    for name in ("end-of-call-report-full", "end-of-call-report-web-call"):
        assert post(load_sample(name)).status_code == 202
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, "https://crm.example.com/hook", status=400, body="bad field")
        app.hub.dispatcher.run_due()
    path = tmp_path / "config.toml"
    path.write_text(_toml(hub_config, hub_config["store"]["url"]))
    return path


def cli_with_slack():
    @click.group()
    def cli():
        pass

    register_commands(cli=cli)
    return cli


def test_digest_command_posts_the_period(filled_hub, check_blocks):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, HOOK, body="ok")
        result = CliRunner().invoke(cli_with_slack(), ["slack", "digest", "-c", str(filled_hub),
                                                       "--destination", "digest", "--since", "1h"])
        assert result.exit_code == 0, result.output
        body = json.loads(rsps.calls[0].request.body)
    assert check_blocks(body) == []
    fields = [f["text"] for f in body["blocks"][1]["fields"]]
    assert fields[0] == "*Calls*\n*2* (1 outbound · 1 web)"
    assert fields[4] == "*Follow-ups needed*\n1"
    assert fields[6] == "*Dead deliveries*\n:rotating_light: 2"  # crm failed for both reports
    assert "*crm*" in body["blocks"][3]["text"]["text"] and "bad field" in body["blocks"][3]["text"]["text"]
    assert "posted the digest of 2 report(s) and 2 dead deliveries to the webhook's channel (digest)" in result.output


def test_digest_command_dry_run_prints_the_request(filled_hub):
    with responses.RequestsMock() as rsps:
        result = CliRunner().invoke(cli_with_slack(), ["slack", "digest", "-c", str(filled_hub),
                                                       "--destination", "digest", "--dry-run"])
        assert len(rsps.calls) == 0
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed[0]["method"] == "POST" and printed[0]["body"]["blocks"][0]["type"] == "header"
    assert printed[0]["url"] == "[secret]"  # webhook_url is a secret option: never printed
    assert "digestdigestdigest" not in result.output


def test_digest_command_rejects_unknown_and_non_slack_destinations(filled_hub):
    runner = CliRunner()
    unknown = runner.invoke(cli_with_slack(), ["slack", "digest", "-c", str(filled_hub), "-d", "nope"])
    assert unknown.exit_code == 1 and "nope" in unknown.output and "digest" in unknown.output
    other = runner.invoke(cli_with_slack(), ["slack", "digest", "-c", str(filled_hub), "-d", "crm"])
    assert other.exit_code == 1 and "is of type 'webhook'" in other.output
    bad = runner.invoke(cli_with_slack(), ["slack", "digest", "-c", str(filled_hub), "-d", "digest",
                                           "--since", "yesterday"])
    assert bad.exit_code == 2 and "neither a span" in bad.output
