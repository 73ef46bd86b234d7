"""The built-in tools: ``lookup_customer``, ``recent_calls``, ``create_followup`` (docs/answers.md).

They act on the caller of the call they are part of only (the LLM cannot ask about another
number), and each reads or queues through the ``PluginHub`` as a third-party tool would.
"""
from __future__ import annotations

from ..answers import call_fields, caller_fields
from ..hookspecs import hookimpl
from ..lookup import FOUND, UNKNOWN
from ..tools import Tool, ToolCall, ToolError

#: kept back from a tool's deadline, for the answer to be written and sent
MARGIN_SECONDS = 0.25


def _number(call: ToolCall) -> str:
    if call.number is None:
        raise ToolError("this call has no caller number (a web call): there is nobody to look up")
    return call.number


def lookup_customer(arguments: dict, call: ToolCall) -> dict:
    number = _number(call)
    try:
        lookup = call.hub.lookup_caller(number, timeout=max(0.0, call.remaining - MARGIN_SECONDS))
    except LookupError as exc:
        raise ToolError(str(exc)) from None
    if lookup.status not in (FOUND, UNKNOWN):
        raise ToolError(f"the CRM did not answer ({lookup.status}); carry on without the customer's record")
    last = call.hub.recent_calls(number, 1)
    return {"found": lookup.status == FOUND, **(caller_fields(lookup.caller) or {}),
            "last_call": call_fields(last[0]) if last else None}


def recent_calls(arguments: dict, call: ToolCall) -> dict:
    calls = call.hub.recent_calls(_number(call), arguments.get("limit", 3))
    return {"calls": [{key: value for key, value in call_fields(report).items() if key != "report_id"}
                      for report in calls]}


def create_followup(arguments: dict, call: ToolCall) -> dict:
    try:
        return call.hub.queue_followup(call, arguments["title"].strip(), (arguments.get("notes") or "").strip() or None)
    except LookupError as exc:
        raise ToolError(str(exc)) from None


TOOLS = (
    Tool("lookup_customer",
         "Look up the caller in the CRM: name, company, account owner, open deals, and when they last "
         "called and what it was about. Takes no arguments: it is always the current caller.",
         {"type": "object", "properties": {}, "additionalProperties": False}, lookup_customer),
    Tool("recent_calls",
         "The caller's most recent earlier calls with us: when, a summary, and the sentiment (1-10).",
         {"type": "object", "additionalProperties": False,
          "properties": {"limit": {"type": "integer", "minimum": 1, "maximum": 10,
                                   "description": "how many calls, most recent first (default 3)"}}},
         recent_calls),
    Tool("create_followup",
         "Create a follow-up task for the team about this caller (a call back, a quote to send...). "
         "Say to the caller what will happen.",
         {"type": "object", "additionalProperties": False, "required": ["title"],
          "properties": {"title": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S",
                                   "description": "what must be done, in a line"},
                         "notes": {"type": "string", "maxLength": 4000,
                                   "description": "details the team needs"}}},
         create_followup),
)


@hookimpl
def register_tools(register):
    for tool in TOOLS:
        register(tool)
