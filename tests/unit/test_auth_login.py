"""One login path for the console's form and the registry's /token: passwords
(argon2id, rehashed when the parameters change), API tokens, one limiter per
user across addresses, a cap on concurrent argon2 checks, and unknown names
that cost no argon2 check."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from asterfleet.auth import (
    Authenticator,
    LoginLimiter,
    TooManyAttempts,
    add_user,
    create_token,
    set_password,
)
from asterfleet.auth import login as login_module
from asterfleet.db import Database, User, open_database


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = open_database(str(tmp_path / "console.db"))
    add_user(database, "alice", "alice-password")
    return database


def test_password_and_token_logins_give_the_same_principal_kind(db: Database) -> None:
    logins = Authenticator(db)
    by_password = logins.login("alice", "alice-password", "10.0.0.1")
    assert by_password is not None
    assert (by_password.username, by_password.via, by_password.token_scopes) == (
        "alice",
        "password",
        None,
    )
    assert {"read", "write", "pull", "push"} <= set(by_password.scopes)
    issued = create_token(db, "alice", "ci", ("pull",))
    by_token = logins.login("alice", issued.token, "10.0.0.1")
    assert by_token is not None and by_token.token_scopes == ("pull",)
    assert by_token.token_id == issued.id
    # A token is bound to its user: another name with it is a failed login.
    assert logins.login("bob", issued.token, "10.0.0.1") is None
    assert logins.login("alice", "wrong-password", "10.0.0.1") is None


def test_the_limit_is_per_user_across_addresses(db: Database) -> None:
    logins = Authenticator(db, LoginLimiter(max_failures=3, window=3600))
    for n in range(3):
        assert logins.login("alice", "wrong-password", f"10.0.0.{n}") is None
    # A fourth address, the right password: still refused until the window passes.
    with pytest.raises(TooManyAttempts) as refused:
        logins.login("alice", "alice-password", "10.0.0.99")
    assert 0 < refused.value.retry_after <= 3600
    # Another user is not punished for alice's attacker.
    add_user(db, "bob", "bob-password")
    assert logins.login("bob", "bob-password", "10.0.0.1") is not None


def test_the_limiter_memory_is_bounded() -> None:
    limiter = LoginLimiter(max_failures=5, window=60, max_keys=100)
    for i in range(10_000):
        limiter.failed(f"user:u{i}", f"client:10.0.{i // 256}.{i % 256}")
    assert len(limiter) <= 100
    # The most recent failures are the ones kept.
    assert "user:u9999" in limiter._failures


def test_unknown_names_cost_no_argon2_check_only_the_wait(db: Database) -> None:
    slept: list[float] = []
    logins = Authenticator(db, LoginLimiter(max_failures=1000), sleep=slept.append)
    assert logins.login("alice", "alice-password", "a") is not None  # one real check
    assert logins.verifications == 1
    for n in range(20):
        assert logins.login(f"nobody{n}", "whatever-password", "a") is None
    assert logins.verifications == 1  # no argon2 run for the 20 unknown names
    assert len(slept) == 20 and all(s > 0 for s in slept)


def test_concurrent_password_checks_are_capped(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = 0
    most = 0
    guard = threading.Lock()

    def slow_verify(stored: str, password: str) -> bool:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with guard:
            running -= 1
        return False

    monkeypatch.setattr(login_module, "verify_password", slow_verify)
    logins = Authenticator(db, LoginLimiter(max_failures=1000), max_verifications=2)
    threads = [
        threading.Thread(target=logins.login, args=("alice", f"guess-{n}", f"10.1.0.{n}"))
        for n in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert logins.verifications == 8
    assert most == 2


def test_a_verified_password_is_remembered_until_it_changes(db: Database) -> None:
    logins = Authenticator(db)
    assert logins.login("alice", "alice-password", "a") is not None
    assert logins.login("alice", "alice-password", "a") is not None
    assert logins.verifications == 1
    set_password(db, "alice", "new-alice-password")
    assert logins.login("alice", "alice-password", "a") is None
    assert logins.login("alice", "new-alice-password", "a") is not None


def test_an_old_parameter_hash_is_rehashed_on_login(db: Database) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("alice-password")
    with db.session() as s:
        user = s.query(User).filter_by(username="alice").one()
        user.password_hash = weak
    assert Authenticator(db).login("alice", "alice-password", "a") is not None
    with db.session() as s:
        stored = s.query(User).filter_by(username="alice").one().password_hash
    assert stored != weak and "m=65536" in stored
