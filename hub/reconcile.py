"""Reconcile: fetch back from the platform's calls API every ended call the hub has no report of.

The platform sends each webhook once; a report that arrives while the hub is down is gone. The
calls API still has the call. ``reconcile`` pages through ``GET /calls`` (status ``ended``, a
time window), turns each call the hub has no ``end-of-call-report`` for into the payload the
webhook would have carried, and sends it through the receiver's path minus the signature:
validated, normalized, stored with its deliveries, deduplicated by the same identity (so a
webhook that arrives later for the same call is a duplicate). The CLI command and the
scheduled run (``[sources.hms.reconcile]``, once across all processes: ``hub.jobs``) both
call ``reconcile``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator

import requests
from marshmallow import ValidationError

from . import jobs, logs
from .report import isoformat, parse_datetime
from .redaction import redact
from .store import utcnow

log = logging.getLogger(__name__)

SOURCE = "hms"
EVENT = "end-of-call-report"
JOB = "reconcile"
PAGE_SIZE = 100  # what the official SDK asks for
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)  # the SDK's backoff: 1 s, doubling, at most 8 s
CALL_TYPES = {"inbound": "inbound_phone_call", "outbound": "outbound_phone_call"}
API_KEY = "sources.hms.api_key"


class CallsApiError(Exception):
    """The calls API could not be read; the message is one line, without the key."""


class Unusable(Exception):
    """A call that cannot be turned into a report; the message says why."""


class CallsApi:
    """``GET /calls`` of the HMS Sovereign API, paged as the official SDK pages it.

    Bearer auth; 429, 5xx, timeouts and connection errors are retried after 1, 2, 4 and 8 s
    (``sleep`` is injectable so tests need not wait); a 401 is one ``CallsApiError`` naming the
    configuration key; the key never appears in a message.
    """

    def __init__(self, api_url: str, api_key: str, *, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep, timeout: float = 30.0,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS):
        self.url = api_url.rstrip("/") + "/calls"
        self.session = session or requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {api_key}", "Accept": "application/json"})
        self.sleep, self.timeout, self.retry_delays = sleep, timeout, retry_delays

    def ended_calls(self, start: datetime, end: datetime,
                    on_page: Callable[[int], None] | None = None) -> Iterator[dict]:
        """Every ended call that started in [start, end]; ``on_page(total)`` after each page."""
        offset = 0
        while True:
            page = self._get({"status": "ended", "start_date": isoformat(start), "end_date": isoformat(end),
                              "limit": PAGE_SIZE, "offset": offset})
            calls, total = _page(page)
            if on_page is not None:
                on_page(total)
            yield from calls
            if not calls or offset + len(calls) >= total:  # an empty page ends it, whatever total says
                return
            offset += PAGE_SIZE

    def _get(self, params: dict[str, Any]) -> Any:
        for attempt, delay in enumerate((*self.retry_delays, None)):
            try:
                response = self.session.get(self.url, params=params, timeout=self.timeout)
            except requests.RequestException as exc:
                problem = f"could not reach the calls API ({type(exc).__name__})"
            else:
                if response.status_code == 401:
                    raise CallsApiError(f"{API_KEY}: the calls API refused the key (401 {_error_text(response)}); "
                                        f"set it to a valid API key of the platform account")
                if response.ok:
                    try:
                        return response.json()
                    except ValueError:
                        raise CallsApiError(f"the calls API answered {response.status_code} with a body that "
                                            f"is not JSON") from None
                problem = f"the calls API answered {response.status_code} {_error_text(response)}"
                if response.status_code != 429 and response.status_code < 500:
                    raise CallsApiError(redact(problem))
            if delay is None:
                raise CallsApiError(redact(f"{problem}, after {attempt + 1} tries"))
            logs.event(log, "reconcile.retry", logging.WARNING, problem=redact(problem), wait_seconds=delay)
            self.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises on its last turn

    def close(self) -> None:
        self.session.close()


def _error_text(response: requests.Response) -> str:
    """The API's ``{"error", "message"}``, or the status text; one line, at most 200 characters."""
    try:
        body = response.json()
    except ValueError:
        body = None
    text = (body.get("message") or body.get("error")) if isinstance(body, dict) else None
    return " ".join(str(text or response.reason or "").split())[:200]


def _page(body: Any) -> tuple[list[dict], int]:
    calls = body.get("calls") if isinstance(body, dict) else None
    pagination = body.get("pagination") if isinstance(body, dict) else None
    total = pagination.get("total") if isinstance(pagination, dict) else None
    if not isinstance(calls, list) or not isinstance(total, int):
        raise CallsApiError('the calls API answered without "calls" and "pagination.total": '
                            "is [sources.hms] api_url the API's base URL?")
    return calls, total


# --- a Call as the end-of-call-report webhook would have carried it --------------------------

def _moment(call: dict, key: str) -> datetime | None:
    value = call.get(key)
    if value in (None, ""):
        return None
    try:
        return parse_datetime(str(value))
    except ValueError:
        raise Unusable(f"{key} is not an ISO 8601 time") from None


def report_payload(call: dict) -> dict:
    """The webhook payload for a Call of the calls API; ``Unusable`` says why there is none.

    The platform's number is ``assistant_phone`` and the other party ``caller_phone`` in both
    directions; the call type follows ``direction``. The duration is the API's, or the time
    between ``started_at`` and ``ended_at``; a missing summary is empty (the webhook always has one).
    """
    if call.get("status") != "ended":
        raise Unusable(f"its status is {call.get('status')!r}, not 'ended'")
    started, ended = _moment(call, "started_at"), _moment(call, "ended_at")
    occurred = ended or _moment(call, "updated_at")
    if occurred is None:
        raise Unusable("it has neither ended_at nor updated_at")
    duration = call.get("duration_seconds")
    if duration is None and started and ended:
        duration = max(0, round((ended - started).total_seconds()))
    if duration is None:
        raise Unusable("it has no duration_seconds, and no started_at and ended_at to take it from")
    assistant = {k: v for k, v in (("id", call.get("agent_id")), ("name", call.get("agent_name"))) if v}
    return {"message": {
        "type": EVENT,
        "timestamp": isoformat(occurred),
        "call": {"id": call.get("id"), "type": CALL_TYPES.get(call.get("direction"), "phone_call"),
                 "status": "ended"},
        "phone_number": {"number": call.get("assistant_phone"), "name": call.get("business_name")},
        "customer": {"number": call.get("caller_phone")},
        "assistant": assistant or None,
        "duration_seconds": duration,
        "summary": call.get("summary") or "",
        "messages": call.get("messages") or [],
        "analysis": call.get("analysis_result"),
        "recording_url": call.get("recording_url"),
        "ended_reason": call.get("end_reason"),
        "error": call.get("error"),
    }}


# --- the run -------------------------------------------------------------------------------------

@dataclass
class Outcome:
    """What one run did. In a dry run ``ingested`` counts the calls it would have ingested."""

    dry_run: bool = False
    seen: int = 0
    already_received: int = 0
    ingested: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (call id, why)

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "seen": self.seen, "already_received": self.already_received,
                "ingested": self.ingested, "skipped": len(self.skipped),
                "skipped_calls": [{"call_id": c, "reason": r} for c, r in self.skipped[:50]]}


def _skip(outcome: Outcome, call_id: str, reason: str) -> None:
    outcome.skipped.append((call_id, reason))
    logs.event(log, "reconcile.skipped", logging.WARNING, call_id=call_id, reason=reason)


def _fields(messages: Any) -> str:
    """marshmallow's nested messages as ``a.b: message`` (no values: they may hold a number)."""
    if isinstance(messages, dict):
        return "; ".join(f"{k}.{_fields(v)}" if isinstance(v, dict) else f"{k}: {' '.join(map(str, v))}"
                         for k, v in messages.items())
    return str(messages)


def reconcile(hub, api: CallsApi, start: datetime, end: datetime, *, dry_run: bool = False,
              progress: Callable[[Outcome, int], None] | None = None) -> Outcome:
    """Ingest every ended call in [start, end] that the hub has no end-of-call report for.

    ``progress(outcome, total)`` is called after each call. A call that cannot become a report
    is skipped with its id and the reason; it never stops the run. ``CallsApiError`` if the API
    cannot be read (what was ingested before stays ingested).
    """
    outcome = Outcome(dry_run=dry_run)
    source = hub.sources[SOURCE]
    total = 0

    def on_page(page_total: int) -> None:
        nonlocal total
        total = page_total

    for call in api.ended_calls(start, end, on_page):
        outcome.seen += 1
        call_id = str(call.get("id") or "") if isinstance(call, dict) else ""
        if not call_id:
            _skip(outcome, "(none)", "the call has no id")
        elif hub.store.received_call_ids(SOURCE, EVENT, [call_id]):
            outcome.already_received += 1
        else:
            _ingest(hub, source, call, call_id, outcome, dry_run)
        if progress is not None:
            progress(outcome, total)
    logs.event(log, "reconcile.finished", start=isoformat(start), end=isoformat(end),
               **{k: v for k, v in outcome.to_dict().items() if k != "skipped_calls"})
    return outcome


def _ingest(hub, source, call: dict, call_id: str, outcome: Outcome, dry_run: bool) -> None:
    try:
        raw = report_payload(call)
        payload = source.schema.load(raw)
    except Unusable as exc:
        _skip(outcome, call_id, str(exc))
        return
    except ValidationError as exc:
        _skip(outcome, call_id, f"not a valid report: {_fields(exc.messages)}")
        return
    if dry_run:
        outcome.ingested += 1
        return
    if hub.ingest(SOURCE, payload, raw).status == "duplicate":  # its webhook arrived meanwhile
        outcome.already_received += 1
    else:
        outcome.ingested += 1


# --- on a schedule ---------------------------------------------------------------------------------

def api_for(hub, **options) -> CallsApi:
    """The calls API client from ``[sources.hms]``; ``CallsApiError`` when no key is set."""
    settings = hub.config.sources[SOURCE]
    if not settings.get("api_key"):
        raise CallsApiError(f'{API_KEY}: not set; set api_key = {{ env = "HMS_API_KEY" }} to an API key of the '
                            f"platform account")
    return CallsApi(settings["api_url"], settings["api_key"], **options)


def scheduler_for(hub, *, poll: float = 30.0, **api_options) -> jobs.Scheduler | None:
    """The thread that reconciles ``[sources.hms.reconcile] window`` every ``every``, once across
    all processes (the store's lease); None when no schedule is configured."""
    schedule = hub.config.sources[SOURCE].get("reconcile")
    if not schedule:
        return None

    def run() -> dict[str, Any]:
        end = utcnow()
        api = api_for(hub, **api_options)
        try:
            return reconcile(hub, api, end - schedule["window"], end).to_dict()
        finally:
            api.close()

    return jobs.Scheduler(hub.store, JOB, run, owner=hub.dispatcher.owner, every=schedule["every"],
                          lease=max(schedule["every"], timedelta(minutes=5)), poll=poll)
