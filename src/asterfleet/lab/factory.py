"""The lab's registry and image factory: the real Distribution registry with
the lab's console as its token server, one factory worker (buildah), and a
sample knot building a tiny image from a local git repository.

With them the console's Images and Builds (knots) areas work in the demo
like every other area.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from asterfleet.factory import queue
from asterfleet.factory.db import open_store
from asterfleet.factory.knot import validate_knot
from asterfleet.factory.store import add_knot, list_knots
from asterfleet.lab.stack import agent_argv
from asterfleet.registry.config import CONFIG_FILE, write_config
from asterfleet.registry.ownership import Ownership
from asterfleet.registry.schema import create_tables
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import ManagedProcess, require_binary, wait_for

SAMPLE_KNOT = "hello"
SAMPLE_REPOSITORY = "lab/hello"
# A tiny image: busybox (static) on an empty base; no outside registry needed.
SAMPLE_DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY motd /etc/motd
CMD ["/bin/busybox", "cat", "/etc/motd"]
"""
FACTORY_BINARIES = ("docker-registry", "buildah", "busybox", "git")


def missing_binaries() -> list[str]:
    return [b for b in FACTORY_BINARIES if shutil.which(b) is None]


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=lab@asterfleet.invalid",
         "-c", "user.name=asterfleet lab", *args],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return done.stdout.strip()


def sample_repository(path: Path) -> Path:
    """The sample knot's source: a git repository with a Dockerfile (kept if present)."""
    if (path / ".git").is_dir():
        return path
    path.mkdir(parents=True, exist_ok=True)
    _git(path, "init", "--quiet", "--initial-branch=main")
    shutil.copy(require_binary("busybox"), path / "busybox")
    (path / "motd").write_text("hello from the asterfleet lab's sample knot\n")
    (path / "Dockerfile").write_text(SAMPLE_DOCKERFILE)
    _git(path, "add", ".")
    _git(path, "commit", "--quiet", "-m", "A tiny image built by the lab's factory")
    return path


@dataclass
class LabFactory:
    """Registry + worker for a lab whose console listens on ``console_port``."""

    lab_dir: Path
    console_port: int
    console_db: str  # the one identity: the worker's push tokens are made there
    registry_port: int = field(default_factory=free_port)
    registry: ManagedProcess | None = None
    worker: ManagedProcess | None = None

    @property
    def registry_dir(self) -> Path:
        return self.lab_dir / "registry"

    @property
    def factory_db(self) -> str:
        return f"sqlite:///{self.lab_dir / 'factory.db'}"

    @property
    def registry_host(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    def console_args(self) -> list[str]:
        """What the console needs to serve /token, the hooks, Images and Knots.

        One identity: the console's admin logs in to the registry too, and
        the worker pushes with short-lived tokens of the knot's owner (admin)."""
        return ["--registry-dir", str(self.registry_dir), "--factory-db", self.factory_db]

    def prepare(self) -> None:
        """Registry config, the admin, the sample knot and its first build."""
        while self.registry_port == self.console_port:
            self.registry_port = free_port()
        write_config(
            self.registry_dir,
            realm=f"http://127.0.0.1:{self.console_port}/token",
            service="asterfleet-lab",
            listen=self.registry_host,
        )
        engine = open_store(self.factory_db)
        try:
            # The lab's admin owns the sample's namespace: its builds push there.
            Ownership(create_tables(engine)).add_namespace(SAMPLE_REPOSITORY.split("/")[0], "admin")
            if not any(k.name == SAMPLE_KNOT for k in list_knots(engine)):
                source = sample_repository(self.lab_dir / "knot-source")
                add_knot(
                    engine,
                    validate_knot(
                        {
                            "name": SAMPLE_KNOT,
                            "git_url": str(source),
                            "repository": SAMPLE_REPOSITORY,
                            "owners": ["admin"],
                            "test_command": "/bin/busybox grep -q hello /etc/motd",
                        }
                    ),
                )
                queue.enqueue(engine, SAMPLE_KNOT, "refs/heads/main", None, "manual")
        finally:
            engine.dispose()

    def start_registry(self) -> None:
        """The registry, before the console (its token server and catalogue reader)."""
        self.registry = ManagedProcess(
            "docker-registry",
            [require_binary("docker-registry"), "serve", str(self.registry_dir / CONFIG_FILE)],
            self.lab_dir / "run" / "docker-registry.log",
        ).start()
        wait_for(self._registry_answers, 20, what=f"the registry at {self.registry_host}")

    def start_worker(self) -> None:
        """The worker, once the console answers /token (it pushes through it)."""
        run = self.lab_dir / "run"
        self.worker = ManagedProcess(
            "factory-worker",
            # Niced: a build must not slow the lab's calls down (2 cores are enough
            # for both only if SIP comes first).
            [
                shutil.which("nice") or "nice", "-n", "15",
                *agent_argv(
                    "factory", "worker",
                    "--registry", self.registry_host,
                    "--insecure",
                    "--id", "lab-worker",
                    "--buildah-root", str(run / "buildah"),
                        "--db", self.factory_db,
                    "--console-db", self.console_db,
                ),
            ],
            run / "factory-worker.log",
        ).start()  # fmt: skip

    def _registry_answers(self) -> bool:
        registry = self.registry
        assert registry is not None, "the registry was not started"
        assert registry.alive(), f"docker-registry exited: {registry.log_tail()}"
        resp = httpx.get(f"http://{self.registry_host}/v2/", timeout=2)
        return resp.status_code == 401

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop(grace=10)
        if self.registry is not None:
            self.registry.stop(grace=5)
