"""Files the hub creates hold personal data or secrets: they are readable by their owner only."""
from __future__ import annotations

import os


def open_private(path: str | os.PathLike):
    """Open a file for reading and appending (binary), creating it with mode 0600.

    An existing file keeps its mode: an operator who widened it on purpose is not overruled.
    """
    return os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+b")
