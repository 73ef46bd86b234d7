"""What a destination type is, and what the dispatcher hands it for one delivery attempt."""
from __future__ import annotations

import functools
import hashlib
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar
from urllib.parse import urlsplit

import requests
from marshmallow import Schema

from .errors import Permanent, Retryable
from .fields import EmptyConfig
from .http import (SENSITIVE_HEADERS, DryRunResponse, RecordedRequest, make_session, raise_for_exception,
                   raise_for_response)
from .ratelimit import WindowLimiter, make_limiter
from .redaction import hold_secret


_SHARED_BUCKETS: dict[tuple, WindowLimiter] = {}
_SHARED_LOCK = threading.Lock()


def reset_shared_limiters() -> None:
    """Forget every shared bucket (tests: each test starts with full buckets)."""
    with _SHARED_LOCK:
        _SHARED_BUCKETS.clear()


def credential_key(*credentials: str) -> str:
    """A digest standing for a credential (or several), for ``limiter_key``: destinations that
    share the credential share their rate-limit buckets, and the secret itself is kept nowhere."""
    return hashlib.sha256("\0".join(credentials).encode()).hexdigest()


@dataclass(frozen=True)
class HubSettings:
    """The hub-wide facts a destination may need (links, phone parsing)."""

    public_url: str = "http://127.0.0.1:8080"
    default_region: str | None = None
    #: where rate-limit buckets are counted: "memory://" (this process) or a Redis URL (all processes)
    rate_limit_storage: str = "memory://"

    def report_url(self, report_id: str) -> str:
        return f"{self.public_url.rstrip('/')}/reports/{report_id}"


@dataclass
class Result:
    """What a successful delivery did, in a line a person can read (shown in the timeline)."""

    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Caller:
    """Who a caller is in one CRM, as ``Destination.lookup_caller`` found them.

    ``record_ids`` maps a kind of record to its id in the CRM (``{"contact": "501", "company":
    "77"}`` for HubSpot, ``{"lead": "00Q..."}`` or ``{"contact": "003...", "account": "001..."}``
    for Salesforce); the assistant-request answer carries them in ``assistant.metadata`` (see
    ``hub.report.crm_metadata``) and the end-of-call delivery logs the call on them without searching.
    """
    record_ids: dict[str, str]
    name: str | None = None
    company: str | None = None
    owner: str | None = None
    #: open deals (HubSpot) or opportunities (Salesforce): ``{"name", "stage", "amount"}`` each
    open_deals: list[dict[str, Any]] = field(default_factory=list)
    #: the record's page in the CRM, for people (never sent to the platform)
    url: str | None = None


class Destination:
    """Base class of every destination type.

    Subclasses set ``type`` and ``Config`` (a marshmallow schema; unknown keys are
    rejected) and implement ``deliver``. One instance exists per configured destination
    and process; it is shared by the dispatcher's threads, so keep per-delivery data in
    ``ctx.state`` and locals, never on ``self``.
    """

    type: ClassVar[str]
    Config: ClassVar[type[Schema]] = EmptyConfig
    description: ClassVar[str] = ""
    #: the rule used when the operator writes no ``when`` (None: every report of its events)
    default_when: ClassVar[str | None] = None
    #: ``{bucket: "count/Ns"}``, the vendor's published limits; ``ctx.send(bucket=...)`` waits for a
    #: slot. An operator may lower or raise a bucket per destination (``rate_limits`` option).
    rate_limits: ClassVar[dict[str, str]] = {}
    #: seconds for connect and read of each request
    timeout: ClassVar[float] = 15.0
    #: added to a 401/403 message: which credential or scope to fix
    auth_hint: ClassVar[str] = ""
    #: option names whose values are secrets even when written literally (redacted everywhere)
    secret_options: ClassVar[tuple[str, ...]] = ()
    #: True for a type that creates a task from a follow-up delivery: a delivery whose
    #: ``ctx.state["followup"]`` holds ``{"title", "notes", "tool_call_id"}`` (the ``create_followup``
    #: tool queues one; its report is the tool-calls event of that call, event ``followup``)
    accepts_followups: ClassVar[bool] = False

    def __init__(self, name: str, config: dict[str, Any], settings: HubSettings | None = None):
        self.name = name
        self.config = config
        self.settings = settings or HubSettings()
        self.http = make_session()
        #: a PEM file of the CAs this destination trusts (the core ``ca_bundle`` option); None: the
        #: environment's REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, else the bundled certifi store
        self.ca_bundle: str | None = config.get("ca_bundle")
        self._send_settings: dict[tuple[str, str], dict] = {}
        rates = {**self.rate_limits, **(config.get("rate_limits") or {})}
        storage = self.settings.rate_limit_storage
        key = (self.type, self.limiter_key())
        with _SHARED_LOCK:
            self.limiters = {bucket: _SHARED_BUCKETS.setdefault(
                (storage, *key, bucket, rate), make_limiter(rate, storage, ":".join((*key, bucket))))
                for bucket, rate in rates.items()}

    def limiter_key(self) -> str:
        """Destinations of one type that return the same key share their rate-limit buckets.

        The default is the configured name; an API whose limits count per credential
        (HubSpot's count per token) returns a digest of that credential instead.
        """
        return self.name

    def size_http_pool(self, connections: int) -> None:
        """Keep up to ``connections`` pooled connections per host: one for each thread that may
        send for this destination at once (the dispatcher calls this before it starts)."""
        self.http.close()
        self.http = make_session(pool_size=max(1, connections))

    def deliver(self, report, ctx: "DeliveryContext") -> Result:  # pragma: no cover - abstract
        raise NotImplementedError

    def forget(self, number: str, ctx: "DeliveryContext") -> Result:
        """Erase the person with the E.164 ``number`` at the far side (a right-to-erasure request).

        Optional: a type that can erase overrides it, sends through ``ctx.send`` and raises
        ``Retryable``/``Permanent`` like ``deliver``; a person the far side does not know is a
        success that says so. ``sovereign-hub forget --destinations`` calls it; a type that does
        not override it is reported as unable to erase.
        """
        raise NotImplementedError

    @classmethod
    def can_forget(cls) -> bool:
        return cls.forget is not Destination.forget

    def lookup_caller(self, number: str, ctx: "DeliveryContext") -> Caller | None:
        """Who the caller with the E.164 ``number`` is at the far side (a CRM), or None if nobody.

        Optional: a CRM type overrides it to answer assistant-request and ``lookup_customer`` live.
        Send through ``ctx.send`` (it applies the destination's rate limits, timeout and CA bundle;
        ``ctx.http``, the bare session, applies none of them) and raise ``Retryable``/``Permanent``
        like ``deliver``; the hub calls it with a time budget, abandons a lookup that overruns it and
        caches what it returns. docs/plugin_hooks.md, "lookup_caller".
        """
        raise NotImplementedError

    @classmethod
    def can_look_up(cls) -> bool:
        return cls.lookup_caller is not Destination.lookup_caller

    def test_connection(self, ctx: "DeliveryContext") -> str:
        """One cheap authenticated call that shows whether delivery can work: the credential, the
        scopes delivery needs, the channel or project it names. Returns what was reached, in one
        line; raises ``Permanent`` (bad token, missing scope, unknown channel) or ``Retryable``
        (unreachable, the far side failing) saying what is wrong. Send through ``ctx.send``.
        A type that does not override it cannot be tested (``NotImplementedError``)."""
        raise NotImplementedError

    def close(self) -> None:
        self.http.close()

    def send_settings(self, url: str) -> dict:
        """The environment's proxy and CA settings for ``url`` (as ``requests.request`` merges
        them), worked out once per scheme and host: requests reads the whole environment for
        them on every call, a tenth of an attempt's CPU in a profile of webhook attempts."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        settings = self._send_settings.get(key)
        if settings is None:
            settings = self._send_settings[key] = self.http.merge_environment_settings(
                url, {}, None, self.ca_bundle, None)
        return settings

    def context(self, *, delivery_id: str = "dry-run", attempt: int = 1, state: dict | None = None,
                dry_run: bool = False,
                earlier_state: dict | Callable[[], dict] | None = None) -> "DeliveryContext":
        """``earlier_state``: the dict, or what loads it (the dispatcher's store read, made only
        for a type that reads ``ctx.earlier_state``)."""
        load = earlier_state if callable(earlier_state) else (lambda: dict(earlier_state or {}))
        return DeliveryContext(destination=self, delivery_id=delivery_id, attempt=attempt,
                               state=dict(state or {}), dry_run=dry_run, load_earlier_state=load)


@dataclass
class DeliveryContext:
    """One attempt of one delivery.

    ``state`` is persisted by the dispatcher after every attempt, successful or not: write
    each created id into it as soon as the far side returns it, so the next attempt resumes.
    ``sent`` lists every request of this attempt (in a dry run: every request that would have
    been sent, none of them sent). ``earlier_state`` is the saved state of the same customer's
    previous delivery to this destination (``ordering = "customer"``), finished before this one
    began; ``{}`` when there is none. A CRM destination takes the contact that delivery created
    from it when search does not show the contact yet.
    """

    destination: Destination
    delivery_id: str
    attempt: int = 1
    state: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    sent: list[RecordedRequest] = field(default_factory=list)
    load_earlier_state: Callable[[], dict[str, Any]] = dict

    @functools.cached_property
    def earlier_state(self) -> dict[str, Any]:
        return self.load_earlier_state()

    @property
    def http(self) -> requests.Session:
        return self.destination.http

    @property
    def last_status(self) -> int | None:
        return self.sent[-1].status if self.sent else None

    def send(self, method: str, url: str, *, bucket: str | None = None, check: bool = True,
             dry_run_response: Any = None, record_body: Any = None, **kwargs: Any) -> requests.Response:
        """Send one request through the destination's session.

        Waits for a slot of ``bucket`` (or of ``"default"`` when the type declares one),
        applies the type's timeout and the environment's proxy and CA settings (as
        ``requests.request`` would; the destination's ``ca_bundle`` wins over the CA ones),
        records the request, and with ``check`` maps a non-2xx answer or a network failure to
        ``Retryable``/``Permanent``. In a dry run nothing is sent: the answer is 200 with
        ``dry_run_response`` as JSON (``{}`` unless given). ``record_body`` replaces the body in
        ``ctx.sent`` (to mask a credential sent in a form).
        """
        dest = self.destination
        kwargs.setdefault("timeout", dest.timeout)
        timeout = kwargs.pop("timeout")
        prepared = dest.http.prepare_request(requests.Request(method.upper(), url, **kwargs))
        for header in SENSITIVE_HEADERS:  # a token fetched at run time: hidden in this attempt's errors
            hold_secret(prepared.headers.get(header))
        record = RecordedRequest.from_prepared(prepared)
        if record_body is not None:
            record.body = record_body
        if self.dry_run:
            self.sent.append(record)
            response = DryRunResponse({} if dry_run_response is None else dry_run_response).build(prepared)
        else:
            settings = dest.send_settings(prepared.url)
            with self._slot(bucket, timeout):  # taken once the request is ready, held until its answer
                self.sent.append(record)
                try:
                    response = dest.http.send(prepared, timeout=timeout, allow_redirects=False, **settings)
                except requests.RequestException as exc:
                    raise_for_exception(exc, dest.name)
        record.status = response.status_code
        if check:
            raise_for_response(response, dest.name, auth_hint=dest.auth_hint)
        return response

    def _slot(self, bucket: str | None, timeout):
        """A slot of ``bucket`` (or ``"default"``), held until the request's answer is in
        (hub/ratelimit.py says why); nothing when the destination has no such limit."""
        limiter = self.destination.limiters.get(bucket or "default")
        if limiter is None:
            return nullcontext()
        return limiter.hold(who=f"destination {self.destination.name!r}: ",
                            answer_within=sum(timeout) if isinstance(timeout, tuple) else timeout)

    # --- creates whose answer may be lost ------------------------------------------------
    # A create sent without an answer back (a timeout, a killed worker) may have landed. The
    # destination marks it in the state just before sending and clears the mark when the answer
    # arrives; the next attempt that finds the mark looks the record up before creating again.
    # The marks live in ``state["sent"]``: {key: {"at": Unix seconds, "times": sends so far}}.

    def mark_sent(self, key: str, *, at: float | None = None) -> None:
        """About to send the create ``key`` (e.g. "contact"); ``at`` defaults to now."""
        marks = self.state.setdefault("sent", {})
        times = marks.get(key, {}).get("times", 0)
        marks[key] = {"at": time.time() if at is None else at, "times": times + 1}

    def was_sent(self, key: str) -> bool:
        """Whether a create ``key`` was sent and its answer has not been seen."""
        return key in self.state.get("sent", {})

    def sent_at(self, key: str) -> float | None:
        """When the unanswered create ``key`` was last sent (Unix seconds), or None."""
        return self.state.get("sent", {}).get(key, {}).get("at")

    def sent_times(self, key: str) -> int:
        """How many attempts sent the create ``key`` without its answer being seen."""
        return self.state.get("sent", {}).get(key, {}).get("times", 0)

    def clear_sent(self, key: str) -> None:
        """The create ``key`` was answered (or certainly not done): forget its mark."""
        marks = self.state.get("sent", {})
        marks.pop(key, None)
        if not marks:
            self.state.pop("sent", None)

    def sleep(self, seconds: float) -> None:
        """Wait inside an attempt (a short back-off a flow needs); skipped in a dry run."""
        if not self.dry_run:
            time.sleep(seconds)


__all__ = ["Destination", "DeliveryContext", "HubSettings", "Result", "Retryable", "Permanent", "credential_key"]
