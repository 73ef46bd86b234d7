"""What the core gives every plugin: rules, templates, rate limits, due dates, error mapping."""
from datetime import date, datetime, timezone

import pytest
import requests
import responses

from hub import (Mapping, Permanent, Retryable, Rule, Template, WindowLimiter, due_date, mask_phone, parse_rate,
                 raise_for_response, retry_after_seconds)
from hub.redaction import register_secret, scrub
from hub.testing import FakeClock, assert_no_window_exceeded


# --- rules ------------------------------------------------------------------------------

@pytest.mark.parametrize("expression, expected", [
    ("analysis.follow_up_needed", True),
    ("analysis.sentiment <= `3`", True),
    ("analysis.sentiment <= 3", True),
    ("analysis.sentiment > 3", False),
    ("analysis.sentiment <= 3 || analysis.intent == 'complaint'", True),
    ("analysis.intent == 'sales'", False),
    ("analysis.intent == '3 <= 4'", False),      # numbers inside strings are left alone
    ("duration_seconds >= 300", True),
    ("customer.region == 'NL' && call.direction == 'outbound'", True),
    ("contains(summary, 'refund')", True),
    ("analysis.missing", False),
])
def test_rules_over_the_report(sample_report, expression, expected):
    assert Rule(expression).matches(sample_report) is expected


def test_rule_on_report_without_analysis_is_false(make_report):
    report = make_report("end-of-call-report-web-call")
    assert Rule("analysis.sentiment <= 3").matches(report) is False


def test_zero_is_true_in_jmespath(sample_report):
    assert Rule("`0`").matches(sample_report)


@pytest.mark.parametrize("bad", ["analysis.sentiment <=", "[[", "foo(bar",
                                 "foo(summary)", "length(summary, summary)"])  # found only when run
def test_invalid_rule_names_the_expression(bad):
    with pytest.raises(ValueError, match="not a valid JMESPath expression"):
        Rule(bad)


def test_a_rule_over_data_of_another_type_is_null_not_an_error(make_report, caplog):
    """analysis is never rejected, so its values can have any type: length() of a number raised
    JMESPathTypeError, a 500 from the receiver and the report lost."""
    report = make_report(analysis={"notes": 5})
    with caplog.at_level("WARNING"):
        assert Rule("length(analysis.notes) > `0`").matches(report) is False
    assert Mapping({"n": "length(analysis.notes)", "s": "summary"}).evaluate(report) == {"s": report.summary}
    assert any(r.getMessage() == "rule.type_error" for r in caplog.records)
    assert Rule("length(summary) > `0`").matches(make_report())  # a type error over {} is no config error


def test_mapping_leaves_out_nulls(sample_report):
    mapping = Mapping({"last_sentiment": "analysis.sentiment", "nothing": "analysis.nope",
                       "number": "customer.number"})
    assert mapping.evaluate(sample_report) == {"last_sentiment": 2, "number": "+31623456789"}


# --- templates --------------------------------------------------------------------------

def test_template_renders_report_fields_and_filters(sample_report):
    text = Template("Call {{ customer.number | phone }} ({{ duration_seconds | duration }}) "
                    "at {{ occurred_at | datetime }}: {{ analysis.intent }}").render(sample_report)
    assert text == "Call +31 6 23456789 (5m 12s) at 2026-03-02 09:14 UTC: complaint"


def test_template_missing_values_render_empty(make_report):
    report = make_report("end-of-call-report-web-call")
    assert Template("[{{ analysis.sentiment }}][{{ nope.deeper.still }}]").render(report) == "[][]"


def test_template_extra_names(sample_report):
    assert Template("{{ report_url }}").render(sample_report, report_url="https://x/1") == "https://x/1"


def test_template_syntax_error_is_value_error():
    with pytest.raises(ValueError, match="template error"):
        Template("{{ unclosed")


def test_template_sandbox_blocks_unsafe_access(sample_report):
    with pytest.raises(Permanent, match="could not be rendered"):
        Template("{{ report.__class__.__mro__[1].__subclasses__() }}").render(sample_report)


# --- rate limiting ------------------------------------------------------------------------

def granted_times(limiter, clock, n, **kwargs):
    """Acquire ``n`` slots on a fake clock; the times they were granted at."""
    times = []
    for _ in range(n):
        limiter.acquire(**kwargs)
        times.append(clock.now)
    return times


@pytest.mark.parametrize("count, seconds, n", [(4, 1, 13), (150, 60, 451), (1000, 900, 2001)])
def test_window_limiter_never_lets_a_window_exceed_its_count(count, seconds, n):
    clock = FakeClock()
    limiter = WindowLimiter(count, seconds, clock=clock, sleep=clock.sleep)
    times = granted_times(limiter, clock, n, max_wait=seconds)
    assert times[:count] == [0.0] * count  # the whole window's worth at once, no more
    assert_no_window_exceeded(times, f"{count}/{seconds}s")
    assert clock.now == pytest.approx((n - 1) // count * seconds)


def test_window_limiter_frees_a_slot_as_the_oldest_leaves_the_window():
    clock = FakeClock()
    limiter = WindowLimiter(2, 1, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    clock.now = 0.7
    limiter.acquire()
    assert limiter.acquire() == pytest.approx(0.3)  # the grant at 0.0 leaves the window at 1.0
    assert limiter.acquire() == pytest.approx(0.7)  # the one at 0.7 leaves at 1.7


def test_window_limiter_too_long_a_wait_is_retryable_and_takes_no_slot():
    clock = FakeClock()
    limiter = WindowLimiter.parse("1/10s")
    limiter.clock, limiter.sleep = clock, clock.sleep
    limiter.acquire()
    with pytest.raises(Retryable) as info:
        limiter.acquire(max_wait=5, who="destination 'crm': ")
    assert info.value.retry_after == pytest.approx(10)
    assert info.value.reason == "destination 'crm': rate limit (1/10s): next slot in 10.0s"
    clock.now += 10
    assert limiter.acquire(max_wait=5) == 0.0


@pytest.mark.parametrize("text, parsed", [("4/1s", (4, 1.0)), ("150/60s", (150, 60.0)), (" 1000 / 900s ", (1000, 900.0)),
                                          ("5/0.5s", (5, 0.5))])
def test_parse_rate(text, parsed):
    assert parse_rate(text) == parsed


@pytest.mark.parametrize("text", ["4", "4/s", "0/1s", "4/0s", "4 per second", "-1/1s", 4, None])
def test_parse_rate_names_the_form(text):
    with pytest.raises(ValueError, match='write "count/Ns"'):
        parse_rate(text)


def test_window_limiter_is_thread_safe():
    import threading
    import time

    limiter = WindowLimiter(5, 0.05)
    granted = []
    lock = threading.Lock()

    def worker():
        for _ in range(5):
            limiter.acquire()
            with lock:
                granted.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 20
    assert granted[-1] - granted[0] >= 3 * 0.05 * 0.95  # 20 grants, 5 per 50 ms: three full waits


# --- due dates --------------------------------------------------------------------------

@pytest.mark.parametrize("start, days, business, expected", [
    (date(2026, 11, 27), 1, False, date(2026, 11, 28)),   # Friday + 1 calendar day
    (date(2026, 11, 27), 1, True, date(2026, 11, 30)),    # Friday + 1 business day = Monday
    (date(2026, 11, 28), 1, True, date(2026, 11, 30)),    # Saturday + 1 business day = Monday
    (date(2026, 11, 25), 3, True, date(2026, 11, 30)),    # Wednesday + 3 = Monday
    (date(2026, 11, 23), 10, True, date(2026, 12, 7)),
    (datetime(2026, 11, 23, 23, 0, tzinfo=timezone.utc), 0, False, date(2026, 11, 23)),
])
def test_due_date(start, days, business, expected):
    assert due_date(start, days, business_days=business) == expected


# --- HTTP error mapping ---------------------------------------------------------------

def answer(mocked_http, status, body="", headers=None):
    mocked_http.add(responses.GET, "https://api.example.com/x", status=status, body=body, headers=headers or {})
    return requests.get("https://api.example.com/x")


def test_2xx_passes(mocked_http):
    raise_for_response(answer(mocked_http, 201), "crm")


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_retryable_statuses(mocked_http, status):
    with pytest.raises(Retryable) as info:
        raise_for_response(answer(mocked_http, status, "busy"), "crm")
    assert info.value.http_status == status and "destination 'crm'" in info.value.reason


@pytest.mark.parametrize("status, word", [(401, "unauthorized"), (403, "forbidden")])
def test_auth_errors_are_permanent_with_hint(mocked_http, status, word):
    with pytest.raises(Permanent) as info:
        raise_for_response(answer(mocked_http, status, '{"message":"bad token"}'), "crm",
                           auth_hint="Give the token the crm.objects.write scope.")
    assert info.value.reason == (f"destination 'crm': HTTP {status} from api.example.com ({word}): "
                                 '{"message":"bad token"}. Give the token the crm.objects.write scope.')


def test_error_text_never_contains_a_secret(mocked_http):
    register_secret("pat-eu1-0123456789abcdef")
    with pytest.raises(Permanent) as info:
        raise_for_response(answer(mocked_http, 400, "invalid token pat-eu1-0123456789abcdef"), "crm")
    assert "pat-eu1-0123456789abcdef" not in info.value.reason and "[secret]" in info.value.reason


def test_retry_after_forms():
    assert retry_after_seconds("30") == 30
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    now = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("Sat, 28 Nov 2026 12:01:00 GMT", now=now) == 60


# --- masking ------------------------------------------------------------------------

def test_mask_phone_and_scrub():
    assert mask_phone("+31612345678") == "+316*****678"
    assert mask_phone(None) is None
    assert scrub("caller +31 6 1234 5678 rang") == "caller +316*****678 rang"
    assert scrub("Phone 06-12345678 already exists") == "Phone 061****678 already exists"
    assert scrub("duration 312 ms, id 0b7e9a52, at 2026-03-02") == "duration 312 ms, id 0b7e9a52, at 2026-03-02"


def test_template_runtime_error_is_permanent(sample_report):
    with pytest.raises(Permanent, match="TypeError"):
        Template("{{ duration_seconds + summary }}").render(sample_report)


def test_ctx_send_uses_one_session_per_destination_with_user_agent_and_timeout(sample_report, mocked_http):
    """The HTTP session the core gives every destination: the hub's user agent, the type's
    timeout on each request, one pooled session per destination instance."""
    from hub import Destination
    from hub.http import USER_AGENT
    from hub.testing import deliver

    timeouts = []

    class Twice(Destination):
        type = "twice"
        timeout = 7.5

        def deliver(self, report, ctx):
            ctx.send("GET", "https://api.example.test/a")
            ctx.send("GET", "https://api.example.test/b")

    mocked_http.get("https://api.example.test/a", status=200)
    mocked_http.get("https://api.example.test/b", status=200)
    destination, other = Twice("one", {}), Twice("two", {})
    real_send = destination.http.send
    destination.http.send = lambda prepared, **kw: timeouts.append(kw["timeout"]) or real_send(prepared, **kw)
    deliver(destination, sample_report)
    assert [c.request.headers["User-Agent"] for c in mocked_http.calls] == [USER_AGENT, USER_AGENT]
    assert timeouts == [7.5, 7.5]
    assert destination.http is not other.http


def test_sent_marks_remember_an_unanswered_create_until_cleared():
    from hub.testing import make_destination

    ctx = make_destination("jsonl", {"path": "/tmp/unused.jsonl"}).context(state={"task_id": None})
    assert not ctx.was_sent("task") and ctx.sent_at("task") is None and ctx.sent_times("task") == 0
    ctx.mark_sent("task", at=100.0)
    ctx.mark_sent("task", at=160.0)
    assert ctx.was_sent("task") and ctx.sent_at("task") == 160.0 and ctx.sent_times("task") == 2
    ctx.mark_sent("contact")
    ctx.clear_sent("task")
    assert not ctx.was_sent("task") and ctx.was_sent("contact")
    ctx.clear_sent("contact")
    assert ctx.state == {"task_id": None}  # no empty leftovers in the saved state


def test_credential_key_is_a_digest_never_the_credential():
    from hub import credential_key

    key = credential_key("pat-na1-secret-token")
    assert key == credential_key("pat-na1-secret-token") != credential_key("another-token")
    assert "secret" not in key and len(key) == 64
    assert credential_key("a", "b") != credential_key("ab")
