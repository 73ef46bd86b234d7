"""gunicorn settings for ``serve``: SIGINT stops gracefully.

``serve`` names this file by its path (``--config .../hub/gunicorn_config.py``), so gunicorn's
master loads it alone and never imports the hub package: the master stays small, and the
workers import requests, ssl and psycopg only after the gevent worker has monkey-patched them
(psycopg picks a gevent-friendly wait function at import when it finds ``select`` patched).

``serve`` gives gunicorn the rest on its command line: the worker class (``[server]
worker_class``, gevent by default) and ``--keep-alive`` = ``[server] header_timeout_seconds``.
gunicorn's gevent worker reads every request's line and headers, the first one on a connection
included, under ``gevent.Timeout(keepalive)`` and closes the connection when it runs out
(``gunicorn/workers/base_async.py``), so that key cuts slow-header clients.

A terminal's Ctrl-C sends SIGINT to the whole process group: serve, the dispatcher, gunicorn's
master and its workers at once. gunicorn takes SIGINT as a quick shutdown (SIGQUIT to the
workers, requests cut off, a "Worker was sent SIGQUIT" warning each); here it is SIGTERM's
graceful stop instead, in the master and in every worker, so requests under way are answered.
"""
import signal


def when_ready(server):
    server.handle_int = server.handle_term


def post_worker_init(worker):
    signal.signal(signal.SIGINT, worker.handle_exit)
    signal.siginterrupt(signal.SIGINT, False)


def post_request(worker, req, environ, resp):
    """gevent: let the other connections go first before this one's next request is read. A
    greenlet yields only when it waits on I/O, so a kept-alive connection whose next request is
    already buffered would be served again and again while the others wait (p99 seconds against a
    p50 of milliseconds under load, bench/ingest.py)."""
    if worker.cfg.worker_class_str == "gevent":
        import gevent

        gevent.sleep(0)
