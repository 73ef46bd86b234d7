"""Operator-written text (Slack messages, task titles, CRM notes) rendered in Jinja2's sandbox.

The sandbox is the immutable one: a template cannot change a list or dict of the report
(``{{ messages.append(x) }}``, ``{{ analysis.update(...) }}``), and a rendered text over
``MAX_RENDERED_CHARS`` is refused (and so is a ``*`` or ``**`` that would build one), so a
template cannot make a gigabyte string or send one to a vendor.

Templates are compiled once when the configuration loads, so a syntax error stops the
start-up with the key named, and rendering at delivery time costs little.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

import phonenumbers
from jinja2 import ChainableUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from .errors import Permanent
from .report import parse_datetime


def format_duration(seconds: Any) -> str:
    """84 -> '1m 24s'; 3725 -> '1h 2m 5s'."""
    if seconds is None or seconds == "":
        return ""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def format_datetime(value: Any, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    if not value:
        return ""
    moment = value if isinstance(value, datetime) else parse_datetime(str(value))
    return moment.strftime(fmt)


def format_phone(value: Any, style: str = "international") -> str:
    """E.164 to a readable form: '+31 6 12345678'; anything unparsable is returned as it is."""
    if not value:
        return ""
    try:
        parsed = phonenumbers.parse(str(value), None)
    except phonenumbers.NumberParseException:
        return str(value)
    fmt = {"national": phonenumbers.PhoneNumberFormat.NATIONAL,
           "e164": phonenumbers.PhoneNumberFormat.E164}.get(style, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return phonenumbers.format_number(parsed, fmt)


MAX_RENDERED_CHARS = 100_000


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, refusing ``*`` and ``**`` whose result would pass the output cap."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > MAX_RENDERED_CHARS:
                    raise SecurityError(f"repeating a value {times} times would pass {MAX_RENDERED_CHARS} characters")
        elif isinstance(right, int) and abs(right) > 1000:
            raise SecurityError(f"an exponent of {right} is too large")
        return super().call_binop(context, operator, left, right)


def _environment() -> ImmutableSandboxedEnvironment:
    env = _Sandbox(undefined=ChainableUndefined, autoescape=False,
                               trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)
    env.filters.update(duration=format_duration, datetime=format_datetime, phone=format_phone)
    return env


ENVIRONMENT = _environment()


def template_context(report: Any, **extra: Any) -> dict[str, Any]:
    """The names a template sees: every top-level report field, ``report`` itself, and extras."""
    data = getattr(report, "data", report)
    return {**data, "report": data, **extra}


def _capped(chunks):
    """The rendered chunks, stopping with ``Permanent`` once they pass ``MAX_RENDERED_CHARS``."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > MAX_RENDERED_CHARS:
            raise Permanent(f"template output is longer than {MAX_RENDERED_CHARS} characters; shorten the template")
        yield chunk


class Template:
    """A compiled sandboxed template; ``ValueError`` on a syntax error, ``Permanent`` on a render error."""

    def __init__(self, source: str):
        self.source = source
        try:
            self._template = ENVIRONMENT.from_string(source)
        except TemplateError as exc:
            raise ValueError(f"template error: {exc}") from None

    def render(self, report: Any, **extra: Any) -> str:
        try:
            text = "".join(_capped(self._template.generate(template_context(report, **extra))))
        except Permanent:
            raise
        except TemplateError as exc:  # SecurityError included
            raise Permanent(f"template could not be rendered: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - TypeError, ZeroDivisionError... from an operator's template
            raise Permanent(f"template could not be rendered ({type(exc).__name__}: {exc})") from None
        return text.strip()

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)
