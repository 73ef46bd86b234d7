"""From the platform's payload to the CallReport every plugin reads."""
from datetime import datetime, timezone

import jsonschema
import pytest

from hub import CallReport
from hub.normalize import Normalizer
from hub.report import REPORT_JSON_SCHEMA
from hub.testing import analysis_schema, load_sample, normalize_payload


@pytest.mark.parametrize("raw, region, expected", [
    ("+31612345678", None, "+31612345678"),
    ("+31 6 12345678", None, "+31612345678"),
    ("06-12345678", "NL", "+31612345678"),
    ("(06) 12 34 56 78", "NL", "+31612345678"),
    ("0031612345678", "NL", "+31612345678"),
    ("+49 30 901820", None, "+4930901820"),
    ("(415) 555-2671", "US", "+14155552671"),
])
def test_numbers_become_e164(raw, region, expected):
    assert Normalizer(region).phone(raw).number == expected


@pytest.mark.parametrize("raw", ["", "   ", "anonymous", "12", None])
def test_unusable_numbers_keep_raw_and_null_e164(raw):
    number = Normalizer("NL").phone(raw)
    assert number.number is None
    assert number.raw == raw or (raw is None and number.raw is None)


def test_national_number_without_region_is_not_guessed():
    assert Normalizer(None).phone("06-12345678").number is None


def test_full_report_fields():
    report = normalize_payload(load_sample("end-of-call-report-full"), analysis=analysis_schema())
    assert report.source == "hms" and report.event == "end-of-call-report"
    assert report.call.id == "0b7e9a52-5d0c-4a8e-9f3e-2f1c6d8a4b11"
    assert report.call.type == "outbound_phone_call" and report.call.direction == "outbound"
    assert report.call.status == "ended"
    assert report.occurred_at == datetime(2026, 3, 2, 9, 14, 7, 512000, tzinfo=timezone.utc)
    assert report.phone_number.number == "+31850835037" and report.phone_number.name == "Support line"
    assert report.customer.number == "+31623456789"
    assert report.customer.raw == "+31 6 2345 6789" and report.customer.region == "NL"
    assert report.duration_seconds == 312
    assert report.summary.startswith("Customer reported")
    assert report.analysis == {"sentiment": 2, "intent": "complaint", "resolved": False, "follow_up_needed": True}
    assert report.analysis_errors == []
    assert [m.role for m in report.messages] == ["assistant", "user", "assistant", "user", "assistant"]
    assert report.recording_url == "https://recordings.example.com/0b7e9a52.mp3"
    assert report.assistant["metadata"] == {"crm_contact_id": "51"}
    assert report.raw == load_sample("end-of-call-report-full")


def test_direction_from_call_type():
    assert normalize_payload(load_sample("end-of-call-report")).call.direction == "inbound"
    assert normalize_payload(load_sample("end-of-call-report-web-call")).call.direction == "web"
    payload = load_sample("end-of-call-report")
    payload["message"]["call"]["type"] = "sip_call"
    assert normalize_payload(payload).call.direction == "unknown"


def test_web_call_has_no_customer_number_even_if_one_is_sent():
    payload = load_sample("end-of-call-report-web-call")
    payload["message"]["customer"]["number"] = "+31612345678"
    report = normalize_payload(payload)
    assert report.customer.number is None and report.customer.raw == "+31612345678"


def test_timestamp_in_other_offset_becomes_utc():
    payload = load_sample("end-of-call-report")
    payload["message"]["timestamp"] = "2026-03-02T10:14:07+01:00"
    assert normalize_payload(payload).occurred_at == datetime(2026, 3, 2, 9, 14, 7, tzinfo=timezone.utc)


def test_analysis_mismatch_is_recorded_not_rejected():
    payload = load_sample("end-of-call-report-full")
    payload["message"]["analysis"] = {"sentiment": 14, "intent": "chitchat", "resolved": "no"}
    report = normalize_payload(payload, analysis=analysis_schema())
    assert report.analysis["sentiment"] == 14
    assert report.analysis_errors == [
        "intent: 'chitchat' is not one of ['support', 'sales', 'complaint', 'other']",
        "resolved: 'no' is not of type 'boolean'",
        "sentiment: 14 is greater than the maximum of 10",
    ]


def test_analysis_without_schema_is_not_checked():
    payload = load_sample("end-of-call-report-full")
    payload["message"]["analysis"] = {"sentiment": "great"}
    assert normalize_payload(payload).analysis_errors == []


def test_analysis_errors_are_visible_to_rules(signed_post, app):
    from hub import Rule

    payload = load_sample("end-of-call-report-full")
    payload["message"]["analysis"]["sentiment"] = 0
    report = app.hub.store.get_report(signed_post(payload).get_json()["report_id"])
    assert Rule("length(analysis_errors) > `0`").matches(report)


@pytest.mark.parametrize("name", ["end-of-call-report", "end-of-call-report-full",
                                  "end-of-call-report-web-call", "status-update"])
def test_json_form_matches_the_published_schema_and_round_trips(name):
    report = normalize_payload(load_sample(name), analysis=analysis_schema())
    data = report.to_dict()
    jsonschema.Draft202012Validator(REPORT_JSON_SCHEMA, format_checker=jsonschema.FormatChecker()).validate(data)
    assert CallReport.from_dict(data) == report
    assert CallReport.from_json(report.to_json()).to_dict() == data


def test_status_update_keeps_its_error():
    report = normalize_payload(load_sample("status-update"))
    assert report.event == "status-update" and report.call.status == "ended-with-error"
    assert report.error == "SIP trunk rejected the call: 503 Service Unavailable"
    assert report.duration_seconds is None and report.summary is None


def test_report_doc_lists_every_field():
    """docs/report.md describes the contract field by field."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "report.md").read_text()
    for field, spec in REPORT_JSON_SCHEMA["properties"].items():
        assert f"`{field}`" in text, field
        for sub in spec.get("properties", {}):
            assert f"`{field}.{sub}`" in text, f"{field}.{sub}"


def test_report_doc_schema_is_the_code_schema():
    import json
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "report.md").read_text()
    blocks = re.findall(r"```json\n(.*?)\n```", text, re.S)
    assert json.loads(blocks[-1]) == REPORT_JSON_SCHEMA
    jsonschema.validate(json.loads(blocks[0]), REPORT_JSON_SCHEMA)
