"""Sovereign Hub: the public surface that plugins are written against.

Import from here (and ``hub.testing`` in tests), never from a module inside ``hub``.
"""
from .cli import pass_hub
from .dates import due_date
from .destinations import DeliveryContext, Destination, HubSettings, Result
from .errors import ConfigError, DeliveryError, Permanent, Retryable
from .fields import EmptyConfig, MappingField, RuleField, TemplateField
from .hookspecs import hookimpl
from .normalize import to_e164
from .http import raise_for_exception, raise_for_response, retry_after_seconds
from .ratelimit import WindowLimiter, parse_rate
from .report import Call, CallReport, Message, PhoneNumber, parse_datetime
from .rules import Mapping, Rule
from .secrets import mask_phone, redact
from .sources import SignatureError, Source, SourceConfig
from .templates import Template, format_duration, format_phone

__version__ = "0.1.0"

__all__ = [
    "Call", "CallReport", "ConfigError", "DeliveryContext", "DeliveryError", "Destination",
    "EmptyConfig", "HubSettings", "Mapping", "MappingField", "Message", "Permanent", "PhoneNumber",
    "Result", "Retryable", "Rule", "RuleField", "SignatureError", "Source", "SourceConfig", "Template", "TemplateField", "WindowLimiter",
    "due_date", "format_duration", "format_phone", "hookimpl", "mask_phone", "pass_hub", "raise_for_exception",
    "parse_datetime", "parse_rate", "raise_for_response", "redact", "retry_after_seconds", "to_e164",
]
