"""Local users: add, change password, remove, list, authenticate."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session as OrmSession

from asterfleet.auth.passwords import hash_password, needs_rehash, verify_password
from asterfleet.db import Database, User
from asterfleet.db import Session as DbSession
from asterfleet.errors import UsageError

USERNAME_RE = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
ROLES = ("admin", "operator", "viewer")
MIN_PASSWORD = 8


@dataclass(frozen=True)
class UserInfo:
    id: int
    username: str
    role: str
    created_at: float
    last_login_at: float | None

    @property
    def can_act(self) -> bool:
        """May drain, undrain and set weights (viewers only look)."""
        return self.role in ("admin", "operator")


def _info(u: User) -> UserInfo:
    return UserInfo(u.id, u.username, u.role, u.created_at, u.last_login_at)


def check_username(username: str) -> str:
    if not USERNAME_RE.match(username):
        raise UsageError(
            f"invalid user name {username!r}: use 1-64 lower-case letters, digits, "
            "'.', '_' or '-', starting with a letter"
        )
    return username


def check_password_policy(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise UsageError("the password is too long: use at most 1024 characters")
    return password


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UsageError(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
    return role


def add_user(db: Database, username: str, password: str, role: str = "operator") -> UserInfo:
    check_username(username)
    check_password_policy(password)
    check_role(role)
    with db.session() as s:
        if s.scalar(select(User).where(User.username == username)) is not None:
            raise UsageError(
                f"user {username!r} already exists: use 'asterfleet users passwd {username}'"
            )
        user = User(
            username=username,
            password_hash=hash_password(password),
            role=role,
            created_at=time.time(),
        )
        s.add(user)
        s.flush()
        return _info(user)


def _require(s: OrmSession, username: str) -> User:
    user = s.scalar(select(User).where(User.username == username))
    if user is None:
        raise UsageError(f"no user {username!r}: see 'asterfleet users ls'")
    return user


def set_password(db: Database, username: str, password: str) -> None:
    check_password_policy(password)
    with db.session() as s:
        user = _require(s, username)
        user.password_hash = hash_password(password)
        # A new password ends every session of the old one.
        for sess in s.scalars(select(DbSession).where(DbSession.user_id == user.id)):
            s.delete(sess)


def remove_user(db: Database, username: str) -> None:
    with db.session() as s:
        s.delete(_require(s, username))


def get_user(db: Database, username: str) -> UserInfo | None:
    with db.session() as s:
        user = s.scalar(select(User).where(User.username == username))
        return _info(user) if user else None


def list_users(db: Database) -> list[UserInfo]:
    with db.session() as s:
        return [_info(u) for u in s.scalars(select(User).order_by(User.username))]


def count_users(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(User)) or 0)


def authenticate(db: Database, username: str, password: str) -> UserInfo | None:
    """The user if the password matches; None otherwise (same cost either way)."""
    with db.session() as s:
        user = s.scalar(select(User).where(User.username == username))
        if not verify_password(user.password_hash if user else None, password):
            return None
        assert user is not None
        if needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
        user.last_login_at = time.time()
        return _info(user)


def bootstrap_admin(db: Database, password: str | None) -> UserInfo | None:
    """Create ``admin`` when no user exists yet and a password is given."""
    if not password or count_users(db) > 0:
        return None
    return add_user(db, "admin", password, role="admin")
