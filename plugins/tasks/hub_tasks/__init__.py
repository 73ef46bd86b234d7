"""Sovereign Hub task trackers: a follow-up task in Jira, Asana, Linear, Trello or Todoist.

All five types share one follow-up model (``followup.py``); each tracker module only maps it.
"""
import hub

from .asana import AsanaDestination
from .jira import JiraDestination
from .linear import LinearDestination
from .todoist import TodoistDestination
from .trello import TrelloDestination

DESTINATIONS = (JiraDestination, AsanaDestination, LinearDestination, TodoistDestination,
                TrelloDestination)


@hub.hookimpl
def register_destinations(register):
    for destination in DESTINATIONS:
        register(destination)
