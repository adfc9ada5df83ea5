"""asterfleet's own image through asterfleet's own pipeline (issue 11, item 1).

The ``asterfleet`` image of ``make images`` is pushed with podman to the
registry asterfleet serves (Distribution with asterfleet's token server),
a knot releases it (the factory's worker builds FROM it with buildah, runs
its test command inside the new image and pushes the result), and podman
pulls that release from the registry and runs it. What a user checks: the
container from the registry answers ``asterfleet --version`` with this
checkout's version and carries the knot's label.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet import __version__
from asterfleet.auth import add_user
from asterfleet.factory import queue
from asterfleet.factory.knot import validate_knot
from asterfleet.factory.logs import read_log
from asterfleet.factory.schema import metadata as factory_tables
from asterfleet.factory.store import add_knot
from asterfleet.factory.worker import Worker, WorkerSettings
from asterfleet.runtime.process import require_binary
from asterfleet.ship.images import image_ref
from asterfleet.ship.podman import Podman
from asterfleet.testing.registry import registry_lab
from tests.integration.podman_cluster import ensure_images

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

PASSWORD = "cluster-publish-1"
RELEASE_LABEL = "org.asterfleet.release"


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=t@example.invalid", "-c", "user.name=t", *args],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cluster-publish-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_the_asterfleet_image_is_released_by_the_factory_and_runs_from_the_registry(
    work: Path,
) -> None:
    require_binary("buildah")
    ensure_images()
    podman = Podman.from_env()
    authfile = work / "auth.json"
    with registry_lab(work / "lab") as lab:
        factory_tables.create_all(lab.engine)
        add_user(lab.db, "alice", PASSWORD)
        registry = lab.registry_host
        base = f"{registry}/alice/asterfleet:{__version__}"
        podman.run("login", "--authfile", str(authfile), "--tls-verify=false",
                   "--username", "alice", "--password-stdin", registry, input=PASSWORD)  # fmt: skip
        podman.run("push", "--authfile", str(authfile), "--tls-verify=false",
                   image_ref("asterfleet"), f"docker://{base}", timeout=600)  # fmt: skip
        # The worker pulls its FROM image anonymously: a public base.
        lab.ownership.set_public("alice/asterfleet", True)

        source = work / "release"
        source.mkdir()
        git(source, "init", "--quiet", "--initial-branch=main")
        (source / "Containerfile").write_text(f"FROM {base}\nLABEL {RELEASE_LABEL}=factory\n")
        git(source, "add", ".")
        git(source, "commit", "--quiet", "-m", "release")
        add_knot(lab.engine, validate_knot({
            "name": "asterfleet-release", "git_url": str(source),
            "repository": "alice/asterfleet-release", "owners": ["alice"],
            "dockerfile": "Containerfile", "test_command": "asterfleet --version",
        }))  # fmt: skip
        queue.enqueue(lab.engine, "asterfleet-release", "refs/heads/main", None, "manual")
        worker = Worker(lab.engine, WorkerSettings(
            registry=registry, tls_verify=False, worker_id="cluster-publish", workdir=work,
            buildah_root=work / "buildah-root", buildah_runroot=work / "buildah-run",
            heartbeat=0.5,
        ), lab.db)  # fmt: skip
        [build] = worker.run_until_idle()
        log_text = read_log(lab.engine, build.id)[0]
        assert build.state == "passed", log_text
        assert f"asterfleet {__version__}" in log_text  # its test command, in the new image
        assert build.digest and build.digest.startswith("sha256:")

        release = f"{registry}/alice/asterfleet-release@{build.digest}"
        try:
            podman.run("pull", "--authfile", str(authfile), "--tls-verify=false", release,
                       timeout=600)  # fmt: skip
            ran = podman.run("run", "--rm", "--network", "none", release, "--version")
            assert ran.stdout.strip() == f"asterfleet {__version__}"
            label = podman.out("image", "inspect", "--format",
                               f'{{{{index .Labels "{RELEASE_LABEL}"}}}}', release)  # fmt: skip
            assert label == "factory"
        finally:
            podman.run("rmi", "--force", release, check=False)
            podman.run("logout", "--authfile", str(authfile), registry, check=False)
