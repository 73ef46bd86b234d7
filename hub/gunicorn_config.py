"""gunicorn settings for ``serve``: the app preloaded in the master, SIGINT stops gracefully.

``serve`` gives gunicorn the rest on its command line: ``--preload``, the worker class (``[server]
worker_class``, gevent by default), the workers (``[server] workers``) and ``--keep-alive`` =
``[server] header_timeout_seconds``. For gevent it starts gunicorn under ``python -m gevent.monkey
--module gunicorn``: the standard library is patched before gunicorn or the app import anything,
so the app the master loads uses gevent's sockets, locks and ``select`` (psycopg picks a
gevent-friendly wait function at import when it finds ``select`` patched), and the workers'
own ``patch_all`` finds nothing left to do.

The workers are forked from the master with the app loaded, so the pages of the code and of
every module stay shared: two workers hold little more than one. ``gc.freeze`` before each fork
keeps the collector from writing to (and so copying) the shared objects. A store the master
built gets its own connections and lock file in each worker (``hub.store``, at fork).

gunicorn's gevent worker reads every request's line and headers, the first one on a connection
included, under ``gevent.Timeout(keepalive)`` and closes the connection when it runs out
(``gunicorn/workers/base_async.py``), so ``--keep-alive`` cuts slow-header clients.

A terminal's Ctrl-C sends SIGINT to the whole process group: serve, the dispatcher, gunicorn's
master and its workers at once. gunicorn takes SIGINT as a quick shutdown (SIGQUIT to the
workers, requests cut off, a "Worker was sent SIGQUIT" warning each); here it is SIGTERM's
graceful stop instead, in the master and in every worker, so requests under way are answered.
"""
import gc
import signal


def when_ready(server):
    server.handle_int = server.handle_term


def pre_fork(server, worker):
    gc.freeze()


def post_worker_init(worker):
    signal.signal(signal.SIGINT, worker.handle_exit)
    signal.siginterrupt(signal.SIGINT, False)


def post_request(worker, req, environ, resp):
    """gevent: before this connection's next request is read, wait until every other connection
    with something to do has had its turn (``gevent.idle``: the loop has polled for I/O and found
    nothing more). A greenlet yields only when it waits on I/O, so a kept-alive connection whose
    next request is already buffered would be served again and again while the others wait; a
    ``sleep(0)`` may resume this greenlet before the loop polls for I/O again (gevent's own
    ``sleep`` documentation says so), so connections whose data came in meanwhile still wait.
    With two workers at c=32 the p99 was 0.5-1.2 s with ``sleep(0)`` and 84-144 ms with ``idle``
    (bench/README.md)."""
    if worker.cfg.worker_class_str == "gevent":
        import gevent

        gevent.idle()
