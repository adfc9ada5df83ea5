"""Login sessions: a random cookie value, stored hashed, with its CSRF token."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete

from asterfleet.auth.secrets_ import digest, held_by, new_secret
from asterfleet.db import Database, User
from asterfleet.db import Session as DbSession

DEFAULT_TTL = 12 * 3600.0


@dataclass(frozen=True)
class SessionInfo:
    user_id: int
    username: str
    role: str
    csrf_token: str
    expires_at: float

    @property
    def can_act(self) -> bool:
        return self.role in ("admin", "operator")


def create_session(
    db: Database, user_id: int, ttl: float = DEFAULT_TTL, client: str = ""
) -> tuple[str, SessionInfo]:
    """A new session: (cookie value, info). Expired sessions are swept here."""
    cookie = new_secret(32)
    now = time.time()
    with db.session() as s:
        s.execute(delete(DbSession).where(DbSession.expires_at < now))
        user = s.get(User, user_id)
        if user is None:
            raise LookupError(f"no user with id {user_id}")
        row = DbSession(
            id_hash=digest(cookie),
            user_id=user_id,
            csrf_token=new_secret(24),
            created_at=now,
            expires_at=now + ttl,
            client=client[:128],
        )
        s.add(row)
        return cookie, SessionInfo(
            user.id, user.username, user.role, row.csrf_token, row.expires_at
        )


def lookup_session(db: Database, cookie: str) -> SessionInfo | None:
    with db.session() as s:
        found = held_by(s, DbSession, "id_hash", cookie)
        if found is None:
            return None
        sess, user = found
        if sess.expires_at < time.time():
            s.delete(sess)
            return None
        return SessionInfo(user.id, user.username, user.role, sess.csrf_token, sess.expires_at)


def end_session(db: Database, cookie: str) -> None:
    with db.session() as s:
        s.execute(delete(DbSession).where(DbSession.id_hash == digest(cookie)))
