"""``jsonl``: each report appended as one JSON line to a file, flushed and fsynced."""
from __future__ import annotations

import os
import threading

from marshmallow import Schema, fields

from ..destinations import Destination, Result
from ..errors import Permanent, Retryable
from ..hookspecs import hookimpl
from ..http import RecordedRequest


class JsonlConfig(Schema):
    path = fields.String(required=True)


class JsonlDestination(Destination):
    """Appends under a lock so lines from the dispatcher's threads never interleave.

    A delivery whose line is already written (state ``written``) is not written again;
    a crash between the write and the state save can still repeat one line, so readers
    should key on ``id``.
    """

    type = "jsonl"
    Config = JsonlConfig
    description = "append each report as a JSON line to a local file"
    _lock = threading.Lock()

    def deliver(self, report, ctx):
        path = self.config["path"]
        if ctx.state.get("written"):
            return Result(f"already in {path}")
        line = report.to_json() + "\n"
        if ctx.dry_run:
            ctx.sent.append(RecordedRequest("APPEND", f"file://{os.path.abspath(path)}", {}, report.data))
            return Result(f"would append to {path}")
        try:
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
            with self._lock, open(path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except PermissionError as exc:
            raise Permanent(f"destination {self.name!r}: cannot write {path}: {exc.strerror}") from None
        except OSError as exc:
            raise Retryable(f"destination {self.name!r}: cannot write {path}: {exc.strerror}") from None
        ctx.state["written"] = True
        return Result(f"appended to {path}")


@hookimpl
def register_destinations(register):
    register(JsonlDestination)
