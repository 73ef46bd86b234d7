"""The shared normalization steps every source uses: phone numbers and analysis checks."""
from __future__ import annotations

from typing import Any

from functools import lru_cache

import jsonschema
import phonenumbers

from .report import PhoneNumber


def parse_number(value: Any, region: str | None) -> phonenumbers.PhoneNumber | None:
    """A possible phone number parsed from ``value`` (national formats read in ``region``), or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    return _parse(value.strip(), region)


@lru_cache(maxsize=4096)
def _parse(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    """Cached: the platform's own number is the same on every report, and callers call again."""
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    return parsed if phonenumbers.is_possible_number(parsed) else None


def to_e164(value: Any, region: str | None = None) -> str | None:
    """``"06-12345678"`` (region NL) -> ``"+31612345678"``; None for what is not a possible number.

    Plugins use it to compare a CRM's stored numbers with the report's E.164 number.
    """
    parsed = parse_number(value, region)
    return None if parsed is None else phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


class Normalizer:
    """Built once from ``[phone]`` and ``[analysis]``; the schema validator is compiled here."""

    def __init__(self, default_region: str | None = None, analysis_schema: dict | None = None):
        self.default_region = default_region
        self._validator = None
        if analysis_schema:
            cls = jsonschema.validators.validator_for(analysis_schema)
            cls.check_schema(analysis_schema)
            self._validator = cls(analysis_schema)

    def phone(self, raw: Any, name: str | None = None) -> PhoneNumber:
        """E.164 via phonenumbers; an empty or unparseable value keeps its raw form and a null number."""
        text = raw.strip() if isinstance(raw, str) else None
        parsed = parse_number(text, self.default_region)
        if parsed is None:
            return PhoneNumber(number=None, raw=text if text else (raw if isinstance(raw, str) else None), name=name)
        return PhoneNumber(
            number=phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
            raw=text,
            name=name,
            region=phonenumbers.region_code_for_number(parsed),
        )

    def analysis_errors(self, analysis: Any) -> list[str]:
        """Each way ``analysis`` breaks ``[analysis].schema``, as ``path: message`` lines."""
        if self._validator is None or analysis is None:
            return []
        errors = sorted(self._validator.iter_errors(analysis), key=lambda e: list(e.absolute_path))
        return [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]
