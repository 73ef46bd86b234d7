"""The built-in webhook and jsonl destinations."""
import json
import re

import pytest
import responses
from standardwebhooks import Webhook

from hub import Permanent, Retryable
from hub.testing import DestinationContract, deliver, make_destination

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
URL = "https://receiver.example.com/calls"


class TestWebhookContract(DestinationContract):
    destination_type = "webhook"
    options = {"url": URL, "secret": SECRET}

    def mock_success(self, rsps):
        rsps.add(responses.POST, URL, status=204)

    def is_create(self, request):
        return False  # a webhook receiver deduplicates on webhook-id; redelivery re-sends by design


def test_webhook_posts_the_report_signed_the_standard_webhooks_way(sample_report, mocked_http):
    mocked_http.add(responses.POST, URL, status=200)
    destination = make_destination("webhook", {"url": URL, "secret": SECRET, "headers": {"X-Team": "support"}})
    deliver(destination, sample_report)
    request = mocked_http.calls[0].request
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Team"] == "support"
    assert request.headers["webhook-id"] == "dlv_test"
    assert re.fullmatch(r"\d{10}", request.headers["webhook-timestamp"])
    # verified by the Standard Webhooks reference library, not by our own code
    payload = Webhook(SECRET).verify(request.body, dict(request.headers))
    assert payload == sample_report.to_dict()


def test_webhook_id_is_the_same_across_retries(sample_report, mocked_http):
    mocked_http.add(responses.POST, URL, status=503)
    mocked_http.add(responses.POST, URL, status=200)
    destination = make_destination("webhook", {"url": URL, "secret": SECRET})
    with pytest.raises(Retryable):
        deliver(destination, sample_report, attempt=1)
    deliver(destination, sample_report, attempt=2)
    ids = [call.request.headers["webhook-id"] for call in mocked_http.calls]
    assert ids == ["dlv_test", "dlv_test"]


def test_webhook_without_secret_sends_no_signature(sample_report, mocked_http):
    mocked_http.add(responses.POST, URL, status=200)
    deliver(make_destination("webhook", {"url": URL}), sample_report)
    assert "webhook-signature" not in mocked_http.calls[0].request.headers


@pytest.mark.parametrize("status, error", [(429, Retryable), (500, Retryable), (502, Retryable),
                                           (400, Permanent), (404, Permanent), (410, Permanent)])
def test_webhook_status_mapping(sample_report, mocked_http, status, error):
    mocked_http.add(responses.POST, URL, status=status, body="nope")
    with pytest.raises(error) as info:
        deliver(make_destination("webhook", {"url": URL}), sample_report)
    assert info.value.http_status == status
    assert f"HTTP {status} from receiver.example.com" in info.value.reason


def test_webhook_honours_retry_after(sample_report, mocked_http):
    mocked_http.add(responses.POST, URL, status=429, headers={"Retry-After": "120"})
    with pytest.raises(Retryable) as info:
        deliver(make_destination("webhook", {"url": URL}), sample_report)
    assert info.value.retry_after == 120


def test_webhook_timeout_is_retryable(sample_report, mocked_http):
    import requests

    mocked_http.add(responses.POST, URL, body=requests.ReadTimeout("read timed out"))
    with pytest.raises(Retryable, match="ReadTimeout"):
        deliver(make_destination("webhook", {"url": URL, "timeout_seconds": 2}), sample_report)


@pytest.mark.parametrize("options, message", [
    ({"url": URL, "secret": "plain-secret"}, 'must look like "whsec_<base64>"'),
    ({"url": URL, "secret": "whsec_***"}, "not valid base64"),
    ({"url": "ftp://example.com"}, "url: the value given is not an absolute http(s) URL"),  # a secret: not quoted
    ({}, "url: missing: this key is required"),
])
def test_webhook_config_errors(options, message):
    with pytest.raises(Exception) as info:
        make_destination("webhook", options)
    assert message in str(info.value)


def test_jsonl_appends_one_line_per_report_and_not_twice(tmp_path, sample_report, make_report):
    path = tmp_path / "out" / "calls.jsonl"
    destination = make_destination("jsonl", {"path": str(path)})
    _, ctx = deliver(destination, sample_report)
    deliver(destination, sample_report, state=ctx.state)  # a retry after the line was written
    deliver(destination, make_report("end-of-call-report"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["call"]["id"] for line in lines] == ["0b7e9a52-5d0c-4a8e-9f3e-2f1c6d8a4b11",
                                                      "5c4d030f-43e3-4e65-899e-8148521e660f"]
    assert lines[0] == sample_report.to_dict()


def test_jsonl_dry_run_writes_nothing(tmp_path, sample_report):
    path = tmp_path / "calls.jsonl"
    _, ctx = deliver(make_destination("jsonl", {"path": str(path)}), sample_report, dry_run=True)
    assert not path.exists()
    assert ctx.sent[0].method == "APPEND" and ctx.sent[0].url.endswith("calls.jsonl")


def test_jsonl_path_that_is_a_directory_is_retryable(tmp_path, sample_report):
    with pytest.raises(Retryable, match="cannot write"):
        deliver(make_destination("jsonl", {"path": str(tmp_path)}), sample_report)
