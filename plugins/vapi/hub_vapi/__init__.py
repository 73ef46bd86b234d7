"""Vapi as a source for Sovereign Hub: ``POST /webhooks/vapi`` (source ``vapi``)."""
from hub import hookimpl

from .source import VapiConfig, VapiSource

__all__ = ["VapiConfig", "VapiSource"]


@hookimpl
def register_sources(register):
    register(VapiSource())
