"""The console migration 0002 carries the registry's former users and afp_
tokens into the one identity, and gives old console tokens the registry
rights they had (read: pull; write: pull, push, delete)."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from argon2 import PasswordHasher
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    insert,
    text,
)
from typer.testing import CliRunner

from asterfleet.auth import Authenticator, add_user, list_tokens, list_users
from asterfleet.cli.users import app as users_app
from asterfleet.db import open_database
from asterfleet.db.engine import SCRIPT_LOCATION, VERSION_TABLE
from asterfleet.storage import open_engine

AFP = "afp_" + "x" * 43
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def legacy_registry_tables(engine: Engine) -> None:
    """The reg_users / reg_access_tokens of asterfleet before one identity."""
    meta = MetaData()
    users = Table(
        "reg_users",
        meta,
        Column("username", String(64), primary_key=True),
        Column("password_hash", Text, nullable=False),
        Column("is_admin", Boolean, nullable=False),
        Column("disabled", Boolean, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )
    tokens = Table(
        "reg_access_tokens",
        meta,
        Column("id", String(32), primary_key=True),
        Column("username", String(64), nullable=False),
        Column("name", String(128), nullable=False),
        Column("secret_hash", String(64), nullable=False),
        Column("scopes", JSON, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("expires_at", DateTime(timezone=True), nullable=True),
        Column("revoked_at", DateTime(timezone=True), nullable=True),
        Column("last_used_at", DateTime(timezone=True), nullable=True),
    )
    meta.create_all(engine)
    hasher = PasswordHasher()
    with engine.begin() as conn:
        conn.execute(
            insert(users),
            [
                {"username": "root", "password_hash": hasher.hash("root-password"),
                 "is_admin": True, "disabled": False, "created_at": NOW},
                {"username": "gone", "password_hash": hasher.hash("gone-password"),
                 "is_admin": False, "disabled": True, "created_at": NOW},
                {"username": "alice", "password_hash": hasher.hash("registry-password"),
                 "is_admin": False, "disabled": False, "created_at": NOW},
            ],
        )  # fmt: skip
        conn.execute(
            insert(tokens).values(
                id="abc123", username="root", name="ci push",
                secret_hash=hashlib.sha256(AFP.encode()).hexdigest(),
                scopes=["repository:root/*:pull,push"], created_at=NOW,
            )
        )  # fmt: skip


def at_revision_0001(url: str) -> Engine:
    engine = open_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.set_main_option("version_table", VERSION_TABLE)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    return engine


def test_one_database_migrates_users_and_tokens(tmp_path: Path) -> None:
    url = str(tmp_path / "shared.db")
    engine = at_revision_0001(url)
    legacy_registry_tables(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (username, password_hash, role, created_at) "
                "VALUES ('alice', :h, 'operator', :t)"
            ),
            {"h": PasswordHasher().hash("console-password"), "t": time.time()},
        )
        conn.execute(
            text(
                "INSERT INTO api_tokens (user_id, name, prefix, token_hash, scopes, created_at) "
                "VALUES (1, 'old', 'aft_x', :h, 'read,write', :t)"
            ),
            {"h": hashlib.sha256(b"aft_old").hexdigest(), "t": time.time()},
        )
    engine.dispose()

    db = open_database(url)  # runs 0002
    assert [(u.username, u.role) for u in list_users(db)] == [
        ("alice", "operator"),  # the console's alice wins: same name, same person
        ("root", "admin"),  # disabled "gone" is not carried over
    ]
    scopes = {t.name: t.scopes for t in list_tokens(db)}
    assert scopes == {
        "old": ("delete", "pull", "push", "read", "write"),
        "ci push": ("repository:root/*:pull,push",),
    }
    logins = Authenticator(db)
    root = logins.login("root", "root-password", "t")
    assert root is not None and root.is_admin
    by_afp = logins.login("root", AFP, "t")  # old afp_ tokens keep working
    assert by_afp is not None and by_afp.token_scopes == ("repository:root/*:pull,push",)
    assert logins.login("alice", "registry-password", "t") is None
    assert logins.login("alice", "console-password", "t") is not None
    open_database(url).close()  # idempotent


def test_separate_databases_import_from_the_cli(tmp_path: Path) -> None:
    factory = open_engine(str(tmp_path / "factory.db"))
    legacy_registry_tables(factory)
    factory.dispose()
    db = open_database(str(tmp_path / "console.db"))
    add_user(db, "alice", "console-password")
    runner = CliRunner()
    args = ["import-registry", "--from", str(tmp_path / "factory.db"),
            "--db", str(tmp_path / "console.db")]  # fmt: skip
    done = runner.invoke(users_app, args)
    assert done.exit_code == 0, done.output
    assert "carried over 1 user(s), 1 token(s)" in done.output
    assert "skipped user gone (disabled)" in done.output
    again = runner.invoke(users_app, args)
    assert "carried over 0 user(s), 0 token(s)" in again.output
    assert Authenticator(db).login("root", AFP, "t") is not None
