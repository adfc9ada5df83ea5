"""The console's storage on PostgreSQL: migrations apply, users, sessions
and API tokens work the same as on the SQLite default."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from asterfleet.auth.login import Authenticator
from asterfleet.auth.sessions import create_session, lookup_session
from asterfleet.auth.tokens import create_token, verify_token
from asterfleet.auth.users import add_user, get_user, list_users
from asterfleet.db.engine import open_database
from asterfleet.testing.postgres import PgSandbox, pg_bin_dir

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_url() -> Iterator[str]:
    try:
        pg_bin_dir()
    except Exception as exc:
        pytest.skip(f"PostgreSQL server binaries not installed: {exc}")
    sandbox = PgSandbox()
    try:
        yield sandbox.start()
    finally:
        sandbox.destroy()


def test_console_storage_on_postgresql(pg_url: str) -> None:
    db = open_database(pg_url)
    again = open_database(pg_url)  # migrations are idempotent
    add_user(db, "alice", "correct horse battery", role="operator")
    assert [u.username for u in list_users(again)] == ["alice"]
    logins = Authenticator(db)
    assert logins.login("alice", "wrong password here", "127.0.0.1") is None
    assert logins.login("alice", "correct horse battery", "127.0.0.1") is not None
    user = get_user(again, "alice")
    assert user is not None and user.last_login_at is not None
    cookie, session = create_session(db, user.id)
    found = lookup_session(again, cookie)
    assert found is not None and found.username == "alice"
    assert found.csrf_token == session.csrf_token
    issued = create_token(db, "alice", "ci", ("read", "write"))
    checked = verify_token(again, issued.token)
    assert checked is not None and "write" in checked.scopes
