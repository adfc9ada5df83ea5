"""`asterfleet knot …` and `asterfleet registry …` as an operator types them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from asterfleet.cli.knot import app as knot_app
from asterfleet.cli.registry import app as registry_app

runner = CliRunner()


def test_knot_lifecycle(tmp_path: Path) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'f.db'}"]
    add = runner.invoke(
        knot_app,
        [
            "add",
            "app",
            "--git",
            "/srv/app",
            "--repository",
            "alice/app",
            "--webhook",
            "--test",
            "true",
            "--tag-rule",
            "tag:v*={version}",
            "--build-arg",
            "A=1",
            *db,
        ],
    )
    assert add.exit_code == 0, add.output
    assert "shown once" in add.output
    listed = json.loads(runner.invoke(knot_app, ["ls", "--json", *db]).output)
    assert [k["name"] for k in listed] == ["app"]
    built = runner.invoke(knot_app, ["build", "app", "--json", *db])
    assert json.loads(built.output) == {"build": 1, "joined": False}
    again = runner.invoke(knot_app, ["build", "app", "--json", *db])
    assert json.loads(again.output) == {"build": 1, "joined": True}
    shown = json.loads(runner.invoke(knot_app, ["show", "app", "--json", *db]).output)
    assert shown["knot"]["triggers"]["webhook_secret"] == "********"
    assert shown["knot"]["build_args"] == {"A": "1"}
    assert shown["builds"][0]["state"] == "queued"
    edit = runner.invoke(knot_app, ["edit", "app", "--set", "triggers.git_poll_seconds=30", *db])
    assert edit.exit_code == 0, edit.output
    assert runner.invoke(knot_app, ["cancel", "app", "1", *db]).exit_code == 0
    assert runner.invoke(knot_app, ["rm", "app", "--yes", *db]).exit_code == 0


def test_knot_bad_input_exits_2(tmp_path: Path) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'f.db'}"]
    bad = runner.invoke(knot_app, ["add", "app", "--git", "/x", "--repository", "NoSlash", *db])
    assert bad.exit_code == 2 and "knot repository" in bad.output
    missing = runner.invoke(knot_app, ["show", "ghost", *db])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    badref = runner.invoke(knot_app, ["build", "ghost", "--ref", "main", *db])
    assert badref.exit_code == 2


def test_registry_config_and_where_users_moved(tmp_path: Path) -> None:
    cfg = runner.invoke(
        registry_app,
        [
            "config",
            "--out",
            str(tmp_path / "reg"),
            "--realm",
            "http://127.0.0.1:5001/token",
            "--service",
            "svc",
        ],
    )
    assert cfg.exit_code == 0, cfg.output
    assert (tmp_path / "reg" / "config.yml").exists()
    for old, new in (
        (["user", "add", "alice", "--password-stdin"], "asterfleet users add"),
        (["token", "create", "alice", "--name", "ci"], "asterfleet users token create"),
        (["grant", "team", "bob"], "asterfleet users grant"),
    ):
        moved = runner.invoke(registry_app, old)
        assert moved.exit_code == 2
        assert "moved" in moved.output and new in moved.output
