"""HMS Sovereign: the signature scheme and payload shape of ../seed/PLATFORM.md."""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
from datetime import datetime, timedelta
from typing import Any, Mapping

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema

from ..dates import parse_duration
from ..report import Call, CallReport, Message, PhoneNumber, parse_datetime
from . import SignatureError, Source, SourceConfig

log = logging.getLogger(__name__)

EVENTS = ("end-of-call-report", "status-update", "tool-calls", "assistant-request")
DIRECTIONS = {"inbound_phone_call": "inbound", "outbound_phone_call": "outbound", "web_call": "web"}
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
# ASCII digits only (str.isdigit() also takes "²", which int() refuses), and few enough of them
# that int() and the float arithmetic below cannot fail: a header must never cause a 5xx.
_UNIX_SECONDS = re.compile(r"^[0-9]{1,15}$")


def sign(secret: str, timestamp: str | int, body: bytes) -> str:
    """The header value the platform sends: ``sha256=<hex of HMAC-SHA256(secret, "ts.body")>``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


DEFAULT_API_URL = "https://api.hmsovereign.com/api/v1"


class _Duration(fields.String):
    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return parse_duration(super()._deserialize(value, attr, data, **kwargs))
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class ReconcileConfig(Schema):
    """``[sources.hms.reconcile]``: how often the running hub reconciles, over how long a window."""

    every = _Duration(required=True)
    window = _Duration(load_default=timedelta(hours=24))


class HmsConfig(SourceConfig):
    """``[sources.hms]``: the webhook secret, and the calls API that ``reconcile`` reads."""

    api_key = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    api_url = fields.Url(load_default=DEFAULT_API_URL, schemes={"http", "https"}, require_tld=False)
    reconcile = fields.Nested(ReconcileConfig, load_default=None, allow_none=True)

    @validates_schema
    def _schedule_needs_a_key(self, data, **_):
        if data.get("reconcile") and not data.get("api_key"):
            raise ValidationError('needs sources.hms.api_key: set api_key = { env = "HMS_API_KEY" } '
                                  "(an API key of the platform account)", "reconcile")


class _Timestamp(fields.String):
    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parse_datetime(text)
        except ValueError:
            raise ValidationError("Not a valid ISO 8601 timestamp.") from None


class _Open(Schema):
    class Meta:
        unknown = INCLUDE


def _no_nul(value: str) -> None:
    """The call id is a database column, and PostgreSQL text cannot hold NUL: a 422, not a 503."""
    if "\x00" in value:
        raise ValidationError("Must not contain a NUL character.")


class CallSchema(_Open):
    id = fields.String(required=True, validate=[validate.Length(min=1, max=200), _no_nul])
    type = fields.String(required=True, validate=validate.Length(min=1, max=100))
    status = fields.String(allow_none=True)


class NumberSchema(_Open):
    number = fields.String(allow_none=True)
    name = fields.String(allow_none=True)


class ChatMessageSchema(_Open):
    role = fields.String(required=True)
    content = fields.String(required=True, allow_none=True)


class MessageSchema(_Open):
    type = fields.String(required=True, validate=validate.OneOf(EVENTS))
    timestamp = _Timestamp(required=True)
    call = fields.Nested(CallSchema, required=True)
    phone_number = fields.Nested(NumberSchema, allow_none=True)
    customer = fields.Nested(NumberSchema, allow_none=True)
    assistant = fields.Dict(allow_none=True)
    duration_seconds = fields.Integer(strict=True, validate=validate.Range(min=0), allow_none=True)
    summary = fields.String(allow_none=True)
    messages = fields.List(fields.Nested(ChatMessageSchema), allow_none=True)
    analysis = fields.Dict(allow_none=True)
    recording_url = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    ended_reason = fields.String(allow_none=True)
    tool_call_list = fields.List(fields.Dict(), allow_none=True)

    @validates_schema
    def end_of_call_fields(self, data, **kwargs):
        if data.get("type") != "end-of-call-report":
            return
        missing = {key: ["Missing data for required field."]
                   for key in ("duration_seconds", "summary") if data.get(key) is None}
        if missing:
            raise ValidationError(missing)


class PayloadSchema(_Open):
    message = fields.Nested(MessageSchema, required=True)


class HmsSource(Source):
    name = "hms"
    schema = PayloadSchema()
    Config = HmsConfig
    events = EVENTS
    secret_env = "HMS_WEBHOOK_SECRET"
    secret_origin = "the assistant's webhook_secret"

    def __init__(self) -> None:
        self.secret: str | None = None
        self.tolerance = 300

    def configure(self, settings: Mapping[str, Any]) -> None:
        self.secret = settings.get("secret")
        self.tolerance = int(settings.get("tolerance_seconds", 300))

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        if not self.secret:  # allow_unsigned = true: the app warned at start-up
            return
        signature = headers.get("X-Webhook-Signature")
        timestamp = headers.get("X-Webhook-Timestamp")
        if not signature:
            raise SignatureError("missing_signature", "The X-Webhook-Signature header is missing.")
        if not timestamp:
            raise SignatureError("missing_timestamp", "The X-Webhook-Timestamp header is missing.")
        if not _UNIX_SECONDS.match(timestamp.strip()):
            raise SignatureError("malformed_timestamp", "X-Webhook-Timestamp must be Unix seconds.")
        hex_part = signature.strip()
        if hex_part.startswith("sha256="):
            hex_part = hex_part[len("sha256="):]
        if not _HEX.match(hex_part):
            raise SignatureError("malformed_signature",
                                 "X-Webhook-Signature must be sha256=<64 hex digits>.")
        if abs(now - int(timestamp)) > self.tolerance:
            raise SignatureError("stale_timestamp",
                                 f"X-Webhook-Timestamp is more than {self.tolerance} s from the hub's clock.")
        expected = sign(self.secret, timestamp.strip(), body)[len("sha256="):]
        if not hmac.compare_digest(expected, hex_part.lower()):
            raise SignatureError("invalid_signature", "X-Webhook-Signature does not match the body.")

    def event_of(self, payload: dict) -> str:
        return payload["message"]["type"]

    def call_id_of(self, payload: dict) -> str:
        return payload["message"]["call"]["id"]

    def event_key_of(self, payload: dict) -> str:
        """A status-update's call status; a tool-calls event's tool call ids (sorted, hashed when
        long). One call sends several of each, and each is its own event."""
        msg = payload["message"]
        if msg["type"] == "status-update":
            return msg["call"].get("status") or ""
        if msg["type"] == "tool-calls":
            key = ",".join(sorted(str(c.get("id", "")) for c in msg.get("tool_call_list") or []))
            return key if len(key) <= 200 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        return ""

    def normalize(self, payload: dict, *, raw: dict, report_id: str, received_at: datetime,
                  normalizer) -> CallReport:
        """``payload`` is the schema's output; ``raw`` is the JSON as it arrived."""
        msg = payload["message"]
        call = msg["call"]
        phone = msg.get("phone_number") or {}
        customer = msg.get("customer") or {}
        is_web = call["type"] == "web_call"
        analysis = msg.get("analysis")
        return CallReport(
            id=report_id,
            source=self.name,
            event=msg["type"],
            call=Call(id=call["id"], type=call["type"], direction=DIRECTIONS.get(call["type"], "unknown"),
                      status=call.get("status")),
            occurred_at=msg["timestamp"],
            received_at=received_at,
            phone_number=normalizer.phone(phone.get("number"), phone.get("name")),
            customer=(PhoneNumber(number=None, raw=customer.get("number"), name=customer.get("name"))
                      if is_web else normalizer.phone(customer.get("number"), customer.get("name"))),
            duration_seconds=msg.get("duration_seconds"),
            summary=msg.get("summary"),
            analysis=analysis,
            analysis_errors=normalizer.analysis_errors(analysis),
            messages=[Message(m["role"], m.get("content") or "") for m in msg.get("messages") or []],
            recording_url=msg.get("recording_url"),
            assistant=msg.get("assistant"),
            error=msg.get("error"),
            ended_reason=msg.get("ended_reason"),
            raw=raw,
        )
