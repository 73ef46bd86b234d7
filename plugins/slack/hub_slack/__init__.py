"""Slack alerts for Sovereign Hub: destination type ``slack`` and ``sovereign-hub slack digest``."""
from hub import hookimpl

from .commands import add_commands
from .destination import SlackConfig, SlackDestination
from .digest import build_digest
from .message import build_message

__all__ = ["SlackConfig", "SlackDestination", "build_digest", "build_message"]


@hookimpl
def register_destinations(register):
    register(SlackDestination)


@hookimpl
def register_commands(cli):
    add_commands(cli)
