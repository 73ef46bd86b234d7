"""Sovereign Hub task trackers: a follow-up task in Jira, Asana, Linear, Trello or Todoist.

All five types share one follow-up model (``followup.py``); each tracker module only maps it.
"""
import hub

from .jira import JiraDestination

DESTINATIONS = (JiraDestination,)


@hub.hookimpl
def register_destinations(register):
    for destination in DESTINATIONS:
        register(destination)
