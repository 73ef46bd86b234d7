"""The process ``serve`` becomes once the configuration is checked and the schema is current:
it starts gunicorn and the dispatcher, passes signals on, and stops both when either dies.

It only watches, so it stays lean: ``serve`` exec()s it as a script (``python -I -S
hub/supervisor.py SPEC``), which loads the standard library alone, not the hub package, Flask,
SQLAlchemy or the plugins (about 10 MB instead of the 64 MB the whole CLI holds). The pid stays
``serve``'s, so a process manager and ``kill`` see the same process throughout. SPEC is JSON
made by ``hub.cli.serve``: the commands, the grace period, the metrics directory and the
banner lines.
"""
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

PR_SET_PDEATHSIG = 1
METRICS_PREFIX = "sovereign-hub-metrics-"


def die_with_parent():
    """In a child: get SIGTERM when ``serve`` dies, even by SIGKILL (Linux prctl)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def remove_orphaned_metrics_dirs(parent: str) -> None:
    """Metrics directories of earlier ``serve`` processes that are gone (SIGKILL leaves them):
    ``sovereign-hub-metrics-<pid>`` of this user whose pid no longer runs."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        pid = name[len(METRICS_PREFIX):]
        if not name.startswith(METRICS_PREFIX) or not pid.isdigit() or int(pid) == os.getpid():
            continue
        path = os.path.join(parent, name)
        try:
            if os.stat(path).st_uid != os.getuid() or os.path.exists(f"/proc/{pid}"):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)


def supervise(spec: dict) -> int:
    metrics_dir = spec["metrics_dir"]
    stopping = threading.Event()
    children: list[subprocess.Popen] = []

    def forward(_signum, _frame):
        stopping.set()
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    # first of all: a SIGTERM from here on is a graceful stop, whenever it comes
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    os.makedirs(metrics_dir, mode=0o700, exist_ok=True)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    for cmd in spec["commands"]:
        if not stopping.is_set():
            children.append(subprocess.Popen(cmd, env=env, preexec_fn=die_with_parent))
    names = ", ".join(f"{name} pid {child.pid}" for name, child in zip(spec["names"], children))
    print(f"sovereign-hub listening on {spec['url']} ({spec['note']}{names})", file=sys.stderr, flush=True)
    code = 0
    try:
        while not stopping.is_set():
            exited = [c for c in children if c.poll() is not None]
            if exited:
                code = exited[0].returncode or 1
                print(f"error: a hub process exited (code {exited[0].returncode}); stopping",
                      file=sys.stderr, flush=True)
                forward(signal.SIGTERM, None)
                break
            stopping.wait(0.5)
        for child in children:
            try:
                child.wait(timeout=spec["grace"] + 10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    print(f"sovereign-hub stopped{'' if code == 0 else f' (exit code {code})'}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    given = json.loads(sys.argv[1])
    remove_orphaned_metrics_dirs(os.path.dirname(given["metrics_dir"]))
    sys.exit(supervise(given))
