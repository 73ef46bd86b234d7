"""Wake the dispatchers of other processes the moment deliveries are due.

Under ``serve`` the web workers commit a report and the dispatcher, another process, would find
it only at its next poll. ``announce`` tells every dispatcher of the same store that there is
work; each dispatcher runs a ``Listener`` that wakes its claim thread. The poll stays as the
safety net: an announcement is a hint, and losing one costs at most a poll interval.

- SQLite (one host by nature): Unix datagram sockets in Linux's abstract namespace (no file,
  no path-length limit), named after the store's file. Each dispatcher binds the first free
  one of ``SLOTS`` names; ``announce`` sends one byte to each (a name no one holds refuses at
  once), so up to ``SLOTS`` dispatcher processes per store are woken.
- PostgreSQL (any number of nodes): ``NOTIFY`` on ``CHANNEL``; each dispatcher ``LISTEN``s on
  a connection of its own.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from typing import Callable

import sqlalchemy as sa

from .store import Store, sqlite_path

log = logging.getLogger(__name__)

CHANNEL = "sovereign_hub_due"
SLOTS = 8


def _socket_names(path: str) -> list[bytes]:
    digest = hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:24]
    return [f"\0sovereign-hub-{digest}-{n}".encode() for n in range(SLOTS)]


class Announcer:
    """The sending side, used after a commit that made deliveries due; never raises."""

    def __init__(self, store: Store):
        self.store = store
        path = sqlite_path(store.url)
        self._names = _socket_names(path) if path else []
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if self._names else None
        if self._socket is not None:
            self._socket.setblocking(False)

    def announce(self) -> None:
        try:
            if self.store.is_postgres:
                with self.store.engine.connect() as conn:
                    conn.execute(sa.text(f"NOTIFY {CHANNEL}"))
                    conn.commit()
            for name in self._names:
                try:
                    self._socket.sendto(b"!", name)
                except OSError:  # no dispatcher holds this name, or its queue is full: it is awake
                    pass
        except Exception:  # noqa: BLE001 - the rows are committed; the poll finds them anyway
            log.warning("could not announce new deliveries to the dispatchers", exc_info=True)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()


class Listener:
    """A daemon thread calling ``wake()`` whenever another process announces due deliveries."""

    def __init__(self, store: Store, wake: Callable[[], None], *, retry_seconds: float = 1.0):
        self.store = store
        self.wake = wake
        self.retry_seconds = retry_seconds
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    def start(self) -> "Listener":
        path = sqlite_path(self.store.url)
        if path is not None:
            self._socket = self._bind(path)
            if self._socket is None:
                return self
            target = self._listen_socket
        elif self.store.is_postgres:
            target = self._listen_postgres
        else:
            return self
        self._thread = threading.Thread(target=target, name="dispatcher-wakeup", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(self.retry_seconds + 1)
        if self._socket is not None:
            self._socket.close()

    def _bind(self, path: str) -> socket.socket | None:
        for name in _socket_names(path):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(name)
            except OSError:  # another dispatcher of this store holds it
                sock.close()
                continue
            sock.settimeout(self.retry_seconds)
            return sock
        log.warning("more than %d dispatchers on one store: this one is woken by its poll only", SLOTS)
        return None

    def _listen_socket(self) -> None:
        while not self._stopping.is_set():
            try:
                self._socket.recv(64)
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            self.wake()

    def _listen_postgres(self) -> None:
        import psycopg

        url = sa.engine.make_url(self.store.url).set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stopping.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=self.retry_seconds, stop_after=1):
                            self.wake()
            except psycopg.Error as exc:
                log.warning("dispatcher wake-up channel lost (%s); polling until it is back", type(exc).__name__)
                self._stopping.wait(self.retry_seconds)
