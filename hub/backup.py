"""``sovereign-hub db backup``: a consistent copy of a SQLite store, taken while the hub runs.

SQLite's online backup reads the database through a connection, so the copy holds every
committed transaction, those still in the WAL file included, as of one moment; writers carry on
meanwhile. PostgreSQL has its own tool for this (``pg_dump``).
"""
from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from .schema import describe
from .files import open_private
from .store import sqlite_path


class BackupError(Exception):
    """One line that says what is wrong and what to do."""


@dataclass(frozen=True)
class Backup:
    path: Path
    reports: int
    deliveries: int
    revision: str | None
    size_bytes: int


def backup(url: str, dest: Path) -> Backup:
    """Copy the SQLite store at ``url`` to ``dest`` (a new file, readable by its owner only)."""
    source = sqlite_path(url)
    if not url.startswith("sqlite"):
        raise BackupError(f"the store is PostgreSQL ({describe(url)}): back it up with pg_dump, e.g. "
                          f"pg_dump --format=custom --file=hub.dump '{describe(url)}' (restore: pg_restore)")
    if source is None:
        raise BackupError("the store is an in-memory SQLite database: there is nothing on disk to back up")
    if not os.path.exists(source):
        raise BackupError(f"{source}: no such database file (check [store] url)")
    if dest.exists():
        raise BackupError(f"{dest} exists already; give a new file name (a backup never overwrites one)")
    partial = dest.with_name(f".{dest.name}.partial")
    try:
        open_private(str(partial)).close()
        with closing(sqlite3.connect(source, timeout=30)) as src, closing(sqlite3.connect(partial)) as out:
            src.backup(out)
            reports, deliveries = (out.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
                                   for table in ("reports", "deliveries"))
            revision = _revision(out)
        os.replace(partial, dest)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"{source}: cannot back it up ({exc}); is it a Sovereign Hub database?") from None
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"{dest}: cannot write it ({exc.strerror})") from None
    return Backup(dest, reports, deliveries, revision, dest.stat().st_size)


def _revision(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:  # release 0.1.0's tables: no revision recorded yet
        return None
    return row[0] if row else None
