"""Shared fixtures of the core tests: a store on a real SQLite file and on a real PostgreSQL.

``store_url`` (and ``store`` over it) is parametrized: every test that asks for it runs once
against a SQLite file in ``tmp_path`` and once against a PostgreSQL database created for this
test session (``postgresql+psycopg://postgres@127.0.0.1:5432/<unique name>``, dropped at the
end). The PostgreSQL cases are skipped, with the reason, only when no server answers.

The app-level fixtures (``hub_config``, ``app``, ``client``, ``signed_post``, ...) come from
``hub.testing`` and are not redefined here.
"""
from __future__ import annotations

import copy
import os
import sys
import uuid
from pathlib import Path

import pytest

# the answer tests' CRM (a local server and a destination type), importable as ``answers_crm``
sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "answers"))

PG_HOST = os.environ.get("HUB_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("HUB_TEST_PG_PORT", "5432"))
PG_USERS = ("postgres", "root")
PG_MAINTENANCE_DB = "test"


def pytest_configure(config):
    config.addinivalue_line("markers", "postgres: runs against the session's PostgreSQL database")
    config.addinivalue_line("markers", "fresh_venv: makes a virtualenv and pip-installs the hub into it (slow, 30-60 s)")


def _pg_connect(user: str, dbname: str):
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=dbname, connect_timeout=3,
                           autocommit=True)


@pytest.fixture(scope="session")
def pg_database_url():
    """A fresh, uniquely named PostgreSQL database for this session; dropped at the end."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL cases skipped: psycopg is not installed (pip install 'psycopg[binary]')")
    errors = []
    for user in PG_USERS:
        try:
            admin = _pg_connect(user, PG_MAINTENANCE_DB)
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable as this user"
            errors.append(f"{user}: {str(exc).strip().splitlines()[0]}")
            continue
        break
    else:
        pytest.skip(f"PostgreSQL cases skipped: no server reachable at {PG_HOST}:{PG_PORT} "
                    f"(database {PG_MAINTENANCE_DB!r}; {'; '.join(errors)})")
    name = f"hub_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with _pg_connect(user, PG_MAINTENANCE_DB) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _empty_pg_tables(url: str) -> None:
    import sqlalchemy as sa

    from hub.testing import migrated

    engine = sa.create_engine(migrated(url))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE attempts, deliveries, reports RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path: Path) -> str:
    """A store URL on an empty, migrated database: a SQLite file in tmp_path, or the session's PostgreSQL."""
    if request.param == "sqlite":
        from hub.testing import migrated

        return migrated(f"sqlite:///{tmp_path / 'hub.db'}")
    url = request.getfixturevalue("pg_database_url")
    _empty_pg_tables(url)  # tests run one at a time: each starts from empty tables
    return url


@pytest.fixture
def store(store_url):
    from hub.store import Store

    s = Store(store_url)
    yield s
    s.close()


@pytest.fixture
def new_report():
    """``new_report(call_id=None, event=...)``: the full sample, normalized, with a unique call id
    (or the given one) and a fresh report id."""
    from hub.testing import load_sample, normalize_payload

    sample = load_sample("end-of-call-report-full")

    def build(call_id: str | None = None, *, event: str = "end-of-call-report"):
        payload = copy.deepcopy(sample)
        payload["message"]["call"]["id"] = call_id or f"call-{uuid.uuid4()}"
        payload["message"]["type"] = event
        return normalize_payload(payload, report_id=str(uuid.uuid4()))

    return build


@pytest.fixture
def pg_store_url(pg_database_url) -> str:
    """The session's PostgreSQL database with empty tables, for tests that need PostgreSQL only
    (several processes sharing one store: Celery workers)."""
    _empty_pg_tables(pg_database_url)
    return pg_database_url


@pytest.fixture
def new_pg_database(pg_database_url):
    """``new_pg_database()``: the URL of a new, empty PostgreSQL database; all dropped at the end."""
    import psycopg
    import sqlalchemy as sa

    base = sa.engine.make_url(pg_database_url)
    made = []

    def create() -> str:
        name = f"hub_mig_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(host=base.host, port=base.port, user=base.username, dbname="test",
                             autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return base.set(database=name).render_as_string(hide_password=False)

    yield create
    with psycopg.connect(host=base.host, port=base.port, user=base.username, dbname="test", autocommit=True) as admin:
        for name in made:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(autouse=True)
def _full_rate_limits(fresh_rate_limits):
    """Every core test starts with full rate-limit buckets (hub.testing has no autouse fixture)."""
