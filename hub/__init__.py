"""Sovereign Hub: the public surface that plugins are written against (docs/plugin_hooks.md).

Import from here (and ``hub.testing`` in tests), never from a module inside ``hub``.
``import hub`` loads neither Flask nor SQLAlchemy nor click: ``pass_hub`` (a click decorator)
is imported from the CLI only when a plugin asks for it.
"""
from .dates import due_date
from .destinations import Caller, DeliveryContext, Destination, HubSettings, Result, credential_key
from .errors import ConfigError, DeliveryError, Permanent, Retryable
from .fields import EmptyConfig, MappingField, RuleField, TemplateField
from .hookspecs import hookimpl
from .normalize import to_e164
from .plugin_hub import PluginHub
from .http import raise_for_exception, raise_for_response, retry_after_seconds
from .ratelimit import WindowLimiter, parse_rate
from .records import AttemptRecord, DeliveryRecord
from .report import Call, CallReport, Message, PhoneNumber, parse_datetime
from .rules import Mapping, Rule
from .redaction import mask_phone, redact, register_secret
from .sources import SignatureError, Source, SourceConfig
from .templates import Template, format_duration, format_phone
from .tools import Tool, ToolCall, ToolError

__version__ = "0.1.0"

__all__ = [
    "AttemptRecord", "Call", "CallReport", "Caller", "ConfigError", "DeliveryContext", "DeliveryError", "DeliveryRecord", "Destination",
    "EmptyConfig", "HubSettings", "Mapping", "MappingField", "Message", "Permanent", "PhoneNumber", "PluginHub",
    "Result", "Retryable", "Rule", "RuleField", "SignatureError", "Source", "SourceConfig", "Template", "TemplateField",
    "Tool", "ToolCall", "ToolError",
    "WindowLimiter", "credential_key", "due_date", "format_duration", "format_phone", "hookimpl", "mask_phone",
    "parse_datetime", "parse_rate", "pass_hub", "raise_for_exception", "raise_for_response", "redact", "register_secret",
    "retry_after_seconds", "to_e164",
]


def __getattr__(name: str):
    if name == "pass_hub":
        from .cli import pass_hub

        return pass_hub
    raise AttributeError(f"module 'hub' has no attribute {name!r}")
