"""Live answers through the real receiver (Flask's test client): assistant-request from a CRM on
127.0.0.1 within the budget, the cache, tool-calls with one result per tool call, follow-ups as
durable deliveries, the stored answers, the signature check, the configuration's errors."""
from __future__ import annotations

import copy
import json
import time

import pytest

import hub
from hub.config import ConfigProblems, load_config
from hub.plugins import collect, make_manager
from hub.testing import TEST_SECRET, load_sample, signed_headers, wait_until

from answers_crm import PLUGIN, LocalCrm

CALLER = "+31612345678"
ALICE = {"id": "501", "name": "Alice de Vries", "company": "Acme BV", "owner": "Bram",
         "deals": [{"name": "Renewal 2027", "stage": "proposal", "amount": 12000}]}
FIRST_MESSAGE = ("Hello {{ caller.name }}{% if last_call %}, about {{ last_call.summary }}{% endif %}! "
                 "{{ caller.open_deals | length }} open deal.")

pytestmark = pytest.mark.hub_plugins(PLUGIN)


def event(kind: str, *, number: str | None = CALLER, call_id: str = "call-answers-1", **fields) -> dict:
    payload = load_sample("status-update")
    message = payload["message"]
    message.pop("error")
    message.update(type=kind, **fields)
    message["call"].update(id=call_id, type="inbound_phone_call", status="ringing")
    message["customer"] = {"number": number}
    return payload


def tool_call(call_id: str, name: str, arguments=None) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments or {}}}


@pytest.fixture
def crm():
    with LocalCrm({CALLER: ALICE}) as server:
        yield server


def configure(hub_config, crm, **request):
    hub_config["destinations"]["crm"] = {"type": "localcrm", "base_url": crm.url, "events": ["end-of-call-report"]}
    hub_config["answers"] = {
        "assistant_request": {"crm": "crm", "first_message": FIRST_MESSAGE,
                              "unknown_first_message": "Hello, who do I have the pleasure of speaking with?",
                              "max_duration_seconds": 600, "budget_ms": 1000, **request},
        "tools": {"followup": "crm"},
    }
    hub_config["server"] = {"public_url": "https://hub.example.com"}


@pytest.fixture
def answering(hub_config, crm):
    configure(hub_config, crm)
    return hub_config


def an_earlier_call(signed_post, summary="Asked about the renewal price."):
    payload = load_sample("end-of-call-report")
    payload["message"]["customer"] = {"number": CALLER}
    payload["message"]["summary"] = summary
    payload["message"]["call"]["id"] = "call-earlier"
    assert signed_post(payload).status_code == 202


def test_a_known_caller_is_greeted_from_the_crm_and_the_answer_carries_the_record_ids(answering, app, signed_post, crm):
    an_earlier_call(signed_post)
    response = signed_post(event("assistant-request"))
    assert response.status_code == 200
    assert response.get_json() == {
        "assistant": {"first_message": "Hello Alice de Vries, about Asked about the renewal price.! 1 open deal.",
                      "metadata": {"crm_destination": "crm", "crm_contact_id": "501"}},
        "max_duration_seconds": 600,
    }
    assert crm.hits == [CALLER]
    [stored] = [r for r in app.hub.store.list_reports() if r.event == "assistant-request"]
    answer = app.hub.store.get_answer(stored.id)
    assert (answer.outcome, answer.answer, answer.detail) == ("answered", response.get_json(), None)
    assert 0 < answer.latency_ms < 5000


def test_the_end_of_call_report_reads_back_the_ids_the_answer_put_in_the_metadata(answering, app, signed_post):
    metadata = signed_post(event("assistant-request")).get_json()["assistant"]["metadata"]
    payload = load_sample("end-of-call-report")
    payload["message"]["assistant"] = {"id": "asst_1", "metadata": metadata}
    signed_post(payload)
    [report] = [r for r in app.hub.store.list_reports() if r.event == "end-of-call-report"]
    assert report.crm_record_ids("crm") == {"contact": "501"}


def test_an_unknown_caller_gets_the_unknown_template_and_no_metadata(answering, app, signed_post, crm):
    answer = signed_post(event("assistant-request", number="+31687654321")).get_json()
    assert answer == {"assistant": {"first_message": "Hello, who do I have the pleasure of speaking with?"},
                      "max_duration_seconds": 600}


def test_without_an_unknown_template_an_unknown_caller_gets_the_default_assistant(hub_config, crm, register_plugin):
    configure(hub_config, crm, unknown_first_message=None)
    client = register_plugin().test_client()
    body = json.dumps(event("assistant-request", number="+31687654321")).encode()
    response = client.post("/webhooks/hms", data=body, headers=signed_headers(body, event="assistant-request"), buffered=True)
    assert response.status_code == 200 and response.get_json() == {}


def test_a_slow_crm_is_abandoned_within_the_budget_and_its_late_answer_fills_the_cache(hub_config, register_plugin):
    with LocalCrm({CALLER: ALICE}, delay=2.0) as slow:
        configure(hub_config, slow, budget_ms=300)
        application = register_plugin()
        client = application.test_client()

        def post(call_id):
            body = json.dumps(event("assistant-request", call_id=call_id)).encode()
            began = time.monotonic()
            response = client.post("/webhooks/hms", data=body, headers=signed_headers(body, event="assistant-request"), buffered=True)
            return response, time.monotonic() - began

        response, took = post("call-slow-1")
        assert response.get_json() == {"assistant": {"first_message": "Hello, who do I have the pleasure of "
                                                                      "speaking with?"}, "max_duration_seconds": 600}
        assert took < 1.9, "the answer did not wait for the CRM's 2 s"  # the budget is 0.3 s
        [first] = [r for r in application.hub.store.list_reports() if r.call.id == "call-slow-1"]
        stored = application.hub.store.get_answer(first.id)
        assert stored.outcome == "fallback" and "did not answer within the budget" in stored.detail

        assert wait_until(lambda: application.hub.answers.lookups.cached("crm", CALLER) is not None, 10)
        response, took = post("call-slow-2")
        assert response.get_json()["assistant"]["metadata"] == {"crm_destination": "crm", "crm_contact_id": "501"}
        assert slow.hits == [CALLER], "the second call was answered from the cache"


def test_a_failing_crm_gets_the_fallback_and_is_asked_again_next_time(hub_config, register_plugin):
    with LocalCrm({CALLER: ALICE}, fail_status=500) as failing:
        configure(hub_config, failing)
        application = register_plugin()
        client = application.test_client()
        for call_id in ("call-f-1", "call-f-2"):
            body = json.dumps(event("assistant-request", call_id=call_id)).encode()
            answer = client.post("/webhooks/hms", data=body, headers=signed_headers(body, event="assistant-request"), buffered=True)
            assert "metadata" not in answer.get_json()["assistant"]
        assert failing.hits == [CALLER, CALLER], "a failed lookup is not cached as unknown"
        outcomes = {a.outcome for a in application.hub.store.answers_of(
            r.id for r in application.hub.store.list_reports()).values()}
        assert outcomes == {"fallback"}


def test_two_requests_for_one_number_at_once_share_one_lookup(hub_config, register_plugin):
    import threading

    with LocalCrm({CALLER: ALICE}, delay=0.5) as crm:
        configure(hub_config, crm, budget_ms=3000)
        application = register_plugin()
        answers = []

        def post(call_id):
            body = json.dumps(event("assistant-request", call_id=call_id)).encode()
            answers.append(application.test_client().post(
                "/webhooks/hms", data=body, headers=signed_headers(body, event="assistant-request"), buffered=True).get_json())

        threads = [threading.Thread(target=post, args=(f"call-s-{i}",)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert len(answers) == 3 and all("metadata" in a["assistant"] for a in answers)
        assert crm.hits == [CALLER]


def test_a_bad_signature_is_401_and_the_crm_is_never_asked(answering, client, crm):
    body = json.dumps(event("assistant-request")).encode()
    headers = signed_headers(body, secret="whsec_not_the_right_secret_000", event="assistant-request")
    response = client.post("/webhooks/hms", data=body, headers=headers)
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_signature"
    body = json.dumps(event("tool-calls", tool_call_list=[tool_call("t1", "lookup_customer")])).encode()
    response = client.post("/webhooks/hms", data=body, headers=signed_headers(body, secret="whsec_wrong_wrong_wrong",
                                                                               event="tool-calls"))
    assert response.status_code == 401
    time.sleep(0.2)
    assert crm.hits == [] and crm.tasks == []
    assert client.application.hub.store.list_reports() == []


def test_a_template_that_cannot_render_answers_the_default_assistant_and_says_why(hub_config, crm, register_plugin):
    configure(hub_config, crm, first_message="{{ caller.name + 1 }}")
    application = register_plugin()
    body = json.dumps(event("assistant-request")).encode()
    answer = application.test_client().post("/webhooks/hms", data=body,
                                             headers=signed_headers(body, event="assistant-request"), buffered=True)
    assert answer.status_code == 200 and answer.get_json() == {}
    [stored] = application.hub.store.answers_of(r.id for r in application.hub.store.list_reports()).values()
    assert stored.outcome == "error" and "template could not be rendered" in stored.detail


def test_a_system_message_goes_into_llm_config(hub_config, crm, register_plugin):
    configure(hub_config, crm, llm_config={"provider": "openai", "model": "gpt-4o"},
              system_message="The caller is {{ caller.name }} of {{ caller.company }}; owner {{ caller.owner }}.")
    body = json.dumps(event("assistant-request")).encode()
    answer = register_plugin().test_client().post("/webhooks/hms", data=body,
                                                  headers=signed_headers(body, event="assistant-request"), buffered=True).get_json()
    assert answer["assistant"]["llm_config"] == {
        "provider": "openai", "model": "gpt-4o",
        "messages": [{"role": "system", "content": "The caller is Alice de Vries of Acme BV; owner Bram."}]}


# --- tool-calls --------------------------------------------------------------------------------

class FlakyTools:
    @hub.hookimpl
    def register_tools(self, register):
        def explode(arguments, call):
            raise RuntimeError("the tool's own bug")

        async def shout(arguments, call):
            return {"text": arguments["text"].upper(), "caller": hub.mask_phone(call.number)}

        register(name="explode", description="always fails", parameters={"type": "object"}, function=explode)
        register(hub.Tool("shout", "an async tool", {"type": "object", "required": ["text"],
                                                      "properties": {"text": {"type": "string"}}}, shout))


def post_tool_calls(client, entries, call_id="call-tools-1"):
    body = json.dumps(event("tool-calls", call_id=call_id, tool_call_list=entries)).encode()
    return client.post("/webhooks/hms", data=body, headers=signed_headers(body, event="tool-calls"), buffered=True)


def test_each_tool_call_gets_its_own_result_and_a_broken_one_does_not_stop_the_others(
        hub_config, crm, register_plugin):
    configure(hub_config, crm)
    application = register_plugin(FlakyTools())
    client = application.test_client()
    signed = client.post  # the earlier call, for the history
    payload = load_sample("end-of-call-report")
    payload["message"].update(customer={"number": CALLER}, summary="Wanted a quote.", analysis={"sentiment": 4})
    body = json.dumps(payload).encode()
    assert signed("/webhooks/hms", data=body, headers=signed_headers(body), buffered=True).status_code == 202

    entries = [tool_call("t1", "lookup_customer"), tool_call("t2", "no_such_tool"),
               tool_call("t3", "create_followup", {"title": 7}), tool_call("t4", "explode"),
               tool_call("t5", "shout", json.dumps({"text": "hi"})), tool_call("t6", "recent_calls", {"limit": 2})]
    response = post_tool_calls(client, entries)
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [r["tool_call_id"] for r in results] == ["t1", "t2", "t3", "t4", "t5", "t6"]
    looked_up = results[0]["result"]
    assert looked_up["found"] is True and looked_up["name"] == "Alice de Vries" and looked_up["company"] == "Acme BV"
    assert looked_up["record_ids"] == {"contact": "501"} and looked_up["last_call"]["summary"] == "Wanted a quote."
    assert "unknown tool 'no_such_tool'" in results[1]["error"] and "lookup_customer" in results[1]["error"]
    assert results[2]["error"].startswith("invalid arguments: title: 7 is not of type 'string'")
    assert results[3] == {"tool_call_id": "t4", "error": "the tool 'explode' failed (RuntimeError)"}
    assert results[4] == {"tool_call_id": "t5", "result": {"text": "HI", "caller": "+316*****678"}}
    calls = results[5]["result"]["calls"]
    assert [(c["summary"], c["sentiment"]) for c in calls] == [("Wanted a quote.", 4)] and calls[0]["time"].endswith("Z")
    [stored] = [r for r in application.hub.store.list_reports() if r.event == "tool-calls"]
    assert application.hub.store.get_answer(stored.id).outcome == "error"


def test_a_followup_is_queued_once_answered_at_once_and_delivered_with_its_title(answering, app, crm):
    client = app.test_client()
    entries = [tool_call("tf1", "create_followup", {"title": "Send the renewal quote", "notes": "By Friday"})]
    first = post_tool_calls(client, entries)
    [result] = first.get_json()["results"]
    assert result["result"]["status"] == "queued" and result["result"]["destination"] == "crm"
    assert result["result"]["message"] == "A follow-up task titled 'Send the renewal quote' will be created in crm."
    assert crm.tasks == [], "answered at once: the task is a delivery, made after the answer"

    again = post_tool_calls(client, entries)
    assert again.status_code == 200 and again.get_json() == first.get_json()
    followups = [r for r in app.hub.store.list_reports() if r.event == "followup"]
    assert len(followups) == 1 and followups[0].call.id == "call-tools-1"

    app.hub.dispatcher.run_due()
    assert crm.tasks == [{"title": "Send the renewal quote", "notes": "By Friday", "call": "call-tools-1"}]
    [delivery] = app.hub.store.list_deliveries(report_id=followups[0].id)
    assert delivery.status == "succeeded" and delivery.state["followup"]["tool_call_id"] == "tf1"


def test_each_tool_calls_event_of_a_call_is_its_own_event(answering, app):
    client = app.test_client()
    first = post_tool_calls(client, [tool_call("ta", "recent_calls")])
    second = post_tool_calls(client, [tool_call("tb", "recent_calls")])
    assert first.get_json()["results"][0]["tool_call_id"] == "ta"
    assert second.get_json()["results"][0]["tool_call_id"] == "tb"
    stored = [r for r in app.hub.store.list_reports() if r.event == "tool-calls"]
    assert len(stored) == 2 and len(app.hub.store.answers_of(r.id for r in stored)) == 2


def test_a_followup_without_a_followup_destination_is_that_entrys_error(hub_config, crm, register_plugin):
    configure(hub_config, crm)
    hub_config["answers"]["tools"] = {}
    client = register_plugin().test_client()
    [result] = post_tool_calls(client, [tool_call("tx", "create_followup", {"title": "Call back"})]).get_json()["results"]
    assert result == {"tool_call_id": "tx", "error": "no follow-up destination is configured ([answers.tools] followup)"}


def test_tool_calls_on_a_hub_without_answers_tools_are_stored_as_before(hub_config, signed_post, app):
    answer = signed_post(event("tool-calls", tool_call_list=[tool_call("t1", "recent_calls")])).get_json()
    assert answer["status"] == "ignored"


def test_the_metrics_count_answers_by_event_and_outcome(answering, app, signed_post):
    from prometheus_client import REGISTRY

    def count(outcome):
        return REGISTRY.get_sample_value("sovereign_hub_answers_total",
                                         {"event": "assistant-request", "outcome": outcome}) or 0

    before = count("answered")
    signed_post(event("assistant-request", call_id="call-metrics"))
    assert count("answered") == before + 1
    assert REGISTRY.get_sample_value("sovereign_hub_answer_seconds_count", {"event": "assistant-request"}) >= 1


# --- configuration ---------------------------------------------------------------------------------

@pytest.fixture
def registry():
    pm = make_manager(load_entry_points=False)
    pm.register(PLUGIN)
    return collect(pm)


def problems_of(registry, answers, destinations=None):
    data = {"sources": {"hms": {"secret": TEST_SECRET}}, "answers": answers,
            "destinations": destinations if destinations is not None else {
                "crm": {"type": "localcrm", "base_url": "http://127.0.0.1:9"},
                "file": {"type": "jsonl", "path": "calls.jsonl"}}}
    with pytest.raises(ConfigProblems) as info:
        load_config(None, registry, data=data)
    return info.value.problems


def test_configuration_errors_name_the_key(registry):
    base = {"crm": "crm", "first_message": "Hi"}
    assert problems_of(registry, {"assistant_request": {**base, "crm": "hubspt"}}) == [
        "answers.assistant_request.crm: no enabled destination named 'hubspt' (configured: crm, file)"]
    assert problems_of(registry, {"assistant_request": {**base, "crm": "file"}}) == [
        "answers.assistant_request.crm: destination 'file' (type 'jsonl') cannot look callers up; "
        "destinations that can: crm"]
    assert problems_of(registry, {"assistant_request": {**base, "budget_ms": 5000}}) == [
        "answers.assistant_request.budget_ms: must be between 100 and 4500 (the platform waits 5000 ms)"]
    assert problems_of(registry, {"assistant_request": {"crm": "crm"}}) == [
        "answers.assistant_request.first_message: missing: this key is required"]
    assert problems_of(registry, {"assistant_request": {**base, "first_message": "{{ caller.name"}}) == [
        "answers.assistant_request.first_message: template error: unexpected end of template, "
        "expected 'end of print statement'."]
    assert problems_of(registry, {"assistant_request": {**base, "system_message": "You help {{ caller.name }}"}}) == [
        'answers.assistant_request.system_message: needs llm_config with provider and model, e.g. llm_config = '
        '{ provider = "openai", model = "gpt-4o" }']
    assert problems_of(registry, {"tools": {"followup": "file"}}) == [
        "answers.tools.followup: destination 'file' (type 'jsonl') cannot take follow-up tasks; "
        "destinations that can: crm"]
    assert problems_of(registry, {"tools": {"timeout_seconds": 12}}) == [
        "answers.tools.timeout_seconds: must be between 0.5 and 9.5 (the platform waits 10 s)"]
    assert problems_of(registry, {"tool": {}}) == ["answers.tool: unknown key; did you mean 'tools'?"]


def test_defaults(registry):
    data = {"sources": {"hms": {"secret": TEST_SECRET}},
            "answers": {"assistant_request": {"crm": "crm", "first_message": "Hi"}, "tools": {}},
            "destinations": {"crm": {"type": "localcrm", "base_url": "http://127.0.0.1:9"}}}
    answers = load_config(None, registry, data=data).answers
    assert (answers.assistant_request.budget_ms, answers.assistant_request.cache_seconds) == (2000, 300)
    assert (answers.tools.timeout_seconds, answers.tools.followup, answers.lookup_workers) == (8.0, None, 16)
    assert answers.crm == "crm"


class SlowCounter:
    """A tool that takes 0.5 s and counts its runs."""

    def __init__(self):
        self.runs = 0

    @hub.hookimpl
    def register_tools(self, register):
        def slow(arguments, call):
            self.runs += 1
            time.sleep(0.5)
            return {"run": self.runs}

        register(name="slow", description="takes half a second", parameters={"type": "object"}, function=slow)


def test_the_same_event_twice_at_once_runs_its_tools_once_and_both_get_the_answer(hub_config, crm, register_plugin):
    import threading

    configure(hub_config, crm)
    counter = SlowCounter()
    application = register_plugin(counter)
    answers = []

    def post():
        answers.append(post_tool_calls(application.test_client(), [tool_call("same-1", "slow")]).get_json())

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert counter.runs == 1
    assert answers == [{"results": [{"tool_call_id": "same-1", "result": {"run": 1}}]}] * 2
