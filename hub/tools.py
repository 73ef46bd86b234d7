"""Tools the platform's LLM can call (tool-calls events): what a tool is, and answering a list of calls.

Plugins register tools through the ``register_tools`` hook (docs/plugin_hooks.md). Each entry of
a tool-calls event's ``tool_call_list`` runs on its own thread of a bounded pool, and the answer
leaves by the deadline: an entry not done by then, an unknown tool, arguments that break the
tool's JSON Schema, or a tool that raises each give that entry ``{"error": ...}`` while the
others still answer.
"""
from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import re
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import jsonschema

from . import logs
from .errors import ConfigError
from .redaction import in_play, scrub

if TYPE_CHECKING:
    from .plugin_hub import PluginHub
    from .report import CallReport

log = logging.getLogger(__name__)
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # what the LLM providers accept as a function name


class ToolError(Exception):
    """Raised by a tool for an answer the LLM should hear as an error (``{"error": message}``)."""


@dataclass(frozen=True)
class ToolCall:
    """One call of a tool: what its function gets beside the arguments.

    ``report`` is the tool-calls event (its call, customer, assistant metadata); ``number`` the
    caller's E.164 number (None on a web call); ``hub`` the ``PluginHub``; ``deadline`` the
    ``time.monotonic()`` by which the answer leaves (a tool that waits on something should stop by then).
    """

    id: str
    name: str
    report: "CallReport"
    hub: "PluginHub"
    deadline: float

    @property
    def number(self) -> str | None:
        return self.report.customer.number

    @property
    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


@dataclass(frozen=True)
class Tool:
    """A tool: ``function(arguments, call)`` returns a JSON value (or is a coroutine function
    whose result is one). ``parameters`` is the JSON Schema of the arguments; ``is_async`` is the
    platform's ``async`` flag (the platform does not wait for the answer)."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any]
    is_async: bool = False
    #: the platform's ``async_response``: what the assistant says while an async tool runs
    async_response: str | None = None
    plugin: str = field(default="", compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not re.match(NAME_PATTERN, self.name):
            raise ConfigError("", f"tool name {self.name!r}: letters, digits, _ and - only, 1 to 64 of them")
        if not self.description:
            raise ConfigError("", f"tool {self.name!r}: a description is required (the LLM reads it)")
        try:
            jsonschema.validators.validator_for(self.parameters).check_schema(self.parameters)
        except jsonschema.SchemaError as exc:
            raise ConfigError("", f"tool {self.name!r}: parameters is not a valid JSON Schema: {exc.message}") from None
        if not callable(self.function):
            raise ConfigError("", f"tool {self.name!r}: function is not callable")

    def definition(self, url: str) -> dict[str, Any]:
        """The entry of the platform's ``llm_config.tools[]``."""
        entry = {"name": self.name, "description": self.description, "parameters": self.parameters,
                 "async": self.is_async, "url": url}
        if self.async_response:
            entry["async_response"] = self.async_response
        return entry

    def check(self, arguments: Any) -> dict[str, Any]:
        """The arguments as a dict (the platform may send them as a JSON string); ``ToolError``
        naming the first broken field when they do not match ``parameters``."""
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                raise ToolError("the arguments are not valid JSON") from None
        if arguments is None:
            arguments = {}
        validator = jsonschema.validators.validator_for(self.parameters)(self.parameters)
        error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "arguments"
            raise ToolError(f"invalid arguments: {where}: {error.message}")
        return arguments

    def run(self, arguments: dict[str, Any], call: ToolCall) -> Any:
        if inspect.iscoroutinefunction(self.function):
            return asyncio.run(asyncio.wait_for(self.function(arguments, call), call.remaining))
        result = self.function(arguments, call)
        if inspect.isawaitable(result):
            return asyncio.run(asyncio.wait_for(result, call.remaining))
        return result


def collect_tools(pm) -> dict[str, Tool]:
    """Call ``register_tools`` once; a name registered twice is a clear error naming both plugins."""
    tools: dict[str, Tool] = {}
    for impl in pm.hook.register_tools.get_hookimpls():
        def register(tool: Tool | None = None, _plugin=impl.plugin_name, **fields: Any) -> Tool:
            made = tool if tool is not None else Tool(**fields)
            if made.name in tools:
                raise ConfigError("", f"tool {made.name!r} is registered by both {tools[made.name].plugin} "
                                      f"and {_plugin}: uninstall one")
            tools[made.name] = dataclasses.replace(made, plugin=_plugin)
            return tools[made.name]
        impl.function(register=register)
    return tools


class ToolRunner:
    """Runs the entries of tool-calls events on a bounded pool of its own (per process)."""

    def __init__(self, tools: dict[str, Tool], workers: int):
        self.tools = tools
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tool-call")
            return self._pool

    def answer(self, entries: list[Any], report: "CallReport", hub: "PluginHub", deadline: float) -> list[dict]:
        """``[{"tool_call_id", "result"} or {"tool_call_id", "error"}]``, one per entry, in order."""
        pending = []
        for index, entry in enumerate(entries):
            call_id = str(entry.get("id") or f"entry-{index}") if isinstance(entry, dict) else f"entry-{index}"
            function = entry.get("function") if isinstance(entry, dict) else None
            name = function.get("name") if isinstance(function, dict) else None
            tool = self.tools.get(name) if isinstance(name, str) else None
            if tool is None:
                known = ", ".join(sorted(self.tools)) or "none"
                pending.append((call_id, None, f"unknown tool {name!r} (this hub answers: {known})"))
                continue
            call = ToolCall(call_id, tool.name, report, hub, deadline)
            pending.append((call_id, self._executor().submit(self._one, tool, function.get("arguments"), call), None))
        results = []
        for call_id, future, error in pending:
            if future is not None:
                try:
                    outcome = future.result(timeout=max(0.0, deadline - time.monotonic()))
                except FutureTimeout:
                    outcome = {"error": "the tool did not finish in time"}
            else:
                outcome = {"error": error}
            results.append({"tool_call_id": call_id, **outcome})
        return results

    def _one(self, tool: Tool, arguments: Any, call: ToolCall) -> dict[str, Any]:
        with in_play([call.number]):
            try:
                result = tool.run(tool.check(arguments), call)
                json.dumps(result)  # what cannot be sent is the tool's error, not a broken answer
                return {"result": result}
            except ToolError as exc:
                return {"error": scrub(str(exc))}
            except (asyncio.TimeoutError, TimeoutError):
                return {"error": "the tool did not finish in time"}
            except Exception as exc:  # noqa: BLE001 - one tool's bug never breaks the other entries
                logs.event(log, "tool.failed", logging.WARNING, tool=tool.name, plugin=tool.plugin,
                           error=scrub(f"{type(exc).__name__}: {exc}"))
                return {"error": f"the tool {tool.name!r} failed ({type(exc).__name__})"}

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
