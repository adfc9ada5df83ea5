"""deploy/systemd: every unit passes `systemd-analyze verify` and keeps the promises
an operator relies on (dedicated user, locked-down filesystem, restart, drain on stop)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted((REPO / "deploy/systemd").glob("*.service"))
INSTALLED = "/opt/asterfleet/bin/asterfleet"


def parse(unit: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    return parser


def test_a_unit_for_each_daemon() -> None:
    names = {u.name for u in UNITS}
    assert names == {
        "asterfleet-node.service",
        "asterfleet-balancer.service",
        "asterfleet-capture.service",
        "asterfleet-console.service",
        "asterfleet-factory-worker.service",
    }


def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian package systemd)"
    # verify checks that ExecStart exists: point it at this checkout's asterfleet.
    here = shutil.which("asterfleet", path=str(REPO / ".venv/bin"))
    assert here
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED, here))
    done = subprocess.run(
        [analyze, "verify", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_every_unit_is_locked_down_and_restarts(unit: Path) -> None:
    service = parse(unit)["Service"]
    assert service["User"] not in ("", "root")
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert service["Restart"] == "on-failure"
    assert service["RuntimeDirectory"]
    assert service["ExecStart"].startswith(INSTALLED + " ")


def test_stopping_the_node_drains_before_systemd_gives_up() -> None:
    service = parse(REPO / "deploy/systemd/asterfleet-node.service")["Service"]
    assert service["KillSignal"] == "SIGTERM"  # SIGTERM is the agent's drain
    assert service["KillMode"] == "mixed"  # only the agent gets it first
    assert int(service["TimeoutStopSec"]) > 300  # above the default drain timeout
