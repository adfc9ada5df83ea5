"""Files holding secrets are created 0600, never written first and chmod-ed
after (a local user could open them in between and keep reading)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from asterfleet.errors import UsageError
from asterfleet.secretfile import write_secret


@pytest.fixture
def open_umask(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """umask 0 and a chmod that does nothing: only a file created 0600 stays 0600."""
    old = os.umask(0)
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)
    monkeypatch.setattr(os, "chmod", lambda path, mode, **kw: None)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_write_secret_creates_the_file_0600(tmp_path: Path, open_umask: None) -> None:
    target = tmp_path / "secret"
    write_secret(target, "s3cret\n")
    assert mode(target) == 0o600 and target.read_text() == "s3cret\n"
    write_secret(target, "again\n")  # replacing keeps it private
    assert mode(target) == 0o600 and target.read_text() == "again\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


def test_write_secret_names_what_could_not_be_written(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--out"):
        write_secret(tmp_path / "missing" / "x", "s", what="--out")


def test_vip_config_is_created_0600(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asterfleet.cli.vip import app

    monkeypatch.setenv("ASTERFLEET_VRRP_PASS", "pw123456")
    out = tmp_path / "keepalived.conf"
    args = ["config", "--vip", "10.0.0.100/24", "--interface", "eth0", "--peer", "10.0.0.12"]
    args += ["--priority", "100"]
    result = CliRunner().invoke(app, [*args, "--rpc", "/run/k.sock", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert mode(out) == 0o600 and "pw123456" in out.read_text()


def test_registry_config_is_created_0600(tmp_path: Path, open_umask: None) -> None:
    from asterfleet.registry.config import CONFIG_FILE, write_config

    write_config(
        tmp_path / "registry",
        realm="http://127.0.0.1:9/token",
        service="test-registry",
        listen="127.0.0.1:9",
    )
    assert mode(tmp_path / "registry" / CONFIG_FILE) == 0o600
