"""Footprint of ``sovereign-hub serve``: PSS and RSS of every process it runs, idle, and the total.

PSS (proportional set size, ``/proc/<pid>/smaps_rollup``) counts a page shared by n processes
as 1/n in each, so the total over the process tree is what the hub really costs the machine;
RSS counts shared pages once per process and overstates it. The helpers here (``tree``,
``memory_mb``, ``processes``) are what ``ingest.py`` and ``fanout.py`` print their figures with.

Run alone, it starts ``serve`` on the embedded defaults (SQLite, one jsonl destination, the
example configuration's [server] settings: 2 gevent workers forked from a master that preloaded
the app) and, as the baseline in the same run, the same with one worker (what the second one
costs), and prints each process:

    .venv/bin/python bench/footprint.py

A benchmark, not a test: it prints figures and judges the total against the issue's goal
(< 200 MB PSS idle); it exits 0 either way.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
GOAL_PSS_MB = 200.0


def tree(pids: list[int]) -> list[int]:
    """The pids and every descendant (Linux /proc)."""
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                todo += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return found


def _rollup(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; (0, 0) when it is gone."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """(total RSS, total PSS) in MB of the processes and all their descendants."""
    rss = pss = 0
    for pid in tree(pids):
        r, p = _rollup(pid)
        rss, pss = rss + r, pss + p
    return rss / 1024, pss / 1024


def processes(pids: list[int]) -> list[tuple[int, str, float, float]]:
    """(pid, what it is, RSS MB, PSS MB) of each process of the tree."""
    commands = {}
    for pid in tree(pids):
        try:
            commands[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    rows = []
    for pid, cmd in commands.items():
        rss, pss = _rollup(pid)
        rows.append((pid, role(cmd, commands.get(_parent(pid), "")), rss / 1024, pss / 1024))
    return sorted(rows)


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


class PeakMemory:
    """Samples the total RSS and PSS of ``pids`` and their descendants every 0.2 s; ``stop()``
    gives the peaks (MB)."""

    def __init__(self, pids):
        self.pids, self.peak, self._stop = pids, (0.0, 0.0), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.2):
            rss, pss = memory_mb(self.pids)
            self.peak = (max(self.peak[0], rss), max(self.peak[1], pss))

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.peak


def role(cmd: str, parent_cmd: str = "") -> str:
    """What a process of ``serve``'s tree is, from its command line and its parent's."""
    if "supervisor.py" in cmd:
        return "serve (supervisor)"
    if " hub worker" in cmd:
        return "dispatcher (hub worker)"
    if "gunicorn" in cmd:
        forked = "gunicorn" in parent_cmd and "supervisor.py" not in parent_cmd
        return "gunicorn worker" if forked else "gunicorn master (app preloaded)"
    return cmd[:40]


# --- the idle footprint bench ---------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(proc: subprocess.Popen, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited (code {proc.returncode})")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"serve did not answer on port {port}")


def idle_footprint(tmp: Path, name: str, label: str, server_lines: list[str], settle: float) -> float:
    """Start serve with ``server_lines`` in [server], print its processes idle; the total PSS."""
    port = free_port()
    config = tmp / f"{name}.toml"
    config.write_text("\n".join([
        "[server]", 'host = "127.0.0.1"', f"port = {port}", *server_lines,
        "[store]", f"url = {json.dumps('sqlite:///' + str(tmp / (name + '.db')))}",
        "[sources.hms]", 'secret = { env = "HMS_WEBHOOK_SECRET" }',
        "[destinations.calls_file]", 'type = "jsonl"', f"path = {json.dumps(str(tmp / (name + '.jsonl')))}",
    ]) + "\n")
    env = {**os.environ, "HMS_WEBHOOK_SECRET": "whsec_bench_secret_0123456789"}
    with open(tmp / f"{name}.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "hub", "serve", "-c", str(config)], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(proc, port)
        time.sleep(settle)
        rows = processes([proc.pid])
        print(f"{label}:")
        for pid, what, rss, pss in rows:
            print(f"  {what:<32} pid {pid:<7} RSS {rss:6.1f} MB   PSS {pss:6.1f} MB")
        total_rss, total_pss = sum(r[2] for r in rows), sum(r[3] for r in rows)
        print(f"  {'total':<32} {len(rows)} processes  RSS {total_rss:6.1f} MB   PSS {total_pss:6.1f} MB")
        return total_pss
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settle", type=float, default=3.0, help="seconds idle before measuring (3)")
    args = parser.parse_args()
    print(f"serve's idle footprint  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    with tempfile.TemporaryDirectory(prefix="hub-footprint-") as tmp_name:
        tmp = Path(tmp_name)
        now = idle_footprint(tmp, "defaults", "defaults (2 gevent workers, app preloaded)", [], args.settle)
        before = idle_footprint(tmp, "one", "baseline: 1 gevent worker", ["workers = 1"], args.settle)
    print(f"\ndefaults {now:.0f} MB PSS against {before:.0f} MB with one worker "
          f"[goal < {GOAL_PSS_MB:g} MB: {'met' if now < GOAL_PSS_MB else 'NOT met'}]")


if __name__ == "__main__":
    main()
