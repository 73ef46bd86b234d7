"""Vapi's server-URL messages: how they are authenticated and how an end-of-call report becomes a CallReport.

Vapi authenticates a server URL with a credential. The HMAC credential signs each request:
``signatureHeader`` (default ``x-signature``) carries the ``algorithm``'s digest (hex or
base64, after an optional ``signaturePrefix``) of ``payloadFormat`` (default
``{timestamp}.{body}``), the timestamp in ``timestampHeader`` (default ``x-timestamp``). The
legacy inline ``server.secret`` (now a Bearer credential on header ``X-Vapi-Secret`` without
prefix) sends the secret itself. ``[sources.vapi] auth`` says which one the hub checks.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from datetime import datetime, timezone
from typing import Any, Mapping

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema

from hub import Call, CallReport, Message, PhoneNumber, SignatureError, Source, SourceConfig, parse_datetime

EVENTS = ("end-of-call-report", "status-update")
CALL_TYPES = {"inboundPhoneCall": "inbound", "outboundPhoneCall": "outbound", "webCall": "web",
              "vapi.websocketCall": "web"}
SPEAKERS = {"user": "user", "bot": "assistant", "assistant": "assistant"}  # system and tool turns are left out
_NUMBER = re.compile(r"^[0-9]{1,16}(\.[0-9]+)?$")
_PLACEHOLDERS = re.compile(r"\{([^{}]*)\}")


class VapiConfig(SourceConfig):
    """``[sources.vapi]``: ``secret`` is the HMAC credential's secret key (or the legacy secret)."""

    auth = fields.String(load_default="hmac", validate=validate.OneOf(
        ["hmac", "x-vapi-secret"], error='must be "hmac" (an HMAC credential) or "x-vapi-secret" (the legacy '
                                         'server.secret, or a Bearer credential on header X-Vapi-Secret)'))
    algorithm = fields.String(load_default="sha256", validate=validate.OneOf(["sha256", "sha512", "sha1"]))
    signature_header = fields.String(load_default="x-signature", validate=validate.Length(min=1))
    timestamp_header = fields.String(load_default="x-timestamp", validate=validate.Length(min=1))
    signature_prefix = fields.String(load_default="")
    include_timestamp = fields.Boolean(load_default=True)
    payload_format = fields.String(load_default=None, allow_none=True)
    signature_encoding = fields.String(load_default="hex", validate=validate.OneOf(["hex", "base64"]))
    secret_is_base64 = fields.Boolean(load_default=False)

    @validates_schema
    def _known_placeholders(self, data, **_):
        unknown = set(_PLACEHOLDERS.findall(data.get("payload_format") or "")) - {"timestamp", "body"}
        if unknown:
            raise ValidationError(f"the hub can check {{timestamp}} and {{body}} only, not "
                                  f"{', '.join(sorted('{' + u + '}' for u in unknown))}", "payload_format")


class _Open(Schema):
    class Meta:
        unknown = INCLUDE


class _Moment(fields.Field):
    """An ISO 8601 string or epoch milliseconds (Vapi's ``timestamp`` is a number), as UTC."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return datetime.fromtimestamp(value / 1000, timezone.utc)
            if isinstance(value, str):
                return parse_datetime(value)
        except (ValueError, OverflowError, OSError):
            pass
        raise ValidationError("Not an ISO 8601 time or epoch milliseconds.")


class CallSchema(_Open):
    id = fields.String(required=True, validate=validate.Length(min=1, max=200))
    type = fields.String(allow_none=True)
    status = fields.String(allow_none=True)


class MessageSchema(_Open):
    type = fields.String(required=True, validate=validate.OneOf(
        EVENTS, error="The hub takes {choices} from Vapi; leave other types out of the assistant's serverMessages."))
    call = fields.Nested(CallSchema, required=True)
    timestamp = _Moment(allow_none=True)
    startedAt = _Moment(allow_none=True)
    endedAt = _Moment(allow_none=True)
    status = fields.String(allow_none=True)
    endedReason = fields.String(allow_none=True)
    customer = fields.Dict(allow_none=True)
    phoneNumber = fields.Dict(allow_none=True)
    assistant = fields.Dict(allow_none=True)
    artifact = fields.Dict(allow_none=True)
    analysis = fields.Dict(allow_none=True)

    @validates_schema
    def _a_time(self, data, **_):
        if not any(data.get(key) for key in ("endedAt", "timestamp", "startedAt")):
            raise ValidationError("One of endedAt, timestamp or startedAt is needed.", "timestamp")
        if data["type"] == "end-of-call-report" and (data.get("analysis") is None or data.get("artifact") is None):
            raise ValidationError("An end-of-call-report has analysis and artifact.", "analysis")


class PayloadSchema(_Open):
    message = fields.Nested(MessageSchema, required=True)


def _digest(algorithm: str, key: bytes, message: bytes, encoding: str) -> str:
    mac = hmac.new(key, message, getattr(hashlib, algorithm)).digest()
    return mac.hex() if encoding == "hex" else base64.b64encode(mac).decode()


class VapiSource(Source):
    name = "vapi"
    schema = PayloadSchema()
    Config = VapiConfig
    events = EVENTS
    secret_env = "VAPI_WEBHOOK_SECRET"
    secret_origin = "the secret key of the HMAC credential on the Vapi server URL"

    def __init__(self) -> None:
        self.settings: dict[str, Any] | None = None  # None: [sources.vapi] not configured

    def configure(self, settings: Mapping[str, Any]) -> None:
        self.settings = dict(settings)

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        settings = self.settings
        if settings is None:
            raise SignatureError("not_configured", "The vapi source is installed but [sources.vapi] is not configured.")
        if not settings.get("secret"):  # allow_unsigned = true: the app warned at start-up
            return
        if settings["auth"] == "x-vapi-secret":
            sent = headers.get("X-Vapi-Secret")
            if not sent:
                raise SignatureError("missing_signature", "The X-Vapi-Secret header is missing.")
            if not hmac.compare_digest(sent.encode(), settings["secret"].encode()):
                raise SignatureError("invalid_signature", "X-Vapi-Secret is not the configured secret.")
            return
        self._verify_hmac(body, headers, now, settings)

    def _verify_hmac(self, body: bytes, headers: Mapping[str, str], now: float, settings: dict) -> None:
        header = settings["signature_header"]
        signature = (headers.get(header) or "").strip()
        if not signature:
            raise SignatureError("missing_signature", f"The {header} header is missing.")
        fmt = settings["payload_format"] or ("{timestamp}.{body}" if settings["include_timestamp"] else "{body}")
        timestamp = ""
        if settings["include_timestamp"] or "{timestamp}" in fmt:
            timestamp = (headers.get(settings["timestamp_header"]) or "").strip()
            self._check_timestamp(timestamp, now, settings)
        prefix = settings["signature_prefix"]
        if prefix and signature.startswith(prefix):
            signature = signature[len(prefix):]
        key = settings["secret"].encode()
        if settings["secret_is_base64"]:
            try:
                key = base64.b64decode(settings["secret"], validate=True)
            except binascii.Error:
                raise SignatureError("invalid_signature", "secret_is_base64 is set but the secret is not base64.") from None
        message = b"".join(part.encode() if i % 2 == 0 else (body if part == "body" else timestamp.encode())
                           for i, part in enumerate(_PLACEHOLDERS.split(fmt)))
        expected = _digest(settings["algorithm"], key, message, settings["signature_encoding"])
        if settings["signature_encoding"] == "hex":
            signature = signature.lower()
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise SignatureError("invalid_signature", f"{header} does not match the body.")

    @staticmethod
    def _check_timestamp(timestamp: str, now: float, settings: dict) -> None:
        header = settings["timestamp_header"]
        if not timestamp:
            raise SignatureError("missing_timestamp", f"The {header} header is missing.")
        if not _NUMBER.match(timestamp):
            raise SignatureError("malformed_timestamp", f"{header} must be Unix time (seconds or milliseconds).")
        seconds = float(timestamp)
        if seconds > 1e11:  # milliseconds: Vapi's own message timestamps are epoch ms
            seconds /= 1000
        tolerance = settings["tolerance_seconds"]
        if abs(now - seconds) > tolerance:
            raise SignatureError("stale_timestamp", f"{header} is more than {tolerance} s from the hub's clock.")

    def event_of(self, payload: dict) -> str:
        return payload["message"]["type"]

    def call_id_of(self, payload: dict) -> str:
        return payload["message"]["call"]["id"]

    def event_key_of(self, payload: dict) -> str:
        """A status-update's status: a call sends several (``ringing``, ``in-progress``, ``ended``)."""
        msg = payload["message"]
        return (msg.get("status") or "") if msg["type"] == "status-update" else ""

    def normalize(self, payload: dict, *, raw: dict, report_id: str, received_at: datetime,
                  normalizer) -> CallReport:
        msg = payload["message"]
        call = msg["call"]
        direction = CALL_TYPES.get(call.get("type") if isinstance(call.get("type"), str) else "", "unknown")
        started, ended = msg.get("startedAt"), msg.get("endedAt")
        customer, line = msg.get("customer") or {}, msg.get("phoneNumber") or {}
        artifact, analysis = msg.get("artifact") or {}, msg.get("analysis") or {}
        structured = analysis.get("structuredData")
        structured = structured if isinstance(structured, dict) else None
        assistant = {k: v for k, v in (msg.get("assistant") or {}).items() if k in ("id", "name", "metadata")}
        is_end = msg["type"] == "end-of-call-report"
        return CallReport(
            id=report_id, source=self.name, event=msg["type"],
            call=Call(id=call["id"], type=call.get("type") or "unknown", direction=direction,
                      status=msg.get("status") or call.get("status") or ("ended" if is_end else None)),
            occurred_at=(ended if is_end else None) or msg.get("timestamp") or ended or started,
            received_at=received_at,
            phone_number=normalizer.phone(line.get("number"), line.get("name")),
            customer=(PhoneNumber(number=None, raw=customer.get("number"), name=customer.get("name"))
                      if direction == "web" else normalizer.phone(customer.get("number"), customer.get("name"))),
            duration_seconds=max(0, round((ended - started).total_seconds())) if started and ended else None,
            summary=analysis.get("summary"),
            analysis=structured,
            analysis_errors=normalizer.analysis_errors(structured),
            messages=[Message(SPEAKERS[m["role"]], m["message"]) for m in artifact.get("messages") or []
                      if isinstance(m, dict) and isinstance(m.get("role"), str) and m["role"] in SPEAKERS
                      and isinstance(m.get("message"), str)],
            recording_url=_recording(artifact),
            assistant=assistant or None,
            ended_reason=msg.get("endedReason"),
            raw=raw,
        )


def _recording(artifact: dict) -> str | None:
    """``artifact.recording`` (mono combined, else stereo); the deprecated ``artifact.recordingUrl`` last."""
    recording = artifact.get("recording") if isinstance(artifact.get("recording"), dict) else {}
    mono = recording.get("mono") if isinstance(recording.get("mono"), dict) else {}
    for url in (mono.get("combinedUrl"), recording.get("stereoUrl"), artifact.get("recordingUrl")):
        if isinstance(url, str) and url:
            return url
    return None
