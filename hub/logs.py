"""Structured logs: one JSON object a line, secrets redacted, phone numbers masked."""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from .redaction import scrub


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return scrub(json.dumps(entry, default=str, ensure_ascii=False))


def configure(level: str = "INFO", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel("WARNING")


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields) -> None:
    """``event(log, "report.accepted", report_id=...)``: one structured line."""
    logger.log(level, name, extra={"fields": fields})
