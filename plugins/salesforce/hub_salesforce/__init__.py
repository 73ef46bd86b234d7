"""Sovereign Hub plugin: the ``salesforce`` destination type."""
from hub import hookimpl

from .destination import SalesforceDestination

__all__ = ["SalesforceDestination", "register_destinations"]


@hookimpl
def register_destinations(register):
    register(SalesforceDestination)
