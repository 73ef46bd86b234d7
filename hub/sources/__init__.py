"""Payload adapters: how a platform signs its webhooks and how its payload becomes a CallReport."""
from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Mapping

from marshmallow import Schema, fields, validate


class SourceConfig(Schema):
    """``[sources.<name>]``: the webhook secret and how far its timestamp may drift."""

    secret = fields.String(load_default=None, allow_none=True)
    allow_unsigned = fields.Boolean(load_default=False)
    tolerance_seconds = fields.Integer(load_default=300, validate=validate.Range(min=1))


class SignatureError(Exception):
    """The request is not provably from the platform; ``code`` says which check failed."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Source:
    """Base of a payload adapter; ``hms`` is the built-in one.

    ``verify`` sees the raw body before anything parses it. ``schema`` validates the
    parsed JSON (its errors become a 422 with field paths). ``normalize`` turns the
    validated payload into a ``CallReport``.
    """

    name: ClassVar[str]
    schema: ClassVar[Schema]
    Config: ClassVar[type[Schema]] = SourceConfig
    events: ClassVar[tuple[str, ...]] = ()
    #: named by the missing-secret error: the environment variable the example config reads the
    #: secret from, and where on the platform's side the operator finds it
    secret_env: ClassVar[str] = "WEBHOOK_SECRET"
    secret_origin: ClassVar[str] = "the platform's webhook signing secret"

    def configure(self, settings: Mapping[str, Any]) -> None:
        """Take this source's ``[sources.<name>]`` table (secrets already resolved)."""

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> None:
        raise NotImplementedError

    def event_of(self, payload: dict) -> str:
        raise NotImplementedError

    def call_id_of(self, payload: dict) -> str:
        raise NotImplementedError

    def event_key_of(self, payload: dict) -> str:
        """What tells apart two events of one type for one call (at most 255 characters).

        The store takes (source, call id, event type, this key) as an event's identity: the same
        identity again is a duplicate. Empty (the default) where a call has one event of a type.
        """
        return ""

    def normalize(self, payload: dict, *, raw: dict, report_id: str, received_at: datetime,
                  normalizer) -> Any:
        raise NotImplementedError
