"""Live answers: what the hub says back to the events the platform acts on (docs/answers.md).

An assistant-request is answered from the CRM named by ``[answers.assistant_request] crm``
within ``budget_ms`` of its arrival, whatever the CRM does (hub.lookup runs the lookup on a
pool of its own and the request waits for it until the deadline only); a tool-calls event gets
one result per tool call within ``[answers.tools] timeout_seconds`` (hub.tools). Each answer is
stored beside its report with its outcome and latency, so the same event sent again gets the
same answer, and nothing (no follow-up) is done twice.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from . import logs, metrics
from .destinations import Caller
from .errors import Permanent
from .lookup import FOUND, UNKNOWN, CallerLookups, Lookup
from .redaction import mask_phone
from .report import CallReport, crm_metadata, isoformat
from .store import Answer, utcnow
from .tools import ToolRunner

if TYPE_CHECKING:
    from .core import Hub

log = logging.getLogger(__name__)

ANSWERED, FALLBACK, ERROR = "answered", "fallback", "error"
ASSISTANT_REQUEST, TOOL_CALLS = "assistant-request", "tool-calls"
#: the hub-made event of a follow-up task that ``create_followup`` queued
FOLLOWUP = "followup"
#: kept back from an assistant-request's budget to render, write and send the answer (a loaded
#: machine wakes a waiting thread late): the lookup is waited for until budget - this
SEND_MARGIN = 0.1
#: how often a repeated event polls for the answer its first copy is still computing
_DUPLICATE_POLL = 0.05


@dataclass(frozen=True)
class Answered:
    """The JSON to send back (``answer``), why (``outcome``, ``detail``) and how long it took."""

    answer: dict[str, Any]
    outcome: str
    latency_ms: float
    detail: str | None = None
    repeated: bool = False  # the same event again: the stored answer
    lookup: str | None = None  # an assistant-request's lookup: found, unknown, timeout, failed, busy


def caller_fields(caller: Caller | None) -> dict[str, Any] | None:
    """What templates and the ``lookup_customer`` tool see of a caller (never the CRM page's URL)."""
    if caller is None:
        return None
    return {"name": caller.name, "company": caller.company, "owner": caller.owner,
            "open_deals": [dict(deal) for deal in caller.open_deals], "record_ids": dict(caller.record_ids)}


def call_fields(report: CallReport) -> dict[str, Any]:
    """One past call as templates and tools see it: when, its summary, its sentiment."""
    analysis = report.analysis if isinstance(report.analysis, dict) else {}
    return {"time": isoformat(report.occurred_at), "summary": report.summary,
            "sentiment": analysis.get("sentiment"), "report_id": report.id}


class Answers:
    """The live answers of one hub (one per process): its lookups, its tools, their records."""

    def __init__(self, core: "Hub", tools: dict):
        self.core = core
        self.config = core.config.answers
        request = self.config.assistant_request
        self.lookups = CallerLookups(self.config.lookup_workers, request.cache_seconds if request else 300)
        self.tools = ToolRunner(tools, self.config.lookup_workers)

    def handles(self, event: str) -> bool:
        """Whether the hub answers this event type (its ``[answers]`` table is configured)."""
        return ((event == ASSISTANT_REQUEST and self.config.assistant_request is not None)
                or (event == TOOL_CALLS and self.config.tools is not None))

    def budget(self, event: str) -> float:
        """Seconds from arrival to answer for ``event``."""
        if event == ASSISTANT_REQUEST:
            return self.config.assistant_request.budget_ms / 1000
        return self.config.tools.timeout_seconds

    # --- the request path ---------------------------------------------------------------------

    def respond(self, report: CallReport, report_id: str, duplicate: bool, started: float) -> Answered:
        """The answer to a stored event that arrived at ``started`` (``time.monotonic()``); ``keep``
        it once it is sent."""
        deadline = started + self.budget(report.event)
        if duplicate:
            return self._repeat(report, report_id, deadline, started)
        if report.event == ASSISTANT_REQUEST:
            return self.assistant_request(report, deadline, started)
        return self.tool_calls(dataclasses.replace(report, id=report_id), deadline, started)

    def keep(self, report: CallReport, report_id: str, answered: Answered) -> None:
        """Store a first answer beside its report, and count it. The receiver calls it when the
        answer has gone out (the write is not part of the platform's wait); a repeated event's
        stored answer is only counted."""
        if not answered.repeated:
            try:
                self.core.store.record_answer(Answer(report_id, report.event, answered.outcome, answered.answer,
                                                     answered.latency_ms, utcnow(), answered.detail))
            except SQLAlchemyError:  # the answer went out: the platform needed it more than the record
                log.exception("the answer to report %s could not be stored", report_id)
        self._count(report, answered, report_id)

    def _repeat(self, report: CallReport, report_id: str, deadline: float, started: float) -> Answered:
        """The stored answer of the first copy; if that copy is still being answered, wait for it
        until the deadline, then the fallback (never a second run of the tools)."""
        while True:
            stored = self.core.store.get_answer(report_id)
            if stored is not None:
                answered = Answered(stored.answer, stored.outcome, _since(started), stored.detail, repeated=True)
                break
            if time.monotonic() + _DUPLICATE_POLL >= deadline - SEND_MARGIN:
                answered = self._still_running(report, started)
                break
            time.sleep(_DUPLICATE_POLL)
        return answered

    def _still_running(self, report: CallReport, started: float) -> Answered:
        detail = "the first copy of this event is still being answered"
        if report.event == ASSISTANT_REQUEST:
            return Answered(self._fallback_answer(report, None), FALLBACK, _since(started), detail, repeated=True)
        results = [{"tool_call_id": str(entry.get("id", "")) if isinstance(entry, dict) else "", "error": detail}
                   for entry in _tool_calls(report)]
        return Answered({"results": results}, ERROR, _since(started), detail, repeated=True)

    def _count(self, report: CallReport, answered: Answered, report_id: str) -> None:
        metrics.ANSWERS.labels(report.event, answered.outcome).inc()
        metrics.ANSWER_SECONDS.labels(report.event).observe(answered.latency_ms / 1000)
        logs.event(log, "answer.sent", report_id=report_id, event_type=report.event, call_id=report.call.id,
                   customer=mask_phone(report.customer.number), outcome=answered.outcome,
                   latency_ms=round(answered.latency_ms, 1), repeated=answered.repeated,
                   **({"detail": answered.detail} if answered.detail else {}))

    # --- assistant-request ----------------------------------------------------------------------

    def assistant_request(self, report: CallReport, deadline: float, started: float) -> Answered:
        """The answer from the CRM's word on the caller, or the fallback when it has none in time."""
        config = self.config.assistant_request
        number = report.customer.number
        if number is None:
            lookup = Lookup(UNKNOWN, detail="no caller number (a web call, or one that did not parse)")
        else:
            pending = self.lookups.start(self.core.destination(config.crm), number)
            last = self.core.store.last_calls(number, 1)  # read while the CRM is asked
            lookup = pending.wait(deadline - min(SEND_MARGIN, self.budget(ASSISTANT_REQUEST) / 10) - time.monotonic())
        history = call_fields(last[0]) if number is not None and last else None
        try:
            if lookup.status == FOUND:
                answer = self._answer(report, config.first_message, lookup.caller, history)
                outcome, detail = ANSWERED, None
            else:
                answer = self._fallback_answer(report, history)
                outcome, detail = (ANSWERED, None) if lookup.status == UNKNOWN and number else (FALLBACK, lookup.detail)
        except Permanent as exc:  # an operator's template that cannot render: the default assistant
            answer, outcome, detail = {}, ERROR, exc.reason
        return Answered(answer, outcome, _since(started), detail, lookup=lookup.status)

    def _fallback_answer(self, report: CallReport, history: dict | None) -> dict[str, Any]:
        """The unknown-caller template's answer, or ``{}`` (the default assistant) without one."""
        template = self.config.assistant_request.unknown_first_message
        return {} if template is None else self._answer(report, template, None, history)

    def _answer(self, report: CallReport, first_message, caller: Caller | None, history: dict | None) -> dict:
        config = self.config.assistant_request
        names = {"caller": caller_fields(caller), "last_call": history, "known": caller is not None}
        assistant: dict[str, Any] = {"first_message": first_message.render(report, **names)}
        if config.llm_config is not None:
            assistant["llm_config"] = dict(config.llm_config)
            if config.system_message is not None:
                assistant["llm_config"]["messages"] = [
                    {"role": "system", "content": config.system_message.render(report, **names)}]
        if caller is not None and caller.record_ids:
            assistant["metadata"] = crm_metadata(config.crm, dict(caller.record_ids))
        answer: dict[str, Any] = {"assistant": assistant}
        if config.max_duration_seconds is not None:
            answer["max_duration_seconds"] = config.max_duration_seconds
        return answer

    def dry_run(self, report: CallReport) -> Answered:
        """The assistant-request answer for ``report`` through the real lookup, stored nowhere."""
        started = time.monotonic()
        return self.assistant_request(report, started + self.budget(ASSISTANT_REQUEST), started)

    # --- tool-calls -----------------------------------------------------------------------------

    def tool_calls(self, report: CallReport, deadline: float, started: float) -> Answered:
        results = self.tools.answer(_tool_calls(report), report, self.core.plugin_hub, deadline)
        failed = [r["tool_call_id"] for r in results if "error" in r]
        detail = f"{len(failed)} of {len(results)} tool calls answered with an error" if failed else None
        return Answered({"results": results}, ERROR if failed else ANSWERED, _since(started), detail)

    def queue_followup(self, report: CallReport, tool_call_id: str, title: str, notes: str | None) -> dict[str, Any]:
        """A follow-up task as a durable delivery to ``[answers.tools] followup``: a ``followup``
        event of the call (one per tool call id, so the same tool call twice queues one) whose
        delivery state carries the title and notes the destination's templates read."""
        name = self.config.tools.followup if self.config.tools else None
        if name is None:
            raise LookupError("no follow-up destination is configured ([answers.tools] followup)")
        followup = dataclasses.replace(report, id=str(uuid.uuid4()), event=FOLLOWUP, received_at=utcnow())
        key = tool_call_id if len(tool_call_id) <= 200 else "sha256:" + hashlib.sha256(tool_call_id.encode()).hexdigest()
        accepted = self.core.store.insert_report(
            followup, [name], event_key=key,
            states={name: {"followup": {"title": title, "notes": notes, "tool_call_id": tool_call_id}}})
        if not accepted.duplicate:
            self.core.dispatcher.wake(list(accepted.delivery_ids))
        logs.event(log, "followup.queued", report_id=accepted.report_id, destination=name,
                   call_id=report.call.id, duplicate=accepted.duplicate)
        return {"status": "queued", "destination": name, "followup_id": accepted.report_id,
                "message": f"A follow-up task titled {title!r} will be created in {name}."}

    def close(self) -> None:
        self.lookups.close()
        self.tools.close()


def _tool_calls(report: CallReport) -> list[Any]:
    entries = ((report.raw or {}).get("message") or {}).get("tool_call_list")
    return entries if isinstance(entries, list) else []


def _since(started: float) -> float:
    return (time.monotonic() - started) * 1000
