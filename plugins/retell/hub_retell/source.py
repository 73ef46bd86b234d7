"""Retell AI's webhooks: ``x-retell-signature`` and how a call event becomes a CallReport.

The header is ``v=<epoch ms>,d=<hex>``, the hex HMAC-SHA256 keyed with the Retell API key
(the one with the webhook badge) over the body followed by the timestamp's digits, exactly as
``retell-sdk``'s ``Retell.verify(body, api_key, signature)`` computes it; like the SDK the hub
refuses a timestamp more than 5 minutes away (``tolerance_seconds``).

``call_analyzed`` carries the whole call with its analysis: it is the hub's
``end-of-call-report``. ``call_started`` and ``call_ended`` (everything but the analysis) are
stored as their own event types, for destinations that list them.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timezone
from typing import Any, Mapping

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema

from hub import Call, CallReport, Message, PhoneNumber, SignatureError, Source

EVENTS = {"call_analyzed": "end-of-call-report", "call_started": "call_started", "call_ended": "call_ended"}
SPEAKERS = {"agent": "assistant", "user": "user"}
_SIGNATURE = re.compile(r"v=(\d+),d=([0-9a-f]{64})")  # the SDK's own pattern, matched whole


def sign(body: bytes, api_key: str, timestamp_ms: int) -> str:
    """The ``x-retell-signature`` value Retell sends for ``body`` at ``timestamp_ms``."""
    digest = hmac.new(api_key.encode(), body + str(timestamp_ms).encode(), hashlib.sha256).hexdigest()
    return f"v={timestamp_ms},d={digest}"


class _Open(Schema):
    class Meta:
        unknown = INCLUDE


def _epoch_ms(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, timezone.utc)


class CallSchema(_Open):
    call_id = fields.String(required=True, validate=validate.Length(min=1, max=200))
    call_type = fields.String(allow_none=True)
    direction = fields.String(allow_none=True)
    call_status = fields.String(allow_none=True)
    from_number = fields.String(allow_none=True)
    to_number = fields.String(allow_none=True)
    start_timestamp = fields.Integer(strict=True, allow_none=True, validate=validate.Range(0, 10**14))
    end_timestamp = fields.Integer(strict=True, allow_none=True, validate=validate.Range(0, 10**14))
    duration_ms = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=0))
    transcript_object = fields.List(fields.Dict(), allow_none=True)
    recording_url = fields.String(allow_none=True)
    disconnection_reason = fields.String(allow_none=True)
    call_analysis = fields.Dict(allow_none=True)
    agent_id = fields.String(allow_none=True)
    agent_name = fields.String(allow_none=True)
    metadata = fields.Dict(allow_none=True)


class PayloadSchema(_Open):
    event = fields.String(required=True, validate=validate.OneOf(
        list(EVENTS), error="The hub takes {choices} from Retell; leave other events out of the agent's "
                            "webhook_events."))
    call = fields.Nested(CallSchema, required=True)

    @validates_schema
    def _a_time(self, data, **_):
        call = data.get("call") or {}
        if call.get("start_timestamp") is None and call.get("end_timestamp") is None:
            raise ValidationError({"call": {"start_timestamp": ["start_timestamp or end_timestamp is needed."]}})


class RetellSource(Source):
    name = "retell"
    schema = PayloadSchema()
    events = tuple(EVENTS.values())
    secret_env = "RETELL_API_KEY"
    secret_origin = "the Retell API key with the webhook badge"

    def __init__(self) -> None:
        self.api_key: str | None = None
        self.configured = False
        self.tolerance = 300

    def configure(self, settings: Mapping[str, Any]) -> None:
        self.configured = True
        self.api_key = settings.get("secret")
        self.tolerance = int(settings.get("tolerance_seconds", 300))

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        if not self.configured:
            raise SignatureError("not_configured", "The retell source is installed but [sources.retell] is not "
                                                   "configured.")
        if not self.api_key:  # allow_unsigned = true: the app warned at start-up
            return
        signature = (headers.get("x-retell-signature") or "").strip()
        if not signature:
            raise SignatureError("missing_signature", "The x-retell-signature header is missing.")
        match = _SIGNATURE.fullmatch(signature)
        if match is None:
            raise SignatureError("malformed_signature", "x-retell-signature must be v=<epoch ms>,d=<64 hex digits>.")
        timestamp = int(match.group(1))
        if abs(now * 1000 - timestamp) > self.tolerance * 1000:
            raise SignatureError("stale_timestamp",
                                 f"x-retell-signature's time is more than {self.tolerance} s from the hub's clock.")
        if not hmac.compare_digest(sign(body, self.api_key, timestamp), signature):
            raise SignatureError("invalid_signature", "x-retell-signature does not match the body.")

    def event_of(self, payload: dict) -> str:
        return EVENTS[payload["event"]]

    def call_id_of(self, payload: dict) -> str:
        return payload["call"]["call_id"]

    def normalize(self, payload: dict, *, raw: dict, report_id: str, received_at: datetime,
                  normalizer) -> CallReport:
        call = payload["call"]
        is_web = call.get("call_type") == "web_call"
        direction = "web" if is_web else call.get("direction") if call.get("direction") in ("inbound", "outbound") \
            else "unknown"
        ours, theirs = ("to_number", "from_number") if direction == "inbound" else ("from_number", "to_number")
        started, ended = _epoch_ms(call.get("start_timestamp")), _epoch_ms(call.get("end_timestamp"))
        duration_ms = call.get("duration_ms")
        if duration_ms is None and started and ended:
            duration_ms = (ended - started).total_seconds() * 1000
        analysis = call.get("call_analysis") or {}
        structured = analysis.get("custom_analysis_data")
        structured = structured if isinstance(structured, dict) else None
        assistant = {k: v for k, v in (("id", call.get("agent_id")), ("name", call.get("agent_name")),
                                        ("metadata", call.get("metadata"))) if v}
        return CallReport(
            id=report_id, source=self.name, event=self.event_of(payload),
            call=Call(id=call["call_id"], type="web_call" if is_web else f"{direction}_phone_call"
                      if direction != "unknown" else (call.get("call_type") or "unknown"),
                      direction=direction, status=call.get("call_status")),
            occurred_at=(started if payload["event"] == "call_started" else None) or ended or started,
            received_at=received_at,
            phone_number=normalizer.phone(call.get(ours)),
            customer=(PhoneNumber(number=None, raw=call.get(theirs)) if is_web else normalizer.phone(call.get(theirs))),
            duration_seconds=None if duration_ms is None else round(duration_ms / 1000),
            summary=analysis.get("call_summary"),
            analysis=structured,
            analysis_errors=normalizer.analysis_errors(structured),
            messages=[Message(SPEAKERS[m["role"]], m["content"]) for m in call.get("transcript_object") or []
                      if isinstance(m.get("role"), str) and m["role"] in SPEAKERS and isinstance(m.get("content"), str)],
            recording_url=call.get("recording_url"),
            assistant=assistant or None,
            ended_reason=call.get("disconnection_reason"),
            raw=raw,
        )
