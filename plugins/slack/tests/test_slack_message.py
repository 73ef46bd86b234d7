"""The message built for one report: content field by field, and Block Kit's limits."""
from __future__ import annotations

import pytest

from hub import HubSettings
from hub.testing import analysis_schema, load_sample, make_destination, normalize_payload

from hub_slack import blockkit as bk
from hub_slack.message import build_message

SETTINGS = HubSettings(public_url="https://hub.example.com", default_region="NL")
WEBHOOK = {"webhook_url": "https://hooks.slack.com/services/T0000/B0000/abcdefghijkl"}


def config_for(**options):
    return make_destination("slack", {**WEBHOOK, **options}).config


def report_with(name="end-of-call-report-full", **fields):
    payload = load_sample(name)
    payload["message"].update(fields)
    return normalize_payload(payload, analysis=analysis_schema())


def blocks_of(message, kind):
    return [b for b in message["blocks"] if b["type"] == kind]


# --- the checker itself must reject what Slack rejects --------------------------------------

def valid_message():
    return {"text": "fallback", "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": "Title"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "body"},
         "fields": [{"type": "mrkdwn", "text": "*a*\n1"}]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "small"}]},
        {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Go"},
                                          "url": "https://example.com", "action_id": "go"}]},
    ]}


@pytest.mark.parametrize("breakage, expected", [
    (lambda m: m["blocks"][0]["text"].update(text="x" * 151), "slack_sdk: text attribute cannot exceed 150"),
    (lambda m: m["blocks"][3]["elements"][0]["text"].update(text="x" * 76), "slack_sdk: text attribute cannot exceed 75"),
    (lambda m: m["blocks"][3]["elements"][0].update(url="https://e.com/" + "x" * 2990), "slack_sdk: url attribute"),
    (lambda m: m["blocks"][1].update(fields=[{"type": "mrkdwn", "text": "f"}] * 11), "slack_sdk: fields attribute"),
    (lambda m: m["blocks"].append({"type": "sectoin", "text": {"type": "mrkdwn", "text": "x"}}), "knows no block"),
])
def test_slacks_own_sdk_models_reject_it_too(check_blocks, breakage, expected):
    """The second oracle: slack_sdk.models.blocks (parse + validate_json) on every checked message."""
    message = valid_message()
    breakage(message)
    assert any(expected in p for p in check_blocks(message)), check_blocks(message)


@pytest.mark.parametrize("breakage, expected", [
    (lambda m: m["blocks"][0]["text"].update(text="x" * 151), "151 characters > 150"),
    (lambda m: m["blocks"][0]["text"].update(type="mrkdwn"), "not a plain_text text object"),
    (lambda m: m["blocks"][1]["text"].update(text="x" * 3001), "3001 characters > 3000"),
    (lambda m: m["blocks"][1].update(fields=[{"type": "mrkdwn", "text": "f"}] * 11), "fields: 11 > 10"),
    (lambda m: m["blocks"][1]["fields"][0].update(text="x" * 2001), "2001 characters > 2000"),
    (lambda m: m["blocks"][2].update(elements=[{"type": "mrkdwn", "text": "c"}] * 11), "11 not in 1..10"),
    (lambda m: m["blocks"][3]["elements"][0].update(url="https://e.com/" + "x" * 2990), "url"),
    (lambda m: m["blocks"][3]["elements"][0]["text"].update(text="x" * 76), "76 characters > 75"),
    (lambda m: m.update(blocks=m["blocks"] + [{"type": "divider"}] * 47), "blocks: 51 > 50"),
    (lambda m: m.pop("text"), "top-level fallback text is missing"),
    (lambda m: m["blocks"][1]["text"].update(text=""), "non-empty"),
])
def test_block_kit_check_rejects_what_slack_rejects(check_blocks, breakage, expected):
    message = valid_message()
    assert check_blocks(message) == []
    breakage(message)
    problems = check_blocks(message)
    assert any(expected in p for p in problems), problems


# --- the sample report ----------------------------------------------------------------------

def test_sample_message_field_by_field(sample_report, check_blocks):
    message = build_message(sample_report, config_for(), SETTINGS)
    assert check_blocks(message) == []
    header, facts, summary, fields, actions = message["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                                 "text": ":telephone_receiver: Outbound call to +31 6 23456789"}}
    assert [e["text"] for e in facts["elements"]] == [
        # 1772442847 is 2026-03-02T09:14:07Z: each reader sees it in their own time zone
        ":calendar: <!date^1772442847^{date_short_pretty} {time}|2026-03-02 09:14 UTC>", ":stopwatch: 5m 12s", ":phone: Support line (+31 85 083 5037)",
        ":robot_face: Support NL"]
    assert summary["text"] == {"type": "mrkdwn", "text": sample_report.summary}
    assert [f["text"] for f in fields["fields"]] == [
        "*Sentiment*\n:red_circle: *2* / 10", "*Intent*\ncomplaint", "*Resolved*\nNo", "*Follow up needed*\nYes"]
    open_report, recording = actions["elements"]
    assert open_report == {"type": "button", "text": {"type": "plain_text", "text": "Open report", "emoji": True},
                           "url": "https://hub.example.com/reports/rep_test", "action_id": "open_report",
                           "style": "primary"}
    assert recording["url"] == "https://recordings.example.com/0b7e9a52.mp3"
    assert recording["action_id"] == "play_recording"
    assert message["text"] == (":telephone_receiver: Outbound call to +31 6 23456789 (sentiment 2): "
                               + sample_report.summary)


@pytest.mark.parametrize("sentiment, dot", [(1, ":red_circle:"), (3, ":red_circle:"), (5, ":large_yellow_circle:"),
                                            (6, ":large_yellow_circle:"), (9, ":large_green_circle:")])
def test_sentiment_at_a_glance(sentiment, dot):
    report = report_with(analysis={"sentiment": sentiment, "intent": "sales"})
    fields = blocks_of(build_message(report, config_for(), SETTINGS), "section")[1]["fields"]
    assert fields[0]["text"] == f"*Sentiment*\n{dot} *{sentiment}* / 10"


def test_sentiment_scale_is_configurable():
    report = report_with(analysis={"sentiment": 4})
    fields = blocks_of(build_message(report, config_for(sentiment_max=5), SETTINGS), "section")[1]["fields"]
    assert fields[0]["text"] == "*Sentiment*\n:large_green_circle: *4* / 5"


def test_long_summary_is_cut_within_the_limit_never_rejected(check_blocks):
    summary = ("Refund & <credit> note. " * 600) + "END"
    report = report_with(summary=summary)
    message = build_message(report, config_for(mentions=["@here"]), SETTINGS)
    assert check_blocks(message) == []
    text = blocks_of(message, "section")[0]["text"]["text"]
    assert bk.length(text) <= 3000
    assert text.startswith("<!here>\nRefund &amp; &lt;credit&gt; note.")
    assert text.endswith("… <https://hub.example.com/reports/rep_test|full text in the hub>")
    body = text.removeprefix("<!here>\n").rsplit(" <https://", 1)[0]
    assert "END" not in body and "&" not in body.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "")
    assert bk.length(message["text"]) <= bk.MESSAGE_TEXT


def test_summary_markup_is_escaped_so_it_cannot_ping_or_break():
    report = report_with(summary="Said <!channel> & asked for <https://evil.example|a link>")
    text = blocks_of(build_message(report, config_for(), SETTINGS), "section")[0]["text"]["text"]
    assert text == "Said &lt;!channel&gt; &amp; asked for &lt;https://evil.example|a link&gt;"


def test_many_analysis_keys_are_split_ten_fields_per_section(check_blocks):
    analysis = {f"score_{i:02d}": i for i in range(23)} | {"sentiment": 7, "notes": "x" * 5000}
    message = build_message(report_with(analysis=analysis), config_for(), SETTINGS)
    assert check_blocks(message) == []
    field_sections = [b for b in message["blocks"] if "fields" in b]
    assert [len(b["fields"]) for b in field_sections] == [10, 10, 5]
    assert field_sections[0]["fields"][0]["text"].startswith("*Sentiment*\n:large_green_circle: *7*")
    notes = field_sections[2]["fields"][-1]["text"]
    assert notes.startswith("*Notes*\nxxx") and notes.endswith("…") and bk.length(notes) <= 2000


def test_web_call_has_no_number_and_no_recording_button(make_report, check_blocks):
    report = make_report("end-of-call-report-web-call")
    message = build_message(report, config_for(), SETTINGS)
    assert check_blocks(message) == []
    assert message["blocks"][0]["text"]["text"] == ":globe_with_meridians: Web call"
    assert [e["action_id"] for e in blocks_of(message, "actions")[0]["elements"]] == ["open_report"]
    assert [b for b in message["blocks"] if "fields" in b] == []  # no analysis, no fields


def test_failed_call_status_update_shows_the_error(make_report, check_blocks):
    report = make_report("status-update")
    message = build_message(report, config_for(), SETTINGS)
    assert check_blocks(message) == []
    assert message["blocks"][0]["text"]["text"] == ":warning: Call failed: +31 6 23456789"
    assert blocks_of(message, "section")[0]["text"]["text"] == (
        "*Error:* SIP trunk rejected the call: 503 Service Unavailable")
    assert message["text"].endswith(": SIP trunk rejected the call: 503 Service Unavailable")


def test_analysis_errors_are_shown():
    report = report_with(analysis={"sentiment": 42})  # above the schema's maximum of 10
    assert report.analysis_errors
    message = build_message(report, config_for(), SETTINGS)
    warning = [b for b in blocks_of(message, "context") if "did not match" in b["elements"][0]["text"]]
    assert warning and "42" in warning[0]["elements"][0]["text"]


def test_templates_and_fields_are_overridable(sample_report, check_blocks):
    config = config_for(
        header="{{ analysis.intent | upper }}: {{ caller }} " + "!" * 300,
        summary="*{{ assistant.name }}*: {{ summary }}",
        text="Escalation for {{ customer.number }}",
        analysis_fields={"Mood": "analysis.sentiment", "Callback?": "analysis.follow_up_needed",
                         "Missing": "analysis.nothing"},
        mentions=["<!subteam^S0123ABC>", "<@U0456DEF>"],
        show_recording=False,
    )
    message = build_message(sample_report, config, SETTINGS)
    assert check_blocks(message) == []
    header = message["blocks"][0]["text"]["text"]
    assert header.startswith("COMPLAINT: +31 6 23456789 !!!") and bk.length(header) <= 150 and header.endswith("…")
    section = blocks_of(message, "section")[0]["text"]["text"]
    assert section == "<!subteam^S0123ABC> <@U0456DEF>\n*Support NL*: " + sample_report.summary
    assert message["text"] == "<!subteam^S0123ABC> <@U0456DEF> Escalation for +31623456789"
    fields = [f["text"] for f in blocks_of(message, "section")[1]["fields"]]
    assert fields == ["*Mood*\n:red_circle: *2* / 10", "*Callback?*\nYes", "*Missing*\n–"]
    assert [e["action_id"] for e in blocks_of(message, "actions")[0]["elements"]] == ["open_report"]


def test_overlong_recording_url_drops_the_button_not_the_message(check_blocks):
    report = report_with(recording_url="https://recordings.example.com/" + "a" * 3000)
    message = build_message(report, config_for(), SETTINGS)
    assert check_blocks(message) == []
    assert [e["action_id"] for e in blocks_of(message, "actions")[0]["elements"]] == ["open_report"]


@pytest.mark.parametrize("text, limit, expected", [
    ("short", 10, "short"),
    ("one two three four", 12, "one two…"),
    ("a &amp; b", 6, "a…"),                       # never half an entity
    ("see <https://x.example|link> now", 20, "see…"),  # never half a link
    ("😀😀😀😀", 5, "😀😀…"),                     # emoji count 2 (UTF-16), never split
])
def test_truncate_is_safe(text, limit, expected):
    assert bk.truncate(text, limit) == expected
    assert bk.length(bk.truncate(text, limit)) <= limit


def test_more_than_fifty_blocks_keeps_the_links():
    blocks = [bk.section(f"line {i}") for i in range(60)] + [bk.actions([bk.button("Go", "https://e.com", "go")])]
    message = bk.message("t", blocks)
    assert len(message["blocks"]) == 50
    assert message["blocks"][-1]["type"] == "actions"


@pytest.mark.parametrize("sentiment, shown", [
    ("negative", ":red_circle: *negative*"), ("positive", ":large_green_circle: *positive*"),
    ("neutral", ":large_yellow_circle: *neutral*"), (2.5, ":red_circle: *2.5* / 10"),
])
def test_word_and_decimal_sentiments(sentiment, shown):
    report = report_with(analysis={"sentiment": sentiment})
    fields = blocks_of(build_message(report, config_for(), SETTINGS), "section")[1]["fields"]
    assert fields[0]["text"] == f"*Sentiment*\n{shown}"


def test_templates_that_render_nothing_still_give_a_valid_message(sample_report, check_blocks):
    config = config_for(header="{{ nothing }}", summary="{% if false %}x{% endif %}", text="")
    message = build_message(sample_report, config, SETTINGS)
    assert check_blocks(message) == []
    assert message["blocks"][0]["text"]["text"] == "Call report"
    assert blocks_of(message, "section")[0]["text"]["text"] == "_No summary._"
    assert message["text"] == "Call report"
