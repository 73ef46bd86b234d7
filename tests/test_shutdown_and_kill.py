"""Real processes: ``sovereign-hub worker`` on SIGTERM/SIGINT, and ``sovereign-hub serve`` SIGKILLed
(the whole process group) again and again while reports arrive and are delivered.

Promise 1 of the design: nothing acknowledged is lost. A 2xx means the report is on disk;
a crash delays a delivery, it never drops one.
"""
from __future__ import annotations

import copy
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import requests

from hub.store import PENDING, SUCCEEDED, Store
from hub.testing import (TEST_SECRET, WebhookReceiver, free_port, kill_process_group, load_sample, log_tail, migrated,
                         normalize_payload, signed_headers, start_hub_process, wait_for_health, wait_until)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals and process groups")


# --- helpers ---------------------------------------------------------------------------------------

def toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_config(path: Path, *, db: Path, port: int, hook_url: str, jsonl: Path | None = None,
                 server_workers: int = 2, dispatch_workers: int = 4, grace: float = 5,
                 retry_delays=(0.2,) * 10, lease_seconds: float = 300) -> Path:
    lines = [
        "[server]", 'host = "127.0.0.1"', f"port = {port}", f"workers = {server_workers}",
        "[store]", f"url = {toml_str(f'sqlite:///{db}')}",
        "[dispatch]", f"workers = {dispatch_workers}", "poll_interval = 0.05",
        f"retry_delays = [{', '.join(str(d) for d in retry_delays)}]", "jitter = 0.1",
        f"lease_seconds = {lease_seconds}", f"shutdown_grace_seconds = {grace}",
        "[sources.hms]", f"secret = {toml_str(TEST_SECRET)}",
        "[logging]", 'level = "INFO"',
        "[destinations.hook]", 'type = "webhook"', f"url = {toml_str(hook_url)}", "timeout_seconds = 10",
    ]
    if jsonl is not None:
        lines += ["[destinations.file]", 'type = "jsonl"', f"path = {toml_str(str(jsonl))}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def report_payload(call_id: str) -> dict:
    payload = copy.deepcopy(load_sample("end-of-call-report-full"))
    payload["message"]["call"]["id"] = call_id
    return payload


def queued(db: Path, count: int) -> list[str]:
    """``count`` stored reports with a pending delivery to ``hook`` each; their delivery ids."""
    store = Store(migrated(f"sqlite:///{db}"))
    try:
        for n in range(count):
            report = normalize_payload(report_payload(f"queued-{n}-{uuid.uuid4()}"), report_id=str(uuid.uuid4()))
            store.insert_report(report, ["hook"])
        return [d.id for d in sorted(store.list_deliveries(limit=None), key=lambda d: d.created_at)]
    finally:
        store.close()


# --- SIGTERM / SIGINT on the worker -------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_worker_signal_stops_claiming_finishes_the_in_flight_delivery_and_exits_0(tmp_path, signum):
    db = tmp_path / "hub.db"
    ids = queued(db, 3)
    with WebhookReceiver(delay=lambda: 1.0) as receiver:
        config = write_config(tmp_path / "hub.toml", db=db, port=free_port(), hook_url=receiver.url,
                              dispatch_workers=1, grace=8)
        proc = start_hub_process("worker", config, tmp_path, "worker.log")
        try:
            assert wait_until(lambda: receiver.snapshot()[0], timeout=20), log_tail(tmp_path / "worker.log")
            proc.send_signal(signum)
            code = proc.wait(15)
        finally:
            kill_process_group(proc)
        started, records = receiver.snapshot()

    assert code == 0, log_tail(tmp_path / "worker.log")
    assert len(started) == 1, f"claimed after the signal: {started}"
    assert [webhook_id for webhook_id, _ in records] == started, "the in-flight delivery was let finish"
    store = Store(f"sqlite:///{db}")
    try:
        rows = {d.id: d for d in store.list_deliveries(limit=None)}
        in_flight = rows[started[0]]
        assert (in_flight.status, in_flight.attempts) == (SUCCEEDED, 1)
        rest = [rows[i] for i in ids if i != started[0]]
        assert [(d.status, d.attempts, d.lease_owner) for d in rest] == [(PENDING, 0, None)] * 2
    finally:
        store.close()


def test_ctrl_c_on_serve_finishes_the_request_and_the_delivery_under_way_and_says_it_stopped(tmp_path):
    """A terminal's Ctrl-C: SIGINT to every process of the group at once (serve, the dispatcher,
    gunicorn's master and workers)."""
    db, port = tmp_path / "hub.db", free_port()
    queued_ids = None
    hold = threading.Event()
    with WebhookReceiver(hold=hold) as receiver:
        config = write_config(tmp_path / "hub.toml", db=db, port=port, hook_url=receiver.url,
                              dispatch_workers=1, grace=8)
        proc = start_hub_process("serve", config, tmp_path, "serve.log")
        try:
            wait_for_health(proc, f"http://127.0.0.1:{port}", tmp_path / "serve.log")
            queued_ids = queued(db, 1)
            assert wait_until(lambda: receiver.snapshot()[0], timeout=20), log_tail(tmp_path / "serve.log")
            # a report whose body is half sent when the signal comes
            body = json.dumps(report_payload(f"ctrl-c-{uuid.uuid4()}")).encode()
            head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(body).items())
            client = socket.create_connection(("127.0.0.1", port), timeout=15)
            client.sendall(f"POST /webhooks/hms HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
                           f"{head}Connection: close\r\n\r\n".encode() + body[:100])
            time.sleep(0.5)
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.5)
            client.sendall(body[100:])
            answer = client.makefile("rb").readline()
            client.close()
            hold.set()
            code = proc.wait(20)
        finally:
            hold.set()
            kill_process_group(proc)
        records = receiver.snapshot()[1]

    log = (tmp_path / "serve.log").read_text()
    assert answer.split()[1] == b"202", f"{answer!r}\n{log}"
    assert [webhook_id for webhook_id, _ in records] == queued_ids, "the delivery under way was let finish"
    assert code == 0, log
    assert "SIGQUIT" not in log and "Traceback" not in log, log
    assert log.rstrip().splitlines()[-1] == "sovereign-hub stopped", log


def test_worker_signal_releases_a_delivery_that_overruns_the_grace_period(tmp_path):
    db = tmp_path / "hub.db"
    ids = queued(db, 2)
    hold = threading.Event()
    with WebhookReceiver(hold=hold) as receiver:
        config = write_config(tmp_path / "hub.toml", db=db, port=free_port(), hook_url=receiver.url,
                              dispatch_workers=1, grace=0.5)
        proc = start_hub_process("worker", config, tmp_path, "worker.log")
        try:
            assert wait_until(lambda: receiver.snapshot()[0], timeout=20), log_tail(tmp_path / "worker.log")
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(15)
            took = time.monotonic() - signalled
        finally:
            kill_process_group(proc)
            hold.set()
        started, _ = receiver.snapshot()

    assert code == 0, log_tail(tmp_path / "worker.log")
    assert took < 5, f"the worker took {took:.1f}s to stop with a 0.5s grace period"
    assert len(started) == 1
    store = Store(f"sqlite:///{db}")
    try:
        rows = [store.get_delivery(i) for i in ids]
        assert [(d.status, d.attempts, d.lease_owner, d.lease_until) for d in rows] == [
            (PENDING, 0, None, None)] * 2, "the overrunning delivery was given back, ready for the next worker"
        assert store.list_attempts(started[0]) == []
    finally:
        store.close()


# --- SIGKILL of serve while reports arrive ---------------------------------------------------------------

class Sender(threading.Thread):
    """Sends ``n`` distinct signed reports, one after another, each until it gets a 2xx (the
    platform retries too): ``acked`` maps call id -> the report id of the 2xx answer."""

    def __init__(self, base_url: str, n: int, pause: float, deadline: float):
        super().__init__(daemon=True)
        self.base_url = base_url
        self.n = n
        self.pause = pause
        self.deadline = deadline
        self.acked: dict[str, str] = {}
        self.answers: Counter = Counter()
        self.failures = 0
        self.unexpected: list[str] = []

    def run(self):
        session = requests.Session()
        for n in range(self.n):
            call_id = f"kill-{n}-{uuid.uuid4()}"
            body = json.dumps(report_payload(call_id)).encode()
            while time.monotonic() < self.deadline:
                try:
                    response = session.post(f"{self.base_url}/webhooks/hms", data=body,
                                            headers=signed_headers(body), timeout=5)
                except requests.RequestException:
                    self.failures += 1
                    session = requests.Session()
                    time.sleep(0.05)
                    continue
                self.answers[response.status_code] += 1
                if 200 <= response.status_code < 300:
                    answer = response.json()
                    if answer.get("status") not in ("accepted", "duplicate"):
                        self.unexpected.append(response.text)
                    self.acked[call_id] = answer["report_id"]
                    break
                self.unexpected.append(f"{response.status_code} {response.text[:200]}")
                time.sleep(0.05)
            time.sleep(self.pause)


def jsonl_ids(path: Path) -> tuple[set[str], int]:
    """The report ids in the jsonl file, and how many lines were not valid JSON."""
    if not path.exists():
        return set(), 0
    ids, broken = set(), 0
    for line in path.read_text().splitlines():
        try:
            ids.add(json.loads(line)["id"])
        except (ValueError, KeyError):
            broken += 1
    return ids, broken


def test_serve_killed_again_and_again_loses_no_acknowledged_report(tmp_path):
    seed = int(time.time() * 1000) % 100_000
    rng = random.Random(seed)
    n_reports, kills = 60, 2  # kills while reports arrive; one more after the last is acknowledged
    db, jsonl, port = tmp_path / "hub.db", tmp_path / "calls.jsonl", free_port()
    base = f"http://127.0.0.1:{port}"
    test_deadline = time.monotonic() + 55
    procs: list[subprocess.Popen] = []

    def serve() -> subprocess.Popen:
        proc = start_hub_process("serve", config, tmp_path, "serve.log")
        procs.append(proc)
        wait_for_health(proc, base, tmp_path / "serve.log")
        return proc

    slowness = random.Random(seed + 1)  # the receiver threads draw from their own generator
    with WebhookReceiver(delay=lambda: slowness.uniform(0.05, 0.2)) as receiver:
        config = write_config(tmp_path / "hub.toml", db=db, port=port, hook_url=receiver.url, jsonl=jsonl,
                              grace=1, lease_seconds=2, retry_delays=(0.2,) * 10)
        try:
            proc = serve()
            sender = Sender(base, n_reports, pause=0.03, deadline=time.monotonic() + 35)
            sender.start()
            killed_at = []
            for _ in range(kills):
                time.sleep(rng.uniform(0.2, 0.9))
                killed_at.append((len(sender.acked), len(receiver.snapshot()[1])))
                kill_process_group(proc)
                time.sleep(rng.uniform(0.0, 0.3))
                proc = serve()
            sender.join(max(1.0, test_deadline - time.monotonic() - 15))
            assert not sender.is_alive(), f"the sender did not finish (seed {seed})"
            # once more, while the last deliveries are likely still under way
            killed_at.append((len(sender.acked), len(receiver.snapshot()[1])))
            kill_process_group(proc)

            # with every hub process dead: each acknowledged report is on disk, with its deliveries
            acked = set(sender.acked.values())
            after_kills = Store(f"sqlite:///{db}")
            try:
                missing = [r for r in acked if after_kills.get_report(r) is None]
                destinations = {}
                for d in after_kills.list_deliveries(limit=None):
                    destinations.setdefault(d.report_id, set()).add(d.destination)
            finally:
                after_kills.close()
            assert missing == [], f"{len(missing)} acknowledged reports are not in the store (seed {seed})"
            assert all(destinations.get(r) == {"file", "hook"} for r in acked)

            proc = serve()
            watcher = Store(f"sqlite:///{db}")

            def all_delivered():
                in_file, _ = jsonl_ids(jsonl)
                received = {body["id"] for _, body in receiver.snapshot()[1]}
                # and the hub knows it: no delivery left pending, or running under a dead worker's lease
                settled = {status for _, status in watcher.delivery_counts()} == {SUCCEEDED}
                return acked <= in_file and acked <= received and settled

            try:
                delivered = wait_until(all_delivered, timeout=max(5.0, test_deadline - time.monotonic()),
                                       interval=0.2)
                counts = watcher.delivery_counts()
            finally:
                watcher.close()
            in_file, broken = jsonl_ids(jsonl)
            received = {body["id"] for _, body in receiver.snapshot()[1]}
            context = (f"seed {seed}; kills at (acked, received) {killed_at}; answers {dict(sender.answers)}; "
                       f"connection failures {sender.failures}; deliveries {counts}")
            assert delivered, (f"{len(acked - in_file)} acknowledged reports missing from the jsonl file "
                               f"({broken} line(s) there are not valid JSON), {len(acked - received)} from "
                               f"the webhook receiver ({context})")

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0, f"serve did not stop cleanly:\n{log_tail(tmp_path / 'serve.log')}"
        finally:
            for p in procs:
                kill_process_group(p)
        records = receiver.snapshot()[1]

    assert sender.unexpected == [], context
    assert len(sender.acked) == n_reports, f"every report is acknowledged once serve is back ({context})"
    store = Store(f"sqlite:///{db}")
    try:
        rows = store.list_deliveries(limit=None)
        by_report = {}
        for d in rows:
            by_report.setdefault(d.report_id, {})[d.destination] = d
        for report_id in acked:
            assert set(by_report[report_id]) == {"file", "hook"}
            assert {d.status for d in by_report[report_id].values()} == {SUCCEEDED}, by_report[report_id]
        # a redelivery after a crash carries the same webhook-id, so the receiver can drop the copy
        for webhook_id, body in records:
            assert webhook_id == by_report[body["id"]]["hook"].id
    finally:
        store.close()


def test_the_metrics_directory_of_a_killed_serve_is_removed_by_the_next_start(tmp_path):
    """serve's Prometheus directory (tmp/sovereign-hub-metrics-<pid>) outlives a SIGKILL; the
    next serve removes it, and its own goes with it at a clean stop."""
    config = write_config(tmp_path / "hub.toml", db=tmp_path / "hub.db", port=free_port(),
                          hook_url="http://127.0.0.1:9/hook", grace=1)

    def metrics_dir(proc: subprocess.Popen) -> Path:
        return Path(tempfile.gettempdir()) / f"sovereign-hub-metrics-{proc.pid}"

    killed = start_hub_process("serve", config, tmp_path, "serve.log")
    try:
        assert wait_until(lambda: metrics_dir(killed).is_dir(), timeout=60), log_tail(tmp_path / "serve.log")
    finally:
        kill_process_group(killed)
    assert metrics_dir(killed).is_dir(), "left behind by the kill"

    again = start_hub_process("serve", config, tmp_path, "serve.log")
    try:
        assert wait_until(lambda: metrics_dir(again).is_dir(), timeout=60), log_tail(tmp_path / "serve.log")
        assert not metrics_dir(killed).exists()
        again.send_signal(signal.SIGTERM)
        assert again.wait(30) == 0, log_tail(tmp_path / "serve.log")
    finally:
        kill_process_group(again)
    assert not metrics_dir(again).exists()


def test_a_jsonl_line_torn_by_a_kill_does_not_swallow_the_next_one(tmp_path):
    """SIGKILL can end a write() early at a page boundary (the kill test above hits it now and
    then). The torn line's delivery was never recorded as written, so it is written again; the
    file must still read back one valid JSON line per report."""
    from hub.testing import deliver, make_destination

    path = tmp_path / "calls.jsonl"
    destination = make_destination("jsonl", {"path": str(path)})
    first, second = (normalize_payload(report_payload(f"torn-{n}"), report_id=f"r{n}") for n in (1, 2))
    deliver(destination, first)
    with open(path, "a", encoding="utf-8") as fh:  # a killed worker's partial write of `second`
        fh.write(second.to_json()[:1500])

    deliver(destination, second)  # the retry

    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["r1", "r2"]
