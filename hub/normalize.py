"""The shared normalization steps every source uses: phone numbers and analysis checks."""
from __future__ import annotations

from typing import Any

import jsonschema
import phonenumbers

from .report import PhoneNumber


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
        if not text:
            return PhoneNumber(number=None, raw=raw if isinstance(raw, str) else None, name=name)
        try:
            parsed = phonenumbers.parse(text, self.default_region)
        except phonenumbers.NumberParseException:
            return PhoneNumber(number=None, raw=text, name=name)
        if not phonenumbers.is_possible_number(parsed):
            return PhoneNumber(number=None, raw=text, name=name)
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
