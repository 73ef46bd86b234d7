"""JMESPath over the report's JSON form: ``when`` rules and property mappings.

Operators write ``analysis.sentiment <= 3``; strict JMESPath wants ``<= `3```. A bare
number right after a comparison operator is accepted and read as that literal, so both
spellings work and nothing else about JMESPath changes.
"""
from __future__ import annotations

import logging
import re
from typing import Any

import jmespath
from jmespath.exceptions import ArityError, JMESPathError, UnknownFunctionError

from . import logs

log = logging.getLogger(__name__)

# A quoted string, a backtick literal, or a comparison followed by a bare number.
_TOKEN = re.compile(
    r"""('(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"|`(?:\\.|[^`\\])*`)"""
    r"""|((?:<=|>=|==|!=|<|>)\s*)(-?\d+(?:\.\d+)?)(?![\w.])"""
)


def _literal_numbers(expression: str) -> str:
    def replace(match: re.Match) -> str:
        if match.group(1):
            return match.group(1)
        return f"{match.group(2)}`{match.group(3)}`"

    return _TOKEN.sub(replace, expression)


def _data(report: Any) -> Any:
    return getattr(report, "data", report)


def truthy(value: Any) -> bool:
    """JMESPath's truth: false, null, "" and empty lists/objects are false; 0 is true."""
    return not (value is None or value is False or value == "" or value == [] or value == {})


class Rule:
    """A compiled JMESPath expression; ``ValueError`` names what is wrong with it."""

    def __init__(self, expression: str):
        self.expression = expression
        try:
            self._compiled = jmespath.compile(_literal_numbers(expression))
        except JMESPathError as exc:
            first_line = str(exc).splitlines()[0]
            raise ValueError(f"not a valid JMESPath expression ({first_line}): {expression!r}") from None
        try:  # JMESPath finds an unknown function or a wrong argument count only when it runs
            self._compiled.search({})
        except (UnknownFunctionError, ArityError) as exc:
            raise ValueError(f"not a valid JMESPath expression ({exc}): {expression!r}") from None
        except JMESPathError:
            pass  # a type error over an empty report says nothing about real ones

    def search(self, report: Any) -> Any:
        """The expression's value over the report; null when the report's data has a type the
        expression cannot take (``length(analysis.notes)`` on a number): analysis is checked
        against its schema but never rejected, so a rule must not fail the receiver with a 500."""
        try:
            return self._compiled.search(_data(report))
        except JMESPathError as exc:
            logs.event(log, "rule.type_error", logging.WARNING, rule=self.expression, error=str(exc),
                       report_id=getattr(report, "id", None))
            return None

    def matches(self, report: Any) -> bool:
        return truthy(self.search(report))

    def __repr__(self) -> str:
        return f"Rule({self.expression!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and other.expression == self.expression

    def __hash__(self) -> int:
        return hash(self.expression)


class Mapping:
    """``{target: Rule}``: e.g. CRM property names to expressions over the report."""

    def __init__(self, table: dict[str, str]):
        self.rules: dict[str, Rule] = {}
        for target, expression in table.items():
            try:
                self.rules[target] = Rule(expression)
            except ValueError as exc:
                raise ValueError(f"{target}: {exc}") from None

    def evaluate(self, report: Any) -> dict[str, Any]:
        """Each target's value; targets whose expression finds nothing (null) are left out."""
        values = {}
        for target, rule in self.rules.items():
            value = rule.search(report)
            if value is not None:
                values[target] = value
        return values

    def __bool__(self) -> bool:
        return bool(self.rules)
