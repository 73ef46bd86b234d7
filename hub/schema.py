"""The store's schema lifecycle: Alembic migrations are its one owner.

No web or worker process creates or alters a table. ``upgrade`` (``sovereign-hub db upgrade``,
and ``serve`` once before it starts anything) applies the pending revisions under a lock:
an flock on ``<db>.lock`` for SQLite (the file the store's writers queue on) and a
transaction-level advisory lock on PostgreSQL, so two upgrades at once run one after the other
and the second finds nothing to do. Every other process calls ``require_current`` and refuses
to run on a schema that is behind or ahead of the code; a newer database is never touched.
"""
from __future__ import annotations

import fcntl
import functools
import logging
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

from .files import open_private
from .store import make_engine, sqlite_path

MIGRATIONS = Path(__file__).parent / "migrations"
# The tables of release 0.1.0, which made them without recording a revision (revision "0001").
RELEASE_0_1_TABLES = {
    "reports": {"id", "source", "event", "call_id", "occurred_at", "received_at", "customer_number", "data"},
    "deliveries": {"id", "report_id", "destination", "status", "attempts", "next_attempt_at", "lease_until",
                   "lease_owner", "state", "last_error", "result", "created_at", "updated_at"},
    "attempts": {"id", "delivery_id", "number", "started_at", "duration_ms", "outcome", "http_status", "error"},
}
_PG_LOCK_KEY = 0x50B5_1C4B  # the hub's pg_advisory_xact_lock key for schema changes (any constant would do)
UPGRADE_COMMAND = "sovereign-hub db upgrade"
logging.getLogger("alembic").setLevel(logging.WARNING)  # its "Context impl" lines; the CLI says what ran


class SchemaError(Exception):
    """The store cannot be used as it is; the message is one line that names the fix."""


@dataclass(frozen=True)
class Revision:
    id: str
    description: str


@dataclass(frozen=True)
class SchemaState:
    database: str | None  # the database's revision; None for an empty database
    code: str  # the newest revision this release knows
    legacy: bool = False  # 0.1.0's tables, not yet recorded as a revision

    @property
    def current(self) -> bool:
        return self.database == self.code and not self.legacy

    @property
    def summary(self) -> str:
        """What the database holds against what the code needs, in one phrase: the words of
        ``db current``, ``check-config`` and a process that refuses to start."""
        if self.current:
            return f"schema revision {self.database} (the newest)"
        have = "no schema (an empty database)" if self.database is None else (
            "release 0.1.0's tables, not yet recorded as a revision" if self.legacy
            else f"schema revision {self.database}")
        return f"{have}; this release needs revision {self.code}"


def _config(connection=None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@functools.cache  # the revisions shipped with the code: read once per process
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def code_revision() -> str:
    return _scripts().get_current_head()


def history() -> list[Revision]:
    """Every revision this release knows, oldest first."""
    revisions = list(_scripts().walk_revisions())
    return [Revision(r.revision, (r.doc or "").strip().splitlines()[0]) for r in reversed(revisions)]


def describe(url: str) -> str:
    """The store URL without its password, for messages."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


@contextmanager
def _migration_engine(url: str):
    """An engine for schema changes. On SQLite: transactional DDL (an explicit BEGIN, which
    pysqlite leaves out before CREATE/ALTER) and no foreign-key checks while a table is copied."""
    engine = make_engine(url, foreign_keys=False)
    if engine.dialect.name == "sqlite":
        @sa.event.listens_for(engine, "connect")
        def _no_implicit_transactions(dbapi_connection, _record):
            dbapi_connection.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _begin_immediate(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        yield engine
    finally:
        engine.dispose()


def _state(conn, *, again: bool = True) -> SchemaState:
    """What the database holds. Each read sees what was committed when it ran, and an upgrade
    may commit between two of them: so the revision is read only once ``alembic_version`` is
    seen, and tables that look foreign are looked at once more before they are called so."""
    code = code_revision()
    tables = set(sa.inspect(conn).get_table_names())
    if "alembic_version" in tables:
        return SchemaState(MigrationContext.configure(conn).get_current_revision(), code)
    if not tables:
        return SchemaState(None, code)
    inspector = sa.inspect(conn)
    columns = {name: {c["name"] for c in inspector.get_columns(name)} for name in tables}
    if columns == RELEASE_0_1_TABLES:
        return SchemaState("0001", code, legacy=True)
    if again:  # an upgrade that committed after the first look has recorded its revision
        return _state(conn, again=False)
    raise SchemaError(f"the database holds tables that are not Sovereign Hub's ({', '.join(sorted(tables))}) "
                      f"and no schema revision: point [store] url at an empty database or at a hub's own")


def _known(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is not None
    except Exception:  # noqa: BLE001 - alembic raises several kinds for "not one of mine"
        return False


def _check_known(state: SchemaState) -> None:
    if state.database is not None and not _known(state.database):
        raise SchemaError(f"the database is at schema revision {state.database}, which this release does not "
                          f"know (its newest is {state.code}): it was written by a newer release of Sovereign "
                          f"Hub; run that release, or restore the backup made before it upgraded")


def _unusable(url: str, exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    if "file is not a database" in text or "malformed" in text:
        return (f"{sqlite_path(url)} is not a SQLite database the hub can read ({text}); restore it from a "
                f"backup, or point [store] url at another file")
    return f"cannot open the store {describe(url)}: {text}"


@contextmanager
def _connection(url: str):
    """A connection for schema work; a store that cannot be opened or read is one ``SchemaError``."""
    with _migration_engine(url) as engine:
        try:
            with engine.connect() as conn:
                yield conn
        except (SQLAlchemyError, sqlite3.Error) as exc:
            raise SchemaError(_unusable(url, exc)) from None


@contextmanager
def _sqlite_lock(url: str):
    """Taken before SQLite's BEGIN: upgrades queue on the lock file the store's writers use."""
    path = sqlite_path(url)
    if path is None:
        yield
        return
    with open_private(f"{path}.lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def state(url: str) -> SchemaState:
    """The revision of the database at ``url`` and of the code (reads only)."""
    with _connection(url) as conn:
        found = _state(conn)
    _check_known(found)
    return found


@dataclass(frozen=True)
class Upgraded:
    before: str | None  # None: an empty database, or 0.1.0's unrecorded tables
    after: str
    applied: list[str]  # the revisions run, oldest first
    adopted: bool  # 0.1.0's tables, recorded as revision 0001 as they were


def upgrade(url: str, to: str = "head") -> Upgraded:
    """Apply every pending revision (up to ``to``: tests build older databases) in one
    transaction, under the schema lock. Idempotent."""
    with _connection(url) as conn, _sqlite_lock(url), conn.begin():
        if conn.dialect.name == "postgresql":  # held until the commit
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        found = _state(conn)
        _check_known(found)
        if found.legacy:
            command.stamp(_config(conn), found.database)
        target = found.code if to == "head" else to
        if found.database != target:
            command.upgrade(_config(conn), target)
    ids = [r.id for r in history()]
    start = ids.index(found.database) + 1 if found.database else 0
    return Upgraded(None if found.legacy else found.database, target, ids[start:ids.index(target) + 1],
                    found.legacy)


def require_current(url: str, *, wait_seconds: float = 0.0, poll: float = 0.25) -> SchemaState:
    """Refuse (``SchemaError``) a database whose schema is not the code's.

    A database that is behind is waited for up to ``wait_seconds``: a ``worker`` started at the
    same moment as ``serve`` (or as a deployment's ``db upgrade``) finds it empty and waits for
    the upgrade to finish instead of failing. One that is ahead is refused at once.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        found = state(url)
        if found.current:
            return found
        if time.monotonic() >= deadline:
            break
        time.sleep(poll)
    raise SchemaError(f"the store {describe(url)} has {found.summary}: run `{UPGRADE_COMMAND}`")
