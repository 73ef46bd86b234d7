"""Keeping secrets and customer numbers out of everything a person reads.

Every secret the configuration resolves is registered here, and ``redact`` replaces it
wherever it appears: log lines, recorded delivery errors, CLI output, the dashboard.
"""
from __future__ import annotations

import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern | None = None

# A run of 7-15 digits with a leading + (E.164), optionally grouped by spaces or dashes, or a
# national number with its trunk 0 (06-12345678, 020 123 4567) as CRMs echo them back in errors.
_PHONE = re.compile(r"\+\d[\d \-]{5,18}\d|(?<![\w.:/-])0\d(?:[ \-]?\d){7,10}(?![\w.:/-])")


def register_secret(value: str) -> None:
    """Remember ``value`` so ``redact`` hides it; short values would mask ordinary words."""
    global _pattern
    if not isinstance(value, str) or len(value) < 6:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    if _pattern is None or not text:
        return text
    return _pattern.sub("[secret]", text)


def mask_phone(number: str | None) -> str | None:
    """``+31612345678`` -> ``+316*****678``: enough to tell calls apart, not to dial."""
    if not number:
        return number
    digits = re.sub(r"\D", "", number)
    if len(digits) <= 5:
        return "*" * len(digits)
    plus = "+" if number.lstrip().startswith("+") else ""
    return plus + digits[:3] + "*" * (len(digits) - 6) + digits[-3:]


def scrub(text: str) -> str:
    """Redact secrets and mask anything that looks like an international phone number."""
    return _PHONE.sub(lambda m: mask_phone(m.group(0)) or "", redact(text))
