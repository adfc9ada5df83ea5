"""The lab's files: where it is, what runs, what the operator asked for.

A running lab writes ``lab.json`` (addresses and pids) in its directory;
``lab status``, ``lab scale`` and ``lab down`` read it. ``desired.json`` is
the operator's wish (how many nodes); the running lab reconciles to it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asterfleet.balancer.listfile import write_atomic
from asterfleet.errors import UsageError


def default_lab_dir() -> Path:
    env = os.environ.get("ASTERFLEET_LAB_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "asterfleet" / "lab"


@dataclass
class LabInfo:
    pid: int
    started_at: float
    cluster: str
    etcd: str
    sip: str
    rpc: str
    console_url: str | None
    console_user: str | None
    console_password_file: str | None
    capture: str | None
    capture_db: str | None
    calls_per_second: float
    registry: str | None = None  # HOST:PORT of the lab's registry
    factory_db: str | None = None
    etcd_env: str | None = None  # source it to reach the lab's etcd (TLS) as operator
    pids: dict[str, int] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def info_path(lab_dir: Path) -> Path:
    return lab_dir / "lab.json"


def desired_path(lab_dir: Path) -> Path:
    return lab_dir / "desired.json"


def write_info(lab_dir: Path, info: LabInfo) -> None:
    write_atomic(info_path(lab_dir), info.to_json())


def read_info(lab_dir: Path) -> LabInfo | None:
    try:
        data: dict[str, Any] = json.loads(info_path(lab_dir).read_text())
        return LabInfo(**data)
    except (OSError, ValueError, TypeError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def running_info(lab_dir: Path) -> LabInfo:
    """The running lab's info, or UsageError saying how to start one."""
    info = read_info(lab_dir)
    if info is None or not pid_alive(info.pid):
        raise UsageError(
            f"no lab is running in {lab_dir}: start one with 'asterfleet lab up' "
            "(or pass the --dir it was started with)"
        )
    return info


def write_desired(lab_dir: Path, nodes: int) -> None:
    if not 0 <= nodes <= 50:
        raise UsageError(f"lab scale {nodes}: use 0 to 50 nodes")
    write_atomic(desired_path(lab_dir), json.dumps({"nodes": nodes}) + "\n")


def read_desired(lab_dir: Path) -> int | None:
    try:
        value = json.loads(desired_path(lab_dir).read_text())["nodes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) and 0 <= value <= 50 else None
