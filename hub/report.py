"""The normalized call report: the one contract every plugin and webhook receiver reads.

docs/report.md describes each field; ``REPORT_JSON_SCHEMA`` below is its machine form and a
test keeps the two in step with ``CallReport.to_dict``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Any


def isoformat(moment: datetime | None) -> str | None:
    """UTC ISO 8601 with a ``Z`` suffix and millisecond precision, the platform's own form."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: Python reads it as inf, and would store "Infinity"
        raise ValueError(f"{text[:40]} is out of range for a JSON number")
    return value


def loads_json(text: str | bytes) -> Any:
    """Strict JSON for what a sender sends: NaN, Infinity and numbers beyond a double are
    refused (``ValueError``).

    Python's ``json`` takes them, but what it would store is not JSON: it would break SQL's
    JSON functions (the dashboard's statistics) and every receiver of the webhook destination.
    """
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)


def parse_datetime(text: str) -> datetime:
    """Parse an ISO 8601 timestamp; a naive one is taken as UTC. ``ValueError`` if it is not one,
    or if it has no UTC form (``9999-12-31T23:59:59-14:00`` overflows the year)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"{text!r} is out of range in UTC") from None


@dataclass(frozen=True)
class Call:
    id: str
    type: str  # inbound_phone_call | outbound_phone_call | web_call (or what a source sends)
    direction: str  # inbound | outbound | web
    status: str | None = None


@dataclass(frozen=True)
class PhoneNumber:
    """A number with its E.164 form; ``number`` is None when the raw value did not parse."""

    number: str | None
    raw: str | None = None
    name: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class Message:
    role: str
    content: str


#: the ``assistant.metadata`` key that names the CRM destination an assistant-request answer looked
#: the caller up in; each record id goes beside it as ``crm_<kind>_id`` (``crm_contact_id``, ...)
CRM_DESTINATION_KEY = "crm_destination"


def crm_metadata(destination: str, record_ids: dict[str, str]) -> dict[str, str]:
    """What an assistant-request answer puts in ``assistant.metadata`` so that the call's later
    events (its end-of-call report) name the caller's records: the inverse of ``crm_record_ids``."""
    return {CRM_DESTINATION_KEY: destination, **{f"crm_{kind}_id": value for kind, value in record_ids.items()}}


@dataclass(frozen=True)
class CallReport:
    id: str
    source: str
    event: str
    call: Call
    occurred_at: datetime
    received_at: datetime
    phone_number: PhoneNumber
    customer: PhoneNumber
    duration_seconds: int | None = None
    summary: str | None = None
    analysis: dict | None = None
    analysis_errors: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    recording_url: str | None = None
    assistant: dict | None = None
    error: str | None = None
    ended_reason: str | None = None
    raw: dict = field(default_factory=dict)
    #: what the store did not keep (``[privacy] store_messages/store_raw = false``): "messages", "raw"
    not_kept: tuple[str, ...] = ()

    def crm_record_ids(self, destination: str) -> dict[str, str]:
        """The CRM record ids an assistant-request answer put in ``assistant.metadata`` for the
        destination named ``destination`` (``{"contact": "501"}``), or {} when it named another one
        or none. Unchecked: the destination validates each id before it goes into a URL."""
        metadata = (self.assistant or {}).get("metadata")
        if not isinstance(metadata, dict) or metadata.get(CRM_DESTINATION_KEY) != destination:
            return {}
        return {key[len("crm_"):-len("_id")]: str(value) for key, value in metadata.items()
                if key.startswith("crm_") and key.endswith("_id") and key != CRM_DESTINATION_KEY
                and isinstance(value, (str, int)) and not isinstance(value, bool)}

    @cached_property
    def data(self) -> dict[str, Any]:
        """The JSON form, built once: rules, templates and mappings all read this."""
        return {
            "id": self.id,
            "source": self.source,
            "event": self.event,
            "call": {
                "id": self.call.id,
                "type": self.call.type,
                "direction": self.call.direction,
                "status": self.call.status,
            },
            "occurred_at": isoformat(self.occurred_at),
            "received_at": isoformat(self.received_at),
            "phone_number": _number_dict(self.phone_number),
            "customer": _number_dict(self.customer),
            "duration_seconds": self.duration_seconds,
            "summary": self.summary,
            "analysis": self.analysis,
            "analysis_errors": list(self.analysis_errors),
            "messages": [{"role": m.role, "content": m.content} for m in self.messages],
            "recording_url": self.recording_url,
            "assistant": self.assistant,
            "error": self.error,
            "ended_reason": self.ended_reason,
            "raw": self.raw,
            **({"not_kept": list(self.not_kept)} if self.not_kept else {}),
        }

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.to_json())

    def to_json(self) -> str:
        return json.dumps(self.data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CallReport":
        call = data["call"]
        return cls(
            id=data["id"],
            source=data["source"],
            event=data["event"],
            call=Call(call["id"], call["type"], call["direction"], call.get("status")),
            occurred_at=parse_datetime(data["occurred_at"]),
            received_at=parse_datetime(data["received_at"]),
            phone_number=PhoneNumber(**data["phone_number"]),
            customer=PhoneNumber(**data["customer"]),
            duration_seconds=data.get("duration_seconds"),
            summary=data.get("summary"),
            analysis=data.get("analysis"),
            analysis_errors=list(data.get("analysis_errors") or []),
            messages=[Message(m["role"], m["content"]) for m in data.get("messages") or []],
            recording_url=data.get("recording_url"),
            assistant=data.get("assistant"),
            error=data.get("error"),
            ended_reason=data.get("ended_reason"),
            raw=data.get("raw") or {},
            not_kept=tuple(data.get("not_kept") or ()),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> "CallReport":
        return cls.from_dict(json.loads(text))


def _number_dict(number: PhoneNumber) -> dict[str, Any]:
    return {"number": number.number, "raw": number.raw, "name": number.name, "region": number.region}


_NUMBER_SCHEMA = {
    "type": "object",
    "required": ["number", "raw", "name", "region"],
    "additionalProperties": False,
    "properties": {
        "number": {"type": ["string", "null"], "pattern": r"^\+[1-9]\d{1,14}$",
                   "description": "E.164, or null when the raw value is empty or did not parse"},
        "raw": {"type": ["string", "null"], "description": "the value as the platform sent it"},
        "name": {"type": ["string", "null"]},
        "region": {"type": ["string", "null"], "description": "ISO 3166-1 alpha-2 region of the number"},
    },
}
_TIMESTAMP = {"type": "string", "format": "date-time", "pattern": r"Z$"}

REPORT_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://sovereign-hub.invalid/schemas/call-report.json",
    "title": "Sovereign Hub call report",
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "source", "event", "call", "occurred_at", "received_at", "phone_number",
                 "customer", "duration_seconds", "summary", "analysis", "analysis_errors",
                 "messages", "recording_url", "assistant", "error", "ended_reason", "raw"],
    "properties": {
        "id": {"type": "string", "description": "the hub's id for this report"},
        "source": {"type": "string", "description": "the payload adapter, e.g. hms"},
        "event": {"type": "string",
                  "description": "end-of-call-report | status-update | tool-calls | assistant-request | followup (hub-made)"},
        "call": {
            "type": "object",
            "required": ["id", "type", "direction", "status"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string"},
                "type": {"type": "string"},
                "direction": {"enum": ["inbound", "outbound", "web", "unknown"]},
                "status": {"type": ["string", "null"]},
            },
        },
        "occurred_at": _TIMESTAMP,
        "received_at": _TIMESTAMP,
        "phone_number": _NUMBER_SCHEMA,
        "customer": _NUMBER_SCHEMA,
        "duration_seconds": {"type": ["integer", "null"], "minimum": 0},
        "summary": {"type": ["string", "null"]},
        "analysis": {"type": ["object", "null"]},
        "analysis_errors": {"type": "array", "items": {"type": "string"}},
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "additionalProperties": False,
                "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
            },
        },
        "recording_url": {"type": ["string", "null"]},
        "assistant": {"type": ["object", "null"]},
        "error": {"type": ["string", "null"], "description": "status-update error text"},
        "ended_reason": {"type": ["string", "null"],
                         "description": "why the call ended, as the platform says it (e.g. customer-ended-call)"},
        "raw": {"type": "object", "description": "the payload exactly as received"},
        "not_kept": {"type": "array", "items": {"enum": ["messages", "raw"]},
                     "description": "present when the store removed these ([privacy]); absent otherwise"},
    },
}
