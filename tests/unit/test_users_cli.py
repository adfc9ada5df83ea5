"""`asterfleet users …`: one CLI for users, tokens (console and registry
scopes) and the registry's namespaces and grants, as an operator types it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from asterfleet.auth import Authenticator
from asterfleet.cli.users import app
from asterfleet.db import open_database
from asterfleet.registry.ownership import Ownership
from asterfleet.storage import open_engine

runner = CliRunner()


@pytest.fixture
def dbs(tmp_path: Path) -> list[str]:
    return ["--db", str(tmp_path / "console.db"), "--factory-db", str(tmp_path / "factory.db")]


def users(*args: str, input: str | None = None) -> tuple[int, str]:
    done = runner.invoke(app, list(args), input=input)
    return done.exit_code, done.output


def test_users_tokens_namespaces_and_grants(tmp_path: Path, dbs: list[str]) -> None:
    console_db = dbs[:2]
    for name in ("alice", "bob"):
        code, out = users("add", name, "--password-file", "-", *console_db, input="long-password\n")
        assert code == 0, out
    code, out = users(
        "token", "create", "alice", "--name", "ci",
        "--scopes", "pull repository:alice/*:push", "--json", *console_db,
    )  # fmt: skip
    assert code == 0, out
    token = json.loads(out)
    assert token["token"].startswith("aft_")
    assert token["scopes"] == ["pull", "repository:alice/*:push"]
    code, out = users("token", "create", "alice", "--name", "x", "--scopes", "fly", *console_db)
    assert code == 2 and "invalid token scope 'fly'" in out

    # Namespaces and grants go to the factory's database, checked against the users.
    code, out = users("namespace", "team", "--owner", "alice", *dbs)
    assert code == 0, out
    code, out = users("namespace", "bob", "--owner", "alice", *dbs)
    assert code == 2 and "bob's own" in out
    code, out = users("grant", "team", "bob", "--actions", "pull,push", *dbs)
    assert code == 0, out
    code, out = users("grant", "team", "carol", *dbs)
    assert code == 2 and "no user 'carol'" in out
    code, out = users("grants", "--json", *dbs[2:])
    assert json.loads(out) == [{"namespace": "team", "user": "bob", "actions": "pull,push"}]
    code, out = users("visibility", "team/app", "--public", *dbs[2:])
    assert code == 0, out

    ownership = Ownership(open_engine(str(tmp_path / "factory.db")))
    db = open_database(str(tmp_path / "console.db"))
    bob = Authenticator(db).login("bob", "long-password", "cli")
    assert bob is not None
    assert ownership.may(bob, "team/app", "push") and not ownership.may(bob, "team/app", "delete")

    # Removing a user takes their tokens and grants with them.
    code, out = users("rm", "bob", *dbs)
    assert code == 0, out
    assert users("grants", "--json", *dbs[2:])[1].strip() == "[]"


def test_the_old_variable_is_read_with_a_warning(tmp_path: Path) -> None:
    env = {"ASTERFLEET_DB": str(tmp_path / "old.db")}
    done = runner.invoke(app, ["ls", "--json"], env=env)
    assert done.exit_code == 0, done.output
    assert "ASTERFLEET_DB is deprecated: set ASTERFLEET_CONSOLE_DB" in done.output
    assert (tmp_path / "old.db").exists()
    assert "ASTERFLEET_CONSOLE_DB" not in os.environ


def test_the_token_listing_shows_expiry_last_use_and_status(tmp_path: Path) -> None:
    from asterfleet.auth import add_user, create_token, verify_token

    db_opt = ["--db", str(tmp_path / "console.db")]
    db = open_database(str(tmp_path / "console.db"))
    add_user(db, "alice", "long-password")
    used = create_token(db, "alice", "used", ("read",), ttl_seconds=7 * 86400)
    create_token(db, "alice", "gone", ("read",), ttl_seconds=0.001)
    create_token(db, "alice", "forever", ("metrics",))
    assert verify_token(db, used.token) is not None
    code, out = users("token", "ls", "--json", *db_opt)
    assert code == 0, out
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["used"]["status"] == "active" and rows["used"]["last_used_at"] is not None
    assert rows["gone"]["status"] == "expired" and rows["forever"]["expires_at"] is None
    code, table = users("token", "ls", *db_opt)
    assert code == 0 and "expires" in table
    lines = {line.split("│")[3].strip(): line for line in table.splitlines() if "alice" in line}
    assert "never" in lines["forever"] and "expired" in lines["gone"]
