"""Contact property values checked against the portal's own property definitions.

The definitions come from ``GET /crm/v3/properties/contacts`` (name, ``type``, ``fieldType``,
enumeration ``options``, read-only flag) and are cached per destination. A mapped value is
converted to the string form HubSpot documents for its type; one that cannot be converted,
or a name the portal does not have, is reported and left out: never sent wrong.
"""
from __future__ import annotations

import difflib
import json
import time
from datetime import date, datetime, timezone
from typing import Any

from .cache import ExpiringCache

CACHE_SECONDS = 900.0
TRUE_WORDS = {"true", "yes", "y", "1", "on"}
FALSE_WORDS = {"false", "no", "n", "0", "off"}


class ConversionError(ValueError):
    """A value that does not fit the property's type; the message says why."""


class PropertyCache(ExpiringCache):
    """The last contact property definitions fetched (by name), shared by the threads of one destination."""

    def __init__(self, ttl: float = CACHE_SECONDS, clock=time.monotonic):
        super().__init__(ttl, clock)

    def get(self, fetch) -> dict[str, dict]:  # type: ignore[override]
        return super().get("contacts", lambda: {d["name"]: d for d in fetch() if isinstance(d, dict) and d.get("name")})


def number_text(value: Any) -> str:
    if isinstance(value, bool):
        raise ConversionError(f"{value!r} is a boolean, the property is a number")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value))
    if isinstance(value, str):
        try:
            return number_text(float(value.strip())) if "." in value or "e" in value.lower() else str(int(value.strip()))
        except ValueError:
            pass
    raise ConversionError(f"{value!r} is not a number")


def _bool(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return "true"
    if word in FALSE_WORDS:
        return "false"
    raise ConversionError(f"{value!r} is not true or false")


def _moment(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConversionError(f"{value!r} is not an ISO 8601 date") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    raise ConversionError(f"{value!r} is not a date")


def _date(value: Any) -> str:
    return _moment(value).astimezone(timezone.utc).strftime("%Y-%m-%d")


def _datetime(value: Any) -> str:
    moment = _moment(value).astimezone(timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _option(value: Any, options: list[dict]) -> str:
    """The option whose value or label equals ``value`` (case-insensitive), as its value."""
    text = _bool(value) if isinstance(value, bool) else str(value).strip()
    for option in options:
        if text.lower() in (str(option.get("value", "")).lower(), str(option.get("label", "")).lower()):
            return str(option["value"])
    allowed = ", ".join(str(o.get("value")) for o in options) or "none defined"
    raise ConversionError(f"{value!r} is not one of its options ({allowed})")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def convert(value: Any, definition: dict) -> str:
    """``value`` in the form HubSpot documents for the property's type."""
    kind = definition.get("type")
    if kind == "number":
        return number_text(value)
    if kind == "bool":
        return _bool(value)
    if kind == "date":
        return _date(value)
    if kind == "datetime":
        return _datetime(value)
    if kind == "enumeration":
        options = definition.get("options") or []
        if definition.get("fieldType") == "booleancheckbox" and not options:
            return _bool(value)
        values = value if isinstance(value, list) else [value]
        if definition.get("fieldType") != "checkbox" and len(values) != 1:
            raise ConversionError(f"{value!r} is a list, the property takes one option")
        return ";".join(_option(v, options) for v in values)
    return _text(value)


def prepare(values: dict[str, Any], definitions: dict[str, dict]) -> tuple[dict[str, str], list[str]]:
    """The values HubSpot will accept, and one problem line for each value left out."""
    accepted: dict[str, str] = {}
    problems: list[str] = []
    for name, value in values.items():
        definition = definitions.get(name)
        if definition is None:
            close = difflib.get_close_matches(name, list(definitions), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"properties.{name}: the portal has no contact property {name!r}{hint}")
            continue
        if (definition.get("modificationMetadata") or {}).get("readOnlyValue") or definition.get("calculated"):
            problems.append(f"properties.{name}: {name!r} is read-only in HubSpot")
            continue
        try:
            accepted[name] = convert(value, definition)
        except ConversionError as exc:
            problems.append(f"properties.{name}: not sent, {exc} (HubSpot type {definition.get('type')})")
    return accepted, problems
