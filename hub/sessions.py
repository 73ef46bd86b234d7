"""Dashboard sessions kept in the store, so logging out (or the absolute lifetime) ends them.

The cookie carries a random id; the store keeps only its SHA-256, so reading the database
does not give anyone a usable session. Expired rows are swept at the next login.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from .store import Store, admin_sessions, utcnow


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def start(store: Store, lifetime: timedelta, *, now: datetime | None = None) -> str:
    """A new session that ends ``lifetime`` from now, whatever happens in between; its id."""
    now = now or utcnow()
    session_id = secrets.token_urlsafe(32)
    with store.write() as conn:
        conn.execute(admin_sessions.delete().where(admin_sessions.c.expires_at <= now))
        conn.execute(admin_sessions.insert().values(id_hash=_hash(session_id), created_at=now,
                                                    expires_at=now + lifetime))
    return session_id


def is_live(store: Store, session_id: str | None, *, now: datetime | None = None) -> bool:
    """True while ``session_id`` was started here, not ended, and not past its expiry."""
    if not isinstance(session_id, str) or not session_id:
        return False
    s = admin_sessions.c
    with store.engine.connect() as conn:
        found = conn.execute(admin_sessions.select().with_only_columns(s.id_hash).where(
            s.id_hash == _hash(session_id), s.expires_at > (now or utcnow()))).first()
    return found is not None


def end(store: Store, session_id: str | None) -> None:
    if isinstance(session_id, str) and session_id:
        with store.write() as conn:
            conn.execute(admin_sessions.delete().where(admin_sessions.c.id_hash == _hash(session_id)))
