"""Local users: argon2 hashes, password policy, sessions ended by a new password."""

from __future__ import annotations

from pathlib import Path

import pytest

from asterfleet.auth import (
    Authenticator,
    Principal,
    add_user,
    bootstrap_admin,
    create_session,
    create_token,
    hash_password,
    list_tokens,
    list_users,
    lookup_session,
    remove_user,
    set_password,
    verify_password,
)
from asterfleet.db import Database, open_database
from asterfleet.errors import UsageError


def authenticate(db: Database, username: str, password: str) -> Principal | None:
    return Authenticator(db).login(username, password, "127.0.0.1")


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return open_database(str(tmp_path / "console.db"))


def test_passwords_are_argon2id_hashes_that_verify() -> None:
    h = hash_password("correct horse")
    assert h.startswith("$argon2id$")
    assert verify_password(h, "correct horse")
    assert not verify_password(h, "wrong horse")
    assert not verify_password("not a hash", "correct horse")


@pytest.mark.parametrize(
    ("username", "password", "role", "fragment"),
    [
        ("Alice", "longenough", "operator", "invalid user name"),
        ("al ice", "longenough", "operator", "invalid user name"),
        ("alice", "short", "operator", "too short"),
        ("alice", "longenough", "root", "invalid role"),
    ],
)
def test_bad_user_input_is_refused_with_a_clear_message(
    db: Database, username: str, password: str, role: str, fragment: str
) -> None:
    with pytest.raises(UsageError, match=fragment):
        add_user(db, username, password, role)


def test_a_user_logs_in_only_with_the_right_password(db: Database) -> None:
    add_user(db, "alice", "s3cret-pass")
    assert authenticate(db, "alice", "s3cret-pass") is not None
    assert authenticate(db, "alice", "S3cret-pass") is None
    assert authenticate(db, "bob", "s3cret-pass") is None
    with pytest.raises(UsageError, match="already exists"):
        add_user(db, "alice", "another-pass")


def test_a_new_password_ends_every_session(db: Database) -> None:
    user = add_user(db, "alice", "s3cret-pass")
    cookie, _ = create_session(db, user.id)
    assert lookup_session(db, cookie) is not None
    set_password(db, "alice", "n3w-secret-pass")
    assert lookup_session(db, cookie) is None
    assert authenticate(db, "alice", "n3w-secret-pass") is not None


def test_removing_a_user_removes_their_tokens(db: Database) -> None:
    add_user(db, "alice", "s3cret-pass")
    create_token(db, "alice", "ci")
    remove_user(db, "alice")
    assert list_users(db) == []
    assert list_tokens(db) == []
    with pytest.raises(UsageError, match="no user"):
        remove_user(db, "alice")


def test_bootstrap_creates_admin_only_on_an_empty_database(db: Database) -> None:
    assert bootstrap_admin(db, None) is None
    admin = bootstrap_admin(db, "first-password")
    assert admin is not None and admin.username == "admin" and admin.role == "admin"
    assert bootstrap_admin(db, "other-password") is None
    assert authenticate(db, "admin", "first-password") is not None


def test_expired_sessions_are_not_accepted(db: Database) -> None:
    user = add_user(db, "alice", "s3cret-pass")
    cookie, info = create_session(db, user.id, ttl=-1)
    assert info.username == "alice"
    assert lookup_session(db, cookie) is None
    assert lookup_session(db, "") is None
