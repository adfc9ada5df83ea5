"""A knot's secrets at rest and on the command line: the webhook secret and
the secret build args are sealed in the factory's database with a key file
(0600) kept outside it; a database written before sealing existed is sealed
when it is opened, and its secrets keep working; a secret never travels on a
command line (the builder's or the CLI's), where every local user reads it."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from asterfleet.cli.knot import app as knot_cli
from asterfleet.factory.builder import BuildahBuilder, BuildRequest, DockerBuilder
from asterfleet.factory.db import open_store, utcnow
from asterfleet.factory.knot import validate_knot
from asterfleet.factory.schema import factory_knots
from asterfleet.factory.schema import metadata as factory_tables
from asterfleet.factory.store import add_knot, get_knot
from asterfleet.factory.web import handle_delivery
from asterfleet.sealing import SealedUnreadable
from asterfleet.storage import open_engine

HOOK_SECRET = "hook-secret-5be1c0ffee"
TOKEN = "tok-91d0a7c3e85f"


def stored_text(db: Path) -> str:
    """Every byte of the knots table, as a database dump would show it."""
    with sqlite3.connect(db) as conn:
        return "\n".join(str(row) for row in conn.execute("select * from factory_knots"))


def knot(**extra: object) -> dict[str, object]:
    return {
        "name": "app",
        "git_url": "https://git.example/alice/app.git",
        "repository": "alice/app",
        "triggers": {"webhook_secret": HOOK_SECRET},
        "secret_build_args": {"API_TOKEN": TOKEN},
        **extra,
    }


def push(secret: str) -> tuple[dict[str, str], bytes]:
    body = json.dumps({"ref": "refs/heads/main", "after": "a" * 40}).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "x-github-event": "push",
        "x-github-delivery": "d-1",
        "x-hub-signature-256": "sha256=" + signature,
    }
    return headers, body


def test_a_knots_secrets_are_sealed_in_the_database(tmp_path: Path) -> None:
    engine = open_store(f"sqlite:///{tmp_path / 'factory.db'}")
    add_knot(engine, validate_knot(knot()))
    dump = stored_text(tmp_path / "factory.db")
    assert HOOK_SECRET not in dump and TOKEN not in dump
    assert "sealed:v1:" in dump
    key = tmp_path / "factory.key"
    assert key.stat().st_mode & 0o777 == 0o600
    again = get_knot(engine, "app")
    assert again.triggers.webhook_secret == HOOK_SECRET
    assert again.secret_build_args == {"API_TOKEN": TOKEN}


def test_a_database_from_before_sealing_keeps_its_webhook_secret(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'factory.db'}"
    old = open_engine(url)
    factory_tables.create_all(old)
    spec = validate_knot(knot(secret_build_args={})).model_dump(mode="json")
    with old.begin() as conn:  # what the previous version stored: the secret in clear
        now = utcnow()
        conn.execute(
            insert(factory_knots).values(
                name="app", spec=spec, next_number=1, created_at=now, updated_at=now
            )
        )
    assert HOOK_SECRET in stored_text(tmp_path / "factory.db")
    engine = open_store(url)  # what every command and daemon opens the store with
    assert HOOK_SECRET not in stored_text(tmp_path / "factory.db")
    headers, body = push(HOOK_SECRET)
    status, answer = handle_delivery(engine, "app", headers, body)
    assert status == 202, answer
    assert get_knot(engine, "app").triggers.webhook_secret == HOOK_SECRET


def test_another_key_cannot_open_the_secrets_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = f"sqlite:///{tmp_path / 'factory.db'}"
    add_knot(open_store(db), validate_knot(knot()))
    monkeypatch.setenv("ASTERFLEET_FACTORY_KEY", str(tmp_path / "other.key"))
    with pytest.raises(SealedUnreadable, match=r"knot app .*other\.key"):
        get_knot(open_store(db), "app")
    shown = CliRunner().invoke(knot_cli, ["show", "app", "--db", db])
    assert shown.exit_code == 2 and len(shown.output.strip().splitlines()) == 1
    assert TOKEN not in shown.output


def test_the_cli_takes_a_secret_from_the_environment_or_a_file_never_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = f"sqlite:///{tmp_path / 'factory.db'}"
    base = ["--git", "https://git.example/a.git", "--repository", "alice/a", "--db", db]
    runner = CliRunner()
    on_argv = runner.invoke(knot_cli, ["add", "a", *base, "--secret-build-arg", f"T={TOKEN}"])
    assert on_argv.exit_code == 2 and "visible to every local user" in on_argv.output
    assert TOKEN not in on_argv.output
    unset = runner.invoke(knot_cli, ["add", "a", *base, "--secret-build-arg", "NOT_SET_AT_ALL"])
    assert unset.exit_code == 2 and "NOT_SET_AT_ALL is not set" in unset.output
    monkeypatch.setenv("API_TOKEN", TOKEN)
    (tmp_path / "other").write_text("from-a-file\n")
    from_file = f"OTHER=@{tmp_path / 'other'}"
    added = runner.invoke(
        knot_cli,
        ["add", "a", *base, "--secret-build-arg", "API_TOKEN", "--secret-build-arg", from_file],
    )
    assert added.exit_code == 0, added.output
    engine = open_store(db)
    assert get_knot(engine, "a").secret_build_args == {"API_TOKEN": TOKEN, "OTHER": "from-a-file"}
    refused = runner.invoke(knot_cli, ["edit", "a", "--set", f"secret_build_args.X={TOKEN}"])
    assert refused.exit_code == 2 and TOKEN not in refused.output
    dropped = runner.invoke(knot_cli, ["edit", "a", "--drop-secret-build-arg", "OTHER", "--db", db])
    assert dropped.exit_code == 0, dropped.output
    assert get_knot(engine, "a").secret_build_args == {"API_TOKEN": TOKEN}
    shown = runner.invoke(knot_cli, ["show", "a", "--json", "--db", db]).output
    assert json.loads(shown)["knot"]["secret_build_args"] == {"API_TOKEN": "********"}
    assert TOKEN not in runner.invoke(knot_cli, ["ls", "--json", "--db", db]).output


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def __call__(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> int:
        self.calls.append((list(argv), dict(env or {})))
        return 0


@pytest.mark.parametrize("builder", [BuildahBuilder(), DockerBuilder()], ids=["buildah", "docker"])
def test_a_secret_reaches_the_builder_in_its_environment_not_its_argv(
    builder: BuildahBuilder | DockerBuilder, tmp_path: Path
) -> None:
    run = Recorder()
    request = BuildRequest(
        context=tmp_path,
        dockerfile=tmp_path / "Dockerfile",
        image="localhost/x:1",
        build_args={"VERSION": "1"},
        secrets={"API_TOKEN": TOKEN},
    )
    builder.build(request, run)
    [(argv, env)] = run.calls
    assert TOKEN not in " ".join(argv)
    i = argv.index("--secret")
    assert argv[i + 1] == "id=API_TOKEN,env=ASTERFLEET_BUILD_SECRET_API_TOKEN"
    assert env == {"ASTERFLEET_BUILD_SECRET_API_TOKEN": TOKEN}
    assert "VERSION=1" in argv
