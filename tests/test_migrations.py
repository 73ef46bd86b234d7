"""The schema lifecycle: migrations own the schema, a 0.1.0 database upgrades in place, the
commands, the refusals, and events that differ only by their key.

Release 0.1.0's databases are in tests/fixtures/release-0.1.0 as SQL dumps, written by 0.1.0's
own code (make_dumps.py there says how); each test loads one into a new database.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from hub import schema
from hub.cli import cli
from hub.store import metadata
from hub.testing import TEST_SECRET, load_sample, signed_headers

RELEASE_0_1 = Path(__file__).parent / "fixtures" / "release-0.1.0"
TABLES = ("reports", "deliveries", "attempts")
REVISIONS = [r.id for r in schema.history()]  # oldest first
HEAD = REVISIONS[-1]


# --- helpers ---------------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request, tmp_path):
    """A brand-new, empty database (not migrated): a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return request.getfixturevalue("new_pg_database")()


def load_release_0_1(url: str) -> None:
    """Load 0.1.0's dump into the empty database at ``url``, as that release left it."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        import sqlite3

        with sqlite3.connect(parsed.database) as conn:
            conn.executescript((RELEASE_0_1 / "sqlite.sql").read_text())
        return
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", parsed.host, "-p", str(parsed.port),
                    "-U", parsed.username, "-d", parsed.database, "-f", str(RELEASE_0_1 / "postgresql.sql")],
                   check=True, capture_output=True)


def rows(url: str) -> dict[str, list[dict]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {table: [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY id"))]
                    for table in TABLES}
    finally:
        engine.dispose()


def as_before(after: dict[str, list[dict]], before: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """``after``'s rows with only the columns ``before``'s had (later revisions add columns)."""
    return {table: [{k: row[k] for k in (before[table][0] if before[table] else row)} for row in found]
            for table, found in after.items()}


def shape(url: str) -> dict:
    """Tables, columns (type, nullability), keys and indexes, as the database reports them."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        return {table: {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "foreign_keys": sorted((tuple(f["constrained_columns"]), f["referred_table"])
                                   for f in inspector.get_foreign_keys(table)),
            "unique": sorted((u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(table)),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                              for i in inspector.get_indexes(table) if not i["name"].startswith("sqlite_autoindex")),
        } for table in sorted(set(inspector.get_table_names()) - {"alembic_version"})}
    finally:
        engine.dispose()


def write_config(path: Path, url: str, *, auto_migrate: bool = True, wait: float = 0, extra: str = "") -> Path:
    path.write_text(f'[store]\nurl = {json.dumps(url)}\nauto_migrate = {str(auto_migrate).lower()}\n'
                    f'schema_wait_seconds = {wait}\n[sources.hms]\nsecret = {json.dumps(TEST_SECRET)}\n{extra}')
    return path


def hub_command(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def hub_commands(commands, config: Path) -> list[subprocess.CompletedProcess]:
    """Each of ``commands`` (argument lists) with ``-c config``, run side by side."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda command: hub_command(*command, "-c", config), commands))


def one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def version_of(url: str) -> str | None:
    return schema.state(url).database


# --- one owner: the migrations ---------------------------------------------------------------------

def test_the_migrations_build_exactly_the_tables_the_code_uses(store_url):
    """``store_url`` is migrated by ``hub.testing.migrated``; the code's tables must be what it made."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata) == []
    finally:
        engine.dispose()


def test_the_first_revision_is_release_0_1_0s_schema_exactly(empty_url, tmp_path, request):
    made_by_0_1 = request.getfixturevalue("new_pg_database")() if empty_url.startswith("postgresql") else \
        f"sqlite:///{tmp_path / 'release.db'}"
    load_release_0_1(made_by_0_1)
    schema.upgrade(empty_url, to="0001")
    assert shape(empty_url) == shape(made_by_0_1)


def test_no_process_creates_a_table_at_start(tmp_path):
    """The store, the Hub and the app open an empty database without creating anything; the Hub
    refuses it in one line naming the command."""
    from hub.app import create_app
    from hub.store import Store

    url = f"sqlite:///{tmp_path / 'hub.db'}"
    Store(url).close()
    with pytest.raises(schema.SchemaError) as info:
        create_app(config_data={"store": {"url": url}, "sources": {"hms": {"secret": TEST_SECRET}}})
    assert "no schema (an empty database)" in str(info.value) and "sovereign-hub db upgrade" in str(info.value)
    assert shape(url) == {}


# --- upgrading a database that release 0.1.0 wrote --------------------------------------------------

def test_a_release_0_1_0_database_upgrades_in_place_with_every_row_intact(empty_url, tmp_path):
    load_release_0_1(empty_url)
    before = rows(empty_url)
    assert [len(before[t]) for t in TABLES] == [4, 5, 4]
    assert {d["status"] for d in before["deliveries"]} == {"pending", "running", "succeeded", "dead"}

    config = write_config(tmp_path / "hub.toml", empty_url)
    result = CliRunner().invoke(cli, ["db", "upgrade", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "release 0.1.0's tables recorded as revision 0001" in result.output
    assert f"applied: {', '.join(REVISIONS[1:])}" in result.output

    after = rows(empty_url)
    keys = {r["id"]: r.pop("event_key") for r in after["reports"]}
    order = [(d.pop("order_key"), d.pop("order_at")) for d in after["deliveries"]]
    assert after == before, "every row and every value is as 0.1.0 wrote it"
    assert set(order) == {(None, None)}, "deliveries stored before order keys have none"
    assert keys == {"11111111-1111-4111-8111-111111111111": "", "22222222-2222-4222-8222-222222222222": "",
                    "33333333-3333-4333-8333-333333333333": "ended-with-error",
                    "44444444-4444-4444-8444-444444444444": ""}
    assert schema.state(empty_url).current


def test_the_hub_works_on_an_upgraded_release_0_1_0_database(empty_url, tmp_path):
    from hub.app import create_app

    load_release_0_1(empty_url)
    schema.upgrade(empty_url)
    out = tmp_path / "out.jsonl"
    destinations = {name: {"type": "jsonl", "path": str(out), "events": ["end-of-call-report", "status-update"]}
                    for name in ("crm", "slack", "file")}
    app = create_app(config_data={"store": {"url": empty_url}, "sources": {"hms": {"secret": TEST_SECRET}},
                                  "admin": {"token": "test-admin-token-0123456789"}, "destinations": destinations})
    try:
        client = app.test_client()
        # due now: the status-update's slack (never tried) and the web call's crm (its worker died)
        assert app.hub.dispatcher.run_due() == 2
        delivered = sorted((json.loads(line)["id"], json.loads(line)["event"]) for line in out.read_text().splitlines())
        assert delivered == [("22222222-2222-4222-8222-222222222222", "end-of-call-report"),
                             ("33333333-3333-4333-8333-333333333333", "status-update")]
        # the old status-update was "ended-with-error"; another status of the same call is a new event
        update = load_sample("status-update")
        update["message"]["call"].update(id="call-0001", status="in-progress")
        body = json.dumps(update).encode()
        first = client.post("/webhooks/hms", data=body, headers=signed_headers(body, event="status-update"))
        again = client.post("/webhooks/hms", data=body, headers=signed_headers(body, event="status-update"))
        assert first.status_code == 202 and first.get_json()["status"] == "accepted"
        assert again.get_json()["status"] == "duplicate"
        old = load_sample("status-update")
        old["message"]["call"]["id"] = "call-0001"
        body = json.dumps(old).encode()
        replayed = client.post("/webhooks/hms", data=body, headers=signed_headers(body, event="status-update"))
        assert replayed.get_json() == {"status": "duplicate", "report_id": "33333333-3333-4333-8333-333333333333"}
        # the dead slack delivery of 0.1.0 can be retried, with its state kept
        auth = {"Authorization": "Bearer test-admin-token-0123456789"}
        dead = client.get("/api/deliveries?status=dead", headers=auth).get_json()["deliveries"]
        assert [d["destination"] for d in dead] == ["slack"]
        assert client.post(f"/api/deliveries/{dead[0]['id']}/retry", headers=auth).status_code == 202
        assert app.hub.dispatcher.run_due() == 4  # the retried one, and the new status-update to all three
    finally:
        app.hub.close()


# --- the commands --------------------------------------------------------------------------------

def test_db_upgrade_is_idempotent_and_current_and_history_say_where_things_are(empty_url, tmp_path):
    config = write_config(tmp_path / "hub.toml", empty_url)
    runner = CliRunner()
    first = runner.invoke(cli, ["db", "upgrade", "-c", str(config)])
    assert first.exit_code == 0
    assert f"upgraded to schema revision {HEAD}; applied: {', '.join(REVISIONS)}" in first.output
    second = runner.invoke(cli, ["db", "upgrade", "-c", str(config)])
    assert second.exit_code == 0 and f"schema revision {HEAD}, the newest; nothing to do" in second.output
    current = runner.invoke(cli, ["db", "current", "-c", str(config)])
    assert current.exit_code == 0
    assert current.output.splitlines()[0].startswith(f"database: schema revision {HEAD} (the newest)")
    assert current.output.splitlines()[1] == f"code:     schema revision {HEAD}"
    history = runner.invoke(cli, ["db", "history", "-c", str(config)]).output.splitlines()
    assert history[0].startswith("0001  The schema of release 0.1.0")
    assert history[1].startswith("0002  status-update (and tool-calls) events are distinct events")
    assert history[2].startswith("0003  Scheduled jobs run once across every process")
    assert history[-1].endswith("<- the database") and len(history) == len(REVISIONS)


def test_two_upgrades_at_once_take_turns(empty_url, tmp_path):
    """Both exit 0; the lock makes one apply every revision and the other find nothing to do."""
    config = write_config(tmp_path / "hub.toml", empty_url)
    procs = [subprocess.Popen([sys.executable, "-m", "hub", "db", "upgrade", "-c", str(config)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert sum(f"applied: {', '.join(REVISIONS)}" in o for o in outputs) == 1, outputs
    assert sum("nothing to do" in o for o in outputs) == 2, outputs
    assert version_of(empty_url) == HEAD


def test_check_config_says_the_schema_is_behind_without_failing(empty_url, tmp_path):
    config = write_config(tmp_path / "hub.toml", empty_url, auto_migrate=False)
    result = CliRunner().invoke(cli, ["check-config", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert f"warning: store: no schema (an empty database); this release needs revision {HEAD}: run " \
           "`sovereign-hub db upgrade` before starting the hub" in result.output


# --- refusing ---------------------------------------------------------------------------------------

def test_a_process_refuses_a_schema_that_is_behind_naming_both_revisions_and_the_fix(empty_url, tmp_path):
    schema.upgrade(empty_url, to="0001")
    config = write_config(tmp_path / "hub.toml", empty_url, auto_migrate=False)
    shown = schema.describe(empty_url)
    expected = (f"error: the store {shown} has schema revision 0001; this release needs revision {HEAD}: "
                f"run `sovereign-hub db upgrade`")
    commands = [["serve"], ["serve", "--web-only"], ["worker"], ["reports", "list"]]
    for command, done in zip(commands, hub_commands(commands, config)):
        assert one_error_line(done) == expected, command
    assert version_of(empty_url) == "0001"


def test_serve_web_only_never_migrates_even_with_auto_migrate(tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = write_config(tmp_path / "hub.toml", url, auto_migrate=True)
    assert "has no schema (an empty database)" in one_error_line(hub_command("serve", "--web-only", "-c", config))
    assert shape(url) == {}


def test_a_database_from_a_newer_release_is_refused_and_never_touched(empty_url, tmp_path):
    schema.upgrade(empty_url)
    engine = sa.create_engine(empty_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    before = shape(empty_url)
    config = write_config(tmp_path / "hub.toml", empty_url)
    commands = [["db", "upgrade"], ["serve"], ["worker"], ["db", "current"]]
    for command, done in zip(commands, hub_commands(commands, config)):
        line = one_error_line(done)
        assert line == ("error: the database is at schema revision 0099, which this release does not know "
                        f"(its newest is {HEAD}): it was written by a newer release of Sovereign Hub; run that "
                        "release, or restore the backup made before it upgraded"), command
    assert version_of_raw(empty_url) == "0099" and shape(empty_url) == before


def version_of_raw(url: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def test_a_corrupt_database_file_is_one_line_and_left_as_it_was(tmp_path):
    db = tmp_path / "hub.db"
    db.write_bytes(b"this is not a database, just some bytes " * 200)
    before = db.read_bytes()
    config = write_config(tmp_path / "hub.toml", f"sqlite:///{db}")
    commands = [["db", "upgrade"], ["serve"], ["db", "current"], ["check-config"]]
    for command, done in zip(commands, hub_commands(commands, config)):
        line = one_error_line(done)
        assert line == (f"error: {db} is not a SQLite database the hub can read (file is not a database); "
                        f"restore it from a backup, or point [store] url at another file"), command
    assert db.read_bytes() == before


def test_a_foreign_database_is_one_line_and_left_as_it_was(tmp_path):
    db = tmp_path / "crm.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)"))
        conn.execute(sa.text("INSERT INTO customers (name) VALUES ('Ada')"))
    engine.dispose()
    config = write_config(tmp_path / "hub.toml", f"sqlite:///{db}")
    line = one_error_line(hub_command("db", "upgrade", "-c", config))
    assert line == ("error: the database holds tables that are not Sovereign Hub's (customers) and no schema "
                    "revision: point [store] url at an empty database or at a hub's own")
    assert list(shape(f"sqlite:///{db}")) == ["customers"]


def test_an_unreachable_postgresql_is_one_line_without_its_password(tmp_path):
    config = write_config(tmp_path / "hub.toml", "postgresql+psycopg://hub:s3cret-pw@127.0.0.1:1/hub")
    commands = [["db", "upgrade"], ["serve"], ["worker"]]
    for command, done in zip(commands, hub_commands(commands, config)):
        line = one_error_line(done)
        assert line.startswith("error: cannot open the store postgresql+psycopg://hub:***@127.0.0.1:1/hub: "), line
        assert "s3cret-pw" not in done.stderr + done.stdout


def test_a_worker_waits_for_an_upgrade_under_way_then_starts(tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = write_config(tmp_path / "hub.toml", url, wait=30, extra='[logging]\nlevel = "INFO"\n')
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "hub", "worker", "-c", str(config)], stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        time.sleep(2)
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        assert "dispatcher.started" not in (tmp_path / "worker.log").read_text()
        assert CliRunner().invoke(cli, ["db", "upgrade", "-c", str(config)]).exit_code == 0
        deadline = time.monotonic() + 15
        while "dispatcher.started" not in (tmp_path / "worker.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "dispatcher.started" in (tmp_path / "worker.log").read_text()
        assert worker.poll() is None
    finally:
        worker.terminate()
        worker.wait(20)


# --- events that differ by their key --------------------------------------------------------------

def status_update(call_id: str, status: str, error: str | None = None) -> dict:
    payload = load_sample("status-update")
    payload["message"]["call"].update(id=call_id, status=status)
    payload["message"]["error"] = error
    return payload


def test_every_status_update_of_a_call_is_its_own_event_and_a_failed_call_alert_fires(hub_config, tmp_path):
    from hub.app import create_app
    from hub.testing import migrated

    alerts = tmp_path / "alerts.jsonl"
    hub_config["destinations"] = {"failed_calls": {
        "type": "jsonl", "path": str(alerts), "events": ["status-update"],
        "when": "call.status == 'ended-with-error'"}}
    migrated(hub_config["store"]["url"])
    app = create_app(config_data=hub_config)
    try:
        client = app.test_client()

        def post(payload):
            body = json.dumps(payload).encode()
            return client.post("/webhooks/hms", data=body, headers=signed_headers(body, event="status-update")).get_json()

        answers = [post(status_update("call-7", "ringing")), post(status_update("call-7", "in-progress")),
                   post(status_update("call-7", "ended-with-error", "SIP 503")),
                   post(status_update("call-7", "ended-with-error", "SIP 503"))]
        assert [a["status"] for a in answers] == ["ignored", "ignored", "accepted", "duplicate"]
        assert answers[3]["report_id"] == answers[2]["report_id"]
        assert len({a["report_id"] for a in answers}) == 3
        assert app.hub.dispatcher.run_due() == 1
        [alert] = [json.loads(line) for line in alerts.read_text().splitlines()]
        assert (alert["call"]["status"], alert["error"]) == ("ended-with-error", "SIP 503")
    finally:
        app.hub.close()


def test_tool_calls_events_are_told_apart_by_their_tool_call_ids(signed_post):
    def tool_calls(*ids):
        payload = load_sample("status-update")
        payload["message"].update(type="tool-calls", tool_call_list=[
            {"id": i, "type": "function", "function": {"name": "lookup_customer", "arguments": {}}} for i in ids])
        payload["message"]["call"]["status"] = "in-progress"
        return payload

    first = signed_post(tool_calls("tool_b", "tool_a")).get_json()
    same = signed_post(tool_calls("tool_a", "tool_b")).get_json()
    other = signed_post(tool_calls("tool_c")).get_json()
    assert (first["status"], same["status"], other["status"]) == ("ignored", "duplicate", "ignored")
    assert same["report_id"] == first["report_id"] != other["report_id"]


def test_the_hms_event_key(tmp_path):
    from hub.sources.hms import HmsSource

    source = HmsSource()
    long_ids = [f"tool_{n:04d}_{'x' * 20}" for n in range(20)]
    key = source.event_key_of({"message": {"type": "tool-calls", "tool_call_list": [{"id": i} for i in long_ids]}})
    assert key.startswith("sha256:") and len(key) == 71
    assert source.event_key_of({"message": {"type": "end-of-call-report", "call": {"status": "ended"}}}) == ""
    assert source.event_key_of({"message": {"type": "status-update", "call": {}}}) == ""


# --- backups ------------------------------------------------------------------------------------------

def test_db_backup_copies_a_running_store_consistently(app, tmp_path, new_report):
    """Reports are written while the backup runs; the copy is whole, holds what it says, and is 0600."""
    import sqlite3
    import threading

    store = app.hub.store
    stop = threading.Event()

    def write():
        while not stop.is_set():
            store.insert_report(new_report(), ["a", "b"])

    for _ in range(50):
        store.insert_report(new_report(), ["a"])
    writer = threading.Thread(target=write)
    writer.start()
    try:
        config = write_config(tmp_path / "hub.toml", store.url)
        result = CliRunner().invoke(cli, ["db", "backup", str(tmp_path / "copy.db"), "-c", str(config)])
    finally:
        stop.set()
        writer.join()
    assert result.exit_code == 0, result.output
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        reports = copy.execute("SELECT count(*) FROM reports").fetchone()[0]
        deliveries = copy.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        orphans = copy.execute("SELECT count(*) FROM deliveries WHERE report_id NOT IN "
                               "(SELECT id FROM reports)").fetchone()[0]
    assert reports >= 50 and orphans == 0
    assert result.output.startswith(f"{tmp_path / 'copy.db'}: {reports} report(s), {deliveries} deliveries, "
                                    f"schema revision {HEAD}, ")
    assert (tmp_path / "copy.db").stat().st_mode & 0o777 == 0o600
    again = CliRunner().invoke(cli, ["db", "backup", str(tmp_path / "copy.db"), "-c", str(config)])
    assert again.exit_code == 1 and "exists already" in again.output


def test_db_backup_of_postgresql_points_to_pg_dump(tmp_path):
    config = write_config(tmp_path / "hub.toml", "postgresql+psycopg://hub:s3cret-pw@db.internal:5432/hub")
    result = CliRunner().invoke(cli, ["db", "backup", str(tmp_path / "x.dump"), "-c", str(config)])
    assert result.exit_code == 1
    assert "back it up with pg_dump, e.g. pg_dump --format=custom --file=hub.dump " \
           "'postgresql+psycopg://hub:***@db.internal:5432/hub'" in result.output
    assert "s3cret-pw" not in result.output and not (tmp_path / "x.dump").exists()


# --- files readable by their owner only ---------------------------------------------------------------

def test_store_files_and_jsonl_outputs_are_readable_by_their_owner_only(app, signed_post, tmp_path, hub_config):
    from hub.store import sqlite_path

    out = tmp_path / "calls.jsonl"
    from hub.testing import deliver, make_destination

    destination = make_destination("jsonl", {"path": str(out)})
    assert signed_post(load_sample("end-of-call-report-full")).status_code == 202
    deliver(destination, app.hub.store.list_reports()[0])
    db = sqlite_path(hub_config["store"]["url"])
    for path in (db, f"{db}-wal", f"{db}-shm", f"{db}.lock", out):
        assert os.stat(path).st_mode & 0o777 == 0o600, path


def test_the_quickstart_makes_its_secrets_readable_by_their_owner_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HMS_WEBHOOK_SECRET", "HUB_ADMIN_TOKEN")}
    makefile = Path(__file__).parents[1] / "Makefile"
    for _ in range(2):  # the second run keeps what the first made
        subprocess.run(["make", "-s", "-f", str(makefile), "secrets", f"PYTHON={sys.executable}"], cwd=tmp_path,
                       env=env, check=True, capture_output=True)
    secret, token = (tmp_path / ".webhook-secret").read_text(), (tmp_path / ".admin-token").read_text()
    assert secret.startswith("whsec_") and len(token.strip()) >= 16
    for name in (".webhook-secret", ".admin-token"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    subprocess.run(["make", "-s", "-f", str(makefile), "secrets", f"PYTHON={sys.executable}"], cwd=tmp_path,
                   env=env, check=True)
    assert (tmp_path / ".webhook-secret").read_text() == secret


# --- 0003: the scheduled jobs' leases ----------------------------------------------------------------

def test_a_0002_database_upgrades_to_0003_with_its_rows_intact_and_leases_work(empty_url, tmp_path):
    """A database as revision 0002 left it (a report, a delivery, an attempt, an event key) gains
    the scheduled jobs' table; every row is as it was, and a lease is taken once."""
    from datetime import timedelta

    from hub import jobs
    from hub.store import Store

    schema.upgrade(empty_url, to="0002")
    insert_one_of_each(empty_url, "status-update", "ended-with-error")
    before = rows(empty_url)

    config = write_config(tmp_path / "hub.toml", empty_url)
    result = CliRunner().invoke(cli, ["db", "upgrade", "-c", str(config)])
    assert result.exit_code == 0
    assert f"upgraded to schema revision {HEAD}; applied: {', '.join(REVISIONS[2:])}" in result.output
    assert as_before(rows(empty_url), before) == before
    assert shape(empty_url)["scheduled_jobs"]["primary_key"] == ["name"]

    store = Store(empty_url)
    try:
        every, lease = timedelta(minutes=15), timedelta(minutes=15)
        assert jobs.take_lease(store, "reconcile", "node-a", every=every, lease=lease)
        assert not jobs.take_lease(store, "reconcile", "node-b", every=every, lease=lease)
        jobs.finish(store, "reconcile", "node-a", {"seen": 3, "ingested": 1})
        assert not jobs.take_lease(store, "reconcile", "node-b", every=every, lease=lease), "not due again yet"
        run = jobs.last_run(store, "reconcile")
        assert run.result == {"seen": 3, "ingested": 1} and not run.running
    finally:
        store.close()


# --- 0004: per-customer order keys and paused destinations --------------------------------------------

def _revision_0004():
    import importlib

    return importlib.import_module("hub.migrations.versions.0004_order_and_pause")


def test_a_database_of_the_previous_revision_upgrades_with_its_rows_intact_and_pauses_work(empty_url, tmp_path):
    """A delivery stored before order keys existed keeps every value, gets no order key (it is
    claimed as before), and a pause is kept in the new table."""
    from hub.store import Store

    schema.upgrade(empty_url, to=_revision_0004().down_revision)
    insert_one_of_each(empty_url, destination="crm", status="pending", attempts=0)
    before = rows(empty_url)

    config = write_config(tmp_path / "hub.toml", empty_url)
    result = CliRunner().invoke(cli, ["db", "upgrade", "-c", str(config)])
    assert result.exit_code == 0 and f"applied: {_revision_0004().revision}" in result.output, result.output
    after = rows(empty_url)
    assert as_before(after, before) == before
    assert (after["deliveries"][0]["order_key"], after["deliveries"][0]["order_at"]) == (None, None)

    store = Store(empty_url)
    try:
        paused_at = store.pause("crm")
        assert store.claim("node-a", 60) is None, "a paused destination's delivery is not claimed"
        assert store.pause("crm") == paused_at and store.paused() == {"crm": paused_at}
        assert store.resume("crm") and not store.resume("crm")
        claimed = store.claim("node-a", 60)
        assert claimed.id == "d1" and claimed.attempts == 1
    finally:
        store.close()


def insert_one_of_each(url: str, event: str = "end-of-call-report", event_key: str = "", *,
                       destination: str = "slack", status: str = "succeeded", attempts: int = 1) -> None:
    """A report of +31612345678 (``event``, ``event_key``), its delivery to ``destination`` in
    ``status`` after ``attempts`` attempts, and an attempt row when there was one, by plain SQL (as
    an older revision's code wrote them)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO reports (id, source, event, call_id, occurred_at, received_at, customer_number, data, "
            "event_key) VALUES ('r1', 'hms', :event, 'call-1', '2026-03-02 09:14:07', "
            "'2026-03-02 09:15:00', '+31612345678', '{}', :event_key)"), {"event": event, "event_key": event_key})
        conn.execute(sa.text(
            "INSERT INTO deliveries (id, report_id, destination, status, attempts, next_attempt_at, state, "
            "created_at, updated_at) VALUES ('d1', 'r1', :destination, :status, :attempts, '2026-03-02 09:15:00', "
            "'{}', '2026-03-02 09:15:00', '2026-03-02 09:15:01')"),
            {"destination": destination, "status": status, "attempts": attempts})
        if attempts:
            conn.execute(sa.text(
                "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, outcome, http_status) "
                "VALUES ('d1', 1, '2026-03-02 09:15:00', 12.5, 'succeeded', 200)"))
    engine.dispose()


# --- 0005: the erasure records ---------------------------------------------------------------------

def test_a_database_of_the_revision_before_0005_gains_the_erasures_table_with_its_rows_intact(empty_url, tmp_path):
    """The revision before 0005 (its ``down_revision``) with a report, a delivery and an attempt
    upgrades: every row as it was, and an erasure is recorded without any number."""
    import importlib

    from hub.store import Store

    previous = importlib.import_module("hub.migrations.versions.0005_erasures").down_revision
    schema.upgrade(empty_url, to=previous)
    insert_one_of_each(empty_url, "end-of-call-report", "")
    before = rows(empty_url)

    config = write_config(tmp_path / "hub.toml", empty_url)
    result = CliRunner().invoke(cli, ["db", "upgrade", "-c", str(config)])
    assert result.exit_code == 0 and f"upgraded to schema revision {HEAD}" in result.output, result.output
    assert rows(empty_url) == before
    assert [c[0] for c in shape(empty_url)["erasures"]["columns"]] == [
        "id", "erased_at", "actor", "reports", "deliveries", "attempts", "destinations"]

    store = Store(empty_url)
    try:
        counts = store.delete_reports(store.customer_report_ids("+31612345678"))
        assert counts == {"reports": 1, "deliveries": 1, "attempts": 1}
        store.record_erasure("cli", counts, {"slack": "cannot erase"})
        [erasure] = store.list_erasures()
        assert erasure["actor"] == "cli" and erasure["reports"] == 1 and erasure["destinations"] == {
            "slack": "cannot erase"}
        assert "612345678" not in json.dumps(erasure, default=str)
    finally:
        store.close()


def upgrade_keeping_every_row(url: str, tmp_path: Path) -> str:
    """``db upgrade`` on ``url``; asserts it succeeds and every row is as it was; its output."""
    before = rows(url)
    result = CliRunner().invoke(cli, ["db", "upgrade", "-c", str(write_config(tmp_path / "hub.toml", url))])
    assert result.exit_code == 0, result.output
    assert rows(url) == before
    return result.output


# --- 0006: dashboard sessions that end ---------------------------------------------------------------

def test_a_database_one_revision_behind_gains_the_sessions_table_with_its_rows_intact(empty_url, tmp_path):
    """A database as the revision before 0006 left it (a report, a delivery, a job's lease) gains
    the dashboard's sessions table; every row is as it was, and a session starts, lives and ends."""
    import importlib
    from datetime import timedelta

    from hub import sessions
    from hub.store import Store

    previous = importlib.import_module("hub.migrations.versions.0006_admin_sessions").down_revision
    schema.upgrade(empty_url, to=previous)
    insert_one_of_each(empty_url, status="dead", attempts=3)
    engine = sa.create_engine(empty_url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO scheduled_jobs (name, last_result) VALUES ('reconcile', '{}')"))
    engine.dispose()
    assert f"upgraded to schema revision {HEAD}" in upgrade_keeping_every_row(empty_url, tmp_path)
    assert shape(empty_url)["admin_sessions"]["primary_key"] == ["id_hash"]

    store = Store(empty_url)
    try:
        session_id = sessions.start(store, timedelta(hours=12))
        assert sessions.is_live(store, session_id)
        sessions.end(store, session_id)
        assert not sessions.is_live(store, session_id)
    finally:
        store.close()


# --- 0007: the answers to assistant-request and tool-calls ---------------------------------------------

def test_a_database_one_revision_behind_gains_the_answers_table_with_its_rows_intact(empty_url, tmp_path):
    """A database as the revision before 0007 left it (an assistant-request report with a delivery
    and an attempt) gains the answers table; every row is as it was, an answer is kept beside its
    report, and erasing the caller takes the answer with the report."""
    import importlib
    from datetime import datetime, timezone

    from hub.store import Answer, Store

    previous = importlib.import_module("hub.migrations.versions.0007_answers").down_revision
    schema.upgrade(empty_url, to=previous)
    insert_one_of_each(empty_url, "assistant-request", "")
    assert f"upgraded to schema revision {HEAD}" in upgrade_keeping_every_row(empty_url, tmp_path)
    assert [c[0] for c in shape(empty_url)["answers"]["columns"]] == [
        "report_id", "event", "outcome", "answer", "latency_ms", "answered_at", "detail"]

    store = Store(empty_url)
    try:
        answer = Answer("r1", "assistant-request", "answered", {"assistant": {"first_message": "Hi"}}, 12.5,
                        datetime(2026, 3, 2, 9, 15, tzinfo=timezone.utc))
        assert store.record_answer(answer) and not store.record_answer(answer)
        assert store.get_answer("r1") == answer
        assert store.delete_reports(store.customer_report_ids("+31612345678")) == {
            "reports": 1, "deliveries": 1, "attempts": 1}
        assert store.get_answer("r1") is None
    finally:
        store.close()


# --- 0008: erasures queued at the destinations -----------------------------------------------------

def test_a_database_of_the_revision_before_0008_gains_the_destination_erasures_with_its_rows_intact(
        empty_url, tmp_path):
    """A database as the revision before 0008 left it (a report, a delivery, an attempt, an erasure
    record) gains the queue of destination erasures; every row is as it was, and an erasure
    queued there is claimed, finished, and then holds no number."""
    import importlib

    from hub.store import SUCCEEDED, Store

    previous = importlib.import_module("hub.migrations.versions.0008_destination_erasures").down_revision
    schema.upgrade(empty_url, to=previous)
    insert_one_of_each(empty_url, status="succeeded", attempts=1)
    engine = sa.create_engine(empty_url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO erasures (erased_at, actor, reports, deliveries, attempts, destinations) "
                             "VALUES ('2026-11-30 10:00:00', 'cli', 1, 1, 1, '{\"slack\": \"cannot erase\"}')"))
    engine.dispose()
    assert f"upgraded to schema revision {HEAD}" in upgrade_keeping_every_row(empty_url, tmp_path)
    assert [c[0] for c in shape(empty_url)["destination_erasures"]["columns"]] == [
        "id", "erasure_id", "destination", "status", "subject", "attempts", "next_attempt_at", "lease_owner",
        "lease_until", "last_error", "result", "attempt_log", "created_at", "updated_at"]

    store = Store(empty_url)
    try:
        erasure_id = store.record_erasure("api", {"reports": 0, "deliveries": 0, "attempts": 0}, {"crm": "queued"},
                                          subject="+31612345678", queue=["crm"])
        assert erasure_id == 2 and [e["id"] for e in store.list_erasures()] == [2, 1]
        [job] = store.claim_erasures("node-a", 60, 10, ["crm"])
        assert (job.erasure_id, job.subject, job.attempts) == (2, "+31612345678", 1)
        assert store.finish_erasure(job, "node-a", status=SUCCEEDED, result="erased",
                                    attempt={"number": 1, "started_at": "2026-12-02T00:00:00+00:00",
                                             "duration_ms": 1.0, "outcome": "succeeded", "http_status": 204,
                                             "error": None})
        [done] = store.destination_erasures([2])[2]
        assert (done.status, done.subject, len(done.attempt_log)) == ("succeeded", None, 1)
    finally:
        store.close()
