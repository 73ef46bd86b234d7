"""Sovereign Hub destination type ``hubspot``: calls logged on the right contact, never twice."""
from hub import hookimpl

from .destination import HubSpotDestination

__all__ = ["HubSpotDestination"]


@hookimpl
def register_destinations(register):
    register(HubSpotDestination)
