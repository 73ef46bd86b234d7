"""The first start on a brand-new database, with every process starting at the same moment.

Before migrations, each gunicorn worker, the dispatcher and every ``worker`` ran ``CREATE TABLE``
at start; on an empty database one of them lost the race (``table reports already exists``),
gunicorn reported ``Worker failed to boot`` and ``serve`` exited, about one start in three under
load. Now ``serve`` migrates once before it starts anything and every other process waits for
the schema. Each round below starts several hubs at once (``serve`` with 4 web workers plus a
separate ``worker`` each, all on the same 2 cores): the load the race needed to show.
"""
from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hub.testing import TEST_SECRET, free_port, kill_process_group, load_sample, signed_headers, start_hub_process

SQLITE_ROUNDS, SQLITE_AT_ONCE = 4, 5  # 20 starts
POSTGRES_AT_ONCE = 5


def answer(url: str, body: bytes | None = None, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def first_start(home: Path, store_url: str) -> str | None:
    """Start ``serve`` (4 web workers) and a ``worker`` together on ``store_url``; None when both
    came up, took a report, delivered it, and were still running a second later; else what broke."""
    home.mkdir()
    port, out = free_port(), home / "calls.jsonl"
    config = home / "hub.toml"
    config.write_text("\n".join([
        "[server]", f"port = {port}", "workers = 4",
        "[store]", f"url = {json.dumps(store_url)}",
        "[dispatch]", "workers = 2", "poll_interval = 0.1",
        "[sources.hms]", f"secret = {json.dumps(TEST_SECRET)}",
        "[destinations.calls]", 'type = "jsonl"', f"path = {json.dumps(str(out))}",
    ]) + "\n")
    procs = [start_hub_process("serve", config, home, "serve.log"),
             start_hub_process("worker", config, home, "worker.log")]
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120  # 2 cores shared by every process of every hub
        while answer(f"{base}/readyz") != 200:
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                return "did not come up"
            time.sleep(0.2)
        body = json.dumps(load_sample("end-of-call-report-full")).encode()
        if answer(f"{base}/webhooks/hms", body, signed_headers(body)) != 202:
            return "a signed report was not accepted"
        while not (out.exists() and out.read_text().count("\n") == 1):
            if time.monotonic() > deadline:
                return "the report was not delivered"
            time.sleep(0.1)
        time.sleep(1)
        if any(p.poll() is not None for p in procs):
            return "a process exited after the start"
        return None
    finally:
        for proc in procs:
            kill_process_group(proc)


def logs(home: Path) -> str:
    return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(home.glob("*.log")))


def start_many(homes_and_urls) -> None:
    with ThreadPoolExecutor(len(homes_and_urls)) as pool:
        results = list(pool.map(lambda item: (item[0], first_start(*item)), homes_and_urls))
    failed = [(home, why) for home, why in results if why]
    assert not failed, "\n".join(f"{home}: {why}\n{logs(home)}" for home, why in failed)


@pytest.mark.parametrize("round_", range(SQLITE_ROUNDS))
def test_first_starts_on_a_brand_new_sqlite_file_all_come_up_and_stay_up(tmp_path, round_):
    start_many([(tmp_path / f"hub{n}", f"sqlite:///{tmp_path / f'hub{n}' / 'hub.db'}")
                for n in range(SQLITE_AT_ONCE)])


@pytest.mark.postgres
def test_first_starts_on_a_brand_new_postgresql_database_all_come_up_and_stay_up(tmp_path, new_pg_database):
    start_many([(tmp_path / f"hub{n}", new_pg_database()) for n in range(POSTGRES_AT_ONCE)])
