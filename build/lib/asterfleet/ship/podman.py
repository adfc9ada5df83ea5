"""Podman as asterfleet's images and cluster tests run it.

Debian's podman 4.3 runs real containers on these machines only with
``runc`` (crun refuses hybrid cgroups), ``cgroup_manager = "cgroupfs"`` and
explicit ``default_ulimits`` no higher than the host's hard limits, given in
a ``containers.conf`` through ``CONTAINERS_CONF``. asterfleet keeps its own
storage (``--root``/``--runroot``) and its own CNI configuration directory,
so nothing it builds or creates mixes with other users of podman here.

``python -m asterfleet.ship.podman ARGS…`` runs podman with these settings.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from asterfleet.errors import AsterfleetError
from asterfleet.runtime.process import require_binary

DEFAULT_STATE = Path("/var/lib/asterfleet-podman")
STATE_ENV = "ASTERFLEET_PODMAN_STATE"


class PodmanError(AsterfleetError):
    """A podman command failed."""


def _limit(value: int, cap: int) -> int:
    return cap if value == resource.RLIM_INFINITY else min(value, cap)


# podman 4.3 lowers its own RLIMIT_NPROC to 32768 here, whatever the host
# allows: limits are capped well below that.
_ULIMIT_CAP = 16384


def ulimits(nofile_hard: int, nproc_hard: int) -> tuple[int, int]:
    """(nofile, nproc) for containers: never above the host's hard limits, or
    every container fails to start with "error setting rlimit … not permitted"."""
    return _limit(nofile_hard, _ULIMIT_CAP), _limit(nproc_hard, _ULIMIT_CAP)


def host_ulimits() -> tuple[int, int]:
    return ulimits(
        resource.getrlimit(resource.RLIMIT_NOFILE)[1], resource.getrlimit(resource.RLIMIT_NPROC)[1]
    )


def render_containers_conf(nofile: int, nproc: int, network_dir: Path) -> str:
    """containers.conf for these machines (pure: limits are passed in)."""
    return (
        "# Written by asterfleet.ship.podman; see that module for why.\n"
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        'log_driver = "k8s-file"\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        "[network]\n"
        f'network_config_dir = "{network_dir}"\n'
    )


@dataclass(frozen=True)
class Podman:
    """podman with asterfleet's storage, runtime and limits."""

    state: Path = DEFAULT_STATE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Podman:
        env = os.environ if env is None else env
        return cls(Path(env.get(STATE_ENV) or DEFAULT_STATE))

    @property
    def conf_path(self) -> Path:
        return self.state / "containers.conf"

    def prepare(self) -> None:
        """Write containers.conf (and its directories) when missing or stale."""
        network_dir = self.state / "networks"
        network_dir.mkdir(parents=True, exist_ok=True)
        text = render_containers_conf(*host_ulimits(), network_dir)
        if not self.conf_path.is_file() or self.conf_path.read_text() != text:
            tmp = self.conf_path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.conf_path)

    def build_ulimits(self) -> list[str]:
        """``podman build`` ignores default_ulimits: the same limits as flags."""
        nofile, nproc = host_ulimits()
        return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]

    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf_path)}

    def argv(self, args: Sequence[str]) -> list[str]:
        return [
            require_binary("podman"),
            "--root", str(self.state / "storage"),
            "--runroot", str(self.state / "run"),
            "--tmpdir", str(self.state / "tmp"),
            *args,
        ]  # fmt: skip

    def run(
        self, *args: str, check: bool = True, timeout: float = 120.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run podman and return its result; PodmanError when ``check`` and it fails."""
        self.prepare()
        done = subprocess.run(
            self.argv(args),
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and done.returncode != 0:
            raise PodmanError(
                f"podman {' '.join(args[:3])} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )
        return done

    def out(self, *args: str, timeout: float = 120.0) -> str:
        return self.run(*args, timeout=timeout).stdout.strip()


def main(argv: Sequence[str] | None = None) -> int:
    podman = Podman.from_env()
    podman.prepare()
    args = list(sys.argv[1:] if argv is None else argv)
    return subprocess.call(podman.argv(args), env=podman.env())


if __name__ == "__main__":
    raise SystemExit(main())
