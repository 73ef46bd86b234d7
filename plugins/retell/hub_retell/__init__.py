"""Retell AI as a source for Sovereign Hub: ``POST /webhooks/retell`` (source ``retell``)."""
from hub import hookimpl

from .source import RetellSource

__all__ = ["RetellSource"]


@hookimpl
def register_sources(register):
    register(RetellSource())
