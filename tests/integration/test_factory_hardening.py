"""What a knot's repository can and cannot make the factory worker do.

A build step has no network unless the knot declares it (it cannot reach a
service on the worker's loopback); a symlinked Dockerfile or build context
cannot lead outside the clone; a hook command sees none of the worker's
secrets; a secret build arg reaches its RUN step and nothing else (not the
log, not the builder's command line, not the pushed image).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shlex
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.auth import add_user
from asterfleet.factory import queue
from asterfleet.factory.knot import validate_knot
from asterfleet.factory.logs import read_log
from asterfleet.factory.schema import metadata as factory_tables
from asterfleet.factory.store import add_knot
from asterfleet.factory.web import knot_webhook_router
from asterfleet.factory.worker import Worker, WorkerSettings
from asterfleet.testing.registry import RegistryLab, registry_lab
from tests.integration.test_factory_builds import DOCKERFILE, git, make_repo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="af-sec-fac-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(work: Path) -> Iterator[RegistryLab]:
    with registry_lab(work / "lab", extra_routers=lambda e: [knot_webhook_router(e)]) as running:
        factory_tables.create_all(running.engine)  # the factory shares the lab's store
        add_user(running.db, "alice", "alice-secret-1")
        yield running


@pytest.fixture(scope="module")
def worker(lab: RegistryLab, work: Path) -> Worker:
    settings = WorkerSettings(
        registry=lab.registry_host,
        tls_verify=False,
        worker_id="security-worker",
        workdir=work,
        buildah_root=work / "buildah-root",
        buildah_runroot=work / "buildah-run",
        heartbeat=0.5,
    )
    return Worker(lab.engine, settings, lab.db)


class Listener:
    """A TCP service on the worker's loopback that counts who connects."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def build_knot(lab: RegistryLab, worker: Worker, name: str, **spec: object) -> tuple[str, str]:
    add_knot(
        lab.engine,
        validate_knot({"name": name, "repository": f"alice/{name}", "owners": ["alice"], **spec}),
    )
    queue.enqueue(lab.engine, name, "refs/heads/main", None, "manual")
    [build] = worker.run_until_idle()
    return build.state, read_log(lab.engine, build.id)[0]


def test_a_build_step_cannot_reach_the_workers_loopback(
    lab: RegistryLab, worker: Worker, work: Path
) -> None:
    listener = Listener()
    try:
        dockerfile = DOCKERFILE + (
            f'RUN ["/bin/busybox", "sh", "-c", "echo x | /bin/busybox nc -w 3 '
            f'127.0.0.1 {listener.port}"]\n'
        )
        make_repo(work / "repo-net", dockerfile)
        state, log_text = build_knot(lab, worker, "net", git_url=str(work / "repo-net"))
        assert state == "failed", log_text
        assert listener.connections == 0
        assert "--network none" in log_text
        assert lab.catalogue.client.tags("alice/net") == []
    finally:
        listener.close()


@pytest.mark.parametrize(
    ("name", "spec", "link", "target"),
    [
        ("link-dockerfile", {}, "Dockerfile", "/etc/hostname"),
        ("link-context", {"context": "ctx"}, "ctx", "/etc"),
    ],
)
def test_a_symlink_cannot_lead_the_build_outside_the_clone(
    lab: RegistryLab,
    worker: Worker,
    work: Path,
    name: str,
    spec: dict[str, object],
    link: str,
    target: str,
) -> None:
    repo = work / f"repo-{name}"
    make_repo(repo, DOCKERFILE)
    (repo / link).unlink(missing_ok=True)
    (repo / link).symlink_to(target)
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "a link out")
    state, log_text = build_knot(lab, worker, name, git_url=str(repo), **spec)
    assert state == "failed"
    assert "leads outside the repository" in log_text
    # The builder never saw it: no logged command runs `buildah bud`.
    commands = [shlex.split(ln[2:]) for ln in log_text.splitlines() if ln.startswith("$ ")]
    assert commands and not [argv for argv in commands if "bud" in argv], commands


def test_a_hook_command_sees_none_of_the_workers_secrets(
    lab: RegistryLab, worker: Worker, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASTERFLEET_FACTORY_DB", "postgresql://factory:db-password@db/factory")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-secret")
    seen = work / "hook-env.txt"
    make_repo(work / "repo-hook", DOCKERFILE)
    state, log_text = build_knot(
        lab,
        worker,
        "hook",
        git_url=str(work / "repo-hook"),
        hooks={"command": f"env > {seen}"},
    )
    assert state == "passed", log_text
    env = seen.read_text()
    assert "ASTERFLEET_IMAGE=" in env  # what the hook is for
    assert "db-password" not in env and "worker-secret" not in env
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "worker-secret"  # the worker still has it


def test_a_commit_older_than_the_last_built_one_is_refused(
    lab: RegistryLab, worker: Worker, work: Path
) -> None:
    repo = work / "repo-old"
    first = make_repo(repo, DOCKERFILE)
    state, log_text = build_knot(lab, worker, "old", git_url=str(repo))
    assert state == "passed", log_text
    (repo / "motd").write_text("newer\n")
    git(repo, "commit", "--quiet", "-am", "newer")
    queue.enqueue(lab.engine, "old", "refs/heads/main", None, "manual")
    [newer] = worker.run_until_idle()
    assert newer.state == "passed"
    # A replay of the first push: its commit is behind what main last built.
    queue.enqueue(lab.engine, "old", "refs/heads/main", first, "webhook:github")
    [replayed] = worker.run_until_idle()
    assert replayed.state == "failed"
    assert replayed.reason is not None and "older than" in replayed.reason
    digest, _, _ = lab.catalogue.client.manifest("alice/old", "main")
    assert digest == newer.digest  # main still points at the newer image


def test_a_secret_build_arg_reaches_its_step_and_nowhere_else(
    lab: RegistryLab, worker: Worker, work: Path
) -> None:
    token = "tok-e2e-8c31f0a9b7d2"
    digest = hashlib.sha256(token.encode()).hexdigest()
    dockerfile = DOCKERFILE + (
        "RUN --mount=type=secret,id=API_TOKEN "
        "sha256sum /run/secrets/API_TOKEN > /etc/token.sha && cat /run/secrets/API_TOKEN\n"
    )
    make_repo(work / "repo-secret", dockerfile)
    state, log_text = build_knot(
        lab,
        worker,
        "secret",
        git_url=str(work / "repo-secret"),
        secret_build_args={"API_TOKEN": token},
        # Passes only if the step saw the secret: its hash is in the image.
        test_command=f"/bin/busybox grep -q {digest} /etc/token.sha",
    )
    assert state == "passed", log_text
    assert token not in log_text  # the step printed it: redacted
    # The logged command line is the builder's argv: the secret is not on it.
    assert "--secret id=API_TOKEN,env=ASTERFLEET_BUILD_SECRET_API_TOKEN" in log_text
    client = lab.catalogue.client
    _, _, manifest = client.manifest("alice/secret", "main")
    config = client.blob_json("alice/secret", manifest["config"]["digest"])
    assert "API_TOKEN" in json.dumps(config)  # the step is in the history…
    assert token not in json.dumps(config)  # …without the value (an ARG's would be)
    for layer in manifest["layers"]:
        resp = client.http.get(
            f"/v2/alice/secret/blobs/{layer['digest']}",
            headers=client._repo_auth("alice/secret"),
            follow_redirects=True,
        )
        resp.raise_for_status()
        assert token.encode() not in gzip.decompress(resp.content)
