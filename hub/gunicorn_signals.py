"""gunicorn settings for ``serve`` (``--config python:hub.gunicorn_signals``): SIGINT stops gracefully.

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
