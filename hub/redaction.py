"""Keeping secrets and customer numbers out of everything a person reads.

Every secret the configuration resolves is registered here, and ``redact`` replaces it
wherever it appears: log lines, recorded delivery errors, CLI output, the dashboard. A secret
URL is registered with its path and its query too, because HTTP libraries name only those in
their errors (urllib3's ``Max retries exceeded with url: /services/T000/B000/...``).

``scrub`` also masks phone numbers: anything that looks like one, and, inside ``in_play(...)``
(the dispatcher wraps each attempt in it), the numbers named there in every form a CRM or a
library may echo them: E.164, ``0031...``, ``+31 (0)6 ...``, the national ``06...`` and the bare
national number ``6...``. Credentials obtained at run time (an OAuth access token sent in an
Authorization header) are hidden inside the same block once ``hold_secret`` has seen them.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import re
import threading
from dataclasses import dataclass
from typing import Iterable, Iterator
from urllib.parse import urlsplit

import phonenumbers

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern | None = None

# A run of 7-15 digits with a leading + (E.164), optionally grouped by spaces or dashes, or a
# national number with its trunk 0 (06-12345678, 020 123 4567) as CRMs echo them back in errors.
# Also the international forms with 00 and with a bracketed trunk 0 (``+31 (0)6 12345678``).
_PHONE = re.compile(r"\+\d{1,3} ?\(0\)[\d \-]{5,16}\d|\+\d[\d \-]{5,18}\d"
                    r"|(?<![\w.:/-])00[1-9]\d{6,14}(?![\w.:/-])"
                    r"|(?<![\w.:/-])0\d(?:[ \-]?\d){7,10}(?![\w.:/-])")
# between digits: spaces, dots, dashes, slashes, brackets, and the same percent- or form-encoded
_SEPARATORS = r"(?:[\s.\-/()+]|%2[089])*"


class _NumberInPlay:
    """A number ``in_play`` masks: its pattern is built the first time a text could hold it.

    A text with fewer digits than the number's national part cannot hold it in any form. A
    successful attempt scrubs only such texts ("POST [secret] -> 200") unless an INFO log line
    is written (its timestamp has the digits): parsing the number and building its pattern was a
    quarter of an attempt's CPU in a profile of webhook attempts logged at WARNING.
    """

    def __init__(self, number: str):
        self.number, self.masked = number, mask_phone(number) or ""
        # the national part is the number's digits less a country code of at most 3
        self.fewest_digits = max(1, sum(c.isdigit() for c in number) - 3)

    @functools.cached_property
    def pattern(self) -> re.Pattern | None:
        return number_pattern(self.number)

    def sub(self, text: str) -> str:
        if sum(c.isdigit() for c in text) < self.fewest_digits or self.pattern is None:
            return text
        return self.pattern.sub(self.masked, text)


@dataclass(frozen=True)
class _InPlay:
    numbers: tuple[_NumberInPlay, ...] = ()
    secrets: frozenset[str] | set[str] = frozenset()


_in_play: contextvars.ContextVar[_InPlay] = contextvars.ContextVar("in_play", default=_InPlay())


def register_secret(value: str) -> None:
    """Remember ``value`` so ``redact`` hides it; short values would mask ordinary words.

    A URL is remembered with its path and its query as well (each if long enough).
    """
    global _pattern
    if not isinstance(value, str) or len(value) < 6:
        return
    parts = {value, *_url_parts(value)}
    with _lock:
        if parts <= _secrets:
            return
        _secrets.update(p for p in parts if len(p) >= 6)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def _url_parts(value: str) -> list[str]:
    """A secret URL's path and query, and the token-like parts of them, if it has any: a URL
    such as ``https://example.com/calls`` hides nothing in its path, and ``/calls`` must not be
    redacted everywhere else."""
    try:
        url = urlsplit(value)
    except ValueError:
        return []
    if url.scheme not in ("http", "https") or not url.netloc:
        return []
    in_path = [part for part in url.path.split("/") if _token_like(part)]
    in_query = [part for part in re.split(r"[&=;]", url.query) if _token_like(part)]
    if not in_path and not in_query:
        return []
    tail = url.path + (f"?{url.query}" if url.query else "")
    return [*in_path, *in_query, tail, *([url.path] if in_path else []), *([url.query] if in_query else [])]


def _token_like(part: str) -> bool:
    """Long, or letters mixed with digits: a key, an id that grants access, a signature."""
    return len(part) >= 20 or (len(part) >= 6 and any(c.isdigit() for c in part) and any(c.isalpha() for c in part))


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


def number_pattern(number: str) -> re.Pattern | None:
    """Every written form of the E.164 ``number``, separators and all; None if it is not one."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    national = phonenumbers.national_significant_number(parsed)
    if not national:
        return None
    country = _SEPARATORS.join(str(parsed.country_code))
    prefix = (rf"(?:(?:(?:\+|00|%2[bB]){_SEPARATORS})?{country}{_SEPARATORS}(?:\(?0\)?{_SEPARATORS})?"
              rf"|0{_SEPARATORS})?")
    # not inside a longer run of digits, unless what precedes is a percent-escape (%27, a quote)
    return re.compile(rf"(?:(?<=%[0-9A-Fa-f]{{2}})|(?<!\d)){prefix}{_SEPARATORS.join(national)}(?!\d)")


@contextlib.contextmanager
def in_play(numbers: Iterable[str | None] = ()) -> Iterator[None]:
    """Within the block (this thread or task), ``scrub`` masks these numbers in every form, and
    hides the secrets ``hold_secret`` is given."""
    outer = _in_play.get()
    token = _in_play.set(_InPlay(outer.numbers + tuple(_NumberInPlay(n) for n in numbers if n), set(outer.secrets)))
    try:
        yield
    finally:
        _in_play.reset(token)


def hold_secret(value: str | None) -> None:
    """Hide ``value`` (and what follows its auth scheme) in the enclosing ``in_play`` block."""
    secrets = _in_play.get().secrets
    if not isinstance(secrets, set) or not value:
        return
    for part in {value, value.partition(" ")[2]}:
        if len(part) >= 6:
            secrets.add(part)


def scrub(text: str) -> str:
    """Redact secrets, mask the numbers in play in any form, and anything else that looks like a
    phone number."""
    if not text:
        return text
    text = redact(text)
    current = _in_play.get()
    for secret in sorted(current.secrets, key=len, reverse=True):
        text = text.replace(secret, "[secret]")
    for number in current.numbers:
        text = number.sub(text)
    return _PHONE.sub(lambda m: mask_phone(m.group(0)) or "", text)
