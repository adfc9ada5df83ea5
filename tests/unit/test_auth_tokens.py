"""API tokens: shown once, stored hashed, scoped, revocable, expiring."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from asterfleet.auth import add_user, create_token, parse_scopes, revoke_token, verify_token
from asterfleet.db import ApiToken, Database, open_database
from asterfleet.errors import UsageError


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = open_database(str(tmp_path / "console.db"))
    add_user(database, "alice", "s3cret-pass")
    return database


@pytest.mark.parametrize(
    ("text", "scopes"),
    [
        ("read", ("read",)),
        ("write,read", ("read", "write")),
        (" read , read ", ("read",)),
        # One token kind for the console and the registry.
        ("pull,push", ("pull", "push")),
        ("read,delete", ("delete", "read")),
        (
            "pull repository:alice/app:pull,push",
            ("pull", "repository:alice/app:pull,push"),
        ),
        ("repository:team/*:pull", ("repository:team/*:pull",)),
    ],
)
def test_scopes_parse(text: str, scopes: tuple[str, ...]) -> None:
    assert parse_scopes(text) == scopes


@pytest.mark.parametrize(
    "text", ["", "admin", "read,destroy", ",", "repository:Bad:pull", "repository:a/b:fly"]
)
def test_unknown_scopes_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="scope"):
        parse_scopes(text)


def test_a_token_is_stored_only_as_a_hash(db: Database) -> None:
    issued = create_token(db, "alice", "ci", ("read", "write"))
    with db.session() as s:
        row = s.scalar(select(ApiToken))
        assert row is not None
        assert issued.token not in (row.token_hash, row.prefix)
        assert issued.token.startswith(row.prefix)
    info = verify_token(db, issued.token)
    assert info is not None and info.username == "alice" and info.scopes == ("read", "write")
    assert verify_token(db, issued.token + "x") is None
    assert verify_token(db, "not-a-token") is None


def test_a_revoked_token_stops_working(db: Database) -> None:
    issued = create_token(db, "alice", "ci")
    revoke_token(db, issued.id)
    assert verify_token(db, issued.token) is None
    with pytest.raises(UsageError, match="no API token"):
        revoke_token(db, issued.id + 100)


def test_an_expired_token_stops_working(db: Database) -> None:
    issued = create_token(db, "alice", "ci", ttl_seconds=60)
    assert verify_token(db, issued.token) is not None
    with db.session() as s:
        row = s.get(ApiToken, issued.id)
        assert row is not None
        row.expires_at = time.time() - 1
    assert verify_token(db, issued.token) is None
    with pytest.raises(UsageError, match="lifetime"):
        create_token(db, "alice", "ci", ttl_seconds=-1)


def test_a_repository_scoped_token_keeps_its_commas(db: Database) -> None:
    issued = create_token(db, "alice", "ci", ("repository:alice/app:pull,push",))
    info = verify_token(db, issued.token)
    assert info is not None and info.scopes == ("repository:alice/app:pull,push",)
    assert info.principal().token_scopes == ("repository:alice/app:pull,push",)


def test_a_token_needs_a_user_and_a_name(db: Database) -> None:
    with pytest.raises(UsageError, match="no user"):
        create_token(db, "bob", "ci")
    with pytest.raises(UsageError, match="name"):
        create_token(db, "alice", "  ")
