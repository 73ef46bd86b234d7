"""What the five trackers share: the delivery flow, idempotency through ``ctx.state``, error wording."""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import requests

import hub

from .followup import FollowUp, build_follow_up


@dataclass(frozen=True)
class CreatedTask:
    """The tracker's answer, as kept in the delivery state."""

    id: str
    url: str | None = None
    key: str | None = None  # a human reference where the tracker has one (SUP-12, ENG-7)

    def as_state(self) -> dict[str, Any]:
        return {"task_id": self.id, "task_url": self.url, "task_key": self.key}


#: the sent mark (``ctx.mark_sent``) of the tracker's create
TASK = "task"


def idempotency_uuid(destination_name: str, delivery_id: str) -> str:
    """A UUID (version 4 layout) fixed for one delivery of one destination, for APIs that take a key."""
    digest = hashlib.sha256(f"sovereign-hub:{destination_name}:{delivery_id}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


class TrackerDestination(hub.Destination):
    """Base of the tracker types: build the follow-up, create it once, remember its id.

    A subclass sets ``vendor`` and implements ``create(follow_up, ctx) -> CreatedTask``;
    where the tracker can be asked whether a task from an earlier, unanswered attempt
    exists, it also implements ``find_existing``.
    """

    vendor: ClassVar[str] = ""
    #: how call text is made inert in the tracker's description (Markdown trackers set one)
    escape_call_text: ClassVar[Callable[[str], str] | None] = None
    default_when = "analysis.follow_up_needed"
    #: also creates the follow-ups the ``create_followup`` tool queues (``ctx.state["followup"]``)
    accepts_followups = True
    #: the options whose values the tracker counts its rate limits by (the credential)
    limit_options: ClassVar[tuple[str, ...]] = ()

    def limiter_key(self) -> str:
        """Trackers count limits per credential: destinations sharing one share the buckets."""
        if not self.limit_options:
            return self.name
        return hub.credential_key(*(str(self.config[option]) for option in self.limit_options))

    def deliver(self, report, ctx: hub.DeliveryContext) -> hub.Result:
        state = ctx.state
        if state.get("task_id"):
            return hub.Result(f"{self.vendor} task {self._label(state)} already exists; nothing created",
                              dict(state))
        try:
            follow_up = build_follow_up(report, self.config, self.settings, type(self).escape_call_text,
                                        followup=state.get("followup"))
            extra = self.extra_fields(report)
        except hub.Permanent as exc:
            raise hub.Permanent(f"destination {self.name!r}: {exc.reason}") from None
        if extra:
            follow_up = replace(follow_up, extra=extra)
        if ctx.was_sent(TASK) or ctx.attempt > 1:
            found = self.find_existing(follow_up, ctx)
            if found is not None:
                state.update(found.as_state())
                return hub.Result(f"found {self.vendor} task {self._label(state)} from an earlier attempt; "
                                  f"nothing created", dict(state))
        ctx.mark_sent(TASK)  # kept after the answer: Todoist tells a re-sent create by the count
        created = self.create(follow_up, ctx)
        state.update(created.as_state())
        verb = "would create" if ctx.dry_run else "created"
        return hub.Result(f"{verb} {self.vendor} task {self._label(state)} ({follow_up.priority} priority, "
                          f"due {follow_up.due_iso})", dict(state))

    def create(self, follow_up: FollowUp, ctx: hub.DeliveryContext) -> CreatedTask:  # pragma: no cover
        raise NotImplementedError

    def extra_fields(self, report) -> dict[str, Any]:
        """Tracker-specific fields computed from the report (Jira's ``fields`` mapping)."""
        return {}

    def find_existing(self, follow_up: FollowUp, ctx: hub.DeliveryContext) -> CreatedTask | None:
        """The task an earlier attempt may have created before its answer was lost (None: unknown)."""
        return None

    @staticmethod
    def _label(state: dict[str, Any]) -> str:
        name = state.get("task_key") or state.get("task_id")
        return f"{name} {state['task_url']}" if state.get("task_url") else str(name)

    # --- HTTP and errors ---------------------------------------------------------------

    def send(self, ctx: hub.DeliveryContext, method: str, url: str, **kwargs: Any) -> requests.Response:
        """``ctx.send`` with the configured timeout and without the generic error mapping."""
        return ctx.send(method, url, check=False, timeout=self.config["timeout_seconds"], **kwargs)

    def fail(self, response: requests.Response, problem: str | None, *, fix: str = "",
             retry_after: float | None = None) -> None:
        """Raise for a non-2xx answer: ``problem`` is the vendor's own words (field: message).

        401/403 name the credential to fix (``auth_hint``); 429, 408, 425 and 5xx retry after
        ``retry_after`` (or ``Retry-After``); any other 4xx is permanent and names the fix.
        """
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in (401, 403) or status in (408, 425, 429) or status >= 500 or not problem:
            hub.raise_for_response(response, self.name, auth_hint=self.auth_hint, retry_after=retry_after)
        self.reject(problem, fix=fix, http_status=status)

    def probe(self, ctx: hub.DeliveryContext, method: str, url: str, missing: str, **kwargs: Any) -> Any:
        """One read call of ``test_connection``; its JSON. A 404 is ``missing`` (the configured
        project, team or list that does not exist or that the credential cannot see)."""
        response = self.send(ctx, method, url, **kwargs)
        if response.status_code == 404:
            raise hub.Permanent(f"destination {self.name!r}: {self.vendor}: {missing} (HTTP 404)", http_status=404)
        self.fail(response, None)
        return json_or_none(response) or {}

    def endpoint(self, path: str) -> str:
        """``base_url`` (configurable, so tests can point at a local server) joined with ``path``."""
        return self.config["base_url"].rstrip("/") + path

    def answer_id(self, response: requests.Response, record: Any, field: str = "id") -> str:
        """The created object's id from a 2xx answer; an answer without one is permanent."""
        if not isinstance(record, dict) or not record.get(field):
            self.reject(f"no {field} in the answer: {response.text[:200]}", http_status=response.status_code)
        return str(record[field])

    def reject(self, problem: str, *, fix: str = "", http_status: int | None = None) -> None:
        where = f"destination {self.name!r}: {self.vendor} rejected the task"
        status = f" (HTTP {http_status})" if http_status else ""
        raise hub.Permanent(f"{where}{status}: {hub.redact(problem)}" + (f". {fix}" if fix else ""),
                            http_status=http_status)
