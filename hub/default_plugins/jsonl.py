"""``jsonl``: each report appended as one JSON line to a file, flushed and fsynced."""
from __future__ import annotations

import fcntl
import os
import threading

from marshmallow import Schema, fields

from ..destinations import Destination, Result
from ..errors import Permanent, Retryable
from ..files import open_private
from ..hookspecs import hookimpl
from ..http import RecordedRequest


class JsonlConfig(Schema):
    path = fields.String(required=True)


def _cut_torn_tail(fh) -> None:
    """A process killed mid-write leaves a last line without its newline: cut it off, so the
    next line starts on a line of its own (the torn line's delivery is written again)."""
    size = fh.seek(0, os.SEEK_END)
    if size == 0:
        return
    fh.seek(size - 1)
    if fh.read(1) == b"\n":
        return
    position = size
    while position > 0:
        start = max(0, position - 65536)
        fh.seek(start)
        newline = fh.read(position - start).rfind(b"\n")
        if newline >= 0:
            fh.truncate(start + newline + 1)
            return
        position = start
    fh.truncate(0)


class JsonlDestination(Destination):
    """Appends under a lock (threads) and an flock (processes) so lines never interleave.

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
        line = (report.to_json() + "\n").encode()
        if ctx.dry_run:
            ctx.sent.append(RecordedRequest("APPEND", f"file://{os.path.abspath(path)}", {}, report.data))
            return Result(f"would append to {path}")
        try:
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
            with self._lock, open_private(path) as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                _cut_torn_tail(fh)
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except PermissionError as exc:
            raise Permanent(f"destination {self.name!r}: cannot write {path}: {exc.strerror}") from None
        except OSError as exc:
            raise Retryable(f"destination {self.name!r}: cannot write {path}: {exc.strerror}") from None
        ctx.state["written"] = True
        return Result(f"appended to {path}")

    def test_connection(self, ctx):
        """The file can be appended to (or, absent, created in an existing folder); nothing is written."""
        path = os.path.abspath(self.config["path"])
        directory = os.path.dirname(path)
        target = path if os.path.exists(path) else directory
        if not os.path.isdir(directory):
            nearest = directory
            while not os.path.isdir(nearest):
                nearest = os.path.dirname(nearest)
            target = nearest  # delivery makes the missing folders
        if not os.access(target, os.W_OK):
            raise Permanent(f"destination {self.name!r}: cannot write {path}: permission denied on {target}")
        return f"{path} can be appended to" if target == path else f"{path} will be created"


@hookimpl
def register_destinations(register):
    register(JsonlDestination)
